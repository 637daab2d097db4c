"""The loss of a whole region, its S3 included (issue 11): archiving goes on in the survivor,
backups land there and verify, the WAL DAG says what the lost region lacks, and when it returns
the gaps close, the catalogs agree and a backup taken during the outage restores after failback.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from backup_support import unencrypted_objects
from helpers import sandbox_environment, slack_messages
from pitr_support import switch_and_wait_archived

from disaster_recovery.backup import physical
from disaster_recovery.backup.logical import run_backup
from disaster_recovery.backup.replica_debt import fill_owed_replicas, replication_debt
from disaster_recovery.catalog.listing import Catalog
from disaster_recovery.clients.s3 import ObjectStore, region_lost
from disaster_recovery.config.endpoints import Deployment
from disaster_recovery.config.model import load_settings
from disaster_recovery.failover.failback import run_failback
from disaster_recovery.failover.plan import Plan
from disaster_recovery.failover.steps import run_failover
from disaster_recovery.manager import list_backups
from disaster_recovery.monitoring import topology
from disaster_recovery.postgres import db
from disaster_recovery.restore.logical import restore_logical
from disaster_recovery.wal.archive import RegionsDown, WalArchive
from disaster_recovery.wal.continuity import check_archive
from disaster_recovery.wal.replica_debt import fill_missing, replica_debt
from dr_sandbox import Sandbox

EAST, WEST = "us-east-1", "us-west-2"


def _deployment() -> Deployment:
    return Deployment(load_settings())


def _archiver(endpoint: Any) -> tuple[int, int]:
    with db.connect(endpoint, "postgres") as conn:
        row = conn.execute("SELECT archived_count, failed_count FROM pg_stat_archiver").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _ready_files(box: Sandbox, role: str) -> list[str]:
    status = Path(box.instance(role).data_dir) / "pg_wal" / "archive_status"
    return sorted(p.name for p in status.glob("*.ready"))


def _wal_dag_states() -> dict[str, Any]:
    from airflow.models import DagBag

    bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags"))
    run = bag.dags["postgresql_wal_archive"].test(logical_date=None)
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def _catalog(deployment: Deployment, region: str) -> Catalog:
    settings = deployment.settings
    store = ObjectStore(deployment.aws(region), settings.bucket(region))
    return Catalog(store, settings.storage.prefix)


def test_losing_us_east_1_with_its_s3(make_sandbox, airflow_db: None) -> None:  # type: ignore[no-untyped-def]
    box: Sandbox = make_sandbox(scale=0.1)
    box.up()
    with sandbox_environment(box):
        settings = load_settings()
        east_store = ObjectStore(box.aws(EAST), settings.bucket(EAST))
        before = run_backup(_deployment(), "postgresql_full")
        assert before.bucket == settings.bucket(EAST)

        # -- the region is lost, S3 included ----------------------------------------------
        lost = box.kill_region(EAST)
        assert "s3" in lost["killed"] and lost["s3_objects_kept"] > 0
        assert region_lost(east_store, "probe") is not None
        result = run_failover(
            Plan(_deployment(), EAST, WEST, accept_data_loss=True), "region loss", "pytest"
        )
        # Every step ran, but STOP WRITES could not reach the lost region's application or
        # Redis: the result says so instead of "completed".
        assert result["status"] == "completed_with_warnings", result.get("error")
        assert [w.split(":", 1)[0] for w in result["warnings"]] == ["stop_writes"] * 2
        assert "application not made read-only: failed" in result["warnings"][0]
        assert "Redis writes not paused: failed" in result["warnings"][1]
        promote = next(s for s in result["steps"] if s["step"] == "promote")
        assert promote["topology"]["missing_in"] == [EAST]
        assert topology.read_record(_deployment()).primary_region == WEST

        # -- archiving goes on in the survivor, pg_wal stays bounded ------------------------
        survivor = box.postgres("standby")
        with db.connect(survivor) as conn:
            conn.execute("CREATE TABLE during_outage (id int PRIMARY KEY, note text)")
        archived_before, failed_before = _archiver(survivor)
        segments = []
        for batch in range(6):
            with db.connect(survivor) as conn:
                conn.execute(
                    "INSERT INTO during_outage SELECT g, repeat('x', 200) "
                    "FROM generate_series(%s::int, %s::int) g",
                    (batch * 1000 + 1, batch * 1000 + 1000),
                )
            segments.append(switch_and_wait_archived(survivor))
        archived_after, failed_after = _archiver(survivor)
        assert archived_after >= archived_before + 6
        assert failed_after == failed_before  # one region stored it: never a failure
        assert len(_ready_files(box, "standby")) <= 1  # nothing piles up in pg_wal
        archive = WalArchive.for_deployment(_deployment())
        debt = replica_debt(archive)
        assert debt["behind"][EAST]["files"] >= 6
        assert EAST in debt["unreadable"]

        # -- backups land in us-west-2 and verify ------------------------------------------
        full = run_backup(_deployment(), "postgresql_full")
        assert full.verified and full.bucket == settings.bucket(WEST)
        assert (full.replica_owed or {}).keys() == {EAST}
        assert (full.model_extra or {})["table_counts"]["public.during_outage"] == 6000
        base = physical.backup_and_verify(_deployment(), "auto")
        assert (base["backup_type"], base["timeline"], base["replicated_to"]) == (
            "postgresql_base",
            2,
            [],
        )
        incremental = physical.backup_and_verify(_deployment(), "incremental")
        assert incremental["parent"] == base["backup_file"]
        assert replication_debt(_deployment())[EAST]["backups"] == 3
        # One catalog across both regions: the listing works with us-east-1 gone.
        listed = {e["backup_file"]: e for e in list_backups(_deployment())["postgresql_full"]}
        assert set(listed[full.file]["locations"]) == {WEST}
        assert set(listed[before.file]["locations"]) == {WEST}  # its replica, read in us-west-2

        # -- the WAL DAG: no gap, the lost region's lack is WALReplicaBehind (High) -----------
        report = check_archive(_deployment())
        assert not report.gap, report.to_dict()
        assert report.owed[EAST] >= 6 and EAST in report.unreachable
        states = _wal_dag_states()
        assert states["fill_replicas"] == "failed"
        assert states["check_continuity"] == "success"
        behind = slack_messages(box, "WALReplicaBehind")
        assert behind and behind[-1]["severity"] == "High"
        assert "us-east-1's WAL archive lacks" in behind[-1]["text"]

        # -- the region returns with its data; the gaps close -------------------------------
        revived = box.revive_region(EAST)
        assert revived["s3_objects_restored"] == lost["s3_objects_kept"]
        assert unencrypted_objects(box.store(EAST)) == []  # back as they were written
        assert _catalog(_deployment(), EAST).find(before.file).verified  # type: ignore[union-attr]
        # The topology record written while us-east-1 was down is copied there when read.
        record = topology.read_record(_deployment())
        assert (record.generation, len(record.locations)) == (1, 2)
        assert ObjectStore(box.aws(EAST), settings.bucket(EAST)).exists(
            topology.generation_key(_deployment(), 1)
        )
        # The survivor's archiver retries a failed region only after REGION_RETRY_SECONDS
        # (segments archived meanwhile are owed too, and filled by the next WAL DAG run): let
        # that time pass, and see the archiver reach us-east-1 again before filling.
        RegionsDown(Path(box.instance("standby").data_dir) / "pg_wal").clear(EAST)
        after_revive = switch_and_wait_archived(survivor)
        filled = fill_missing(WalArchive.for_deployment(_deployment()))
        assert set(segments) <= set(filled["copied"][EAST])
        assert filled["behind"] == {}
        copies = fill_owed_replicas(_deployment())
        assert set(copies["copied"]) == {full.file, base["backup_file"], incremental["backup_file"]}
        assert replication_debt(_deployment()) == {}
        archive = WalArchive.for_deployment(_deployment())
        for segment in [*segments, after_revive]:
            assert archive.store(EAST).exists(archive.key(segment))
        states = _wal_dag_states()
        assert states["fill_replicas"] == "success"
        report = check_archive(_deployment())
        assert not report.gap and report.owed == {} and report.unreachable == {}

        # -- the catalogs agree ---------------------------------------------------------------
        def verified(region: str) -> set[str]:
            catalog = _catalog(_deployment(), region)
            types = ["postgresql_full", "postgresql_base", "postgresql_incremental"]
            return {m.file for m in catalog.manifests(types) if m.verified}

        assert verified(EAST) == verified(WEST)
        listed = {e["backup_file"]: e for e in list_backups(_deployment())["postgresql_full"]}
        assert set(listed[full.file]["locations"]) == {EAST, WEST}  # counted once, two places
        assert {full.file, base["backup_file"], incremental["backup_file"]} <= verified(EAST)

        # -- failback; the backup taken during the outage restores in us-east-1 ---------------
        back = run_failback(Plan(_deployment(), WEST, EAST), "region is back", "pytest")
        assert back["status"] == "completed", back.get("error")
        assert topology.read_record(_deployment()).primary_region == EAST
        target = f"outage_{secrets.token_hex(3)}"
        restored = restore_logical(_deployment(), target_db=target, backup_file=full.file)
        assert restored["counts_match"] is True
        assert restored["target"].endswith(f":{box.postgres('primary').port}")
        with db.connect(box.postgres("primary", target)) as conn:
            row = conn.execute("SELECT count(*) FROM during_outage").fetchone()
        assert row is not None and row[0] == 6000
