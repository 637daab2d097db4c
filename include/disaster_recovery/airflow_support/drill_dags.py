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

On a production deployment (``environment.production``, the default) a drill changes the
topology only after a person approved it: a ``decide`` group (a Slack notice with the link, then
the same Required Action as ``dr_failover``) comes before the drill, and the drill refuses to
start without an approval (rejected, or no answer within ``failover.approval_timeout``), so
nothing changes. ``environment.allow_drills_on_production`` with ``drills.auto_approve`` opts out.

Library imports sit inside task bodies on purpose: DAG files import this module at parse time,
which must stay cheap (no psycopg, boto3 or redis; Airflow's parse-time budget).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from disaster_recovery.airflow_support.alerting import fail_fast
from disaster_recovery.airflow_support.dag_defaults import dag_defaults
from disaster_recovery.config.model import Settings, load_settings
from disaster_recovery.drills.names import DRILL_STEPS, RESTORE_TOPOLOGY

log = logging.getLogger(__name__)

STATE_KEY = "state"
EVIDENCE_TASK = "evidence"

log = logging.getLogger(__name__)


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


def request_drill_approval(kind: str) -> str:
    """Post the approval request (with the link to the approval page) to Slack; the Markdown body
    for the approval."""
    from airflow.sdk import get_current_context

    from disaster_recovery.airflow_support.alerting import AirflowSlackSink
    from disaster_recovery.airflow_support.failover_dags import approval_url
    from disaster_recovery.clients.slack import Alert

    settings = load_settings()
    link = approval_url(get_current_context())  # type: ignore[arg-type]
    changes = (
        "a failover to the secondary region and a failback"
        if kind == "monthly"
        else "the loss of the whole primary region (PostgreSQL crashed, Redis and services "
        "stopped), a failover and a failback"
    )
    summary = (
        f"{kind} DR drill on production {settings.environment.name!r} waits for approval: "
        f"it will run {changes}"
    )
    try:
        AirflowSlackSink(settings).send(
            Alert(
                "DrillApprovalRequired",
                summary,
                details={"timeout": f"{settings.failover.approval_timeout} (no answer: no drill)"},
                link=link,
            )
        )
    except Exception:
        # The approval page works without Slack; a person may already be watching it.
        log.exception("could not post the drill approval request to Slack")
    return (
        f"**{summary}.**\n\nApprove to run the drill now. Reject (or no answer before the "
        f"timeout) runs no drill and changes nothing.\n\n[Approval page]({link})"
    )


def person_approval(ti: Any) -> dict[str, Any] | None:
    """The decide.approval answer as the drill records it; None when nobody answered."""
    from disaster_recovery.airflow_support.failover_dags import APPROVAL_TASK

    answer = ti.xcom_pull(task_ids=APPROVAL_TASK, key="decision")
    if not isinstance(answer, dict):
        return None
    return {
        "by": answer.get("responded_by") or "unknown",
        "approved": (answer.get("chosen_options") or [""])[0] == "Approve",
    }


@contextmanager
def drill_context(kind: str, task_id: str) -> Iterator[Any]:
    """The drill's context for this task (a new drill at ``preflight``, else resumed from the
    tasks before), its state pushed to XCom however the task ends."""
    from airflow.sdk import get_current_context
    from airflow.sdk.exceptions import AirflowSkipException

    from disaster_recovery.airflow_support.connections import deployment
    from disaster_recovery.drills import procedures

    context: Any = get_current_context()
    ti, seed = context["ti"], context["params"].get("seed")
    order = (*DRILL_STEPS[kind], RESTORE_TOPOLOGY)
    with procedures.work_folder(kind) as work_dir:
        if task_id == order[0]:
            approval = person_approval(ti) if load_settings().drills_need_a_person else None
            ctx = procedures.start(
                deployment(),
                kind,  # type: ignore[arg-type]
                work_dir,
                seed=seed,
                approval=approval,
            )
            ctx.record.airflow_run = {"dag_id": ti.dag_id, "run_id": ti.run_id}
        else:
            state = latest_state(ti, order[: order.index(task_id)] if task_id in order else order)
            if state is None:
                # Preflight skipped: a person rejected the drill, which never started.
                raise AirflowSkipException(f"the {kind} drill never started (no preflight)")
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
    from airflow.sdk import DAG, CronTriggerTimetable, Param, TaskGroup, chain, task

    settings = settings or load_settings()
    schedule = (
        settings.drills.monthly_schedule
        if kind == "monthly"
        else settings.drills.quarterly_schedule
    )
    with DAG(
        doc_md=doc_md,
        schedule=CronTriggerTimetable(schedule, timezone=settings.timezone),
        **dag_defaults(
            settings, dag_id=f"dr_drill_{kind}", retries=1, retry_delay=timedelta(minutes=5)
        ),
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
        if not settings.drills_need_a_person:
            chain(overdue(), *steps, teardown, record)
            return dag
        # Production: a person approves first (a rejection skips the drill; no answer in time
        # lets preflight refuse and record why). Decided at parse time, like every schedule.
        from disaster_recovery.airflow_support.failover_dags import approval_operator

        with TaskGroup(group_id="decide") as decide:
            body = task(task_id="notify", retries=0, multiple_outputs=False)(
                request_drill_approval
            )(kind)
            body >> approval_operator(
                task_id="approval",
                subject=f"Approve the {kind} DR drill on production?",
                body="{{ ti.xcom_pull(task_ids='decide.notify') }}",
                response_timeout=settings.failover.approval_timeout,
                retries=0,
            )
        chain(overdue(), decide, *steps, teardown, record)
    return dag
