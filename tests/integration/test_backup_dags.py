"""The logical backup DAGs run with dag.test() against the sandbox: each tier end to end, the
faults the issue lists (nothing published, no open upload, the right alert), idempotent re-runs."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from backup_support import (
    BackupEnv,
    FailingS3Proxy,
    PgDumpKiller,
    restore_plain,
    row_counts,
    scratch_database,
    unique_time,
)
from helpers import run_dag, task_states

from disaster_recovery.backup.logical import dump_to_s3, run_backup, run_file
from disaster_recovery.postgres import db
from dr_sandbox import Sandbox


@pytest.fixture
def env(backup_env: BackupEnv, airflow_db: None) -> BackupEnv:
    return backup_env


def published(env: BackupEnv, backup_type: str) -> list[str]:
    return [m.file for m in env.catalog().manifests([backup_type]) if m.verified]


def alerts_named(env: BackupEnv, name: str) -> list[dict[str, Any]]:
    return [a for a in env.new_alerts() if a.get("alert") == name]


def assert_alert(
    env: BackupEnv, name: str, *, tier: str, file: str, check: str, error_part: str
) -> None:
    alerts = alerts_named(env, name)
    assert len(alerts) == 1, env.new_alerts()
    text = json.dumps(alerts[0])
    for part in (tier, file, check, error_part, "try_number=", "Open in Airflow"):
        assert part in text, (part, text)
    # alerts.slack_channel is empty: the incoming webhook posts to its own channel, so the body
    # names none (the provider would warn that a webhook cannot choose one).
    assert "channel" not in alerts[0]
    assert alerts[0]["severity"] == "Critical"


# -- each tier, end to end ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "backup_type", ["postgresql_full", "postgresql_weekly", "postgresql_monthly"]
)
def test_tier_dag_publishes_a_backup_that_restores_with_the_same_counts(
    env: BackupEnv, sandbox: Sandbox, backup_type: str, tmp_path: Path
) -> None:
    when = unique_time()
    dag_id = {
        "postgresql_full": "postgresql_backup_full",
        "postgresql_weekly": "postgresql_backup_weekly",
        "postgresql_monthly": "postgresql_backup_monthly",
    }[backup_type]
    dag_run = run_dag(dag_id, when)
    assert str(dag_run.state) == "success", task_states(dag_run)

    file = run_file(backup_type, when)
    manifest = env.catalog().load(file)
    assert manifest.verified
    assert set(manifest.verification.checks) == {
        "checksum",
        "pg_restore_list",
        "full_read",
        "replica",
    }
    assert manifest.key == f"{env.prefix}/{backup_type}/{when:%Y/%m/%d}/{file}"

    # Download it ourselves, recompute the SHA-256, and compare with the replica's.
    stores = env.stores()
    archive = tmp_path / file
    archive.write_bytes(stores.primary.get_bytes(manifest.key))
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == manifest.sha256
    assert archive.stat().st_size == manifest.size_bytes
    assert stores.secondary.digest(manifest.key).sha256 == manifest.sha256
    assert stores.secondary_catalog.load(file).verified

    # dr.heartbeat gets a row a second from the demo application: since the dump it can only
    # have grown; every other table is still as the dump's snapshot saw it.
    source = row_counts(sandbox, "litper")
    recorded = dict(manifest.table_counts)  # type: ignore[attr-defined]
    recorded_heartbeats = recorded.pop("dr.heartbeat")
    assert recorded_heartbeats <= source.pop("dr.heartbeat")
    assert recorded == source
    with scratch_database(sandbox) as target:
        restore_plain(sandbox, archive, target)
        restored = row_counts(sandbox, target)
        assert restored.pop("dr.heartbeat") == recorded_heartbeats
        assert restored == source
    assert not alerts_named(env, "BackupFailed") and not alerts_named(
        env, "BackupVerificationFailed"
    )


def test_rerunning_a_finished_run_changes_nothing(env: BackupEnv) -> None:
    when = unique_time()
    assert str(run_dag("postgresql_backup_full", when).state) == "success"
    stores = env.stores()
    file = run_file("postgresql_full", when)
    key = env.catalog().key_for(file)
    before = {k: stores.primary.head(k)["ETag"] for k in env.object_keys()}
    manifest_before = stores.primary.get_bytes(key + ".manifest.json")

    assert str(run_dag("postgresql_backup_full", when).state) == "success"
    assert {k: stores.primary.head(k)["ETag"] for k in env.object_keys()} == before
    assert stores.primary.get_bytes(key + ".manifest.json") == manifest_before
    assert published(env, "postgresql_full") == [file]


# -- faults: nothing published, no open upload, the right alert ------------------------------------


def test_pg_dump_killed_mid_stream_aborts_the_upload_and_alerts(
    env: BackupEnv, sandbox: Sandbox
) -> None:
    env.write_config(compression="gzip:9")  # slower, so the kill lands mid-stream
    when = unique_time()
    with PgDumpKiller(sandbox, "litper") as killer:
        dag_run = run_dag("postgresql_backup_full", when)
    assert killer.killed == 1
    assert task_states(dag_run)["dump"] == "failed"
    assert env.object_keys() == [] and env.open_uploads() == []
    assert published(env, "postgresql_full") == []
    assert_alert(
        env,
        "BackupFailed",
        tier="postgresql_full",
        file=run_file("postgresql_full", when),
        check="dump",
        error_part="pg_dump exited 1",
    )


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


def test_s3_unreachable_fails_with_no_object(
    env: BackupEnv, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {"endpoint_url": "http://127.0.0.1:9", "region_name": "us-east-1"},
    }
    when = unique_time()
    with monkeypatch.context() as patch:
        patch.setenv("AIRFLOW_CONN_DR_AWS_PRIMARY", json.dumps(closed))
        dag_run = run_dag("postgresql_backup_full", when)
    assert task_states(dag_run)["dump"] == "failed"
    assert env.object_keys() == [] and env.open_uploads() == []
    assert_alert(
        env,
        "BackupFailed",
        tier="postgresql_full",
        file=run_file("postgresql_full", when),
        check="dump",
        error_part="dr_aws_primary",
    )


def test_s3_failing_mid_upload_leaves_no_object_and_no_open_upload(
    env: BackupEnv, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    env.write_config(compression="none", storage={"multipart_chunk_mib": 5})
    when = unique_time()
    with (
        FailingS3Proxy(sandbox.ports.moto, budget=6 * 1024 * 1024) as proxy,
        monkeypatch.context() as patch,
    ):
        via_proxy = {
            "conn_type": "aws",
            "login": "testing",
            "password": "testing",
            "extra": {"endpoint_url": f"http://127.0.0.1:{proxy.port}", "region_name": "us-east-1"},
        }
        patch.setenv("AIRFLOW_CONN_DR_AWS_PRIMARY", json.dumps(via_proxy))
        dag_run = run_dag("postgresql_backup_full", when)
    assert proxy.forwarded > 0 and proxy.failed_puts > 0  # some parts went through, then S3 failed
    assert task_states(dag_run)["dump"] == "failed"
    assert env.object_keys() == [] and env.open_uploads() == []
    assert_alert(
        env,
        "BackupFailed",
        tier="postgresql_full",
        file=run_file("postgresql_full", when),
        check="dump",
        error_part="InternalError",
    )


# -- damaged or foreign backups: the checks catch them, nothing is published -----------------------


@pytest.fixture
def existing_backup(env: BackupEnv) -> tuple[datetime, str]:
    """A dumped (not yet verified) backup for a run time; the DAG run for that time reuses it, so
    a test can damage it in between, as a storage fault would."""
    when = unique_time()
    dumped = dump_to_s3(env.deployment(), "postgresql_full", when)
    return when, dumped["key"]


def assert_not_published(env: BackupEnv, file: str) -> None:
    assert published(env, "postgresql_full") == []
    manifest = env.catalog().find(file)
    assert manifest is None or manifest.status == "failed"
    assert env.object_keys(secondary=True) == []


def test_flipped_byte_fails_the_checksum(
    env: BackupEnv, existing_backup: tuple[datetime, str]
) -> None:
    when, key = existing_backup
    store = env.stores().primary
    data = bytearray(store.get_bytes(key))
    data[len(data) // 2] ^= 0x01
    store.put_bytes(key, bytes(data))
    dag_run = run_dag("postgresql_backup_full", when)
    assert task_states(dag_run)["checksum"] == "failed"
    file = run_file("postgresql_full", when)
    assert_not_published(env, file)
    assert env.catalog().load(file).failed_check == "checksum"  # type: ignore[attr-defined]
    assert_alert(
        env,
        "BackupVerificationFailed",
        tier="postgresql_full",
        file=file,
        check="checksum",
        error_part="SHA-256",
    )


def test_truncated_object_fails_the_checksum(
    env: BackupEnv, existing_backup: tuple[datetime, str]
) -> None:
    when, key = existing_backup
    store = env.stores().primary
    data = store.get_bytes(key)
    store.put_bytes(key, data[: len(data) // 2])
    dag_run = run_dag("postgresql_backup_full", when)
    assert task_states(dag_run)["checksum"] == "failed"
    file = run_file("postgresql_full", when)
    assert_not_published(env, file)
    assert_alert(
        env,
        "BackupVerificationFailed",
        tier="postgresql_full",
        file=file,
        check="checksum",
        error_part="truncated",
    )


def test_object_replaced_by_another_databases_dump_fails_pg_restore_list(
    env: BackupEnv, sandbox: Sandbox, existing_backup: tuple[datetime, str]
) -> None:
    when, key = existing_backup
    store = env.stores().primary
    catalog = env.catalog()
    file = run_file("postgresql_full", when)
    with scratch_database(sandbox) as other:
        with db.connect(sandbox.postgres("primary", "postgres")) as conn:
            conn.execute(f'CREATE DATABASE "{other}"')
        with db.connect(sandbox.postgres("primary", other)) as conn:
            conn.execute("CREATE TABLE customers AS SELECT g AS id FROM generate_series(1, 100) g")
        foreign = pg_dump_bytes(sandbox, other)
    # The swap includes the manifest's checksum, so only the content checks can catch it.
    store.put_bytes(key, foreign)
    manifest = catalog.load(file)
    catalog.save(
        manifest.model_copy(
            update={"sha256": hashlib.sha256(foreign).hexdigest(), "size_bytes": len(foreign)}
        )
    )
    dag_run = run_dag("postgresql_backup_full", when)
    assert task_states(dag_run)["checksum"] == "success"
    assert task_states(dag_run)["verify"] == "failed"
    assert_not_published(env, file)
    assert_alert(
        env,
        "BackupVerificationFailed",
        tier="postgresql_full",
        file=file,
        check="pg_restore_list",
        error_part="public.orders",
    )


def test_missing_manifest_is_a_verification_failure_and_the_object_is_kept(
    env: BackupEnv, existing_backup: tuple[datetime, str]
) -> None:
    when, key = existing_backup
    store = env.stores().primary
    before = store.head(key)["ETag"]
    store.delete([key + ".manifest.json"])
    dag_run = run_dag("postgresql_backup_full", when)
    assert task_states(dag_run)["dump"] == "failed"
    assert store.head(key)["ETag"] == before  # never overwritten
    file = run_file("postgresql_full", when)
    assert_not_published(env, file)
    assert_alert(
        env,
        "BackupVerificationFailed",
        tier="postgresql_full",
        file=file,
        check="manifest",
        error_part="manifest is missing",
    )


def test_different_object_in_the_replica_bucket_is_never_overwritten(env: BackupEnv) -> None:
    when = unique_time()
    file = run_file("postgresql_full", when)
    key = env.catalog().key_for(file)
    env.stores().secondary.put_bytes(key, b"someone else's object")
    dag_run = run_dag("postgresql_backup_full", when)
    assert task_states(dag_run)["replicate"] == "failed"
    assert env.stores().secondary.get_bytes(key) == b"someone else's object"
    assert published(env, "postgresql_full") == []
    assert_alert(
        env,
        "BackupVerificationFailed",
        tier="postgresql_full",
        file=file,
        check="replica",
        error_part="not overwritten",
    )


def test_wrong_credentials_fail_at_once_naming_the_connection(
    env: BackupEnv, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = sandbox.postgres("primary")
    wrong = {
        "conn_type": "postgres",
        "host": endpoint.host,
        "port": endpoint.port,
        "login": endpoint.user,
        "password": "not-the-password",
        "schema": endpoint.dbname,
    }
    env.write_config(task_retries=3)  # a credentials error must not be retried
    when = unique_time()
    with monkeypatch.context() as patch:
        patch.setenv("AIRFLOW_CONN_DR_POSTGRES_PRIMARY", json.dumps(wrong))
        dag_run = run_dag("postgresql_backup_full", when)
    dump = next(ti for ti in dag_run.get_task_instances() if ti.task_id == "dump")
    assert str(dump.state) == "failed" and dump.try_number == 1
    assert env.object_keys() == [] and env.open_uploads() == []
    assert_alert(
        env,
        "BackupFailed",
        tier="postgresql_full",
        file=run_file("postgresql_full", when),
        check="dump",
        error_part="'dr_postgres_primary'",
    )
    assert "not-the-password" not in json.dumps(env.new_alerts())


def pg_dump_bytes(sandbox: Sandbox, dbname: str) -> bytes:
    from disaster_recovery.postgres import pgbin

    endpoint = sandbox.postgres("primary", dbname)
    completed = subprocess.run(
        [pgbin.program("pg_dump"), "-Fc", "--no-password"],
        env={**os.environ, **endpoint.libpq_env()},
        capture_output=True,
        check=True,
    )
    return completed.stdout


def test_cleanup_dag_applies_retention_and_dry_run_keeps_everything(env: BackupEnv) -> None:
    from datetime import UTC, timedelta

    deployment = env.deployment()
    old, new = (run_backup(deployment, "postgresql_weekly", unique_time()) for _ in range(2))
    catalog = env.catalog()
    now = datetime.now(UTC)
    catalog.save(old.model_copy(update={"started_at": now - timedelta(weeks=10)}))
    catalog.save(new.model_copy(update={"started_at": now - timedelta(weeks=9)}))
    weekly = {"schedule": "0 3 * * 1", "retention": {"max_age": "4w", "keep_last": 1}}
    env.write_config(tiers={"postgresql_weekly": weekly})
    keys_before = env.object_keys()

    dry = run_dag("postgresql_backup_cleanup", dry_run=True)
    assert str(dry.state) == "success"
    assert env.object_keys() == keys_before
    result = next(ti for ti in dry.get_task_instances()).xcom_pull(task_ids="apply_retention")
    assert result["dry_run"] is True and result["weekly"] == 1

    done = run_dag("postgresql_backup_cleanup", dry_run=False)
    assert str(done.state) == "success"
    # The older one went; the newest verified weekly stays although it is past max_age.
    assert env.object_keys() == sorted([new.key, new.key + ".manifest.json"])
    assert env.object_keys(secondary=True) == sorted([new.key, new.key + ".manifest.json"])
