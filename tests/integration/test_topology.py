"""Protection follows the primary (issue 11): the topology record, its check against the nodes,
backups after a planned failover, a backup that a failover deposed, and a split brain.

The judgement of the record against the nodes is pure and tested without servers; everything
else runs against a private sandbox (PostgreSQL primary + synchronous standby, moto, webhook).
"""

from __future__ import annotations

import json
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from backup_support import unique_time
from helpers import new_sandbox, sandbox_environment, slack_messages
from pitr_support import Ticker, rows_in, stop_restored, switch_and_wait_archived

from disaster_recovery.backup import physical
from disaster_recovery.backup.logical import dump_to_s3, publish, run_backup
from disaster_recovery.backup.replicate import replicate
from disaster_recovery.backup.stores import Stores
from disaster_recovery.backup.verify import check_checksum, check_readable
from disaster_recovery.clients.s3 import ObjectStore
from disaster_recovery.config.endpoints import ConnectionFields, Deployment
from disaster_recovery.config.model import Settings, load_settings
from disaster_recovery.errors import NotFoundError, UnavailableError, VerificationError
from disaster_recovery.failover.failback import run_failback
from disaster_recovery.failover.plan import Plan
from disaster_recovery.failover.steps import run_failover
from disaster_recovery.monitoring import topology
from disaster_recovery.monitoring.topology import NodeState, SplitBrain, Topology
from disaster_recovery.postgres import db
from disaster_recovery.restore.logical import restore_logical
from disaster_recovery.restore.pitr import restore_to_point_in_time
from dr_sandbox import Sandbox

EAST, WEST = "us-east-1", "us-west-2"


# -- the judgement, without servers ---------------------------------------------------------------


def _node(region: str, role: str) -> NodeState:
    flags = {
        "primary": (False, False),
        "fenced": (False, True),
        "standby": (True, False),
    }
    if role == "unreachable":
        return NodeState(region, f"node_{region}", "h:1", reachable=False, error="refused")
    in_recovery, read_only = flags[role]
    return NodeState(region, f"node_{region}", "h:1", True, in_recovery, read_only, 2, "7")


def _offline_deployment() -> Deployment:
    def lookup(conn_id: str) -> ConnectionFields:
        return ConnectionFields(conn_id=conn_id, host=conn_id, extra={"region_name": "x"})

    return Deployment(Settings(), lookup=lookup)


@pytest.mark.parametrize(
    ("record_primary", "east", "west", "outcome"),
    [
        (EAST, "primary", "standby", EAST),
        (WEST, "fenced", "primary", WEST),
        (WEST, "unreachable", "primary", WEST),
        (EAST, "primary", "primary", SplitBrain),
        (EAST, "fenced", "primary", SplitBrain),  # promoted without the record: disagreement
        (WEST, "primary", "standby", SplitBrain),
        (WEST, "primary", "unreachable", SplitBrain),  # the record's primary is gone, east writes
        (EAST, "standby", "standby", SplitBrain),
        (EAST, "unreachable", "standby", UnavailableError),
        (EAST, "fenced", "standby", UnavailableError),  # mid-failover: retry later
    ],
)
def test_judge_record_against_nodes(
    record_primary: str, east: str, west: str, outcome: Any
) -> None:
    deployment = _offline_deployment()
    standby = WEST if record_primary == EAST else EAST
    record = Topology(generation=3, primary_region=record_primary, standby_region=standby)
    nodes = {EAST: _node(EAST, east), WEST: _node(WEST, west)}
    if isinstance(outcome, str):
        checked = topology.judge(deployment, record, nodes)
        assert checked.primary.region == outcome
        assert checked.source()["topology_generation"] == 3
    else:
        with pytest.raises(outcome) as raised:
            topology.judge(deployment, record, nodes)
        if outcome is SplitBrain:
            assert "nothing is backed up" in str(raised.value) or "disagree" in str(raised.value)


