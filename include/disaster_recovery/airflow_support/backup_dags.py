"""The logical backup DAGs (full daily, weekly, monthly) from one factory, and the cleanup DAG.

Each backup DAG: dump -> checksum -> verify -> replicate -> publish. Tasks pass only the backup's
file name (a small dict) through XCom; every task reads the manifest from S3, so any task can
run on any worker. Schedules are the tiers' cron expressions in ``settings.timezone``.
Parse time reads only the local policy file (``dr_config.yaml``): no network, no Connection.

Library imports sit inside task bodies on purpose: DAG files import this module at parse time,
which must stay cheap (no psycopg, boto3 or redis; Airflow's parse-time budget).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from disaster_recovery.airflow_support.dag_defaults import dag_defaults
from disaster_recovery.config.model import Settings, load_settings

log = logging.getLogger(__name__)

BACKUP_DAG_IDS = {
    "postgresql_full": "postgresql_backup_full",
    "postgresql_weekly": "postgresql_backup_weekly",
    "postgresql_monthly": "postgresql_backup_monthly",
}
TIER_LABELS = {
    "postgresql_full": "full (daily)",
    "postgresql_weekly": "weekly",
    "postgresql_monthly": "monthly",
}


def backup_dag_defaults(settings: Settings, dag_id: str, on_failure: Any) -> dict[str, Any]:
    return dag_defaults(
        settings,
        dag_id=dag_id,
        retries=settings.backup.task_retries,
        retry_delay=settings.backup.retry_delay,
        on_failure=on_failure,
    )


def run_time(context: Any) -> datetime:
    """The run's nominal time: its logical date when scheduled, its trigger time otherwise
    (a run triggered from the UI may have no logical date)."""
    dag_run = context["dag_run"]
    when: datetime = dag_run.logical_date or dag_run.run_after
    return when


def task_deployment(context: Any) -> Any:
    """The deployment for a task, with the run's ``dump_from`` Param applied."""
    from disaster_recovery.airflow_support.connections import deployment

    settings = load_settings()
    dump_from = (context.get("params") or {}).get("dump_from") or "configured"
    if dump_from != "configured":
        settings = settings.model_copy(
            update={"backup": settings.backup.model_copy(update={"dump_from": dump_from})}
        )
    return deployment(settings)


def backup_facts(context: dict[str, Any], backup_type: str) -> tuple[str, dict[str, Any]]:
    """What a backup alert names: the tier, the file and the step that failed."""
    from disaster_recovery.backup.logical import run_file

    try:
        file = run_file(backup_type, run_time(context))
    except Exception:
        file = "(unknown)"
    check = context["ti"].task_id
    return (
        f"{TIER_LABELS[backup_type]} backup {file}: {check}",
        {"tier": backup_type, "file": file, "check": check},
    )


def alert_callback(backup_type: str) -> Callable[[dict[str, Any]], None]:
    """BackupVerificationFailed when a check failed, BackupFailed otherwise (see
    :func:`~disaster_recovery.airflow_support.alerting.alert_on_failure`)."""
    from disaster_recovery.airflow_support.alerting import alert_on_failure

    return alert_on_failure("BackupFailed", lambda context: backup_facts(context, backup_type))


def backup_dag(backup_type: str, doc_md: str, settings: Settings | None = None) -> Any:
    """The DAG of one logical tier: dump -> checksum -> verify -> replicate -> publish."""
    from airflow.sdk import DAG, CronTriggerTimetable, Param, get_current_context, task

    from disaster_recovery.airflow_support.alerting import fail_fast

    settings = settings or load_settings()
    tier = settings.tiers.get(backup_type)
    on_failure = alert_callback(backup_type)
    with DAG(
        doc_md=doc_md,
        schedule=CronTriggerTimetable(tier.schedule, timezone=settings.timezone),
        **backup_dag_defaults(settings, BACKUP_DAG_IDS[backup_type], on_failure),
        tags=["dr", "backup"],
        params={
            "dump_from": Param(
                "configured",
                type="string",
                enum=["configured", "primary", "standby"],
                description="Node to dump: the configured one (backup.dump_from), "
                "the primary, or the standby",
            )
        },
    ) as dag:

        @task(task_id="dump", execution_timeout=settings.backup.command_timeout)
        @fail_fast
        def dump() -> dict[str, Any]:
            from disaster_recovery.backup.logical import dump_to_s3

            context = get_current_context()
            return dump_to_s3(
                task_deployment(context), backup_type, run_time(context), who=_who(context)
            )

        @task(task_id="checksum")
        @fail_fast
        def checksum(dumped: Any) -> dict[str, Any]:
            from disaster_recovery.backup.verify import check_checksum

            return check_checksum(
                task_deployment(get_current_context()), backup_type, dumped["file"]
            )

        @task(task_id="verify", execution_timeout=settings.backup.command_timeout)
        @fail_fast
        def verify(dumped: Any, _checksum: Any) -> dict[str, Any]:
            from disaster_recovery.backup.verify import check_readable

            return check_readable(
                task_deployment(get_current_context()), backup_type, dumped["file"]
            )

        @task(task_id="replicate")
        @fail_fast
        def replicate(dumped: Any, _verified: Any) -> dict[str, Any]:
            from disaster_recovery.backup.replicate import replicate as replicate_backup

            return replicate_backup(
                task_deployment(get_current_context()), backup_type, dumped["file"]
            )

        @task(task_id="publish")
        @fail_fast
        def publish(
            dumped: Any,
            checksum_result: Any,
            verified: Any,
            replica: Any,
        ) -> dict[str, Any]:
            from disaster_recovery.backup.logical import publish as publish_backup
            from disaster_recovery.catalog.report import backup_report

            context = get_current_context()
            checks = {"checksum": checksum_result, **verified, "replica": replica}
            manifest = publish_backup(
                task_deployment(context), backup_type, dumped["file"], checks, who=_who(context)
            )
            return backup_report(manifest)

        dumped = dump()
        summed = checksum(dumped)
        read = verify(dumped, summed)
        copied = replicate(dumped, read)
        publish(dumped, summed, read, copied)
    return dag


def cleanup_dag(doc_md: str, settings: Settings | None = None) -> Any:
    """``postgresql_backup_cleanup``: the retention policy, daily after the backups."""
    from airflow.sdk import DAG, CronTriggerTimetable, Param, get_current_context, task

    from disaster_recovery.airflow_support.alerting import alert_on_failure, fail_fast

    settings = settings or load_settings()
    with DAG(
        doc_md=doc_md,
        schedule=CronTriggerTimetable(settings.backup.cleanup_schedule, timezone=settings.timezone),
        **backup_dag_defaults(
            settings,
            "postgresql_backup_cleanup",
            alert_on_failure("BackupFailed", check="cleanup"),
        ),
        tags=["dr", "backup", "maintenance"],
        params={
            "dry_run": Param(False, type="boolean", description="Only list what would be deleted")
        },
    ) as dag:

        @task(task_id="apply_retention")
        @fail_fast
        def apply_retention() -> dict[str, Any]:
            from disaster_recovery.retention.cleanup import cleanup_old_backups

            context = get_current_context()
            return cleanup_old_backups(
                task_deployment(context), dry_run=bool(context["params"]["dry_run"])
            )

        apply_retention()
    return dag


def _who(context: Any) -> str:
    ti = context["ti"]
    return f"airflow:{ti.dag_id}/{ti.run_id}/{ti.task_id}"
