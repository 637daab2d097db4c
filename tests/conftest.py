"""Shared fixtures: a real two-region sandbox on free loopback ports, private sandboxes from the
one factory in helpers.py, and an Airflow metadata DB; and the tiers' markers.

Airflow reads its configuration when first imported, so the environment is set here, before any
test module imports it. Nothing is skipped when a server is missing: fixtures start what they
need and fail loudly if they cannot. No fixture here is autouse: a test that does not ask for a
sandbox (the whole unit tier) starts nothing.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="dr-airflow-"))
os.environ.update(
    {
        "AIRFLOW_HOME": str(_AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_AIRFLOW_HOME}/airflow.db",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "XDG_RUNTIME_DIR": str(_AIRFLOW_HOME),
    }
)
os.environ.pop("DR_CONFIG", None)
for _name in [n for n in os.environ if n.startswith("AIRFLOW_CONN_")]:
    del os.environ[_name]

from backup_support import BackupEnv  # noqa: E402
from helpers import new_sandbox, sandbox_environment  # noqa: E402

from dr_sandbox import Sandbox  # noqa: E402

INTEGRATION = Path(__file__).resolve().parent / "integration"

# The DR console's recorded history (fixtures console_config, recorded), shared by its tests;
# the secret-leak search of the procedures that move the topology (fixture leak_search).
pytest_plugins = ["console_support", "leak_support"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/integration/ needs real servers: mark it by where it lives."""
    for item in items:
        if item.path.is_relative_to(INTEGRATION):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    """The two-region sandbox (PostgreSQL primary + sync standby, Redis pair, moto, webhook)."""
    box = new_sandbox(scale=1, prefix="dr-sandbox-")
    try:
        box.up()
        yield box
    finally:
        box.down(purge=True)


@pytest.fixture(scope="session")
def sandbox_env(sandbox: Sandbox) -> Iterator[dict[str, str]]:
    """The sandbox's ``sandbox.env`` variables, exported into this process for the session."""
    with sandbox_environment(sandbox) as env:
        yield env


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """A migrated Airflow metadata database (SQLite), once per session."""
    from airflow.utils import db

    db.resetdb()


@pytest.fixture
def make_sandbox() -> Iterator[Callable[..., Sandbox]]:
    """Build extra, private sandboxes, not started (for tests that break or kill components)."""
    made: list[Sandbox] = []

    def factory(scale: float = 0.2) -> Sandbox:
        box = new_sandbox(scale)
        made.append(box)
        return box

    yield factory
    for box in made:
        box.down(purge=True)


@pytest.fixture
def backup_env(
    sandbox: Sandbox, sandbox_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[BackupEnv]:
    """Backups on the session sandbox under a prefix of the test's own, removed afterwards."""
    monkeypatch.setenv("DR_CONFIG", "")  # restored after the test; BackupEnv sets it
    backup_env = BackupEnv(sandbox, tmp_path)
    try:
        yield backup_env
    finally:
        backup_env.cleanup()