def test_role_view_swaps_roles_but_keeps_places() -> None:
    deployment = _offline_deployment()
    west_primary = Topology(generation=1, primary_region=WEST, standby_region=EAST)
    view = topology.role_view(deployment, west_primary)
    assert view.settings.regions.primary == WEST
    # The node and the bucket of each place are unchanged; only "primary" moved.
    assert view.postgres("primary").conn_id == "dr_postgres_standby"
    assert topology.node_endpoint(view, EAST).conn_id == "dr_postgres_primary"
    assert topology.node_endpoint(view, WEST).conn_id == "dr_postgres_standby"
    assert view.aws(WEST).conn_id == "dr_aws_secondary"
    assert view.settings.bucket(WEST) == deployment.settings.bucket(WEST)
    same = Topology(generation=1, primary_region=EAST, standby_region=WEST)
    pinned = topology.role_view(deployment, same)
    assert pinned.settings == deployment.settings
    assert pinned.topology == same
    assert topology.role_view(view, west_primary) is view
    assert topology.following(view) is view  # a view keeps its generation
    # Seen from the other generation again, the view swaps back to the configured orientation.
    assert topology.role_view(view, same).settings == deployment.settings


# -- against a private sandbox ------------------------------------------------------------------


def _deployment() -> Deployment:
    return Deployment(load_settings())


def _alerts(box: Sandbox, name: str) -> list[dict[str, Any]]:
    return slack_messages(box, name)


def _rows(box: Sandbox, role: str, sql: str, dbname: str = "litper") -> Any:
    with db.connect(box.postgres(role, dbname)) as conn:
        row = conn.execute(sql).fetchone()
    return row[0] if row else None


@pytest.fixture(scope="module")
def failed_over() -> Iterator[dict[str, Any]]:
    """A sandbox with a ticker committing on us-east-1, a verified base backup on timeline 1,
    then a planned failover to us-west-2, the ticker going on there, and a table written on
    the new primary only."""
    box = new_sandbox(0.1, "dr-topology-")
    try:
        box.up()
        with sandbox_environment(box):
            east, west = box.postgres("primary"), box.postgres("standby")
            Ticker.prepare(east)
            before = topology.current_topology(_deployment())
            ticker = Ticker(east).start()
            time.sleep(0.5)
            base = physical.backup_and_verify(_deployment(), "base")
            time.sleep(0.6)
            ticker.stop()
            result = run_failover(Plan(_deployment(), EAST, WEST), "planned test", "pytest")
            assert result["status"] == "completed", result.get("error")
            after = Ticker(west).start(first_id=len(ticker.ticks) + 1)
            time.sleep(1.0)
            after.stop()
            ticks = Ticker(west, ticks=ticker.ticks + after.ticks)
            time.sleep(1.2)  # S3 LastModified has whole seconds
            switch_and_wait_archived(west)
            with db.connect(west) as conn:  # us-west-2's node
                conn.execute("CREATE TABLE after_failover (id int PRIMARY KEY, note text)")
                conn.execute(
                    "INSERT INTO after_failover SELECT g, 'written in us-west-2' "
                    "FROM generate_series(1, 250) g"
                )
            yield {
                "box": box,
                "before": before,
                "base": base,
                "failover": result,
                "ticks": ticks,
                "first_after": len(ticker.ticks),
            }
    finally:
        box.down(purge=True)


def test_failover_writes_the_record_in_both_regions(failed_over: dict[str, Any]) -> None:
    before: topology.Checked = failed_over["before"]
    assert (before.topology.generation, before.topology.primary_region) == (0, EAST)
    promote = next(s for s in failed_over["failover"]["steps"] if s["step"] == "promote")
    assert promote["topology"]["written"] is True
    assert promote["topology"]["missing_in"] == []
    checked = topology.current_topology(_deployment())
    record = checked.topology
    assert (record.generation, record.primary_region, record.standby_region) == (1, WEST, EAST)
    assert record.timeline == promote["timeline"] == 2
    assert len(record.locations) == 2  # both regions' buckets hold generation 1
    assert checked.nodes[EAST].role == "fenced"
    assert checked.nodes[WEST].role == "primary"
    assert record.system_identifier == checked.nodes[WEST].system_identifier
    # A re-run of PROMOTE does not bump the generation.
    again = topology.write_record(
        _deployment(),
        WEST,
        timeline=2,
        system_identifier=record.system_identifier,
        reason="re-run",
        written_by="pytest",
    )
    assert again["written"] is False
    assert topology.read_record(_deployment()).generation == 1


