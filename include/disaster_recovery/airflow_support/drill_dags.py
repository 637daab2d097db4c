"""The DR drill DAGs (monthly, quarterly) from one factory.

Each step of a drill (:data:`disaster_recovery.drills.names.DRILL_STEPS`) is its own task, so the
grid shows where a drill is and which step failed. The drill's state (its record so far and the
notes later steps need, such as the moment the region was lost) travels between the tasks in
XCom (key ``state``); every task pushes it, a failing one too. ``preflight`` is the setup and
``restore_topology`` its teardown: it runs whatever happened to the steps and returns the target
to its original topology when a step failed. The last task, ``evidence``, judges the record,
writes it to both regions and Slack, returns it, and fails the run when the drill failed.

No drill task is retried (a retry would repeat a failover). A task before them checks, from the
evidence in S3 alone, that no kind of drill is overdue.

Library imports sit inside task bodies on purpose: DAG files import this module at parse time,
which must stay cheap (no psycopg, boto3 or redis; Airflow's parse-time budget).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from disaster_recovery.airflow_support.alerting import fail_fast
from disaster_recovery.airflow_support.dag_defaults import dag_defaults
from disaster_recovery.config.model import Settings, load_settings
from disaster_recovery.drills.names import DRILL_STEPS, RESTORE_TOPOLOGY

STATE_KEY = "state"
EVIDENCE_TASK = "evidence"


def check_overdue(deployment: Any) -> dict[str, Any]:
    """DRDrillOverdue for each kind of drill with no passed record in its window."""
    from disaster_recovery.airflow_support.alerting import AirflowSlackSink
    from disaster_recovery.clients.s3 import regional_store
    from disaster_recovery.drills.evidence import EvidenceStore, first_run, overdue_alerts

    settings = deployment.settings
    region = settings.regions.primary
    store = regional_store(deployment, region)
    records = EvidenceStore(store).records()
    now = datetime.now(UTC)
    alerts = overdue_alerts(records, now, deployed=first_run(store, now))
    sink = AirflowSlackSink(settings)
    for alert in alerts:
        sink.send(alert)
    return {"overdue": [a.details["drill"] for a in alerts], "records": len(records)}


def latest_state(ti: Any, task_ids: tuple[str, ...]) -> dict[str, Any] | None:
    """The newest drill state pushed by any of ``task_ids`` (in step order)."""
    for task_id in reversed(task_ids):
        state = ti.xcom_pull(task_ids=task_id, key=STATE_KEY)
        if state:
            return dict(state)
    return None


@contextmanager
def drill_context(kind: str, task_id: str) -> Iterator[Any]:
    """The drill's context for this task (a new drill at ``preflight``, else resumed from the
    tasks before), its state pushed to XCom however the task ends."""
    from airflow.sdk import get_current_context

    from disaster_recovery.airflow_support.connections import deployment
    from disaster_recovery.drills import procedures
    from disaster_recovery.errors import PermanentError

    context: Any = get_current_context()
    ti, seed = context["ti"], context["params"].get("seed")
    order = (*DRILL_STEPS[kind], RESTORE_TOPOLOGY)
    with procedures.work_folder(kind) as work_dir:
        if task_id == order[0]:
            ctx = procedures.start(deployment(), kind, work_dir, seed=seed)  # type: ignore[arg-type]
        else:
            state = latest_state(ti, order[: order.index(task_id)] if task_id in order else order)
            if state is None:
                raise PermanentError(
                    f"{kind} drill: no state before {task_id} (preflight never ran)"
                )
            ctx = procedures.resume(deployment(), state, work_dir, seed=seed)
        try:
            yield ctx
        finally:
            ti.xcom_push(key=STATE_KEY, value=procedures.drill_state(ctx))


def run_drill_step(kind: str, step: str) -> dict[str, Any]:
    """One step of the drill; its entry of the record (or that it does not apply here)."""
    from disaster_recovery.drills.procedures import run_step

    with drill_context(kind, step) as ctx:
        entry = run_step(ctx, step)
    return entry.model_dump(mode="json") if entry else {"name": step, "result": "not applicable"}


def restore_topology(kind: str) -> dict[str, Any]:
    """The teardown: the original topology back after a failed or interrupted step."""
    from disaster_recovery.drills import procedures

    with drill_context(kind, RESTORE_TOPOLOGY) as ctx:
        entry = procedures.restore_topology(ctx)
    return (
        entry.model_dump(mode="json")
        if entry
        else {"name": RESTORE_TOPOLOGY, "result": "not needed"}
    )


def evidence(kind: str) -> dict[str, Any]:
    """Judge, store in both regions, alert; the whole record (DrillFailed when it failed)."""
    from disaster_recovery.airflow_support.alerting import AirflowSlackSink
    from disaster_recovery.drills.procedures import finish

    with drill_context(kind, EVIDENCE_TASK) as ctx:
        record = finish(ctx, AirflowSlackSink(ctx.settings))
    return record.model_dump(mode="json")


def drill_dag(kind: str, doc_md: str, settings: Settings | None = None) -> Any:
    from airflow.sdk import DAG, CronTriggerTimetable, Param, chain, task

    settings = settings or load_settings()
    schedule = (
        settings.drills.monthly_schedule
        if kind == "monthly"
        else settings.drills.quarterly_schedule
    )
    with DAG(
        dag_id=f"dr_drill_{kind}",
        doc_md=doc_md,
        schedule=CronTriggerTimetable(schedule, timezone=settings.timezone),
        **dag_defaults(settings, retries=1, retry_delay=timedelta(minutes=5)),
        tags=["dr", "drill"],
        params={
            "seed": Param(
                None,
                type=["null", "integer"],
                description="Seed of the random point-in-time target (to repeat a drill)",
            )
        },
    ) as dag:

        @task(task_id="check_overdue")
        def overdue() -> dict[str, Any]:
            from disaster_recovery.airflow_support.connections import deployment

            return check_overdue(deployment())

        def drill_task(task_id: str, function: Any, *args: str, **options: Any) -> Any:
            return task(task_id=task_id, retries=0, multiple_outputs=False, **options)(
                fail_fast(function)
            )(*args)

        # preflight runs even when the overdue check failed (S3 down is no reason to skip).
        steps = [
            drill_task(
                step,
                run_drill_step,
                kind,
                step,
                trigger_rule="all_done" if n == 0 else "all_success",
            )
            for n, step in enumerate(DRILL_STEPS[kind])
        ]
        teardown = drill_task(RESTORE_TOPOLOGY, restore_topology, kind).as_teardown(setups=steps[0])
        # The evidence is the last task: its outcome (the drill passed or not) is the run's.
        record = drill_task(EVIDENCE_TASK, evidence, kind, trigger_rule="all_done")
        chain(overdue(), *steps, teardown, record)
    return dag
