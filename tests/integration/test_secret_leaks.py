"""No secret ever leaves: with known, distinctive secret values (the PostgreSQL password, an AWS
secret key, the Slack webhook URL) the DAGs and the CLI run their success and failure paths,
and none of those values appears in a command line (``/proc/<pid>/cmdline``, watched while
they run), a log line, a CLI answer or error, a Slack alert, an object in S3 (manifests,
health records), an XCom, or the dashboard. The procedures that move the topology (dr_failover,
dr_failback, both drills) run the same search on a private sandbox: their results, evidence and
manifests in S3 included."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from backup_support import BackupEnv, unencrypted_objects
from failover_support import ApprovalAnswerer
from helpers import load_dag, private_sandbox, run_dag, task_states
from pitr_support import prepare_for_drills

from dr_sandbox import WEBHOOK_PATH, Sandbox
from dr_sandbox.webhook import read_messages

PLUGIN = Path(__file__).resolve().parents[2] / "plugins" / "dr_dashboard.py"


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


@pytest.fixture
def known_secrets(
    sandbox: Sandbox, sandbox_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    env, needles = with_known_secrets(sandbox)
    for role in ("PRIMARY", "SECONDARY"):
        name = f"AIRFLOW_CONN_DR_AWS_{role}"
        monkeypatch.setenv(name, env[name])
    return needles


def dr(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "disaster_recovery", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
        timeout=300,
    )


def _xcom_values() -> list[str]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        return [json.dumps(row[0], default=str) for row in session.query(XComModel.value).all()]


def _files_under(folder: Path) -> Iterator[tuple[Path, str]]:
    for path in folder.rglob("*"):
        if path.is_file():
            yield path, path.read_bytes().decode(errors="replace")


def test_no_secret_leaves_through_any_channel(  # noqa: PLR0917 (pytest fixtures)
    sandbox: Sandbox,
    known_secrets: list[str],
    airflow_db: None,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO")
    env = BackupEnv(sandbox, tmp_path)
    leaks: list[str] = []
    answers: list[tuple[str, subprocess.CompletedProcess[str]]] = []
    try:
        with CmdlineWatcher(known_secrets) as watcher:
            taken = dr("backup", "weekly")
            assert taken.returncode == 0, taken.stderr
            file = json.loads(taken.stdout)["backup_file"]
            answers.append(("backup", taken))
            for name, args in [
                ("verify", ("verify", "postgresql_weekly", file)),
                (
                    "verify-missing",
                    ("verify", "postgresql_weekly", "postgresql_weekly_20200101_000000.dump"),
                ),
                ("list", ("list",)),
                ("cleanup", ("cleanup", "--dry-run")),
                ("wal-check", ("wal", "check")),
                ("health", ("health",)),
                ("drills", ("drills",)),
            ]:
                answers.append((name, dr(*args)))
            # Failure paths: an unreachable database, S3 refusing the credentials.
            unreachable = json.loads(os.environ["AIRFLOW_CONN_DR_POSTGRES_PRIMARY"])
            unreachable["port"] = 9
            answers.append(
                (
                    "backup-unreachable",
                    dr(
                        "backup",
                        "weekly",
                        env={"AIRFLOW_CONN_DR_POSTGRES_PRIMARY": json.dumps(unreachable)},
                    ),
                )
            )
            bad_s3 = {
                "conn_type": "aws",
                "login": "AKIALEAKTEST",
                "password": known_secrets[1],
                "extra": {"endpoint_url": "http://127.0.0.1:9", "region_name": "us-east-1"},
            }
            answers.append(
                ("list-no-s3", dr("list", env={"AIRFLOW_CONN_DR_AWS_PRIMARY": json.dumps(bad_s3)}))
            )
            # The DAGs, success and failure (the WAL check of this empty prefix fails and alerts).
            # Every backup DAG: the logical tiers share one factory, the incremental one runs
            # pg_basebackup (its password must reach it through the environment too).
            for dag_id in (
                "postgresql_backup_full",
                "postgresql_backup_weekly",
                "postgresql_backup_monthly",
                "postgresql_backup_incremental",
                "postgresql_backup_cleanup",
                "dr_health_check",
                "postgresql_wal_archive",
            ):
                run_dag(dag_id)
        assert {"pg_dump", "pg_restore", "pg_basebackup"} <= watcher.seen, sorted(watcher.seen)
        leaks += watcher.leaks

        assert answers[-1][1].returncode != 0 and answers[-2][1].returncode != 0
        for name, answer in answers:
            leaks += leaks_in(answer.stdout + answer.stderr, known_secrets, f"dr {name}")
        # What Slack received (the receiver also logs the request path: Slack's own URL).
        alerts = json.dumps(read_messages(sandbox.slack_log))
        assert "BackupFailed" in alerts or "WALArchive" in alerts  # failure paths alerted
        leaks += _airflow_and_slack_leaks(sandbox, known_secrets, capfd, caplog)
        stores = env.stores()
        for store in (stores.primary, stores.secondary):
            for entry in store.list_keys(env.prefix + "/"):
                body = store.get_bytes(entry["Key"]).decode(errors="replace")
                leaks += leaks_in(body, known_secrets, store.url(entry["Key"]))
        leaks += _dashboard_leaks(env, known_secrets)
    finally:
        env.cleanup()
    assert leaks == []


def _airflow_and_slack_leaks(
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


def _dashboard_leaks(env: BackupEnv, needles: list[str]) -> list[str]:
    """The console's JSON and page, as the plugin serves them to a logged-in user."""
    from disaster_recovery.console import page
    from disaster_recovery.console.sections import collect

    deployment = env.deployment()
    status = collect(deployment)
    found = leaks_in(json.dumps(status, default=str), needles, "console /dr/api/status")
    found += leaks_in(page.render_page(status, deployment.settings.tz), needles, "console /dr/")
    return found


