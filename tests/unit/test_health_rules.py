"""The health alert state machine (pure): alerts once per incident with recovery, and the
automatic failover trigger after three consecutive failed primary checks; which node the
health check fences."""

from __future__ import annotations

from typing import Any

import pytest

from disaster_recovery.monitoring.health import evaluate


def _health(
    primary_ok: bool = True, lag: float | None = 0.0, secondary_db: str = "streaming"
) -> dict[str, Any]:
    return {
        "checked_at": "2026-01-01T00:00:00+00:00",
        "primary": {
            "region": "us-east-1",
            "database": "healthy" if primary_ok else "down",
            "redis": "healthy",
            "services": "healthy",
        },
        "secondary": {
            "region": "us-west-2",
            "database": secondary_db,
            "redis": "replicating",
            "services": "standby",
        },
        "replication_lag_seconds": lag,
        "primary_healthy": primary_ok,
        "errors": {} if primary_ok else {"primary.database": "connection refused"},
    }


def _sequence(checks: list[dict[str, Any]], failures: int = 3) -> list[dict[str, Any]]:
    state, verdicts = None, []
    for health in checks:
        verdict = evaluate(health, state, lag_threshold=60, failures_before_failover=failures)
        state = verdict["state"]
        verdicts.append(verdict)
    return verdicts


def test_lag_alert_once_per_incident_with_recovery() -> None:
    verdicts = _sequence([_health(lag=61), _health(lag=120), _health(lag=0.0), _health(lag=90)])
    names = [[(a["name"], a["resolved"]) for a in v["alerts"]] for v in verdicts]
    assert names == [
        [("ReplicationLagHigh", False)],
        [],
        [("ReplicationLagHigh", True)],
        [("ReplicationLagHigh", False)],
    ]


def test_secondary_unreachable_alert() -> None:
    verdicts = _sequence([_health(secondary_db="down"), _health(secondary_db="down"), _health()])
    assert [a["name"] for a in verdicts[0]["alerts"]] == ["SecondaryUnreachable"]
    assert verdicts[1]["alerts"] == []
    assert verdicts[2]["alerts"][0]["resolved"] is True


@pytest.mark.parametrize(
    ("pattern", "triggers"),
    [
        ("FF", []),
        ("FFF", [3]),
        ("FFFFF", [3]),  # once per incident
        ("FFSFF", []),  # one flapping success resets the count
        ("FFSFFF", [6]),
        ("FFFSFFF", [3, 7]),  # a new incident after recovery triggers again
    ],
)
def test_three_consecutive_primary_failures_trigger(pattern: str, triggers: list[int]) -> None:
    verdicts = _sequence([_health(primary_ok=ch == "S") for ch in pattern])
    assert [i + 1 for i, v in enumerate(verdicts) if v["trigger_failover"]] == triggers
    for i in triggers:
        assert verdicts[i - 1]["reason"].startswith("auto: primary us-east-1 failed 3 consecutive")


def test_auto_trigger_can_be_turned_off() -> None:
    state = None
    for _ in range(4):
        verdict = evaluate(_health(primary_ok=False), state, 60, 3, auto_trigger=False)
        state = verdict["state"]
        assert not verdict["trigger_failover"]


# -- which node the health check fences (issue 16) ------------------------------------------------


def _node(region: str, writable: bool, reachable: bool = True) -> Any:
    from disaster_recovery.monitoring.topology import NodeState

    return NodeState(
        region=region,
        connection=f"conn-{region}",
        host="127.0.0.1:5432",
        reachable=reachable,
        in_recovery=False if reachable else None,
        read_only=not writable if reachable else None,
    )


@pytest.mark.parametrize(
    ("east", "west", "fenced"),
    [
        # The old primary came back writable beside the recorded one: fence it.
        (_node("us-east-1", True), _node("us-west-2", True), "us-east-1"),
        # Already fenced, or still down: nothing to do.
        (_node("us-east-1", False), _node("us-west-2", True), None),
        (_node("us-east-1", False, reachable=False), _node("us-west-2", True), None),
        # Mid-failover (the record still names us-west-2 while us-east-1 was just promoted and
        # us-west-2 is fenced or gone), or a promotion by hand: never fence the only writer.
        (_node("us-east-1", True), _node("us-west-2", False), None),
        (_node("us-east-1", True), _node("us-west-2", False, reachable=False), None),
    ],
)
def test_only_a_deposed_node_beside_a_writable_primary_is_fenced(
    east: Any, west: Any, fenced: str | None
) -> None:
    from disaster_recovery.monitoring.fencing import deposed_writable
    from disaster_recovery.monitoring.topology import Topology

    record = Topology(generation=2, primary_region="us-west-2", standby_region="us-east-1")
    assert deposed_writable(record, {"us-east-1": east, "us-west-2": west}) == fenced


def test_each_alert_remembers_the_run_that_raised_it() -> None:
    """The console links an active alert to the log of the check that raised it, not to a later
    check's (which only saw it still active); a cleared alert forgets it."""
    runs = [{"dag_id": "dr_health_check", "run_id": f"r{n}", "task_id": "check"} for n in range(4)]
    checks = [_health(lag=61), _health(lag=90, secondary_db="down"), _health(lag=0.0), _health()]
    for check, run in zip(checks, runs, strict=True):
        check["run"] = run
    raised_by = [v["state"]["raised_by"] for v in _sequence(checks)]
    assert raised_by == [
        {"ReplicationLagHigh": runs[0]},
        {"ReplicationLagHigh": runs[0], "SecondaryUnreachable": runs[1]},
        {},
        {},
    ]
    # A check outside Airflow (``dr health``) records no run.
    assert _sequence([_health(lag=61)])[0]["state"]["raised_by"] == {}