def _pitr(failed_over: dict[str, Any], index: int) -> dict[str, Any]:
    """Restore to just after tick ``index``: exactly ticks 0..index are there."""
    box: Sandbox = failed_over["box"]
    folder = Path(tempfile.mkdtemp(prefix="dr-pitr-", dir="/tmp")) / "data"
    target = failed_over["ticks"].pause_between(index)
    result = restore_to_point_in_time(_deployment(), target_dir=folder, target_time=target)
    try:
        assert rows_in(result["port"], box.postgres("standby")) == (index + 1, index + 1)
    finally:
        stop_restored(result)
    return result


def test_pitr_to_a_moment_after_the_failover(failed_over: dict[str, Any]) -> None:
    """From the base backup of timeline 1, recovery follows 00000002.history into timeline 2."""
    first_after = failed_over["first_after"]
    count = len(failed_over["ticks"].ticks)
    index = random.randrange(first_after, count - 1)
    result = _pitr(failed_over, index)
    assert result["plan"]["base"] == failed_over["base"]["backup_file"]
    assert result["plan"]["region"] == WEST  # the current primary's region first


def test_pitr_to_a_moment_before_the_failover(failed_over: dict[str, Any]) -> None:
    first_after = failed_over["first_after"]
    ticks = failed_over["ticks"].ticks
    base_end = datetime.fromisoformat(failed_over["base"]["finished_at"])
    window = [i for i in range(first_after - 1) if ticks[i].after > base_end]
    _pitr(failed_over, random.choice(window))


def test_full_backup_after_failover_comes_from_the_new_primary(
    failed_over: dict[str, Any],
) -> None:
    box: Sandbox = failed_over["box"]
    deployment = _deployment()
    settings = deployment.settings
    manifest = run_backup(deployment, "postgresql_full")
    assert manifest.verified
    # Stored in the current primary's region, replicated to the other.
    assert manifest.bucket == settings.bucket(WEST)
    assert set(manifest.replicas) == {EAST}
    source = (manifest.model_extra or {})["source"]
    assert source["region"] == WEST
    assert source["node"] == source["connection"] == "dr_postgres_standby"
    assert source["host"].endswith(f":{box.postgres('standby').port}")
    assert source["timeline"] == 2
    assert source["topology_generation"] == 1
    assert source["system_identifier"]
    assert (manifest.model_extra or {})["table_counts"]["public.after_failover"] == 250
    # The catalog in us-west-2 lists it; us-east-1 holds the published replica's manifest.
    stores = Stores.of(deployment)
    assert stores.primary.bucket == settings.bucket(WEST)
    assert stores.catalog.newest_verified("postgresql_full").file == manifest.file  # type: ignore[union-attr]
    assert stores.secondary_catalog.find(manifest.file).verified  # type: ignore[union-attr]

    # Restoring the newest full backup gives the rows written after the failover.
    target = f"restored_{secrets.token_hex(3)}"
    restored = restore_logical(deployment, target_db=target)
    assert restored["backup_file"] == manifest.file
    assert restored["counts_match"] is True
    assert restored["target"].endswith(f":{box.postgres('standby').port}")
    count = _rows(box, "standby", "SELECT count(*) FROM after_failover", dbname=target)
    assert count == 250


