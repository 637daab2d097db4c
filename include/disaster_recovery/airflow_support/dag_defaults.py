"""What every DR DAG shares: a fixed start date in the configured time zone, no catch-up, one run
at a time, owner ``dr``, retries for transient faults (permanent ones fail at once: see
:func:`~disaster_recovery.airflow_support.alerting.fail_fast`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from disaster_recovery.config.model import Settings

START_DATE = datetime(2024, 1, 1)


def dag_defaults(
    settings: Settings,
    *,
    retries: int,
    retry_delay: timedelta,
    on_failure: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``DAG(...)`` common to every DAG of the package."""
    default_args: dict[str, Any] = {"owner": "dr", "retries": retries, "retry_delay": retry_delay}
    if on_failure is not None:
        default_args["on_failure_callback"] = on_failure
    return {
        "start_date": START_DATE.replace(tzinfo=settings.tz),
        "catchup": False,
        "max_active_runs": 1,
        "default_args": default_args,
    }
