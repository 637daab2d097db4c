"""When a drill's teardown must restore the topology, and how a drill is judged, from its record
alone (the drill DAG's ``restore_topology`` and ``evidence`` tasks decide this way); the state
that passes between a drill DAG's tasks survives JSON."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from disaster_recovery.drills.evidence import DrillRecord, DrillStep
from disaster_recovery.drills.names import DRILL_STEPS
from disaster_recovery.drills.procedures import (
    DrillContext,
    drill_state,
    judge,
    resume,
    topology_needs_restoring,
)

STARTED = datetime(2026, 3, 15, 5, 0, tzinfo=UTC)
MONTHLY = DRILL_STEPS["monthly"]


def record(*steps: tuple[str, str], rto: float | None = None) -> DrillRecord:
    return DrillRecord(
        drill="monthly",
        environment="drill",
        started_at=STARTED,
        objectives={"rto_seconds": 1800.0, "rpo_seconds": 900.0},
        rto_seconds=rto,
        steps=[
            DrillStep(
                name=name,
                started_at=STARTED,
                result=result,  # type: ignore[arg-type]
                error="boom" if result == "failed" else None,
            )
            for name, result in steps
        ],
    )


CASES = {
    "every step passed": (
        [(name, "passed") for name in MONTHLY],
        False,
        True,
        None,
    ),
    "a middle step failed": (
        [("preflight", "passed"), ("restore_full", "passed"), ("point_in_time", "failed")],
        True,
        False,
        "point_in_time: boom",
    ),
    "refused at preflight: nothing was touched": (
        [("preflight", "failed")],
        False,
        False,
        "preflight: boom",
    ),
    "stopped part-way without a recorded failure (a killed task)": (
        [("preflight", "passed"), ("restore_full", "passed"), ("point_in_time", "passed")],
        True,
        False,
        "the drill stopped after point_in_time",
    ),
    "already restored": (
        [("preflight", "passed"), ("failover", "failed"), ("restore_topology", "passed")],
        False,
        False,
        "failover: boom",
    ),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_teardown_and_verdict(case: str) -> None:
    steps, restore, passed, error = CASES[case]
    drill = record(*steps)
    assert topology_needs_restoring(drill) is restore
    judge(drill)
    assert (drill.passed, drill.error) == (passed, error)


def test_an_rto_over_the_objective_fails_a_drill_whose_steps_passed() -> None:
    drill = record(*[(name, "passed") for name in MONTHLY], rto=1900.0)
    judge(drill)
    assert not drill.passed and drill.error == "RTO 1900 s exceeds the objective 1800 s"


def test_drill_state_survives_json_between_tasks(tmp_path: Path) -> None:
    killed = STARTED + timedelta(minutes=1)
    ctx = DrillContext(
        cast(Any, None),
        record(("preflight", "passed"), ("kill_primary_region", "passed")),
        rng=random.Random(1),
        progress=print,
        work_dir=tmp_path,
        notes={"killed_at": killed, "acknowledged": [1, 2, 3], "approval": {"by": "policy"}},
    )
    state = json.loads(json.dumps(drill_state(ctx)))  # what XCom stores
    again = resume(cast(Any, None), state, tmp_path, seed=1)
    assert again.notes == ctx.notes and again.notes["killed_at"] == killed
    assert again.record == ctx.record
    assert again.rng.random() == random.Random(1).random()