def test_physical_chain_starts_a_new_base_on_the_new_timeline(
    failed_over: dict[str, Any],
) -> None:
    deployment = _deployment()
    old_base = failed_over["base"]
    assert old_base["timeline"] == 1
    # The base from before the failover is on timeline 1: the hourly run takes a new base.
    assert physical.scheduled_kind(deployment) == "base"
    with pytest.raises(Exception, match="timeline 1, the primary is on timeline 2"):
        physical.take_incremental_backup(deployment)
    base = physical.backup_and_verify(deployment, "auto")
    assert (base["backup_type"], base["timeline"]) == ("postgresql_base", 2)
    assert base["replicated_to"] == [EAST]
    assert physical.scheduled_kind(deployment) == "incremental"
    incremental = physical.backup_and_verify(deployment, "auto")
    assert incremental["backup_type"] == "postgresql_incremental"
    assert incremental["parent"] == base["backup_file"]
    assert incremental["timeline"] == 2
    chain = physical.Chain(deployment, WEST).verified()
    newest = chain[-1]
    assert newest.file == incremental["backup_file"]
    assert newest.bucket == deployment.settings.bucket(WEST)
    assert (newest.model_extra or {})["source"]["region"] == WEST
    assert (newest.model_extra or {})["source"]["topology_generation"] == 1


def _dag_run(dag_id: str, **conf: Any) -> tuple[str, dict[str, Any]]:
    from airflow.models import DagBag

    dag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags")).dags[dag_id]
    run = dag.test(logical_date=None, run_conf=conf or None)
    return run.state, {ti.task_id: ti.state for ti in run.get_task_instances()}


def test_the_dags_protect_the_new_primary(failed_over: dict[str, Any], airflow_db: None) -> None:
    """Each logical tier's DAG, the incremental DAG, the WAL DAG and the cleanup DAG, run with
    dag.test() after the failover: everything lands in us-west-2, taken from its node."""
    deployment = _deployment()
    stores = Stores.of(deployment)
    for backup_type, dag_id in (
        ("postgresql_full", "postgresql_backup_full"),
        ("postgresql_weekly", "postgresql_backup_weekly"),
        ("postgresql_monthly", "postgresql_backup_monthly"),
    ):
        time.sleep(1.1)  # backups are named by the second
        state, tasks = _dag_run(dag_id)
        assert state == "success", tasks
        newest = stores.catalog.newest_verified(backup_type)
        assert newest is not None and newest.bucket == deployment.settings.bucket(WEST)
        source = (newest.model_extra or {})["source"]
        assert (source["region"], source["node"], source["timeline"]) == (
            WEST,
            "dr_postgres_standby",
            2,
        )
    time.sleep(1.1)
    state, tasks = _dag_run("postgresql_backup_incremental")
    assert state == "success", tasks
    newest_element = physical.Chain(deployment, WEST).verified()[-1]
    assert newest_element.timeline == 2
    assert (newest_element.model_extra or {})["source"]["region"] == WEST
    switch_and_wait_archived(failed_over["box"].postgres("standby"))
    state, tasks = _dag_run("postgresql_wal_archive")
    assert state == "success", tasks
    state, tasks = _dag_run("postgresql_backup_cleanup", dry_run=True)
    assert state == "success", tasks


def test_status_and_dashboard_show_where_protection_goes(failed_over: dict[str, Any]) -> None:
    box: Sandbox = failed_over["box"]
    settings = load_settings()
    run = subprocess.run(
        [sys.executable, "-m", "disaster_recovery", "status"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **box.environment()},
        check=False,
    )
    assert run.returncode == 0, run.stderr
    console = json.loads(run.stdout)
    status = console["protection"]
    assert status["healthy"] is True and status["problems"] == []
    assert status["topology"]["primary_region"] == WEST
    assert (status["generation"], status["timeline"]) == (1, 2)
    assert status["nodes"][EAST]["role"] == "fenced"
    assert status["nodes"][WEST]["role"] == "primary"
    assert status["backups_go_to"]["region"] == WEST
    assert settings.bucket(WEST) in status["backups_go_to"]["bucket"]
    assert settings.bucket(WEST) in status["wal_goes_to"][0]
    assert status["replication_debt"] == {}

    # The console (the same document) reads the new primary's bucket first.
    assert console["source"]["primary_region"] == WEST and console["source"]["region"] == WEST
    tiers = {row["tier"]: row for row in console["backups"]["tiers"]}
    assert tiers["postgresql_full"]["replicas"] == [EAST]  # read from us-west-2's catalog


