"""``postgresql_wal_archive`` and ``postgresql_backup_incremental`` under ``dag.test()``: healthy
runs on the shared sandbox; on a private one, a backlog archived after the restore target is
planned by when its segments were written, not uploaded, and a deleted and a corrupted segment
make the WAL DAG fail its continuity check and post ``WALArchiveGap`` naming both, and a restore
across the gap is refused. Plus a restore right after a failover's timeline change."""

from __future__ import annotations

import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers import (
    load_dag,
    private_sandbox,
    run_dr,
    sandbox_environment,
    slack_messages,
    task_states,
)
from pitr_support import (
    Ticker,
    archive_store_lost,
    deployment_for,
    rows_in,
    stop_restored,
    switch_and_wait_archived,
    switch_wal,
)

from disaster_recovery.backup import physical
from disaster_recovery.catalog.listing import Catalog
from disaster_recovery.config.endpoints import Deployment
from disaster_recovery.console import sections as console
from disaster_recovery.errors import RestoreRefused
from disaster_recovery.restore.pitr import (
    Target,
    describe_chain,
    plan_restore,
    restore_to_point_in_time,
)
from disaster_recovery.retention.cleanup import cleanup_physical_chain
from disaster_recovery.wal.archive import WalArchive, debt_prefix
from disaster_recovery.wal.continuity import check_archive
from dr_sandbox import Sandbox


def test_incremental_dag_takes_the_days_base_then_incrementals(
    sandbox: Sandbox, sandbox_env: dict[str, str], airflow_db: None
) -> None:
    dag = load_dag("postgresql_backup_incremental")
    first = dag.test(logical_date=None)
    assert first.state == "success", task_states(first)
    time.sleep(1.1)  # backups are named by the second
    second = dag.test(logical_date=None, run_conf={"kind": "incremental"})
    assert second.state == "success", task_states(second)
    deployment = deployment_for(sandbox)
    chain = physical.Chain(deployment, "us-east-1").verified()
    newest = chain[-1]
    assert newest.backup_type == "postgresql_incremental"
    assert newest.parent == chain[-2].file  # type: ignore[attr-defined]
    assert "us-west-2" in newest.replicas
    replica = Catalog(physical.Chain(deployment, "us-west-2").store, "litper").load(newest.file)
    assert replica.sha256 == newest.sha256
    assert physical.scheduled_kind(deployment) == "incremental"


def test_wal_dag_is_green_on_a_healthy_archive(
    sandbox: Sandbox, sandbox_env: dict[str, str], airflow_db: None
) -> None:
    switch_and_wait_archived(sandbox.postgres("primary"))
    run = load_dag("postgresql_wal_archive").test(logical_date=None)
    assert run.state == "success", task_states(run)


def test_wal_dag_raises_gap_for_a_deleted_and_a_corrupted_segment(airflow_db: None) -> None:
    with private_sandbox() as box, sandbox_environment(box):
        deployment = deployment_for(box)
        primary = box.postgres("primary")
        physical.backup_and_verify(deployment, "base")
        _a_backlog_is_planned_by_written_time(box, deployment)
        # Within a second or two: S3's archive times (whole seconds) cannot tell them apart,
        # the plan reads the written times.
        segments = [switch_and_wait_archived(primary) for _ in range(3)]
        archive = WalArchive.for_deployment(deployment)
        deleted, corrupted = segments[1], segments[2]
        for region in archive.regions:
            archive.store(region).delete([archive.key(deleted)])
        secondary = archive.store("us-west-2")
        head = secondary.head(archive.key(corrupted))
        assert head is not None
        data = secondary.get_bytes(archive.key(corrupted))
        secondary.put_bytes(archive.key(corrupted), data[:-1] + b"\x01", metadata=head["Metadata"])

        report = check_archive(deployment)
        assert report.missing == {"us-east-1": [deleted], "us-west-2": [deleted]}
        assert report.corrupt == {"us-east-1": [], "us-west-2": [corrupted]}

        run = load_dag("postgresql_wal_archive").test(logical_date=None)
        states = task_states(run)
        assert states["check_continuity"] == "failed" and states["inspect_archive"] == "success", (
            states
        )
        alerts = slack_messages(box, "WALArchiveGap")
        assert alerts, slack_messages(box)
        assert deleted in alerts[-1]["text"] and corrupted in alerts[-1]["text"]

        last_written = archive.written_at(segments[-1])
        assert last_written is not None
        with pytest.raises(RestoreRefused, match=f"WAL gap: {deleted}"):
            plan_restore(deployment, Target(time=last_written))

        # Eight days on, the WAL before the only base backup's start goes; the base stays.
        base = physical.Chain(deployment, "us-east-1").verified()[0]
        # A segment still owed to us-west-2 (pushed while it was lost) stays until it is copied.
        owed = "000000010000000000000001"
        marker = f"{debt_prefix(archive.prefix)}us-west-2/{owed}"
        archive.store("us-east-1").put_json(marker, {"since": datetime.now(UTC).isoformat()})
        later = datetime.now(UTC) + timedelta(days=8)
        dry = cleanup_physical_chain(deployment, now=later, dry_run=True)
        assert dry["base"] == 0 and dry["incremental"] == 0 and dry["wal"] >= 1
        assert dry["regions"]["us-east-1"]["wal_kept_owed"] == 1
        assert all(archive.store(r).exists(archive.key(owed)) for r in archive.regions)
        done = cleanup_physical_chain(deployment, now=later)
        assert {k: done[k] for k in ("base", "incremental", "wal")} == {
            k: dry[k] for k in ("base", "incremental", "wal")
        }
        start = base.start_segment  # type: ignore[attr-defined]
        for region in archive.regions:
            left = archive.listing(region)
            assert [n for n in left if len(n) == 24 and n < start] == [owed], sorted(left)
            assert start in left
        assert physical.Chain(deployment, "us-east-1").verified()[0].file == base.file
        archive.store("us-east-1").delete([marker])  # copied: the debt is paid
        assert cleanup_physical_chain(deployment, now=later)["wal"] == 1
        assert not any(archive.store(r).exists(archive.key(owed)) for r in archive.regions)


