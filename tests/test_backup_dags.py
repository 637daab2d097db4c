"""The logical backup DAGs run with dag.test() against the sandbox: each tier end to end, the
faults the issue lists (nothing published, no open upload, the right alert), idempotent re-runs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backup_support import (
    BackupEnv,
    FailingS3Proxy,
    PgDumpKiller,
    restore_plain,
    row_counts,
    run_dag,
    scratch_database,
    task_states,
    unique_time,
)
from disaster_recovery import db, logical
from disaster_recovery.logical import run_file
from disaster_recovery.sandbox import Sandbox

pytestmark = pytest.mark.integration


@pytest.fixture
def env(sandbox: Sandbox, sandbox_env: dict[str, str], airflow_db: None, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[BackupEnv]:
    monkeypatch.setenv("DR_CONFIG", "")  # restored after the test; BackupEnv sets it
    backup_env = BackupEnv(sandbox, tmp_path)
    try:
        yield backup_env
    finally:
        backup_env.cleanup()


def published(env: BackupEnv, backup_type: str) -> list[str]:
    return [m.file for m in env.catalog().manifests([backup_type]) if m.verified]


def alerts_named(env: BackupEnv, name: str) -> list[dict[str, Any]]:
    return [a for a in env.new_alerts() if a.get("alert") == name]


def assert_alert(env: BackupEnv, name: str, *, tier: str, file: str, check: str, error_part: str) -> None:
    alerts = alerts_named(env, name)
    assert len(alerts) == 1, env.new_alerts()
    text = json.dumps(alerts[0])
    for part in (tier, file, check, error_part, "/log"):
        assert part in text, (part, text)
    assert alerts[0]["channel"] == "#alerts-critical"
    assert alerts[0]["severity"] == "Critical"


# -- each tier, end to end ---------------------------------------------------------------------


@pytest.mark.parametrize("backup_type", ["postgresql_full", "postgresql_weekly", "postgresql_monthly"])
def test_tier_dag_publishes_a_backup_that_restores_with_the_same_counts(
    env: BackupEnv, sandbox: Sandbox, backup_type: str, tmp_path: Path
) -> None:
    when = unique_time()
    dag_id = {"postgresql_full": "postgresql_backup_full", "postgresql_weekly": "postgresql_backup_weekly",
              "postgresql_monthly": "postgresql_backup_monthly"}[backup_type]
    dag_run = run_dag(dag_id, when)
    assert str(dag_run.state) == "success", task_states(dag_run)

    file = run_file(backup_type, when)
    manifest = env.catalog().load(file)
    assert manifest.verified
    assert set(manifest.verification.checks) == {"checksum", "pg_restore_list", "full_read", "replica"}
    assert manifest.key == f"{env.prefix}/{backup_type}/{when:%Y/%m/%d}/{file}"

    # Download it ourselves, recompute the SHA-256, and compare with the replica's.
    stores = env.stores()
    archive = tmp_path / file
    archive.write_bytes(stores.primary.get_bytes(manifest.key))
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == manifest.sha256
    assert archive.stat().st_size == manifest.size_bytes
    assert stores.secondary.digest(manifest.key).sha256 == manifest.sha256
    assert stores.secondary_catalog.load(file).verified

    source = row_counts(sandbox, "litper")
    assert manifest.table_counts == source  # type: ignore[attr-defined]
    with scratch_database(sandbox) as target:
        restore_plain(sandbox, archive, target)
        assert row_counts(sandbox, target) == source
    assert not alerts_named(env, "BackupFailed") and not alerts_named(env, "BackupVerificationFailed")


def test_rerunning_a_finished_run_changes_nothing(env: BackupEnv) -> None:
    when = unique_time()
    assert str(run_dag("postgresql_backup_full", when).state) == "success"
    stores = env.stores()
    file = run_file("postgresql_full", when)
    key = env.catalog().key_for(file)
    before = {k: stores.primary.head(k)["ETag"] for k in env.keys()}
    manifest_before = stores.primary.get_bytes(key + ".manifest.json")

    assert str(run_dag("postgresql_backup_full", when).state) == "success"
    assert {k: stores.primary.head(k)["ETag"] for k in env.keys()} == before
    assert stores.primary.get_bytes(key + ".manifest.json") == manifest_before
    assert published(env, "postgresql_full") == [file]


# -- faults: nothing published, no open upload, the right alert ------------------------------------


def test_pg_dump_killed_mid_stream_aborts_the_upload_and_alerts(env: BackupEnv, sandbox: Sandbox) -> None:
    env.write_config(compression="gzip:9")  # slower, so the kill lands mid-stream
    when = unique_time()
    with PgDumpKiller(sandbox, "litper") as killer:
        dag_run = run_dag("postgresql_backup_full", when)
    assert killer.killed == 1
    assert task_states(dag_run)["dump"] == "failed"
    assert env.keys() == [] and env.open_uploads() == []
    assert published(env, "postgresql_full") == []
    assert_alert(env, "BackupFailed", tier="postgresql_full", file=run_file("postgresql_full", when),
                 check="dump", error_part="pg_dump")
    assert "terminating connection" in json.dumps(alerts_named(env, "BackupFailed"))


def test_a_retry_that_succeeds_sends_no_alert(env: BackupEnv, sandbox: Sandbox) -> None:
    env.write_config(compression="gzip:9", task_retries=1, retry_delay="1s")
    when = unique_time()
    with PgDumpKiller(sandbox, "litper", times=1) as killer:
        dag_run = run_dag("postgresql_backup_full", when)
    assert killer.killed == 1
    assert str(dag_run.state) == "success", task_states(dag_run)
    assert published(env, "postgresql_full") == [run_file("postgresql_full", when)]
    assert env.open_uploads() == []
    assert env.new_alerts() == []


def test_s3_unreachable_fails_with_no_object(env: BackupEnv, sandbox: Sandbox,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    closed = {"conn_type": "aws", "login": "testing", "password": "testing",
              "extra": {"endpoint_url": "http://127.0.0.1:9", "region_name": "us-east-1"}}
    when = unique_time()
    with monkeypatch.context() as patch:
        patch.setenv("AIRFLOW_CONN_DR_AWS_PRIMARY", json.dumps(closed))
        dag_run = run_dag("postgresql_backup_full", when)
    assert task_states(dag_run)["dump"] == "failed"
    assert env.keys() == [] and env.open_uploads() == []
    assert_alert(env, "BackupFailed", tier="postgresql_full", file=run_file("postgresql_full", when),
                 check="dump", error_part="dr_aws_primary")


def test_s3_failing_mid_upload_leaves_no_object_and_no_open_upload(
    env: BackupEnv, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    env.write_config(compression="none", storage={"multipart_chunk_mib": 5})
    when = unique_time()
    with FailingS3Proxy(sandbox.ports.moto, budget=6 * 1024 * 1024) as proxy, monkeypatch.context() as patch:
        via_proxy = {"conn_type": "aws", "login": "testing", "password": "testing",
                     "extra": {"endpoint_url": f"http://127.0.0.1:{proxy.port}", "region_name": "us-east-1"}}
        patch.setenv("AIRFLOW_CONN_DR_AWS_PRIMARY", json.dumps(via_proxy))
        dag_run = run_dag("postgresql_backup_full", when)
    assert proxy.forwarded > 0 and proxy.failed_puts > 0  # some parts went through, then S3 failed
    assert task_states(dag_run)["dump"] == "failed"
    assert env.keys() == [] and env.open_uploads() == []
    assert_alert(env, "BackupFailed", tier="postgresql_full", file=run_file("postgresql_full", when),
                 check="dump", error_part="InternalError")
