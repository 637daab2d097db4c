"""The seed's own examples run as the DR document writes them (adapted only for the sandbox's
hosts): ``BackupManager(config={...})``, ``verify_backup`` and ``restore_postgresql`` with the
seed's date-only and local-time names, ``cleanup_old_backups()``'s keys, ``check_health()``'s
shape and words, and ``python -m disaster_recovery.failover`` as the runbook types it."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import subprocess
import sys
import time
from datetime import UTC, datetime

import yaml
from backup_support import BackupEnv, scratch_database
from helpers import run_dr

from disaster_recovery.backup.logical import run_backup
from disaster_recovery.failover.orchestrator import FailoverOrchestrator
from disaster_recovery.manager import BackupManager
from disaster_recovery.postgres import db
from dr_sandbox import Sandbox

# Three daily backups by their nominal (scheduled) time, in UTC as every name is. In Bogota
# (UTC-5) all three are on 2025-03-04: 03:00, 15:00 and 22:00.
MORNING = datetime(2025, 3, 4, 8, 0, tzinfo=UTC)
AFTERNOON = datetime(2025, 3, 4, 20, 0, tzinfo=UTC)
NIGHT = datetime(2025, 3, 5, 3, 0, tzinfo=UTC)


def seed_manager(env: BackupEnv, sandbox: Sandbox) -> BackupManager:
    primary = sandbox.postgres("primary")
    settings = env.settings
    return BackupManager(
        config={
            "db_host": primary.host,
            "db_port": primary.port,  # the sandbox's port; the seed's host uses 5432
            "db_name": "litper",
            "backup_bucket": settings.bucket("us-east-1"),
            "retention": {"daily": 7, "weekly": 4, "monthly": 12},
        },
        settings=settings,
    )


def test_backup_manager_examples_with_the_seeds_names(
    backup_env: BackupEnv, sandbox: Sandbox
) -> None:
    manager = seed_manager(backup_env, sandbox)
    taken = asyncio.run(manager.backup_postgresql_full())
    assert taken["status"] == "verified" and taken["backup_file"].startswith("postgresql_full_")
    deployment = backup_env.deployment()
    for when in (MORNING, AFTERNOON, NIGHT):
        run_backup(deployment, "postgresql_full", when)

    # A date-only name: the newest verified backup of that day in Bogota (the 22:00 one, whose
    # UTC name is already on the 5th).
    by_day = asyncio.run(manager.verify_backup("postgresql_full", "postgresql_full_20250304.dump"))
    assert by_day["valid"] is True, by_day
    assert by_day["file"] == "postgresql_full_20250305_030000.dump"
    assert "date-only" in by_day["resolved"] and "America/Bogota" in by_day["resolved"]
    # A local-time name: 03:00 Bogota is the backup named 08:00 UTC.
    local = asyncio.run(
        manager.verify_backup("postgresql_full", "postgresql_full_20250304_030000.dump")
    )
    assert local["valid"] is True and local["file"] == "postgresql_full_20250304_080000.dump"
    assert "local time" in local["resolved"]
    # The stored (UTC) name itself resolves to itself, and says nothing more.
    exact = asyncio.run(
        manager.verify_backup("postgresql_full", "postgresql_full_20250304_200000.dump")
    )
    assert exact["file"] == "postgresql_full_20250304_200000.dump" and "resolved" not in exact
    # A day without backups is a clear error naming the day and zone.
    missing = run_dr("verify", "postgresql_full", "postgresql_full_20250306.dump")
    assert missing.returncode != 0
    assert "2025-03-06 (America/Bogota)" in json.loads(missing.stdout)["error"]

    # `dr verify` and `dr restore` take the same names.
    cli = run_dr("verify", "postgresql_full", "postgresql_full_20250304.dump")
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["file"] == "postgresql_full_20250305_030000.dump"
    with scratch_database(sandbox) as target:
        restored = run_dr(
            "restore",
            "--backup-file",
            "postgresql_full_20250304_030000.dump",
            "--target-db",
            target,
        )
        assert restored.returncode == 0, restored.stderr
        answer = json.loads(restored.stdout)
        assert answer["backup_file"] == "postgresql_full_20250304_080000.dump"
        assert answer["counts_match"] is True and "local time" in answer["resolved"]

    # restore_postgresql(backup_file=<date-only>) and restore_postgresql() as the seed calls them.
    with scratch_database(sandbox) as target:
        by_name = asyncio.run(
            manager.restore_postgresql(
                backup_file="postgresql_full_20250304.dump", target_db=target
            )
        )
        assert by_name["backup_file"] == "postgresql_full_20250305_030000.dump"
        assert by_name["counts_match"] is True and by_name["resolved"]
    with scratch_database(sandbox, "litper_restored"):
        newest = asyncio.run(manager.restore_postgresql())
        assert newest["target_db"] == "litper_restored" and newest["counts_match"] is True
        # The newest by recorded start time (never by name): the last one taken.
        assert newest["backup_file"] == "postgresql_full_20250305_030000.dump"

    # cleanup_old_backups(): the seed's three keys first, then the rest.
    cleaned = asyncio.run(manager.cleanup_old_backups(dry_run=True))
    assert list(cleaned)[:3] == ["daily", "weekly", "monthly"], list(cleaned)
    assert all(isinstance(cleaned[key], int) for key in ("daily", "weekly", "monthly"))


def test_check_health_in_the_seeds_shape_and_words(
    sandbox: Sandbox, sandbox_env: dict[str, str]
) -> None:
    config = yaml.safe_load(sandbox.config_file.read_text())
    orchestrator = FailoverOrchestrator("us-east-1", "us-west-2", config)
    health = asyncio.run(orchestrator.check_health())
    assert {"primary", "secondary", "replication_lag_seconds"} <= set(health)
    assert {k: health["primary"][k] for k in ("database", "redis", "services")} == {
        "database": "healthy",
        "redis": "healthy",
        "services": "healthy",
    }
    assert {k: health["secondary"][k] for k in ("database", "redis", "services")} == {
        "database": "healthy",
        "redis": "healthy",
        "services": "standby",
    }
    # The detail stays, under keys of its own.
    assert health["secondary"]["database_state"] == "streaming"
    assert health["secondary"]["redis_state"] == "replicating"
    assert isinstance(health["replication_lag_seconds"], float)


def test_runbook_command_without_arguments_needs_a_terminal() -> None:
    # A script or a pipe: nobody to ask, so a usage error that says so (exit code 2).
    result = run_dr(module="disaster_recovery.failover", stdin="", timeout=60)
    assert result.returncode == 2, result
    assert "--reason is required when not run from a terminal" in result.stderr
    assert json.loads(result.stdout)["exit_code"] == 2
    assert "--reason is required" in json.loads(result.stdout)["reason"]


def test_runbook_command_asks_for_the_reason_and_shows_the_plan_first(
    sandbox: Sandbox, sandbox_env: dict[str, str]
) -> None:
    # On a terminal: the reason is asked, the dry-run plan shown, then DECIDE asks to proceed;
    # "no" aborts and changes nothing.
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "disaster_recovery.failover"],
        stdin=terminal,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    os.close(terminal)
    try:
        os.write(controller, b"primary unreachable (runbook test)\nno\n")
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        os.close(controller)
    assert proc.returncode == 6, stderr  # aborted
    assert "Reason for the failover" in stderr
    plan_at = stderr.index("The plan (a dry run")
    prompt_at = stderr.index("Type 'yes' to approve")
    assert plan_at < stderr.index('"status": "dry_run"') < prompt_at, stderr
    result = json.loads(stdout)  # one JSON result on stdout: the real run's
    assert (
        result["status"] == "aborted" and result["reason"] == "primary unreachable (runbook test)"
    )
    time.sleep(0.1)
    assert db.is_in_recovery(sandbox.postgres("standby"))