# -- the procedures that move the topology: on a private sandbox ---------------------------------

# Backup data (dumps, base backups, WAL) is the database's own content, not a channel of ours.
_DATA_SUFFIXES = (".dump", ".tar", ".gz")


@pytest.fixture(scope="module")
def moving_box() -> Iterator[tuple[Sandbox, list[str]]]:
    """A private sandbox ready for drills (failovers and drills move its topology), its
    variables in os.environ with the distinctive AWS secret; and the secrets to look for."""
    saved = dict(os.environ)
    try:
        with private_sandbox(scale=0.2, prefix="dr-leaks-") as box:
            env, needles = with_known_secrets(box)
            os.environ.update(env)
            prepare_for_drills(box)
            yield box, needles
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _approved(dag_id: str, choice: str) -> dict[str, str]:
    """A run of ``dag_id`` whose approval a person answers with ``choice``: its task states."""
    answerer = ApprovalAnswerer(dag_id, choice)
    answerer.start()
    run = load_dag(dag_id).test(
        logical_date=None, run_conf={"reason": "leak test", "initiated_by": "pytest"}
    )
    answerer.join(30)
    assert answerer.error is None, answerer.error
    return {"state": str(run.state), **task_states(run)}


def test_no_secret_leaves_the_failover_failback_and_drills(
    moving_box: tuple[Sandbox, list[str]],
    airflow_db: None,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """dr_failover rejected then approved, dr_failback, both drills: no secret in a command
    line, a log, an XCom, an alert, or an object they wrote (results, evidence, manifests); and
    every object they wrote is encrypted (issue 14's walk of the buckets, for these DAGs)."""
    box, needles = moving_box
    caplog.set_level("INFO")
    seen_alerts = len(read_messages(box.slack_log))
    with CmdlineWatcher(needles) as watcher:
        rejected = _approved("dr_failover", "Reject")
        failover = _approved("dr_failover", "Approve")
        failback = _approved("dr_failback", "Approve")
        monthly = run_dag("dr_drill_monthly", None)
        quarterly = run_dag("dr_drill_quarterly", None)
    assert rejected["promote.run"] == "skipped"
    assert failover["state"] == "success" and failback["state"] == "success", (failover, failback)
    assert (str(monthly.state), str(quarterly.state)) == ("success", "success")
    # The watch saw the procedures' programs (restores, rewinds or clones, server control).
    assert {"pg_restore", "pg_ctl"} <= watcher.seen, sorted(watcher.seen)
    alerts = {m.get("alert") for m in read_messages(box.slack_log)[seen_alerts:]}
    assert {"FailoverApprovalRequired", "FailoverCompleted", "DRDrillReport"} <= alerts, alerts

    leaks = watcher.leaks + _airflow_and_slack_leaks(box, needles, capfd, caplog)
    written = 0
    for region in ("us-east-1", "us-west-2"):
        store = box.store(region)
        for entry in store.list_keys(""):
            key = entry["Key"]
            if key.endswith(_DATA_SUFFIXES) or "/postgresql_wal/" in key:
                continue
            written += 1
            body = store.get_bytes(key).decode(errors="replace")
            leaks += leaks_in(body, needles, store.url(key))
    assert written > 10  # failover results, drill evidence, manifests, health records
    assert leaks == []
    # And every object these procedures (and the backups before them) wrote is encrypted with
    # its region's key.
    for region in ("us-east-1", "us-west-2"):
        assert unencrypted_objects(box.store(region)) == []


def test_the_watcher_finds_a_secret_on_a_command_line() -> None:
    """The cmdline watch can fail: a process started with a secret argument is caught."""
    needle = f"needle{secrets.token_hex(8)}"
    with CmdlineWatcher([needle]) as watcher:
        subprocess.run([sys.executable, "-c", "import time; time.sleep(0.3)", needle], check=True)
    assert watcher.leaks and "<SECRET>" in watcher.leaks[0]
    assert leaks_in(f"x{needle}x", [needle], "text") == ["text: contains secret #0"]
