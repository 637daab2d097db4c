"""
### dr_health_check — both regions, every minute

Checks the primary (database, Redis, application) and the secondary (standby database, Redis
replica, application on standby), and measures replication lag from LSNs (0 when idle and caught
up). Each check is recorded in S3 (`<prefix>/health/YYYY/MM/DD/HHMMSS_micro.json`) and
returned in XCom.

Alerts to Slack, each **once per incident** with a recovery message when it clears:
`ReplicationLagHigh` (High, lag above `thresholds.replication_lag`, 60 s), `SecondaryUnreachable`
(Critical), `PrimaryDown` (Critical). The incident state lives in the Airflow Variable
`dr_health_state`, so it survives across runs and workers.

After `thresholds.health_failures_before_failover` (3) consecutive failed primary checks it
triggers `dr_failover` with `initiated_by = auto` and the evidence as the reason — once per
incident; one successful check resets the count. The failover still waits for a person at its
approval step. Set `failover.auto_trigger: false` to only alert.

**Safe to re-run**: a check changes nothing but the Variable and its S3 record.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import dag, task

from disaster_recovery.airflow_support import failover_dags


@dag(
    dag_id="dr_health_check",
    doc_md=__doc__,
    schedule="* * * * *",
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=5),
    # Active once deployed: a paused health check detects nothing (README, "Deploy").
    is_paused_upon_creation=False,
    tags=["dr", "health"],
    default_args={"retries": 0},
)
def dr_health_check() -> None:
    @task(multiple_outputs=False)
    def check() -> dict:
        return failover_dags.health_check()

    @task.short_circuit
    def primary_failed_repeatedly(result: dict) -> bool:
        return bool(result["trigger_failover"])

    result = check()
    trigger_failover = TriggerDagRunOperator(
        task_id="trigger_failover",
        trigger_dag_id="dr_failover",
        conf={
            "reason": "{{ ti.xcom_pull(task_ids='check')['reason'] }}",
            "initiated_by": "auto",
            "dry_run": False,
            "accept_data_loss": False,
        },
        wait_for_completion=False,
    )
    primary_failed_repeatedly(result) >> trigger_failover


dr_health_check()
