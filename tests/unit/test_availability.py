"""Availability from a recorded history of health checks: exact minutes for each kind of case."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from disaster_recovery.errors import ConfigError
from disaster_recovery.monitoring.availability import Check, measure

T0 = datetime(2026, 11, 1, tzinfo=UTC)
GAP = timedelta(minutes=3)  # checks every minute; one vouches for at most 3 minutes


def at(minute: float) -> datetime:
    return T0 + timedelta(minutes=minute)


def checks(first: int, last: int, healthy: bool = True) -> list[Check]:
    """One check a minute from ``first`` to ``last`` inclusive."""
    return [Check(at(m), healthy, "us-east-1") for m in range(first, last + 1)]


@dataclass
class Case:
    name: str
    history: list[Check]
    failovers: list[float] = field(default_factory=list)
    window: tuple[float, float] = (0, 60)
    down: float = 0
    unmeasured: float = 0
    incidents: list[tuple[float, float, str, int]] = field(default_factory=list)


CASES = [
    Case("no outage", checks(0, 59)),
    Case(
        "an outage closed by recovery",
        checks(0, 9) + checks(10, 12, healthy=False) + checks(13, 59),
        down=3,
        incidents=[(10, 13, "recovery", 3)],
    ),
    Case(
        "an outage closed by a completed failover",
        checks(0, 9) + checks(10, 12, healthy=False) + checks(13, 59),
        failovers=[12.5],
        down=2.5,
        incidents=[(10, 12.5, "failover", 3)],
    ),
    Case(
        "checks missing while healthy are not measured",
        checks(0, 10) + checks(30, 59),
        down=0,
        unmeasured=17,  # the check at 10 vouches until 13; nothing until 30
    ),
    Case(
        "checks missing while down stay down",
        checks(0, 9) + checks(10, 10, healthy=False) + checks(25, 59),
        down=15,
        incidents=[(10, 25, "recovery", 1)],
    ),
    Case(
        "before the first check nothing is measured",
        checks(20, 59),
        unmeasured=20,
    ),
    Case(
        "an outage still on at the end of the window",
        checks(0, 49) + checks(50, 59, healthy=False),
        down=10,
        incidents=[(50, 60, "ongoing", 10)],
    ),
    Case(
        "an outage that began before the window counts from its start",
        checks(-10, -3) + checks(-2, 4, healthy=False) + checks(5, 59),
        down=5,
        incidents=[(0, 5, "recovery", 7)],
    ),
    Case(
        "failed checks after a failover are a new outage of the new primary",
        checks(0, 9)
        + checks(10, 12, healthy=False)
        + checks(13, 19)
        + checks(20, 21, healthy=False)
        + checks(22, 59),
        failovers=[12.5],
        down=4.5,
        incidents=[(10, 12.5, "failover", 3), (20, 22, "recovery", 2)],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_availability_in_exact_minutes(case: Case) -> None:
    result = measure(
        case.history,
        [at(m) for m in case.failovers],
        at(case.window[0]),
        at(case.window[1]),
        max_gap=GAP,
    )
    assert result.down_minutes == pytest.approx(case.down)
    assert result.unmeasured_minutes == pytest.approx(case.unmeasured)
    assert [(i.started_at, i.ended_at, i.closed_by, i.failed_checks) for i in result.incidents] == [
        (at(a), at(b), how, n) for a, b, how, n in case.incidents
    ]
    measured = 60 - case.unmeasured
    assert result.availability_percent == pytest.approx(100 * (measured - case.down) / measured)


def test_thirty_days_with_a_43_minute_outage_meets_99_9_percent_and_44_misses() -> None:
    month = [Check(T0 + timedelta(minutes=m), True) for m in range(0, 30 * 24 * 60)]

    def with_outage(minutes: int) -> float | None:
        history = [
            Check(c.at, not (100 <= (c.at - T0).total_seconds() / 60 < 100 + minutes))
            for c in month
        ]
        result = measure(history, [], T0, T0 + timedelta(days=30), max_gap=GAP)
        assert result.budget_minutes == pytest.approx(43.2)
        assert result.down_minutes == pytest.approx(minutes)
        return result.met

    assert with_outage(43) is True
    assert with_outage(44) is False


def test_no_records_at_all_measure_nothing() -> None:
    result = measure([], [], at(0), at(60), max_gap=GAP)
    assert result.unmeasured_minutes == 60
    assert result.availability_percent is None and result.met is None
    assert result.coverage_percent == 0


def test_an_empty_window_is_refused() -> None:
    with pytest.raises(ConfigError, match="window is empty"):
        measure([], [], at(10), at(10), max_gap=GAP)
