"""The recorded history the DR console tests read: backups (one tier late), health checks with
an outage, a failover, drills (one overdue), under a private prefix; removed afterwards from
both regions' buckets."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from disaster_recovery.catalog.listing import Catalog
from disaster_recovery.catalog.manifests import Manifest, Verification
from disaster_recovery.catalog.names import backup_file_name
from disaster_recovery.clients.s3 import ObjectStore, regional_store
from disaster_recovery.config.endpoints import Deployment
from disaster_recovery.config.model import load_settings
from disaster_recovery.drills.evidence import FIRST_RUN_KEY, DrillRecord, EvidenceStore
from disaster_recovery.monitoring.history import append_check, raw_key
from dr_sandbox import Sandbox

PREFIX = "console-test"
NOW = datetime.now(UTC).replace(microsecond=0)
# Checks every minute over the last hour; the primary failed 5 checks, 30 to 26 minutes ago.
OUTAGE = range(30, 25, -1)
# The Airflow task of the check that raised the lag alert still active at NOW.
LAG_RAISED_BY = {
    "dag_id": "dr_health_check",
    "run_id": "scheduled__2026-12-01T10:57:00+00:00",
    "task_id": "check",
    "try_number": 2,
}


def health(at: datetime, primary_ok: bool) -> dict[str, Any]:
    return {
        "checked_at": at.isoformat(),
        "primary": {"region": "us-east-1"},
        "primary_healthy": primary_ok,
        "secondary_healthy": True,
    }


def manifest(catalog: Catalog, backup_type: str, age: timedelta, size: int) -> Manifest:
    started = NOW - age
    return Manifest(
        backup_type=backup_type,
        file=backup_file_name(backup_type, started),
        bucket=catalog.store.bucket,
        key=catalog.key_for(backup_file_name(backup_type, started)),
        size_bytes=size,
        sha256="0" * 64,
        started_at=started,
        finished_at=started + timedelta(seconds=42),
        status="verified",
        verification=Verification(
            checks={"exists": "ok", "sha256": "ok", "pg_restore_list": "ok"},
            verified_at=started,
            verified_by="test",
        ),
        replicas={"us-west-2": {"sha256": "0" * 64}},
    )


@pytest.fixture(scope="module")
def console_config(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = tmp_path_factory.mktemp("console") / "dr_config.yaml"
    text = sandbox.config_file.read_text()
    assert "prefix: litper" in text
    config.write_text(text.replace("prefix: litper", f"prefix: {PREFIX}"))
    return config


@pytest.fixture(scope="module")
def recorded(
    sandbox: Sandbox, sandbox_env: dict[str, str], console_config: Path
) -> Iterator[Deployment]:
    """The history the console reads, in us-east-1's bucket; deleted afterwards."""
    deployment = Deployment(load_settings(console_config))
    store = regional_store(deployment, "us-east-1")
    catalog = Catalog(store, PREFIX)
    for backup_type, age, size in (
        ("postgresql_weekly", timedelta(days=8), 1_500_000),
        ("postgresql_weekly", timedelta(hours=2), 1_732_792),
        ("postgresql_full", timedelta(days=3), 2_000_000),  # daily: 3 days old is late
    ):
        catalog.save(manifest(catalog, backup_type, age, size))
    for minutes_ago in range(60, 0, -1):
        at = NOW - timedelta(minutes=minutes_ago)
        active = {"PrimaryDown": at.isoformat()} if minutes_ago in OUTAGE else {}
        append_check(store, PREFIX, health(at, minutes_ago not in OUTAGE), active)
    # The newest check still sees the lag alert raised 3 minutes ago, by this check.
    raised = NOW - timedelta(minutes=3)
    store.put_json(
        raw_key(PREFIX, raised),
        {"health": health(raised, True), "alerts": [{"name": "ReplicationLagHigh"}]},
    )
    append_check(
        store,
        PREFIX,
        health(NOW, True),
        {"ReplicationLagHigh": (NOW - timedelta(minutes=3)).isoformat()},
        {"ReplicationLagHigh": LAG_RAISED_BY},
    )
    store.put_json(
        f"{PREFIX}/failovers/{NOW:%Y}/manual_1_failover.json",
        {
            "status": "completed",
            "kind": "failover",
            "new_primary": "us-west-2",
            "total_time_seconds": 847.2,
            "run_id": "manual_1",
            "started_at": (NOW - timedelta(days=2, minutes=15)).isoformat(),
            "finished_at": (NOW - timedelta(days=2)).isoformat(),
            "reason": "drill of the runbook",
            "initiated_by": "ana",
            "steps": [
                {"step": "decide", "status": "approved", "by": "ana"},
                {
                    "step": "sync",
                    "status": "done",
                    "details": {
                        "possible_data_loss": "none: the standby replayed the old primary's final LSN"
                    },
                },
            ],
        },
    )
    evidence = EvidenceStore(store)
    drill = DrillRecord(
        drill="monthly",
        environment="sandbox",
        started_at=NOW - timedelta(days=10),
        passed=True,
        rto_seconds=312.0,
        rpo_seconds=0.0,
        restore_throughput_mb_s=48.5,
        airflow_run={"dag_id": "dr_drill_monthly", "run_id": "manual__monthly+1"},
    )
    drill_key = evidence.save(drill)
    # Deployed long enough ago that the quarterly drill, which never ran, was due.
    deployed_before = store.get_versioned(FIRST_RUN_KEY)
    record_first_run(store, NOW - timedelta(days=100))
    try:
        yield deployment
    finally:
        store.delete([drill_key])
        if deployed_before is None:
            store.delete([FIRST_RUN_KEY])
        else:
            store.put_bytes(FIRST_RUN_KEY, deployed_before[0])
        for region in ("us-east-1", "us-west-2"):
            bucket = regional_store(deployment, region)
            bucket.delete([e["Key"] for e in bucket.list_keys(f"{PREFIX}/")])


def record_first_run(store: ObjectStore, at: datetime) -> None:
    """The deployment's first run, as the first scheduled drill check records it."""
    store.put_json(FIRST_RUN_KEY, {"first_run": at.isoformat()})
