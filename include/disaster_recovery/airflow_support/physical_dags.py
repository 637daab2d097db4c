"""The point-in-time recovery DAGs: ``postgresql_wal_archive`` (every 5 minutes) and
``postgresql_backup_incremental`` (hourly; it also takes the day's base backup).

Tasks pass only small dicts through XCom (a report, a file name); every task reads what it
needs from S3, so any task can run on any worker. Parse time reads only the local policy file.

Library imports sit inside task bodies on purpose: DAG files import this module at parse time,
which must stay cheap (no psycopg, boto3 or redis; Airflow's parse-time budget).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from disaster_recovery.airflow_support.dag_defaults import dag_defaults
from disaster_recovery.config.model import Settings, load_settings

WAL_DAG_ID = "postgresql_wal_archive"
INCREMENTAL_DAG_ID = "postgresql_backup_incremental"


def _schedule(settings: Settings, tier: str) -> Any:
    from airflow.sdk import CronTriggerTimetable

    return CronTriggerTimetable(settings.tiers.get(tier).schedule, timezone=settings.timezone)


def _deployment() -> Any:
    from disaster_recovery.airflow_support.connections import deployment

    return deployment()


def wal_archive_dag(doc_md: str, settings: Settings | None = None) -> Any:
    """inspect the archive -> (continuity, freshness), each alerting on its own failure."""
    from airflow.sdk import DAG, Param, task

    from disaster_recovery.airflow_support.alerting import alert_on_failure, fail_fast

    settings = settings or load_settings()
    with DAG(
        doc_md=doc_md,
        schedule=_schedule(settings, "postgresql_wal"),
        **dag_defaults(settings, dag_id=WAL_DAG_ID, retries=1, retry_delay=timedelta(seconds=30)),
        tags=["dr", "wal", "health"],
        params={
            "deep": Param(
                False, type="boolean", description="hash every archived segment, not only new ones"
            )
        },
    ) as dag:

        @task(on_failure_callback=alert_on_failure("WALArchiveStale", check="inspect"))
        def inspect_archive(params: dict[str, Any] | None = None) -> dict[str, Any]:
            from disaster_recovery.wal.continuity import check_archive

            return check_archive(_deployment(), deep=bool((params or {}).get("deep"))).to_dict()

        @task(on_failure_callback=alert_on_failure("WALArchiveGap"))
        @fail_fast
        def check_continuity(report: dict[str, Any]) -> dict[str, Any]:
            from disaster_recovery.wal.continuity import raise_for_gap

            raise_for_gap(report)
            return {"checked_from": report["checked_from"], "checked_to": report["checked_to"]}

        @task(on_failure_callback=alert_on_failure("WALArchiveStale"))
        @fail_fast
        def check_freshness(report: dict[str, Any]) -> dict[str, Any]:
            from disaster_recovery.wal.continuity import raise_for_staleness

            raise_for_staleness(report)
            return {"newest": report["newest"], "archiver": report["archiver"]}

        @task(on_failure_callback=alert_on_failure("WALArchiveBacklog"))
        @fail_fast
        def check_backlog(report: dict[str, Any]) -> dict[str, Any]:
            from disaster_recovery.wal.continuity import raise_for_backlog

            raise_for_backlog(report)
            return {"ready_backlog": report["archiver"].get("ready_backlog")}

        @task(on_failure_callback=alert_on_failure("WALReplicaBehind"))
        @fail_fast
        def fill_replicas() -> dict[str, Any]:
            """What a region lost while it was down: WAL files, then owed backup copies."""
            from disaster_recovery.backup.replica_debt import fill_owed_replicas
            from disaster_recovery.wal.archive import WalArchive
            from disaster_recovery.wal.history import archive_missing_history
            from disaster_recovery.wal.replica_debt import fill_missing, raise_if_behind

            deployment = _deployment()
            result = fill_missing(WalArchive.for_deployment(deployment))
            result["backups"] = fill_owed_replicas(deployment)
            result["history"] = archive_missing_history(deployment)
            raise_if_behind(result)
            return result

        fill_replicas()
        # XComArg stands in for the dict at parse time; Airflow resolves it when the task runs.
        report = inspect_archive()
        check_continuity(report)  # type: ignore[arg-type]
        check_freshness(report)  # type: ignore[arg-type]
        check_backlog(report)  # type: ignore[arg-type]
    return dag


def incremental_backup_dag(doc_md: str, settings: Settings | None = None) -> Any:
    """take (incremental, or the day's base) -> verify -> replicate."""
    from airflow.sdk import DAG, Param, task

    from disaster_recovery.airflow_support.alerting import alert_on_failure, fail_fast

    settings = settings or load_settings()
    with DAG(
        doc_md=doc_md,
        schedule=_schedule(settings, "postgresql_incremental"),
        **dag_defaults(
            settings,
            dag_id=INCREMENTAL_DAG_ID,
            retries=2,
            retry_delay=timedelta(minutes=2),
            on_failure=alert_on_failure("BackupFailed", tier="physical"),
        ),
        tags=["dr", "backup"],
        params={
            "kind": Param(
                "auto",
                type="string",
                enum=["auto", "base", "incremental"],
                description="auto: a base backup when the chain has none for today "
                "(or after a failover), an incremental otherwise",
            )
        },
    ) as dag:

        @task
        @fail_fast
        def take_backup(params: dict[str, Any] | None = None) -> dict[str, Any]:
            from disaster_recovery.backup.physical import take_backup
            from disaster_recovery.catalog.report import backup_report

            return backup_report(take_backup(_deployment(), (params or {}).get("kind", "auto")))

        @task
        @fail_fast
        def verify_backup(taken: dict[str, Any]) -> dict[str, Any]:
            from disaster_recovery.backup.physical import verify_backup
            from disaster_recovery.catalog.report import backup_report

            return backup_report(verify_backup(_deployment(), taken["backup_file"]))

        @task
        @fail_fast
        def replicate_backup(verified: dict[str, Any]) -> dict[str, Any]:
            from disaster_recovery.backup.physical import replicate_backup
            from disaster_recovery.catalog.report import backup_report

            return backup_report(replicate_backup(_deployment(), verified["backup_file"]))

        replicate_backup(verify_backup(take_backup()))  # type: ignore[arg-type]
    return dag
