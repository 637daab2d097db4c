"""The failover DAGs parse, are thin, and say what they are (no servers needed)."""

from __future__ import annotations

import pytest

from disaster_recovery.failover.names import FAILBACK_STEPS, FAILOVER_STEPS

DAG_IDS = ("dr_health_check", "dr_failover", "dr_failback")
ALLOWED_TAGS = {"dr", "backup", "restore", "wal", "failover", "health", "drill", "maintenance"}


@pytest.fixture(scope="module")
def dagbag():  # type: ignore[no-untyped-def]
    from airflow.models import DagBag

    bag = DagBag(dag_folder="dags")
    assert not {
        path: err for path, err in bag.import_errors.items() if "dr_f" in path or "dr_h" in path
    }
    return bag


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_dag_attributes(dagbag, dag_id: str) -> None:  # type: ignore[no-untyped-def]
    dag = dagbag.dags[dag_id]
    assert dag is not None
    assert dag.doc_md and dag.max_active_runs == 1 and not dag.catchup
    assert set(dag.tags) <= ALLOWED_TAGS


def test_failover_dag_shape(dagbag) -> None:  # type: ignore[no-untyped-def]
    dag = dagbag.dags["dr_failover"]
    assert dag.schedule is None
    assert set(dag.params) == {"reason", "initiated_by", "dry_run", "accept_data_loss"}
    groups = [tid.split(".")[0] for tid in dag.task_ids if "." in tid]
    assert tuple(dict.fromkeys(groups)) == FAILOVER_STEPS
    assert FAILOVER_STEPS == (  # the eight steps of DESIGN.md, in order
        "detect",
        "decide",
        "stop_writes",
        "sync",
        "promote",
        "activate_services",
        "dns",
        "validate",
    )
    approval = dag.get_task("decide.approval")
    assert type(approval).__mro__[1].__name__ == "ApprovalOperator"
    assert (
        approval.response_timeout is not None and approval.defaults is None
    )  # timeout never approves
    assert dag.get_task("report").trigger_rule == "all_done"


def test_health_dag_runs_every_minute(dagbag) -> None:  # type: ignore[no-untyped-def]
    dag = dagbag.dags["dr_health_check"]
    assert dag.schedule == "* * * * *"
    assert dag.get_task("trigger_failover").trigger_dag_id == "dr_failover"


def test_failback_dag_runs_the_failback_steps(dagbag) -> None:  # type: ignore[no-untyped-def]
    dag = dagbag.dags["dr_failback"]
    groups = [tid.split(".")[0] for tid in dag.task_ids if "." in tid]
    assert tuple(dict.fromkeys(groups)) == FAILBACK_STEPS


def test_library_and_dags_run_the_same_steps() -> None:
    """The in-process runs (CLI, API) and the DAG tasks call the same step functions."""
    from typing import Any, cast

    from disaster_recovery.airflow_support import failover_dags
    from disaster_recovery.failover.failback import failback_steps
    from disaster_recovery.failover.steps import failover_steps

    plan = cast(Any, None)  # the step lists are lambdas: building them runs nothing
    assert tuple(n for n, _ in failover_steps(plan, "r", "me", None)) == FAILOVER_STEPS
    assert tuple(n for n, _ in failback_steps(plan, "r", "me", None)) == FAILBACK_STEPS
    params = {"reason": "r", "initiated_by": "me"}
    for step in FAILBACK_STEPS:  # the DAG's tasks take their functions from those lists
        assert callable(failover_dags._step_function("failback", step, plan, params))
    for step in FAILOVER_STEPS[1:]:  # (failover's detect reads an Airflow Variable first)
        assert callable(failover_dags._step_function("failover", step, plan, params))
