"""The DR drill DAGs (monthly, quarterly) from one factory.

A drill is one continuous, timed procedure (its RTO is measured across its steps), so it runs
as one task; the evidence record in S3 carries the per-step detail. A task before it checks,
from the evidence in S3 alone, that no kind of drill is overdue. A failed drill is never retried (a
retry would repeat a failover): the task fails at once and the drill has already posted
``DRDrillFailed`` with its evidence.

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
from datetime import UTC, datetime, timedelta
from typing import Any

from disaster_recovery.airflow_support.dag_defaults import dag_defaults
from disaster_recovery.config.model import Settings, load_settings

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


def drill_dag(kind: str, doc_md: str, settings: Settings | None = None) -> Any:
    from airflow.sdk import DAG, CronTriggerTimetable, Param, TaskGroup, get_current_context, task

    from disaster_recovery.airflow_support.alerting import fail_fast

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
        # The drill is the last task, so its outcome is the run's outcome.
        @task(task_id="drill", retries=0, trigger_rule="all_done")
        @fail_fast
        def drill() -> dict[str, Any]:
            from disaster_recovery.airflow_support.alerting import AirflowSlackSink
            from disaster_recovery.airflow_support.connections import deployment
            from disaster_recovery.drills.procedures import run_drill

            target = deployment()
            context = get_current_context()
            seed = context["params"].get("seed")
            approval = person_approval(context["ti"]) if asks_a_person else None
            record = run_drill(
                target,
                kind,  # type: ignore[arg-type]
                seed=seed,
                sink=AirflowSlackSink(target.settings),
                approval=approval,
            )
            return record.model_dump(mode="json")

        @task(task_id="check_overdue")
        def overdue() -> dict[str, Any]:
            from disaster_recovery.airflow_support.connections import deployment

            return check_overdue(deployment())

        # Decided when the DAG is parsed, from the local policy file (like every schedule).
        asks_a_person = settings.drills_need_a_person
        if not asks_a_person:
            overdue() >> drill()
            return dag
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
        overdue() >> decide >> drill()
    return dag
