"""Availability measured from the health checks' records (pure: no I/O).

The rules, stated once:

- Each check says whether the primary was healthy. A healthy check vouches for the time until
  the next record, but for no longer than ``max_gap`` (the check interval plus some slack).
- An outage is a run of failed primary checks. It starts at the first failed check and ends at
  the first healthy check after it, or when a failover completes (its VALIDATE step has just
  proved the platform works on the new primary), whichever comes first. Checks that fail after
  that start a new outage (of the new primary).
- Missing checks: when no check comes within ``max_gap``, a failed primary is still down
  (nothing proved it recovered: the outage runs on until a check or a failover says otherwise);
  after a healthy check the time without checks is *not measured*, counted neither up nor down,
  and reported. Time before the first check in the window is not measured either.
- Availability is up time / measured time; ``coverage_percent`` says how much of the window
  was measured, so a quiet monitor cannot pass for a healthy platform.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from disaster_recovery.errors import ConfigError


@dataclass(frozen=True)
class Check:
    """One health check of the primary: when, and whether it was healthy."""

    at: datetime
    primary_healthy: bool
    region: str = ""


@dataclass(frozen=True)
class Incident:
    started_at: datetime
    ended_at: datetime
    closed_by: str  # "recovery", "failover" or "ongoing"
    failed_checks: int
    region: str = ""

    @property
    def minutes(self) -> float:
        return (self.ended_at - self.started_at).total_seconds() / 60


@dataclass(frozen=True)
class Availability:
    start: datetime
    end: datetime
    objective_percent: float
    down_minutes: float
    unmeasured_minutes: float
    incidents: list[Incident] = field(default_factory=list)

    @property
    def window_minutes(self) -> float:
        return (self.end - self.start).total_seconds() / 60

    @property
    def measured_minutes(self) -> float:
        return self.window_minutes - self.unmeasured_minutes

    @property
    def availability_percent(self) -> float | None:
        """Up time over measured time; None when nothing was measured."""
        if self.measured_minutes <= 0:
            return None
        return 100 * (self.measured_minutes - self.down_minutes) / self.measured_minutes

    @property
    def coverage_percent(self) -> float:
        if self.window_minutes <= 0:
            return 0.0
        return 100 * self.measured_minutes / self.window_minutes

    @property
    def budget_minutes(self) -> float:
        """The downtime the objective allows over this window (43.2 min in 30 days at 99.9 %)."""
        return self.window_minutes * (100 - self.objective_percent) / 100

    @property
    def met(self) -> bool | None:
        return (
            None if self.availability_percent is None else self.down_minutes <= self.budget_minutes
        )


@dataclass(frozen=True)
class _Observation:
    at: datetime
    up: bool
    source: str  # "check" or "failover"
    region: str = ""


def _observations(checks: Iterable[Check], failovers: Iterable[datetime]) -> list[_Observation]:
    """Checks and completed failovers on one time line (a failover counts as proof of health:
    its VALIDATE step checked the new primary end to end)."""
    seen = [_Observation(c.at, c.primary_healthy, "check", c.region) for c in checks]
    seen += [_Observation(at, True, "failover") for at in failovers]
    return sorted(seen, key=lambda o: (o.at, o.source == "check"))


def measure(
    checks: Iterable[Check],
    failovers_completed: Iterable[datetime],
    start: datetime,
    end: datetime,
    *,
    max_gap: timedelta,
    objective_percent: float = 99.9,
) -> Availability:
    """Availability of the primary over ``[start, end)`` from the checks and the completion
    times of failovers (the rules are in the module's docstring). Records before ``start``
    count: an outage that began earlier is down from ``start`` on."""
    if end <= start:
        raise ConfigError(f"availability window is empty: {start.isoformat()} .. {end.isoformat()}")
    if max_gap <= timedelta(0):
        raise ConfigError("availability max_gap must be positive (the check interval plus slack)")
    timeline = [o for o in _observations(checks, failovers_completed) if o.at < end]
    down = timedelta(0)
    # Before the first record nothing was measured.
    unmeasured = _overlap(start, timeline[0].at, start, end) if timeline else end - start
    incidents: list[Incident] = []
    opened: _Observation | None = None
    failed = 0
    for index, seen in enumerate(timeline):
        following = timeline[index + 1].at if index + 1 < len(timeline) else end
        if seen.up:
            if opened is not None:
                incidents.append(_incident(opened, seen.at, seen.source, failed, start))
                opened, failed = None, 0
            vouched = min(following, seen.at + max_gap)
            unmeasured += _overlap(vouched, following, start, end)
            continue
        # Down until something proves otherwise, however long the checks stay away.
        if opened is None:
            opened = seen
        failed += 1
        down += _overlap(seen.at, following, start, end)
    if opened is not None:
        incidents.append(_incident(opened, end, "ongoing", failed, start))
    return Availability(
        start=start,
        end=end,
        objective_percent=objective_percent,
        down_minutes=down.total_seconds() / 60,
        unmeasured_minutes=unmeasured.total_seconds() / 60,
        incidents=[i for i in incidents if i.ended_at > start],
    )


def _incident(
    opened: _Observation, ended_at: datetime, source: str, failed: int, start: datetime
) -> Incident:
    closed_by = {"check": "recovery", "failover": "failover"}.get(source, source)
    return Incident(max(opened.at, start), ended_at, closed_by, failed, opened.region)


def _overlap(a: datetime, b: datetime, start: datetime, end: datetime) -> timedelta:
    """Length of ``[a, b)`` inside ``[start, end)`` (zero when empty)."""
    low, high = max(a, start), min(b, end)
    return high - low if high > low else timedelta(0)