def test_a_lost_timeline_history_file_is_archived_again_from_the_primary(
    failed_over: dict[str, Any],
) -> None:
    """The archive loses 00000002.history (a deletion, a new prefix): `dr wal check` puts it
    back from the primary's pg_wal, and PITR across the failover can follow it again."""
    from disaster_recovery.wal.archive import WalArchive
    from disaster_recovery.wal.history import archive_missing_history

    deployment = _deployment()
    archive = WalArchive.for_deployment(deployment)
    key = archive.key("00000002.history")
    original = archive.store(WEST).get_bytes(key)
    for region in archive.regions:
        archive.store(region).delete([key])
    with pytest.raises(NotFoundError, match=r"00000002\.history"):
        archive.history(2)
    box: Sandbox = failed_over["box"]
    run = subprocess.run(
        [sys.executable, "-m", "disaster_recovery", "wal", "check"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **box.environment()},
        check=False,
    )
    report = json.loads(run.stdout)
    assert report["history_archived_again"] == ["00000002.history"], run.stderr
    for region in archive.regions:
        assert archive.store(region).get_bytes(key) == original
    assert archive.history(2)[0].timeline == 1  # the switch from timeline 1, readable again
    assert archive_missing_history(deployment)["archived"] == []  # nothing left to do


def test_restore_falls_back_to_the_other_region_and_honours_region(
    failed_over: dict[str, Any],
) -> None:
    """The current primary's copy (us-west-2) is damaged: the restore takes us-east-1's copy
    without a flag; ``region`` forces one region, for logical restores too."""
    box: Sandbox = failed_over["box"]
    deployment = _deployment()
    manifest = run_backup(deployment, "postgresql_full", unique_time())
    stores = Stores.of(deployment)
    assert stores.primary.endpoint.region == WEST
    damaged = bytearray(stores.primary.get_bytes(manifest.key))
    damaged[len(damaged) // 2] ^= 0xFF
    stores.primary.put_bytes(manifest.key, bytes(damaged))

    fallback = restore_logical(
        deployment, target_db=f"fallback_{secrets.token_hex(3)}", backup_file=manifest.file
    )
    assert fallback["region"] == EAST and fallback["counts_match"] is True
    assert fallback["target"].endswith(f":{box.postgres('standby').port}")  # current primary
    with pytest.raises(VerificationError, match="SHA-256"):
        restore_logical(
            deployment,
            target_db=f"forced_{secrets.token_hex(3)}",
            backup_file=manifest.file,
            region=WEST,
        )
    forced = restore_logical(
        deployment,
        target_db=f"forced_{secrets.token_hex(3)}",
        backup_file=manifest.file,
        region=EAST,
    )
    assert forced["region"] == EAST and forced["counts_match"] is True


def test_a_backup_deposed_by_a_failback_is_never_published(
    failed_over: dict[str, Any],
) -> None:
    """Dumped and checked on us-west-2, then the role goes back to us-east-1 before PUBLISH:
    the backup fails its topology check; the next backup comes from us-east-1 again."""
    box: Sandbox = failed_over["box"]
    deployment = _deployment()
    dumped = dump_to_s3(deployment, "postgresql_full", unique_time())
    file = dumped["file"]
    checks: dict[str, Any] = {"checksum": check_checksum(deployment, "postgresql_full", file)}
    checks.update(check_readable(deployment, "postgresql_full", file))
    checks["replica"] = replicate(deployment, "postgresql_full", file)

    back = run_failback(Plan(_deployment(), WEST, EAST), "return home", "pytest")
    assert back["status"] == "completed", back.get("error")
    record = topology.read_record(_deployment())
    assert (record.generation, record.primary_region) == (2, EAST)

    # The dump lives in us-west-2's catalog; publish looks there through the old view.
    west = topology.role_view(_deployment(), Topology(1, WEST, EAST))
    with pytest.raises(VerificationError, match="not published") as raised:
        publish(west, "postgresql_full", file, checks)
    assert raised.value.check == "topology"
    manifest = Stores.of(west).catalog.find(file)
    assert manifest is not None and manifest.status == "failed"
    assert manifest.verified is False

    # Protection is home again: the next full backup comes from us-east-1's node.
    home = run_backup(_deployment(), "postgresql_full", unique_time())
    assert home.bucket == deployment.settings.bucket(EAST)
    assert (home.model_extra or {})["source"]["region"] == EAST
    assert (home.model_extra or {})["source"]["topology_generation"] == 2
    assert _rows(box, "primary", "SELECT count(*) FROM after_failover") == 250


def test_split_brain_backs_up_nothing_and_alerts_once(make_sandbox, airflow_db: None) -> None:  # type: ignore[no-untyped-def]
    """The standby is promoted behind the product's back: both nodes accept writes. No backup
    of either kind is taken, no object is left, and SplitBrain is posted once for the
    incident however many backups try."""
    box: Sandbox = make_sandbox(scale=0.1)
    box.up()
    with sandbox_environment(box):
        deployment = _deployment()
        with db.connect(box.postgres("standby", "postgres")) as conn:
            conn.execute("SELECT pg_promote(true, 60)")
        stores = Stores.of(deployment)
        prefix = deployment.settings.storage.prefix

        def backup_objects(store: ObjectStore) -> list[str]:
            # PostgreSQL's own WAL archiving goes on (both nodes archive); backups must not.
            return sorted(
                i["Key"]
                for i in store.list_keys(prefix)
                if "/topology/split-brain/" not in i["Key"] and "/postgresql_wal/" not in i["Key"]
            )

        objects_before = {
            store.bucket: backup_objects(store) for store in (stores.primary, stores.secondary)
        }
        alerts_before = len(_alerts(box, "SplitBrain"))
        for _attempt in range(3):
            with pytest.raises(SplitBrain, match="both accept writes"):
                run_backup(_deployment(), "postgresql_full", unique_time())
        with pytest.raises(SplitBrain):
            physical.take_backup(_deployment(), "base")
        posted = _alerts(box, "SplitBrain")[alerts_before:]
        assert len(posted) == 1
        assert posted[0]["severity"] == "Critical"
        assert "both accept writes" in posted[0]["text"]
        # Nothing was written but the split-brain marker.
        for store in (stores.primary, stores.secondary):
            assert backup_objects(store) == objects_before[store.bucket]
            assert store.open_multipart_uploads(prefix) == []
        assert stores.catalog.manifests(["postgresql_full", "postgresql_base"]) == []
        # The backup DAG fails too, and adds no alert of its own: SplitBrain is still posted once.
        state, tasks = _dag_run("postgresql_backup_full")
        assert state == "failed" and tasks["dump"] == "failed", tasks
        assert len(_alerts(box, "SplitBrain")[alerts_before:]) == 1
        assert _alerts(box, "BackupFailed") == []
        assert stores.catalog.manifests(["postgresql_full"]) == []

        # Fence one side: the record (us-east-1) and the nodes agree again, backups resume,
        # and a later split brain would be a new incident (the marker is cleared).
        with db.connect(box.postgres("standby", "postgres")) as conn:
            conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")
            conn.execute("SELECT pg_reload_conf()")
        manifest = run_backup(_deployment(), "postgresql_full", unique_time())
        assert manifest.verified
        assert (manifest.model_extra or {})["source"]["region"] == EAST
        assert not [
            i for i in stores.primary.list_keys(prefix) if "/topology/split-brain/" in i["Key"]
        ]
