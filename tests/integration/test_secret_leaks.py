"""No secret ever leaves: with known, distinctive secret values (the PostgreSQL password, an AWS
secret key, the Slack webhook URL) the DAGs and the CLI run their success and failure paths,
and none of those values appears in a command line (``/proc/<pid>/cmdline``, watched while
they run), a log line, a CLI answer or error, a Slack alert, an object in S3 (manifests,
health records), an XCom, or the dashboard. The procedures that move the topology (dr_failover,
dr_failback, both drills) are searched the same way where they run already, on their private
sandboxes: test_failover_dag.py and test_drills.py (the search: leak_support.py)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from backup_support import BackupEnv
from helpers import run_dag
from leak_support import CmdlineWatcher, airflow_and_slack_leaks, leaks_in, with_known_secrets

from dr_sandbox import Sandbox
from dr_sandbox.webhook import read_messages

PLUGIN = Path(__file__).resolve().parents[2] / "plugins" / "dr_dashboard.py"


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
        leaks += airflow_and_slack_leaks(sandbox, known_secrets, capfd, caplog)
        stores = env.stores()
        for store in (stores.primary, stores.secondary):
            for entry in store.list_keys(env.prefix + "/"):
                body = store.get_bytes(entry["Key"]).decode(errors="replace")
                leaks += leaks_in(body, known_secrets, store.url(entry["Key"]))
        leaks += _dashboard_leaks(env, known_secrets)
    finally:
        env.cleanup()
    assert leaks == []


def _dashboard_leaks(env: BackupEnv, needles: list[str]) -> list[str]:
    """The console's JSON and page, as the plugin serves them to a logged-in user."""
    from disaster_recovery.console import page
    from disaster_recovery.console.sections import collect

    deployment = env.deployment()
    status = collect(deployment)
    found = leaks_in(json.dumps(status, default=str), needles, "console /dr/api/status")
    found += leaks_in(page.render_page(status, deployment.settings.tz), needles, "console /dr/")
    return found


def test_the_watcher_finds_a_secret_on_a_command_line() -> None:
    """The cmdline watch can fail: a process started with a secret argument is caught."""
    needle = f"needle{secrets.token_hex(8)}"
    with CmdlineWatcher([needle]) as watcher:
        subprocess.run([sys.executable, "-c", "import time; time.sleep(0.3)", needle], check=True)
    assert watcher.leaks and "<SECRET>" in watcher.leaks[0]
    assert leaks_in(f"x{needle}x", [needle], "text") == ["text: contains secret #0"]
