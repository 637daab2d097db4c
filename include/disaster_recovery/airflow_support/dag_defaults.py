"""What every DR DAG shares: a fixed start date in the configured time zone, no catch-up, one run
at a time, owner ``dr``, retries for transient faults (permanent ones fail at once: see
:func:`~disaster_recovery.airflow_support.alerting.fail_fast`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from disaster_recovery.config.model import Settings

START_DATE = datetime(2024, 1, 1)

# The DAGs protection depends on run as soon as they are deployed (Airflow creates a new DAG
# paused otherwise): a paused health check never detects anything, and an automatic failover
# triggered into a paused dr_failover would wait forever. Drills and cleanup stay paused until an
# operator turns them on (README, "Deploy").
ACTIVE_WHEN_DEPLOYED = frozenset(
    {
        "dr_health_check",
        "postgresql_wal_archive",
        "postgresql_backup_full",
        "postgresql_backup_incremental",
        "postgresql_backup_weekly",
        "postgresql_backup_monthly",
        "dr_failover",
        "dr_failback",
    }
)


def dag_defaults(
    settings: Settings,
    *,
    dag_id: str,
    retries: int,
    retry_delay: timedelta,
    on_failure: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``DAG(...)`` common to every DAG of the package (``dag_id`` among
    them)."""
    default_args: dict[str, Any] = {"owner": "dr", "retries": retries, "retry_delay": retry_delay}
    if on_failure is not None:
        default_args["on_failure_callback"] = on_failure
    return {
        "dag_id": dag_id,
        "is_paused_upon_creation": dag_id not in ACTIVE_WHEN_DEPLOYED,
        "start_date": START_DATE.replace(tzinfo=settings.tz),
        "catchup": False,
        "max_active_runs": 1,
        "default_args": default_args,
    }
