"""The helpers every tier shares, written once: the one private-sandbox factory, a sandbox's
variables in os.environ, running a DAG under ``dag.test()``, running the ``dr`` CLI in a
subprocess, reading the Slack log the sandbox's webhook receiver writes, and a headless
Chromium.

Airflow is imported inside the DAG helpers only: importing it reads its configuration, which
conftest.py sets first, and the unit tier must not pay for it (nor for Selenium).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from dr_sandbox import PORT_COUNT, Sandbox, SandboxPorts, processes
from dr_sandbox.webhook import read_messages

REPO = Path(__file__).resolve().parent.parent
DAGS = REPO / "dags"


# -- sandboxes ------------------------------------------------------------------------------------


def sandbox_root(prefix: str) -> Path:
    """A fresh folder for a sandbox.

    Not under pytest's tmp_path: that folder is 0700 and the unprivileged server user that
    PostgreSQL runs as (when tests run as root) must reach its data directory.
    """
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    root.chmod(0o755)
    return root


def new_sandbox(
    scale: float = 0.2, prefix: str = "dr-private-", ports: SandboxPorts | None = None
) -> Sandbox:
    """The one private-sandbox factory: a sandbox on free loopback ports (or ``ports``), not
    started yet."""
    return Sandbox(sandbox_root(prefix), ports or SandboxPorts.free(), scale=scale)


@contextlib.contextmanager
def private_sandbox(
    scale: float = 0.2, prefix: str = "dr-private-", ports: SandboxPorts | None = None
) -> Iterator[Sandbox]:
    """A started private sandbox (for tests that break, kill or move components), purged after."""
    box = new_sandbox(scale, prefix, ports)
    try:
        box.up()
        yield box
    finally:
        box.down(purge=True)


@contextlib.contextmanager
def airflow_sandbox(prefix: str) -> Iterator[Sandbox]:
    """A started private sandbox as ``make demo BASE_PORT=...`` brings it up: its ten ports from
    one base, the three after them free for Airflow (``dr_sandbox.demo.default_airflow_port``)."""
    ports = SandboxPorts.from_base(processes.free_port_block(PORT_COUNT + 3))
    with private_sandbox(scale=0.2, prefix=prefix, ports=ports) as box:
        yield box


@contextlib.contextmanager
def sandbox_environment(box: Sandbox) -> Iterator[dict[str, str]]:
    """Export a sandbox's sandbox.env into os.environ for the duration, then restore it."""
    env = box.environment()
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# -- the Slack log --------------------------------------------------------------------------------


def slack_messages(box: Sandbox, alert: str | None = None) -> list[dict[str, Any]]:
    """Every message the sandbox's webhook received so far, or those of one ``alert``."""
    messages: list[dict[str, Any]] = read_messages(box.slack_log)
    return [m for m in messages if alert is None or m.get("alert") == alert]


# -- the dr CLI -----------------------------------------------------------------------------------


def run_dr(
    *args: str,
    env: dict[str, str] | None = None,
    module: str = "disaster_recovery",
    timeout: float = 300,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m disaster_recovery ARGS`` (or another ``module``) with this process's
    environment plus ``env`` and ``stdin`` as its input; never raises on a non-zero exit (the
    tests check the code)."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )


# -- DAGs -----------------------------------------------------------------------------------------


def load_dag(dag_id: str) -> Any:
    """A DAG of ``dags/`` as Airflow parses it (any import error fails the test)."""
    from airflow.models import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag(dag_id)
    assert dag is not None, dag_id
    return dag


def run_dag(
    dag_id: str, logical_date: datetime | Literal["now"] | None = "now", **conf: Any
) -> Any:
    """``dag.test()`` of a DAG from ``dags/``; returns the DagRun (a failed task does not raise).

    ``logical_date="now"`` runs it at the current second; ``None`` leaves it to Airflow."""
    when = datetime.now(UTC).replace(microsecond=0) if logical_date == "now" else logical_date
    return load_dag(dag_id).test(logical_date=when, run_conf=conf or None)


def task_states(dag_run: Any) -> dict[str, str]:
    """Each task's final state in a DagRun, by task id."""
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


# -- a browser ------------------------------------------------------------------------------------

CHROME_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--window-size=1400,1000",
)


@contextlib.contextmanager
def chromium(time_zone: str | None = None) -> Iterator[Any]:
    """Headless Chromium (Debian's, driven by chromium-driver) with a fresh profile, as a
    Selenium driver; ``time_zone`` is the browser's own zone (its ``TZ``), as on a laptop there."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    assert browser and driver_path, "make test installs Debian's chromium and chromium-driver"
    profile = tempfile.mkdtemp(prefix="dr-chromium-")
    options = Options()
    options.binary_location = browser
    for flag in (*CHROME_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium fetch a browser
    env = {**os.environ, **({"TZ": time_zone} if time_zone else {})}
    driver = webdriver.Chrome(
        service=Service(executable_path=driver_path, env=env), options=options
    )
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