def _a_backlog_is_planned_by_written_time(box: Sandbox, deployment: Deployment) -> None:
    """S3 lost for a while: segments written before the target reach the archive after it.
    The plan must read on to the first segment written after the target (the objects' written
    times), not stop at the first one uploaded after it; the archive's freshness, the console's
    RPO exposure and the restorable window count from the written times too."""
    primary = box.postgres("primary")
    archive = WalArchive.for_deployment(deployment)
    with archive_store_lost(box):
        time.sleep(1)  # a running uploader sees its settings change and stops
        backlog = [switch_wal(primary) for _ in range(3)]
        time.sleep(1.1)
        target = datetime.now(UTC)
        time.sleep(1.1)
        holding = switch_wal(primary)
        time.sleep(1.1)
    switch_and_wait_archived(primary, timeout=90)
    listing = archive.listing("us-east-1")
    assert listing[backlog[0]]["last_modified"] >= target  # uploaded after the target
    written = {name: archive.written_at(name) for name in [*backlog, holding]}
    assert all(written[name] < target for name in backlog), (target, written)
    assert written[holding] >= target + timedelta(seconds=1), (target, written)

    plan = plan_restore(deployment, Target(time=target))
    assert plan.wal_needed[-1] == holding and set(backlog) <= set(plan.wal_needed)

    report = check_archive(deployment)
    newest = report.newest["us-east-1"]
    assert newest["written_at"] == archive.written_at(newest["segment"]).isoformat()
    rpo = console.collect(deployment, only=["rpo_exposure"])["rpo_exposure"]["regions"][0]
    assert rpo["written_at"] == console.moment(archive.written_at(rpo["newest_segment"]))
    window = describe_chain(deployment, "us-east-1")["regions"]["us-east-1"]
    newer = [n for n in archive.listing("us-east-1") if len(n) == 24 and n >= holding]
    assert window["latest_restorable"] in {archive.written_at(n).isoformat() for n in newer}


def test_restore_right_after_a_failover_timeline_change() -> None:
    with private_sandbox() as box:
        deployment = deployment_for(box)
        old_primary = box.postgres("primary")
        Ticker.prepare(old_primary)
        before = Ticker(old_primary).start()
        time.sleep(0.3)
        # `dr backup incremental` on an empty chain takes the base backup first.
        cli = run_dr("backup", "incremental", env=box.environment())
        assert cli.returncode == 0, cli.stderr
        taken = json.loads(cli.stdout)
        chain = physical.Chain(deployment, "us-east-1").verified()
        assert [m.backup_type for m in chain] == ["postgresql_base", "postgresql_incremental"]
        assert taken["parent"] == chain[0].file
        time.sleep(0.3)
        before.stop()
        switch_and_wait_archived(old_primary)
        # Failover: fence the old primary, promote the synchronous standby; it archives the new
        # timeline (its archive_command came with its clone) into the same buckets.
        box.instance("primary").stop()
        box.instance("standby").promote()
        new_primary = box.postgres("standby")
        after = Ticker(new_primary).start(first_id=len(before.ticks) + 1)
        time.sleep(0.8)
        after.stop()
        time.sleep(1.2)
        switch_and_wait_archived(new_primary)
        index = len(after.ticks) // 3
        folder = Path(tempfile.mkdtemp(prefix="dr-pitr-tli-", dir="/tmp")) / "data"
        result = restore_to_point_in_time(
            deployment, target_dir=folder, target_time=after.pause_between(index)
        )
        try:
            expected = len(before.ticks) + index + 1
            assert rows_in(result["port"], old_primary) == (expected, expected)
            assert result["recovered_to"]["new_timeline"] == 3  # it followed timeline 2
        finally:
            stop_restored(result)
