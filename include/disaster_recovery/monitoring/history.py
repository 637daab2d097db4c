"""The health checks' history in S3: what availability and the console's health strip read.

Each check leaves two records:

- the full check at ``<prefix>/health/YYYY/MM/DD/HHMMSS_ffffff.json`` (as before: every fact
  and error, for an investigation), in the secondary region's bucket;
- one line in the day's compact record ``<prefix>/availability/YYYY/MM/DD.json`` (UTC days):
  ``[checked_at, primary_healthy, secondary_healthy, primary_region]`` plus the alerts active
  after the check (first time) and the Airflow task that raised each (``alert_runs``: dag_id,
  run_id, task_id, try_number — the console links to its log). 30 days of checks are 30 small
  reads instead of 43 200 objects. It is written to both regions' buckets, so whichever
  survives answers.

Only ``dr_health_check`` writes them, one run at a time (``max_active_runs=1``), so the
read-modify-write of the day's record has a single writer.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from disaster_recovery.clients.s3 import ObjectStore, regional_store
from disaster_recovery.config.endpoints import Deployment
from disaster_recovery.errors import DisasterRecoveryError, NotFoundError
from disaster_recovery.monitoring.availability import Check

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DayRecord:
    day: date
    checks: list[list[Any]]
    active_alerts: dict[str, str]
    alert_runs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "checks": self.checks,
            "active_alerts": self.active_alerts,
            "alert_runs": self.alert_runs,
        }


def day_key(prefix: str, day: date) -> str:
    return f"{prefix}/availability/{day:%Y/%m/%d}.json"


def raw_key(prefix: str, at: datetime) -> str:
    return f"{prefix}/health/{at.astimezone(UTC):%Y/%m/%d/%H%M%S_%f}.json"


def check_line(health: dict[str, Any]) -> list[Any]:
    """The compact line for one check (``check_health``'s document)."""
    return [
        health["checked_at"],
        bool(health.get("primary_healthy")),
        bool(health.get("secondary_healthy")),
        health["primary"]["region"],
    ]


def load_day(store: ObjectStore, prefix: str, day: date) -> DayRecord:
    """The day's record; an empty one when no check was recorded that day."""
    try:
        document = store.get_json(day_key(prefix, day))
    except NotFoundError:
        return DayRecord(day, [], {})
    return DayRecord(
        day,
        list(document.get("checks", [])),
        dict(document.get("active_alerts", {})),
        dict(document.get("alert_runs", {})),
    )


def append_check(
    store: ObjectStore,
    prefix: str,
    health: dict[str, Any],
    active_alerts: dict[str, str],
    alert_runs: dict[str, dict[str, Any]] | None = None,
) -> None:
    checked_at = datetime.fromisoformat(health["checked_at"])
    day = checked_at.astimezone(UTC).date()
    record = load_day(store, prefix, day)
    record.checks.append(check_line(health))
    updated = DayRecord(day, record.checks, active_alerts, dict(alert_runs or {}))
    store.put_json(day_key(prefix, day), updated.to_dict())


def record_check(
    deployment: Deployment,
    health: dict[str, Any],
    verdict: dict[str, Any],
    regions: tuple[str, ...],
) -> dict[str, str]:
    """Store one check: the full record in the first region's bucket, the compact line in each
    region's. Returns per region ``"recorded"`` or the error (a lost region must not stop the
    check from being recorded in the other)."""
    prefix = deployment.settings.storage.prefix
    at = datetime.fromisoformat(health["checked_at"])
    state = verdict.get("state") or {}
    active = dict(state.get("active") or {})
    raised_by = dict(state.get("raised_by") or {})  # evaluate() records only real runs
    outcome: dict[str, str] = {}
    for index, region in enumerate(regions):
        try:
            store = regional_store(deployment, region)
            if index == 0:
                store.put_json(raw_key(prefix, at), {"health": health, **verdict})
            append_check(store, prefix, health, active, raised_by)
            outcome[region] = "recorded"
        except DisasterRecoveryError as exc:
            log.warning("could not record the health check in %s: %s", region, exc)
            outcome[region] = str(exc).splitlines()[0]
    return outcome


def load_days(store: ObjectStore, prefix: str, start: datetime, end: datetime) -> list[DayRecord]:
    """Every day's record from ``start``'s day to ``end``'s day (UTC), oldest first."""
    first, last = start.astimezone(UTC).date(), end.astimezone(UTC).date()
    return [
        load_day(store, prefix, first + timedelta(days=n)) for n in range((last - first).days + 1)
    ]


def checks_of(days: list[DayRecord]) -> list[Check]:
    return [
        Check(datetime.fromisoformat(line[0]), bool(line[1]), str(line[3]))
        for day in days
        for line in day.checks
    ]


# -- pruning ----------------------------------------------------------------------------------

_DAY_IN_KEY = re.compile(r"/(\d{4})/(\d{2})/(\d{2})(?:/|\.json$)")


def day_of_key(key: str) -> date | None:
    """The UTC day a history key belongs to (``.../YYYY/MM/DD/...`` or ``.../YYYY/MM/DD.json``)."""
    match = _DAY_IN_KEY.search(key)
    if not match:
        return None
    return date(int(match.group(1)), int(match.group(2)), int(match.group(3)))


def expired_keys(store: ObjectStore, prefix: str, keep: timedelta, now: datetime) -> list[str]:
    """Keys under ``prefix`` whose whole day ended more than ``keep`` ago."""
    cutoff = (now - keep).astimezone(UTC).date()
    found = []
    for entry in store.list_keys(prefix):
        day = day_of_key(entry["Key"])
        if day is not None and day < cutoff:
            found.append(entry["Key"])
    return found


def prune_history(
    store: ObjectStore,
    storage_prefix: str,
    *,
    keep_checks: timedelta,
    keep_availability: timedelta,
    now: datetime,
    dry_run: bool,
) -> dict[str, list[str]]:
    """Delete (or, with ``dry_run``, only list) the check records and per-day availability
    records past their periods."""
    doomed = {
        "health_records": expired_keys(store, f"{storage_prefix}/health/", keep_checks, now),
        "availability_records": expired_keys(
            store, f"{storage_prefix}/availability/", keep_availability, now
        ),
    }
    if not dry_run:
        for keys in doomed.values():
            if keys:
                store.delete(keys)
    return doomed
