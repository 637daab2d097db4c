"""Drill evidence in S3 and the heartbeat table, against the session sandbox (the pure rules
are in tests/unit/test_evidence_rules.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from disaster_recovery.drills.evidence import DrillRecord, EvidenceStore, overdue_alerts
from disaster_recovery.monitoring import heartbeat
from dr_sandbox import Sandbox

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def record(kind: str, days_ago: float, passed: bool = True) -> DrillRecord:
    return DrillRecord(
        drill=kind, environment="sandbox", started_at=NOW - timedelta(days=days_ago), passed=passed
    )  # type: ignore[arg-type]


def test_records_round_trip_through_s3(sandbox: Sandbox) -> None:
    store = sandbox.store("us-west-2")
    evidence = EvidenceStore(store)
    saved = [record("monthly", 50), record("quarterly", 20), record("monthly", 2, passed=False)]
    keys = [evidence.save(r) for r in saved]
    try:
        assert (
            keys[0]
            == f"drills/{saved[0].started_at:%Y}/monthly_{saved[0].started_at:%Y%m%dT%H%M%SZ}.json"
        )
        assert [r.started_at for r in evidence.records("monthly")] == [
            saved[0].started_at,
            saved[2].started_at,
        ]
        alerts = overdue_alerts(evidence.records(), NOW)
        assert [a.details["drill"] for a in alerts] == ["monthly"]
    finally:
        store.delete(keys)


def test_heartbeat_newest_and_up_to(sandbox: Sandbox) -> None:
    primary = sandbox.postgres("primary")
    heartbeat.ensure_schema(primary)
    first_id, _ = heartbeat.beat(primary, "test")
    between = datetime.now(UTC)  # after the first commit returned, before the second began
    second_id, _ = heartbeat.beat(primary, "test", synchronous=True)
    newest = heartbeat.newest(primary)
    assert newest is not None and newest["id"] >= second_id
    assert first_id in heartbeat.ids_up_to(primary, between)
    assert second_id not in heartbeat.ids_up_to(primary, between)
