"""The secret-leak search, shared by the tests that run what could leak: distinctive secret
values (the PostgreSQL password, an AWS secret key, the Slack webhook URL), a watch of every
process's command line while a procedure runs, and the search of everything it leaves: this
process's output and logs, Airflow's files and XComs, Slack's messages, the objects in S3.

The procedures that move the topology (dr_failover, dr_failback, both drills) are searched in
the modules that run them already (test_failover_dag.py, test_drills.py), on their sandboxes
set up with these secrets; the CLI and the backup DAGs in test_secret_leaks.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from backup_support import unencrypted_objects

from dr_sandbox import WEBHOOK_PATH, Sandbox
from dr_sandbox.webhook import read_messages

# Backup data (dumps, base backups, WAL) is the database's own content, not a channel of ours.
DATA_SUFFIXES = (".dump", ".tar", ".gz")


class CmdlineWatcher:
    """Reads every process's command line every few milliseconds while the tests run."""

    def __init__(self, needles: list[str]):
        self.needles = needles
        self.leaks: list[str] = []
        self.seen: set[str] = set()  # program names seen, to show the watch was effective
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                try:
                    with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                        args = handle.read().split(b"\0")
                except OSError:
                    continue
                line = " ".join(a.decode(errors="replace") for a in args)
                self.seen.add(Path(args[0].decode(errors="replace")).name)
                for needle in self.needles:
                    if needle in line:
                        self.leaks.append(f"pid {entry.name}: {line.replace(needle, '<SECRET>')}")
            time.sleep(0.005)

    def __enter__(self) -> CmdlineWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def leaks_in(text: str, needles: list[str], where: str) -> list[str]:
    return [f"{where}: contains secret #{i}" for i, n in enumerate(needles) if n in text]


def with_known_secrets(box: Sandbox) -> tuple[dict[str, str], list[str]]:
    """A sandbox's variables with an AWS secret key made distinctive (moto accepts any), and
    the secrets to look for: its PostgreSQL password, that key, the Slack webhook's URL path."""
    aws_secret = f"awsSecret{secrets.token_hex(12)}"
    env = box.environment()
    for role in ("PRIMARY", "SECONDARY"):
        name = f"AIRFLOW_CONN_DR_AWS_{role}"
        # The sandbox's own Connection (its per-region S3 and global Route 53 endpoints), with
        # distinctive credentials.
        connection = json.loads(env[name])
        connection.update({"login": "AKIALEAKTEST", "password": aws_secret})
        env[name] = json.dumps(connection)
    password = box.state.password
    assert len(password) >= 12
    return env, [password, aws_secret, WEBHOOK_PATH, WEBHOOK_PATH.rsplit("/", 1)[-1]]


@contextlib.contextmanager
def known_secrets_environment(box: Sandbox) -> Iterator[tuple[Sandbox, list[str]]]:
    """The sandbox's variables, with the distinctive AWS secret, in os.environ for the duration
    (restored after); yields the sandbox and the secrets to look for (a module's
    ``secret_box``)."""
    saved = dict(os.environ)
    env, needles = with_known_secrets(box)
    os.environ.update(env)
    try:
        yield box, needles
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _xcom_values() -> list[str]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        return [json.dumps(row[0], default=str) for row in session.query(XComModel.value).all()]


def _files_under(folder: Path) -> Iterator[tuple[Path, str]]:
    for path in folder.rglob("*"):
        if path.is_file():
            yield path, path.read_bytes().decode(errors="replace")


def airflow_and_slack_leaks(
    box: Sandbox,
    needles: list[str],
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> list[str]:
    """This process's output and logs, Airflow's files (task logs, the metadata database with
    rendered fields, XComs and runs' conf), the XComs, and what Slack received."""
    out, err = capfd.readouterr()
    found = leaks_in(out + err + caplog.text, needles, "logs of this process")
    for path, text in _files_under(Path(os.environ["AIRFLOW_HOME"])):
        found += leaks_in(text, needles, str(path))
    # The receiver also logs the request path: Slack's own URL.
    found += leaks_in(json.dumps(read_messages(box.slack_log)), needles, "Slack messages")
    for index, value in enumerate(_xcom_values()):
        found += leaks_in(value, needles, f"XCom #{index}")
    return found


def stored_object_leaks(box: Sandbox, needles: list[str]) -> tuple[list[str], int]:
    """Secrets in the objects of both regions' buckets (results, evidence, manifests, health
    records; backup data aside), and how many objects were searched."""
    leaks: list[str] = []
    searched = 0
    for region in ("us-east-1", "us-west-2"):
        store = box.store(region)
        for entry in store.list_keys(""):
            key = entry["Key"]
            if key.endswith(DATA_SUFFIXES) or "/postgresql_wal/" in key:
                continue
            searched += 1
            body = store.get_bytes(key).decode(errors="replace")
            leaks += leaks_in(body, needles, store.url(key))
    return leaks, searched


def procedure_leaks(
    box: Sandbox,
    needles: list[str],
    watcher: CmdlineWatcher,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    *,
    objects_at_least: int = 5,
) -> list[str]:
    """Every secret a procedure that moved the topology left anywhere -- the command lines the
    watcher saw while it ran, logs, Airflow, Slack, S3 -- and every object of both buckets left
    without its region's encryption (a revived region once lost it)."""
    stored, searched = stored_object_leaks(box, needles)
    # Results, evidence, manifests, health records were searched.
    assert searched >= objects_at_least, searched
    found = watcher.leaks + airflow_and_slack_leaks(box, needles, capfd, caplog) + stored
    for region in ("us-east-1", "us-west-2"):
        found += unencrypted_objects(box.store(region))
    return found


@dataclass
class LeakSearch:
    """One test's search: run its procedure inside ``watching()``, then assert ``found()`` is
    empty."""

    box: Sandbox
    needles: list[str]
    capfd: pytest.CaptureFixture[str]
    caplog: pytest.LogCaptureFixture
    watcher: CmdlineWatcher | None = field(default=None)

    @contextlib.contextmanager
    def watching(self) -> Iterator[CmdlineWatcher]:
        with CmdlineWatcher(self.needles) as watcher:
            self.watcher = watcher
            yield watcher

    def found(self, *, objects_at_least: int = 5) -> list[str]:
        assert self.watcher is not None, "run the procedure inside watching()"
        return procedure_leaks(
            self.box,
            self.needles,
            self.watcher,
            self.capfd,
            self.caplog,
            objects_at_least=objects_at_least,
        )


@pytest.fixture
def leak_search(
    secret_box: tuple[Sandbox, list[str]],
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> LeakSearch:
    """The search for the module's ``secret_box`` (a sandbox set up with
    :func:`known_secrets_environment`), this process's logs captured from INFO up."""
    caplog.set_level("INFO")
    return LeakSearch(*secret_box, capfd, caplog)
