"""The drill-overdue rule, which reads nothing but the drill records, and the step timer: pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from disaster_recovery.drills.evidence import DrillRecord, overdue_alerts

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def record(kind: str, days_ago: float, passed: bool = True) -> DrillRecord:
    return DrillRecord(
        drill=kind, environment="sandbox", started_at=NOW - timedelta(days=days_ago), passed=passed
    )


@pytest.mark.parametrize(
    ("records", "overdue"),
    [
        ([], {"monthly", "quarterly"}),
        ([record("monthly", 10), record("quarterly", 30)], set()),
        ([record("monthly", 36), record("quarterly", 30)], {"monthly"}),
        ([record("monthly", 34), record("quarterly", 96)], {"quarterly"}),
        # A failed drill does not count, however recent.
        (
            [record("monthly", 1, passed=False), record("monthly", 40), record("quarterly", 1)],
            {"monthly"},
        ),
        ([record("monthly", 35), record("quarterly", 95)], set()),
    ],
)
def test_overdue_rule(records: list[DrillRecord], overdue: set[str]) -> None:
    alerts = overdue_alerts(records, NOW)
    assert {a.details["drill"] for a in alerts} == overdue
    assert all(a.name == "DRDrillOverdue" and a.severity.value == "High" for a in alerts)


def test_step_timer_records_failures() -> None:
    drill = record("monthly", 0)
    with drill.step("restore"):
        pass
    with pytest.raises(RuntimeError), drill.step("pitr"):
        raise RuntimeError("no backup precedes the target\nmore")
    assert [s.result for s in drill.steps] == ["passed", "failed"]
    assert drill.steps[1].error == "no backup precedes the target"
    assert drill.steps[0].seconds is not None and drill.steps[0].seconds >= 0
