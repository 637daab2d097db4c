"""The DR drill DAGs (monthly, quarterly) from one factory.

A drill is one continuous, timed procedure (its RTO is measured across its steps), so it runs
as one task; the evidence record in S3 carries the per-step detail. A task before it checks,
from the evidence in S3 alone, that no kind of drill is overdue. A failed drill is never retried (a
retry would repeat a failover): the task fails at once and the drill has already posted
``DRDrillFailed`` with its evidence.

Library imports sit inside task bodies on purpose: DAG files import this module at parse time,
which must stay cheap (no psycopg, boto3 or redis; Airflow's parse-time budget).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from disaster_recovery.airflow_support.dag_defaults import dag_defaults
from disaster_recovery.config.model import Settings, load_settings


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


def drill_dag(kind: str, doc_md: str, settings: Settings | None = None) -> Any:
    from airflow.sdk import DAG, CronTriggerTimetable, Param, get_current_context, task

    from disaster_recovery.airflow_support.alerting import fail_fast

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
        # The drill is the last task, so its outcome is the run's outcome.
        @task(task_id="drill", retries=0, trigger_rule="all_done")
        @fail_fast
        def drill() -> dict[str, Any]:
            from disaster_recovery.airflow_support.alerting import AirflowSlackSink
            from disaster_recovery.airflow_support.connections import deployment
            from disaster_recovery.drills.procedures import run_drill

            target = deployment()
            seed = get_current_context()["params"].get("seed")
            record = run_drill(target, kind, seed=seed, sink=AirflowSlackSink(target.settings))  # type: ignore[arg-type]
            return record.model_dump(mode="json")

        @task(task_id="check_overdue")
        def overdue() -> dict[str, Any]:
            from disaster_recovery.airflow_support.connections import deployment

            return check_overdue(deployment())

        overdue() >> drill()
    return dag
