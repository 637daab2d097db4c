"""The logical backup library without Airflow: the seed API (BackupManager), the CLI, restores,
the layered checks, replication modes, retention cleanup against the buckets, argument builders."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from backup_support import BackupEnv, row_counts, scratch_database, settled, unique_time
from helpers import run_dr

from disaster_recovery import BackupManager
from disaster_recovery.backup.logical import dump_to_s3, run_backup
from disaster_recovery.backup.replicate import replicate
from disaster_recovery.backup.verify import check_checksum, check_readable
from disaster_recovery.errors import (
    ConfigError,
    ConflictError,
    UnavailableError,
    VerificationError,
)
from disaster_recovery.postgres import db, pgdump
from disaster_recovery.restore.logical import restore_logical
from dr_sandbox import Sandbox


@pytest.fixture
def env(backup_env: BackupEnv) -> BackupEnv:
    return backup_env


# -- argument builders and the table of contents (no server) ------------------------------------


def test_compression_specs() -> None:
    assert pgdump.Compression.parse("gzip:1").flag() == "gzip:1"
    assert pgdump.Compression.parse("none").flag() == "none"
    assert pgdump.Compression.parse("ZSTD:3").flag() == "zstd:3"
    with pytest.raises(ConfigError, match=r"backup\.compression"):
        pgdump.Compression.parse("brotli:5")


def test_dump_args_use_the_snapshot_and_never_prompt() -> None:
    args = pgdump.dump_args(compression=pgdump.Compression.parse("gzip:1"), snapshot="00000003-1")
    assert args[0].endswith("pg_dump")
    assert {
        "--format=custom",
        "--compress=gzip:1",
        "--no-password",
        "--snapshot=00000003-1",
    } <= set(args)
    assert not any("password=" in a.lower() for a in args)


def test_parallel_restore_needs_a_file() -> None:
    with pytest.raises(ConfigError, match="parallel"):
        pgdump.restore_args(jobs=4, dbname="x")
    assert "--jobs=4" in pgdump.restore_args(jobs=4, dbname="x", archive="/tmp/a.dump")


def test_missing_tables_needs_definition_and_data() -> None:
    listing = "\n".join(
        [
            "219; 1259 16385 TABLE public customers postgres",
            "2592; 0 16385 TABLE DATA public customers postgres",
            "220; 1259 16399 TABLE public orders postgres",
        ]
    )
    assert pgdump.missing_tables(listing, ["public.customers", "public.orders", "public.x"]) == [
        "public.orders",
        "public.x",
    ]


# -- the seed API ---------------------------------------------------------------------------------


def test_backup_manager_seed_api_end_to_end(env: BackupEnv, sandbox: Sandbox) -> None:
    endpoint = sandbox.postgres("primary")
    manager = BackupManager(
        config={
            "db_host": endpoint.host,
            "db_port": endpoint.port,
            "db_name": "litper",
            "backup_bucket": env.settings.bucket("us-east-1"),
            "retention": {"daily": 7, "weekly": 4, "monthly": 12},
        }
    )
    backup = asyncio.run(manager.backup_postgresql_full())
    assert backup["status"] == "verified" and backup["verified"]
    assert all(backup["checks"].values()) and len(backup["checks"]) == 4

    verified = asyncio.run(manager.verify_backup("postgresql_full", backup["backup_file"]))
    assert verified["valid"] is True
    assert {"checksum", "pg_restore_list", "full_read", "replica"} <= set(verified)

    listed = asyncio.run(manager.list_backups())
    assert [b["backup_file"] for b in listed["postgresql_full"]] == [backup["backup_file"]]

    with scratch_database(sandbox) as target:
        restored = asyncio.run(manager.restore_postgresql(target_db=target))
        assert restored["backup_file"] == backup["backup_file"]
        assert restored["counts_match"] and restored["differences"] == {}
        # The restore holds exactly the dump's snapshot (counts_match above); the source has
        # moved on only in its live heartbeat table.
        assert settled(row_counts(sandbox, target)) == settled(row_counts(sandbox, "litper"))

    assert asyncio.run(manager.cleanup_old_backups(dry_run=True))["daily"] == 0


def test_verify_backup_reports_a_failed_check_and_marks_the_backup_failed(env: BackupEnv) -> None:
    manifest = run_backup(env.deployment(), "postgresql_full", unique_time())
    store = env.stores().primary
    data = bytearray(store.get_bytes(manifest.key))
    data[-100] ^= 0xFF
    store.put_bytes(manifest.key, bytes(data))
    result = asyncio.run(
        BackupManager(deployment=env.deployment()).verify_backup("postgresql_full", manifest.file)
    )
    assert result["valid"] is False
    assert result["checksum"]["ok"] is False and "SHA-256" in result["checksum"]["error"]
    assert env.catalog().load(manifest.file).status == "failed"


def test_seed_config_errors_are_reported_together() -> None:
    with pytest.raises(ConfigError, match=r"(?s)2 problem.*db_hots.*retention.yearly"):
        BackupManager(config={"db_hots": "x", "retention": {"yearly": 3}})


# -- layered checks -------------------------------------------------------------------------------


def test_full_read_catches_a_truncation_that_the_table_of_contents_hides(env: BackupEnv) -> None:
    deployment = env.deployment()
    dumped = dump_to_s3(deployment, "postgresql_full", unique_time())
    store, catalog = env.stores().primary, env.catalog()
    cut = store.get_bytes(dumped["key"])
    cut = cut[: int(len(cut) * 0.9)]
    store.put_bytes(dumped["key"], cut)
    # Make the manifest agree with the cut object: only reading the data can tell.
    manifest = catalog.load(dumped["file"])
    catalog.save(
        manifest.model_copy(
            update={"sha256": hashlib.sha256(cut).hexdigest(), "size_bytes": len(cut)}
        )
    )
    assert check_checksum(deployment, "postgresql_full", dumped["file"])["ok"]
    with pytest.raises(VerificationError, match="full read") as caught:
        check_readable(deployment, "postgresql_full", dumped["file"])
    assert caught.value.check == "full_read"
    assert catalog.load(dumped["file"]).status == "failed"


def test_native_replication_waits_then_checks(env: BackupEnv) -> None:
    env.write_config(storage={"replication": "native", "replication_wait": "3s"})
    deployment = env.deployment()
    dumped = dump_to_s3(deployment, "postgresql_full", unique_time())
    with pytest.raises(VerificationError, match="did not deliver"):
        replicate(deployment, "postgresql_full", dumped["file"])
    # S3 replication (played by a thread here: moto does not replicate) delivers it late; the
    # wait is generous so a loaded machine cannot turn the late delivery into a miss.
    env.write_config(storage={"replication": "native", "replication_wait": "60s"})
    deployment = env.deployment()
    stores = env.stores()
    dumped2 = dump_to_s3(deployment, "postgresql_full", unique_time())
    delivery = threading.Timer(1.0, stores.secondary.copy_from, (stores.primary, dumped2["key"]))
    delivery.start()
    result = replicate(deployment, "postgresql_full", dumped2["file"])
    delivery.join()
    assert result["ok"] and result["mode"] == "native" and result["copied"] is False


def test_dump_from_the_standby(env: BackupEnv, sandbox: Sandbox) -> None:
    env.write_config(dump_from="standby")
    manifest = run_backup(env.deployment(), "postgresql_full", unique_time())
    assert manifest.verified
    assert manifest.source["role"] == "standby"  # type: ignore[attr-defined]
    assert manifest.source["host"].endswith(str(sandbox.ports.pg_standby))  # type: ignore[attr-defined]
    recorded = manifest.table_counts  # type: ignore[attr-defined]
    assert settled(recorded) == settled(row_counts(sandbox, "litper"))
    assert recorded["dr.heartbeat"] <= row_counts(sandbox, "litper")["dr.heartbeat"]


def test_a_standby_behind_the_primary_is_not_dumped(env: BackupEnv, sandbox: Sandbox) -> None:
    """Replay paused on the standby while the primary commits: the dump is refused (naming the
    lag and the threshold) instead of publishing a backup without the latest commits."""
    env.write_config(dump_from="standby")
    policy = yaml.safe_load(env.config_file.read_text())
    policy["thresholds"] = {**policy.get("thresholds", {}), "replication_lag": "1s"}
    env.config_file.write_text(yaml.safe_dump(policy))
    primary = sandbox.postgres("primary")
    with db.connect(sandbox.postgres("standby")) as standby:
        standby.execute("SELECT pg_wal_replay_pause()")
        try:
            time.sleep(1.5)
            with db.connect(primary) as conn:
                conn.execute("CREATE TABLE dr_lag_probe AS SELECT 1 AS n")
            with pytest.raises(UnavailableError, match=r"behind the primary .*replication_lag 1 s"):
                run_backup(env.deployment(), "postgresql_full", unique_time())
            assert not env.stores().catalog.manifests(["postgresql_full"])
        finally:
            standby.execute("SELECT pg_wal_replay_resume()")
            with db.connect(primary) as conn:
                conn.execute("DROP TABLE IF EXISTS dr_lag_probe")


# -- restore --------------------------------------------------------------------------------------


def test_restore_refuses_a_non_empty_target_unless_replaced(
    env: BackupEnv, sandbox: Sandbox
) -> None:
    deployment = env.deployment()
    manifest = run_backup(deployment, "postgresql_full", unique_time())
    with scratch_database(sandbox) as target:
        with db.connect(sandbox.postgres("primary", "postgres")) as conn:
            conn.execute(f'CREATE DATABASE "{target}"')
        with db.connect(sandbox.postgres("primary", target)) as conn:
            conn.execute("CREATE TABLE precious (id int)")
            conn.execute("INSERT INTO precious VALUES (1)")
        with pytest.raises(ConflictError, match=rf"{target}.*not empty.*replace"):
            restore_logical(deployment, target_db=target, backup_file=manifest.file)
        assert row_counts(sandbox, target) == {"public.precious": 1}  # untouched

        result = restore_logical(
            deployment, target_db=target, backup_file=manifest.file, replace=True, jobs=1
        )
        assert result["target_prepared"] == "replaced" and result["counts_match"]
        assert "public.precious" not in row_counts(sandbox, target)


def test_restore_refuses_an_unverified_backup(env: BackupEnv) -> None:
    dumped = dump_to_s3(env.deployment(), "postgresql_full", unique_time())
    with pytest.raises(VerificationError, match="not verified"):
        restore_logical(env.deployment(), target_db="never_created", backup_file=dumped["file"])


def test_restore_reports_count_differences(env: BackupEnv, sandbox: Sandbox) -> None:
    deployment = env.deployment()
    manifest = run_backup(deployment, "postgresql_full", unique_time())
    counts = dict(manifest.table_counts)  # type: ignore[attr-defined]
    counts["public.orders"] += 1
    env.catalog().save(manifest.model_copy(update={"table_counts": counts}))
    with scratch_database(sandbox) as target:
        result = restore_logical(deployment, target_db=target)
    assert result["counts_match"] is False
    assert result["differences"] == {
        "public.orders": {
            "expected": counts["public.orders"],
            "restored": counts["public.orders"] - 1,
        }
    }


# -- retention against the buckets ----------------------------------------------------------------


def test_cleanup_deletes_old_backups_in_both_regions_and_dry_run_deletes_nothing(
    env: BackupEnv,
) -> None:
    env.write_config()
    deployment = env.deployment()
    manifests = [run_backup(deployment, "postgresql_full", unique_time()) for _ in range(3)]
    # Backdate two of them (the recorded start time is what counts, never the name).
    catalog = env.catalog()
    now = datetime.now(UTC)
    for age, manifest in zip((30, 20, 1), manifests, strict=True):
        catalog.save(manifest.model_copy(update={"started_at": now - timedelta(days=age)}))
    policy_env = {"retention": {"daily": 1}}
    manager = BackupManager(config=policy_env, settings=env.settings)
    dry = asyncio.run(manager.cleanup_old_backups(dry_run=True))
    assert dry["daily"] == 2 and dry["dry_run"] is True
    assert len(env.object_keys()) == 6 and len(env.object_keys(secondary=True)) == 6
    done = asyncio.run(manager.cleanup_old_backups())
    assert {d["file"] for d in done["deleted"]} == {manifests[0].file, manifests[1].file}
    assert (done["daily"], done["weekly"], done["monthly"]) == (2, 0, 0)
    kept = manifests[2]
    assert env.object_keys() == sorted([kept.key, kept.key + ".manifest.json"])
    assert env.object_keys(secondary=True) == sorted([kept.key, kept.key + ".manifest.json"])
    assert asyncio.run(manager.cleanup_old_backups())["daily"] == 0


def test_a_backup_held_only_in_the_other_region_is_restored_and_counted_by_retention(
    env: BackupEnv, sandbox: Sandbox
) -> None:
    """One catalog across both regions: a backup that us-east-1 lacks (taken in us-west-2
    during an outage) is the newest restore candidate, and retention sees it and lets it go
    from us-west-2 once the policy does."""
    env.write_config()
    deployment = env.deployment()
    stores = env.stores()
    old, kept, west_only = (
        run_backup(deployment, "postgresql_full", unique_time()) for _ in range(3)
    )
    stores.primary.delete([west_only.manifest_key, west_only.key])
    with scratch_database(sandbox) as target:
        restored = restore_logical(deployment, target_db=target)
    assert (restored["backup_file"], restored["region"]) == (west_only.file, "us-west-2")
    with scratch_database(sandbox) as target:
        forced = restore_logical(deployment, target_db=target, region="us-east-1")
    assert (forced["backup_file"], forced["region"]) == (kept.file, "us-east-1")

    now = datetime.now(UTC)
    for catalog in (stores.catalog, stores.secondary_catalog):
        for manifest, age in ((old, 30), (kept, 0), (west_only, 25)):
            if catalog.find(manifest.file):
                catalog.save(manifest.model_copy(update={"started_at": now - timedelta(days=age)}))
    manager = BackupManager(config={"retention": {"daily": 1}}, settings=env.settings)
    done = asyncio.run(manager.cleanup_old_backups())
    assert {d["file"] for d in done["deleted"]} == {old.file, west_only.file}
    expected = sorted([kept.key, kept.manifest_key])
    assert env.object_keys() == expected and env.object_keys(secondary=True) == expected


# -- the CLI --------------------------------------------------------------------------------------


def test_cli_backup_list_verify_restore(env: BackupEnv, sandbox: Sandbox) -> None:
    taken = run_dr("backup", "weekly")
    assert taken.returncode == 0, taken.stderr
    result = json.loads(taken.stdout)
    assert result["status"] == "verified" and result["backup_type"] == "postgresql_weekly"
    assert "pg_restore" in taken.stderr  # progress lines on stderr

    listed = json.loads(run_dr("list").stdout)
    assert [b["backup_file"] for b in listed["postgresql_weekly"]] == [result["backup_file"]]
    assert listed["postgresql_weekly"][0]["replicated_to"] == ["us-west-2"]

    verified = run_dr("verify", "postgresql_weekly", result["backup_file"])
    assert verified.returncode == 0 and json.loads(verified.stdout)["valid"] is True

    missing = run_dr("verify", "postgresql_weekly", "postgresql_weekly_20200101_000000.dump")
    assert missing.returncode != 0 and "no manifest" in missing.stdout

    with scratch_database(sandbox) as target:
        restored = run_dr(
            "restore",
            "--backup-file",
            result["backup_file"],
            "--backup-type",
            "postgresql_weekly",
            "--target-db",
            target,
        )
        assert restored.returncode == 0, restored.stderr
        assert json.loads(restored.stdout)["counts_match"] is True
        again = run_dr("restore", "--backup-file", result["backup_file"], "--target-db", target)
        assert again.returncode != 0 and "not empty" in json.loads(again.stdout)["error"]

    cleanup = run_dr("cleanup", "--dry-run")
    assert cleanup.returncode == 0 and json.loads(cleanup.stdout)["dry_run"] is True
