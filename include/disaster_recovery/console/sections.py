"""The DR console's data: what an operator watches during an incident, in one document.

Read from S3 (and, for the topology, from the nodes themselves), never from Airflow's database,
so the console and ``dr status`` work from either region: a failover or failback running now
comes from the progress it writes to S3 (:mod:`disaster_recovery.failover.progress`). The bucket read is the current
primary region's if it answers, else the other region's, and the document says which.

Each section is collected on its own: a section that cannot be read holds ``{"error": ...}``
and the rest still renders. Nothing here reads a secret into the document, and
:func:`redact` removes any value of a Connection's password, token or webhook URL that an
error message might carry.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import psycopg
from croniter import croniter

from disaster_recovery.airflow_support.backup_dags import BACKUP_DAG_IDS
from disaster_recovery.catalog.listing import Catalog
from disaster_recovery.catalog.manifests import Manifest
from disaster_recovery.catalog.names import LOGICAL_TYPES, PHYSICAL_TYPES
from disaster_recovery.clients.s3 import ObjectStore, regional_store
from disaster_recovery.clients.slack import ALERTS, Severity
from disaster_recovery.config.endpoints import Deployment
from disaster_recovery.console.protection import protection_status
from disaster_recovery.drills.evidence import EvidenceStore, first_run, overdue_alerts
from disaster_recovery.errors import DisasterRecoveryError, UnavailableError
from disaster_recovery.failover.progress import running_switches
from disaster_recovery.monitoring.availability import Availability, measure
from disaster_recovery.monitoring.health import check_health, region_postgres
from disaster_recovery.monitoring.history import DayRecord, checks_of, load_days, raw_key
from disaster_recovery.monitoring.topology import read_record
from disaster_recovery.postgres import db
from disaster_recovery.postgres.walfiles import is_segment
from disaster_recovery.restore.pitr import describe_chain
from disaster_recovery.wal.archive import WalArchive

log = logging.getLogger(__name__)

# dr_health_check runs every minute; one check vouches for at most three (a late scheduler
# run is not an outage, a silent monitor is not "up").
HEALTH_CHECK_EVERY = timedelta(minutes=1)
MAX_CHECK_GAP = 3 * HEALTH_CHECK_EVERY
AVAILABILITY_DAYS = 30
RECENT_FAILOVERS = 5
# A tier is late when its newest verified backup is older than its schedule's interval plus
# this share of it (a backup takes time; at least 15 minutes of slack).
LATE_SLACK_SHARE = 0.25
MIN_LATE_SLACK = timedelta(minutes=15)

# The base and incremental backups both come from one DAG.
PHYSICAL_BACKUP_DAG = "postgresql_backup_incremental"
HUMAN_TIERS = {
    "postgresql_full": "Daily full (logical)",
    "postgresql_weekly": "Weekly (logical)",
    "postgresql_monthly": "Monthly (logical)",
    "postgresql_base": "Base backup (physical)",
    "postgresql_incremental": "Hourly incremental (physical)",
}


def console_roles(deployment: Deployment) -> tuple[str, str]:
    """(primary region, secondary region) now, by the topology record (readable from either
    region's bucket, so the console loads while one region is lost)."""
    record = read_record(deployment)
    return record.primary_region, record.standby_region


@dataclass
class Context:
    """What every section reads: the roles, the bucket that answered, the clock."""

    deployment: Deployment
    now: datetime
    primary: str
    secondary: str
    region: str  # whose bucket answered
    store: ObjectStore
    notes: list[str] = field(default_factory=list)
    _stores: dict[str, ObjectStore] = field(default_factory=dict, repr=False)
    _memo: dict[str, Any] = field(default_factory=dict, repr=False)

    def once(self, key: str, read: Callable[[], Any]) -> Any:
        """Read something several sections need (the health history, the failover records)
        once per document."""
        if key not in self._memo:
            self._memo[key] = read()
        return self._memo[key]

    @property
    def prefix(self) -> str:
        return self.deployment.settings.storage.prefix

    def other_stores(self) -> list[tuple[str, ObjectStore]]:
        """Each region's bucket, the answering one first (for records kept per region)."""
        found = [(self.region, self.store)]
        for region in (self.primary, self.secondary):
            if region != self.region:
                if region not in self._stores:  # a client costs ~0.1 s to build
                    self._stores[region] = regional_store(self.deployment, region)
                found.append((region, self._stores[region]))
        return found


def answering_store(
    deployment: Deployment, order: Iterable[str]
) -> tuple[str, ObjectStore, list[str]]:
    """The first region (in ``order``) whose bucket answers, with why the others did not."""
    problems: list[str] = []
    for region in order:
        try:
            store = regional_store(deployment, region)
            if store.bucket_exists():
                return region, store, problems
            problems.append(f"{region}: bucket {store.bucket} does not exist")
        except DisasterRecoveryError as exc:
            problems.append(f"{region}: {first_line(exc)}")
    raise UnavailableError(
        "no region's bucket answers: " + "; ".join(problems) + ". Check the S3 Connections."
    )


def first_line(exc: BaseException) -> str:
    return next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)


def moment(value: datetime | None) -> str | None:
    """ISO time to the second, in UTC (no microseconds anywhere on the console)."""
    return value.astimezone(UTC).replace(microsecond=0).isoformat() if value else None


def parse_moment(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def schedule_interval(cron: str, now: datetime) -> timedelta:
    """The time between the two most recent firings of ``cron`` before ``now``."""
    runs = croniter(cron, now)
    last = runs.get_prev(datetime)
    return last - runs.get_prev(datetime)


def dag_link(deployment: Deployment, dag_id: str, run_id: str | None = None) -> str:
    base = deployment.settings.alerts.airflow_base_url.rstrip("/")
    return f"{base}/dags/{dag_id}" + (f"/runs/{quote(run_id, safe='')}" if run_id else "")


def run_link(deployment: Deployment, run: dict[str, Any] | None, dag_id: str) -> str:
    """The Airflow page of ``run`` (``dag_id``, ``run_id`` and, for a task's log, ``task_id``
    and ``try_number``, as the health check and the drills record them); the DAG's page when
    nothing was recorded (a record older than this field, a run outside Airflow)."""
    if not run or not run.get("run_id"):
        return dag_link(deployment, dag_id)
    link = dag_link(deployment, run.get("dag_id") or dag_id, run["run_id"])
    if run.get("task_id"):
        link += f"/tasks/{quote(run['task_id'], safe='')}"
        if run.get("try_number"):
            link += f"?try_number={int(run['try_number'])}"
    return link


# -- sections ---------------------------------------------------------------------------------


def objectives(ctx: Context) -> dict[str, Any]:
    target = ctx.deployment.settings.objectives
    return {
        "rpo_seconds": target.rpo.total_seconds(),
        "rto_seconds": target.rto.total_seconds(),
        "availability_percent": target.availability_percent,
        "replication_lag_seconds": ctx.deployment.settings.thresholds.replication_lag.total_seconds(),
    }


def primary_timeline(deployment: Deployment, region: str) -> int | None:
    """The primary's timeline (it grows with every promotion); None when it cannot be asked."""
    try:
        with db.connect(region_postgres(deployment, region), timeout=5) as conn:
            row = conn.execute("SELECT timeline_id FROM pg_control_checkpoint()").fetchone()
    except (DisasterRecoveryError, psycopg.Error):
        return None
    return int(row[0]) if row and row[0] is not None else None


def topology_generation(ctx: Context) -> int | None:
    """The topology record's generation (one more with every change of the primary region)."""
    try:
        return int(read_record(ctx.deployment).generation)
    except DisasterRecoveryError as exc:
        ctx.notes.append(f"topology record: {first_line(exc)}")
        return None


def topology(ctx: Context) -> dict[str, Any]:
    """Which region is primary, and each node's role and health, measured now."""
    health = check_health(ctx.deployment, ctx.primary, ctx.secondary)
    threshold = ctx.deployment.settings.thresholds.replication_lag.total_seconds()
    lag = health["replication_lag_seconds"]
    nodes = []
    for role, side, healthy in (
        ("primary", health["primary"], health["primary_healthy"]),
        ("standby", health["secondary"], health["secondary_healthy"]),
    ):
        nodes.append(
            {
                "region": side["region"],
                "role": role,
                # The detail (streaming, replicating, read_only...), not the seed's summary word.
                "database": side.get("database_state"),
                "redis": side.get("redis_state"),
                "services": side.get("services"),
                "healthy": bool(healthy),
            }
        )
    return {
        "primary_region": ctx.primary,
        "secondary_region": ctx.secondary,
        "generation": topology_generation(ctx),
        "timeline": primary_timeline(ctx.deployment, ctx.primary),
        "checked_at": moment(parse_moment(health["checked_at"])),
        "nodes": nodes,
        "replication_lag_seconds": lag,
        "replication_lag_threshold_seconds": threshold,
        "replication_lag_ok": lag is not None and lag <= threshold,
        "standby_replay_lsn": health["replication"].get("standby_replay_lsn"),
        "primary_lsn": health["replication"].get("primary_lsn"),
        "errors": health["errors"],
    }


def rpo_exposure(ctx: Context) -> dict[str, Any]:
    """Per region: the newest archived WAL segment and its age against the RPO; the debt is what
    one region's archive holds that the other's lacks."""
    rpo = ctx.deployment.settings.objectives.rpo
    archive = WalArchive.for_deployment(ctx.deployment)
    regions: list[dict[str, Any]] = []
    held: dict[str, set[str]] = {}
    for region in (ctx.primary, ctx.secondary):
        try:
            listing = archive.listing(region)
        except DisasterRecoveryError as exc:
            regions.append({"region": region, "error": first_line(exc)})
            continue
        segments = {name: facts for name, facts in listing.items() if is_segment(name)}
        held[region] = set(segments)
        newest = max(segments, key=lambda n: segments[n]["last_modified"], default=None)
        archived_at = segments[newest]["last_modified"] if newest else None
        # Data at risk since the newest archived WAL was written (its upload may come later).
        written_at = (archive.written_at(newest, [region]) or archived_at) if newest else None
        age = (ctx.now - written_at).total_seconds() if written_at else None
        regions.append(
            {
                "region": region,
                "newest_segment": newest,
                "written_at": moment(written_at),
                "archived_at": moment(archived_at),
                "age_seconds": round(age) if age is not None else None,
                "within_rpo": age is not None and age <= rpo.total_seconds(),
                "segments": len(segments),
            }
        )
    debt = None
    if len(held) == 2:
        debt = {
            f"{a} not in {b}": len(held[a] - held[b])
            for a, b in ((ctx.primary, ctx.secondary), (ctx.secondary, ctx.primary))
        }
    return {"rpo_seconds": rpo.total_seconds(), "regions": regions, "replication_debt": debt}


def tier_schedule(ctx: Context, backup_type: str) -> str | None:
    tier = getattr(ctx.deployment.settings.tiers, backup_type, None)
    return tier.schedule if tier is not None else None


def backup_row(ctx: Context, backup_type: str, manifests: list[Manifest]) -> dict[str, Any]:
    verified = [m for m in manifests if m.verified]
    newest = verified[-1] if verified else None
    schedule = tier_schedule(ctx, backup_type)
    every = schedule_interval(schedule, ctx.now) if schedule else None
    age = ctx.now - newest.started_at if newest else None
    late, late_since = None, None
    if every is not None:
        slack = max(MIN_LATE_SLACK, every * LATE_SLACK_SHARE)
        late = age is None or age > every + slack
        if late and newest is not None:
            late_since = newest.started_at + every + slack
    return {
        "tier": backup_type,
        "label": HUMAN_TIERS.get(backup_type, backup_type),
        "newest_verified": newest.file if newest else None,
        "started_at": moment(newest.started_at) if newest else None,
        "age_seconds": round(age.total_seconds()) if age is not None else None,
        "schedule": schedule,
        "expected_every_seconds": every.total_seconds() if every else None,
        "late": late,
        "late_since": moment(late_since),
        "link": dag_link(ctx.deployment, BACKUP_DAG_IDS.get(backup_type, PHYSICAL_BACKUP_DAG)),
        "size_bytes": newest.size_bytes if newest else None,
        "duration_seconds": _duration(newest) if newest else None,
        "checks": sorted(newest.verification.checks) if newest and newest.verification else [],
        "replicas": sorted(newest.replicas) if newest else [],
        "evidence": ctx.store.url(newest.manifest_key) if newest else None,
        "verified_count": len(verified),
        "history": [
            {
                "started_at": moment(m.started_at),
                "size_bytes": m.size_bytes,
                "duration_seconds": _duration(m),
            }
            for m in verified
        ],
    }


def _duration(manifest: Manifest) -> float | None:
    if manifest.finished_at is None:
        return None
    return round((manifest.finished_at - manifest.started_at).total_seconds(), 1)


def backups(ctx: Context) -> dict[str, Any]:
    """Per tier: the newest verified backup, its age against the schedule, size, checks,
    replicas; and the point-in-time window of the answering region."""
    catalog = Catalog(ctx.store, ctx.prefix)
    tiers = [
        backup_row(ctx, backup_type, catalog.manifests([backup_type]))
        for backup_type in (*LOGICAL_TYPES, *PHYSICAL_TYPES)
    ]
    try:
        chain = describe_chain(ctx.deployment, ctx.region)["regions"][ctx.region]
        pitr = {
            "region": ctx.region,
            "earliest": moment(parse_moment(chain.get("earliest_restorable"))),
            "latest": moment(parse_moment(chain.get("latest_restorable"))),
            "note": chain.get("note"),
        }
    except DisasterRecoveryError as exc:
        pitr = {"region": ctx.region, "error": first_line(exc)}
    return {"tiers": tiers, "pitr_window": pitr}


def failover_history(ctx: Context) -> list[dict[str, Any]]:
    """Every failover and failback result, from each region's bucket (a result is stored in
    the region that became primary), newest first."""
    result: list[dict[str, Any]] = ctx.once("failovers", lambda: _read_failovers(ctx))
    return result


def _read_failovers(ctx: Context) -> list[dict[str, Any]]:
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for region, store in ctx.other_stores():
        try:
            keys = [e["Key"] for e in store.list_keys(f"{ctx.prefix}/failovers/")]
            for key in keys:
                if key.endswith(".json"):
                    result = store.get_json(key)
                    result["evidence"] = store.url(key)
                    found.setdefault((str(result.get("run_id")), str(result.get("kind"))), result)
        except DisasterRecoveryError as exc:
            ctx.notes.append(f"failover history in {region}: {first_line(exc)}")
    return sorted(found.values(), key=lambda r: str(r.get("finished_at")), reverse=True)


def _data_loss(result: dict[str, Any]) -> str | None:
    for step in result.get("steps", []):
        details = step.get("details") or {}
        if details.get("possible_data_loss"):
            return str(details["possible_data_loss"])
    return None


def _person(value: Any) -> str | None:
    """Who answered: Airflow records a user as ``{"id", "name"}``, the library as a name."""
    if isinstance(value, dict):
        return str(value.get("name") or value.get("id") or "") or None
    return str(value) if value else None


def failovers(ctx: Context) -> dict[str, Any]:
    history = failover_history(ctx)
    recent = []
    for result in history[:RECENT_FAILOVERS]:
        recent.append(
            {
                "kind": result.get("kind", "failover"),
                "status": result.get("status"),
                "new_primary": result.get("new_primary"),
                "started_at": moment(parse_moment(result.get("started_at"))),
                "finished_at": moment(parse_moment(result.get("finished_at"))),
                "rto_seconds": result.get("total_time_seconds"),
                "data_loss": _data_loss(result),
                "reason": result.get("reason"),
                "initiated_by": result.get("initiated_by"),
                "approved_by": _person(
                    next(
                        (s.get("by") for s in result.get("steps", []) if s.get("step") == "decide"),
                        None,
                    )
                ),
                "error": result.get("error"),
                "evidence": result.get("evidence"),
                "link": dag_link(
                    ctx.deployment, f"dr_{result.get('kind', 'failover')}", result.get("run_id")
                ),
            }
        )
    return {
        "recent": recent,
        "rto_objective_seconds": ctx.deployment.settings.objectives.rto.total_seconds(),
    }


def failover_in_progress(ctx: Context) -> dict[str, Any]:
    """A failover or failback running now, from the progress it writes to S3 (the plugin adds
    Airflow's own view when its database answers): each step's state and time, who approved."""
    found: list[tuple[str, dict[str, Any]]] = []
    for region, store in ctx.other_stores():
        try:
            found += [(region, doc) for doc in running_switches(store, ctx.deployment.settings)]
        except DisasterRecoveryError as exc:
            ctx.notes.append(f"failover progress in {region}: {first_line(exc)}")
    # A run whose result is in the history has ended, whatever its progress says (a process
    # that died before its last write); read the history only when something seems to run.
    ended = (
        {(str(r.get("run_id")), str(r.get("kind"))) for r in failover_history(ctx)}
        if found
        else set()
    )
    runs: dict[tuple[str, str], dict[str, Any]] = {}
    for region, doc in found:
        key = (str(doc.get("run_id")), str(doc.get("kind")))
        if key in ended or key in runs:
            continue
        runs[key] = {
            "kind": doc.get("kind"),
            "run_id": doc.get("run_id"),
            "started_at": moment(parse_moment(doc.get("started_at"))),
            "updated_at": moment(parse_moment(doc.get("updated_at"))),
            "steps": [
                {
                    "step": step["step"],
                    "state": step.get("state"),
                    "started_at": moment(parse_moment(step.get("started_at"))),
                    "seconds": step.get("seconds"),
                }
                for step in doc.get("steps", [])
            ],
            "approved_by": _person(doc.get("approved_by")),
            "initiated_by": doc.get("initiated_by"),
            "reason": doc.get("reason"),
            "dry_run": bool(doc.get("dry_run")),
            "source": f"s3 ({region})",
            "link": doc.get("evidence"),
        }
    return {"runs": list(runs.values())}


def drill_records(ctx: Context) -> list[Any]:
    records: list[Any] = ctx.once("drills", lambda: EvidenceStore(ctx.store).records())
    return records


def overdue_drills(ctx: Context) -> list[Any]:
    """DRDrillOverdue as the scheduled check raises it: a kind that never passed is overdue only
    one window after the deployment's first run (read, never recorded, here)."""
    alerts: list[Any] = ctx.once(
        "overdue",
        lambda: overdue_alerts(
            drill_records(ctx), ctx.now, deployed=first_run(ctx.store, ctx.now, record=False)
        ),
    )
    return alerts


def drills(ctx: Context) -> dict[str, Any]:
    """The last monthly and quarterly drills against the objectives, and when each is due."""
    settings = ctx.deployment.settings
    records = drill_records(ctx)
    overdue = {a.details["drill"] for a in overdue_drills(ctx)}
    rows = []
    for kind, schedule in (
        ("monthly", settings.drills.monthly_schedule),
        ("quarterly", settings.drills.quarterly_schedule),
    ):
        mine = [r for r in records if r.drill == kind]
        last = mine[-1] if mine else None
        next_due = croniter(schedule, ctx.now.astimezone(settings.tz)).get_next(datetime)
        rows.append(
            {
                "drill": kind,
                "last_started_at": moment(last.started_at) if last else None,
                "passed": last.passed if last else None,
                "rto_seconds": last.rto_seconds if last else None,
                "rpo_seconds": last.rpo_seconds if last else None,
                "restore_throughput_mb_s": last.restore_throughput_mb_s if last else None,
                "error": last.error if last else None,
                "failed_step": next((s.name for s in last.steps if s.result == "failed"), None)
                if last
                else None,
                "next_due": moment(next_due),
                "overdue": kind in overdue,
                "link": run_link(
                    ctx.deployment, last.airflow_run if last else None, f"dr_drill_{kind}"
                ),
                "evidence": ctx.store.url(last.key) if last else None,
            }
        )
    return {
        "drills": rows,
        "rto_objective_seconds": settings.objectives.rto.total_seconds(),
        "rpo_objective_seconds": settings.objectives.rpo.total_seconds(),
    }


def health_days(ctx: Context, start: datetime) -> list[DayRecord]:
    """The health history since ``start`` from the first bucket holding any (it is written
    to both; a region that was lost misses its days)."""
    days: list[DayRecord] = ctx.once(f"health-{start.isoformat()}", lambda: _read_days(ctx, start))
    return days


def _read_days(ctx: Context, start: datetime) -> list[DayRecord]:
    problems = []
    for region, store in ctx.other_stores():
        try:
            days = load_days(store, ctx.prefix, start, ctx.now)
        except DisasterRecoveryError as exc:
            problems.append(f"{region}: {first_line(exc)}")
            continue
        if any(day.checks for day in days):
            return days
    if problems:
        ctx.notes.append("health history: " + "; ".join(problems))
    return []


def _window(result: Availability, label: str, budget_minutes: float) -> dict[str, Any]:
    """One period's figures; ``budget_minutes`` is the downtime the objective allows over the
    whole period (the whole month for "this month", not only its days so far)."""
    percent = result.availability_percent
    return {
        "label": label,
        "start": moment(result.start),
        "end": moment(result.end),
        "availability_percent": round(percent, 4) if percent is not None else None,
        "objective_percent": result.objective_percent,
        "down_minutes": round(result.down_minutes, 1),
        "budget_minutes": round(budget_minutes, 1),
        "unmeasured_minutes": round(result.unmeasured_minutes, 1),
        "coverage_percent": round(result.coverage_percent, 1),
        "met": None if percent is None else result.down_minutes <= budget_minutes,
        "incidents": [
            {
                "started_at": moment(i.started_at),
                "ended_at": moment(i.ended_at),
                "minutes": round(i.minutes, 1),
                "closed_by": i.closed_by,
                "failed_checks": i.failed_checks,
                "region": i.region,
            }
            for i in result.incidents
        ],
    }


def _windows(now: datetime) -> tuple[datetime, datetime]:
    """The start of the last 30 days and of the current month (UTC)."""
    month_start = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return now - timedelta(days=AVAILABILITY_DAYS), month_start


def availability_start(now: datetime) -> datetime:
    """From when availability needs records (a check just before a window counts)."""
    return min(_windows(now)) - MAX_CHECK_GAP


def availability(ctx: Context) -> dict[str, Any]:
    """Measured over the last 30 days and the current month (see monitoring.availability),
    with the per-hour strip of the last 30 days."""
    objective = ctx.deployment.settings.objectives.availability_percent
    thirty, month_start = _windows(ctx.now)
    days = health_days(ctx, availability_start(ctx.now))
    checks = checks_of(days)
    switched = [
        at
        for r in failover_history(ctx)
        if r.get("status") in ("completed", "completed_with_warnings")
        and (at := parse_moment(r.get("finished_at")))
    ]
    allowed = (100 - objective) / 100
    next_month = (month_start + timedelta(days=32)).replace(day=1)
    windows = []
    for label, begin, budget in (
        ("Last 30 days", thirty, AVAILABILITY_DAYS * 1440 * allowed),
        ("This month", month_start, (next_month - month_start).total_seconds() / 60 * allowed),
    ):
        if begin < ctx.now:
            result = measure(
                checks, switched, begin, ctx.now, max_gap=MAX_CHECK_GAP, objective_percent=objective
            )
            windows.append(_window(result, label, budget))
    return {
        "windows": windows,
        "strip": health_strip(days, thirty, ctx.now),
        "checks_recorded": len(checks),
    }


def health_strip(days: list[DayRecord], start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Per hour: up (every check fine), degraded (primary fine, standby not), down (a failed
    primary check) or unknown (no check), for the 30-day picture."""
    hours: dict[datetime, str] = {}
    rank = {"up": 0, "degraded": 1, "down": 2}
    for day in days:
        for at_text, primary_ok, secondary_ok, _region in day.checks:
            at = datetime.fromisoformat(at_text).astimezone(UTC)
            if not start <= at < end:
                continue
            hour = at.replace(minute=0, second=0, microsecond=0)
            state = "down" if not primary_ok else "up" if secondary_ok else "degraded"
            if rank[state] >= rank.get(hours.get(hour, "up"), 0):
                hours[hour] = state
    first = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    count = math.ceil((end - first).total_seconds() / 3600)
    cells = []
    for n in range(count):
        hour = first + timedelta(hours=n)
        cells.append({"hour": moment(hour), "state": hours.get(hour, "unknown")})
    return cells


def alerts(ctx: Context) -> dict[str, Any]:
    """Active alerts: the health check's (from its newest record), overdue drills, late
    backups; each with its first time and where to look."""
    found: list[dict[str, Any]] = []
    days = health_days(ctx, availability_start(ctx.now))
    newest = next((d for d in reversed(days) if d.checks), None)
    for name, since in (newest.active_alerts if newest else {}).items():
        run = newest.alert_runs.get(name) if newest else None
        link = run_link(ctx.deployment, run, "dr_health_check")
        raised = _alert(name, f"{name} (health check)", since, link)
        raised["evidence"] = check_record_url(ctx, since)
        found.append(raised)
    for alert in overdue_drills(ctx):
        kind = alert.details["drill"]
        last_passed = alert.details.get("last_passed")
        # The newest drill of the kind (a failed one says why it is overdue), else the DAG.
        last = next((r for r in reversed(drill_records(ctx)) if r.drill == kind), None)
        link = run_link(ctx.deployment, last.airflow_run if last else None, f"dr_drill_{kind}")
        found.append(_alert(alert.name, alert.summary, last_passed, link))
    return {"active": found}


def check_record_url(ctx: Context, checked_at: str) -> str | None:
    """The full record of the health check made at ``checked_at`` (the one that raised an
    alert), from whichever bucket holds it; None when none does."""
    at = parse_moment(checked_at)
    if at is None:
        return None
    key = raw_key(ctx.prefix, at)
    for _region, store in ctx.other_stores():
        try:
            if store.exists(key):
                return store.url(key)
        except DisasterRecoveryError:
            continue
    return None


def _alert(name: str, summary: str, since: Any, link: str) -> dict[str, Any]:
    return {
        "name": name,
        "severity": ALERTS.get(name, Severity.CRITICAL).value,
        "summary": summary,
        "since": moment(parse_moment(since)),
        "link": link,
    }


Section = Callable[[Context], Any]
SECTIONS: dict[str, Section] = {
    "objectives": objectives,
    "topology": topology,
    "protection": lambda ctx: protection_status(ctx.deployment),
    "rpo_exposure": rpo_exposure,
    "backups": backups,
    "failover_in_progress": failover_in_progress,
    "failovers": failovers,
    "drills": drills,
    "availability": availability,
    "alerts": alerts,
}


def late_backup_alerts(status: dict[str, Any]) -> list[dict[str, Any]]:
    """A late tier is an alert too (its first time: when it became late; never, for a tier
    with no verified backup at all)."""
    tiers = (status.get("backups") or {}).get("tiers") or []
    found = []
    for row in tiers:
        if row.get("late"):
            found.append(
                {
                    "name": "BackupLate",
                    "severity": Severity.HIGH.value,
                    "summary": f"{row['label']}: no verified backup within its schedule",
                    "since": row.get("late_since"),
                    "link": row.get("link"),
                }
            )
    return found


def collect(
    deployment: Deployment,
    *,
    now: datetime | None = None,
    sections: dict[str, Section] | None = None,
    roles: tuple[str, str] | None = None,
    only: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Every section's data (or ``only`` those named: the page refreshes a running failover
    every second without reading everything); a failing section holds ``{"error": ...}``
    instead. Secrets of the deployment's Connections are removed from the whole document."""
    chosen = sections or SECTIONS
    if only is not None:
        wanted = set(only)
        chosen = {name: section for name, section in chosen.items() if name in wanted}
    now = now or datetime.now(UTC)
    document: dict[str, Any] = {"generated_at": moment(now)}
    notes: list[str] = []
    try:
        primary, secondary = roles or console_roles(deployment)
    except DisasterRecoveryError as exc:
        # Without the nodes' word, the configured roles decide which bucket to read first.
        primary, secondary = (
            deployment.settings.regions.primary,
            deployment.settings.regions.secondary,
        )
        notes.append(f"roles from the configuration: {first_line(exc)}")
    try:
        region, store, problems = answering_store(deployment, (primary, secondary))
    except DisasterRecoveryError as exc:
        document["source"] = {"error": first_line(exc), "notes": notes}
        return redact(document, known_secrets(deployment))
    ctx = Context(deployment, now, primary, secondary, region, store, notes=notes)
    document["source"] = {
        "region": region,
        "bucket": store.bucket,
        "primary_region": primary,
        "fallback": region != primary,
        "problems": problems,
    }
    took: dict[str, float] = {}
    for name, section in chosen.items():
        began = time.monotonic()
        try:
            document[name] = section(ctx)
        except Exception as exc:  # one section's failure must not blank the console
            log.warning("console section %s failed: %s", name, exc)
            document[name] = {"error": first_line(exc)}
        took[name] = round(time.monotonic() - began, 3)
    document["source"]["section_seconds"] = took
    if isinstance(document.get("alerts"), dict) and "active" in document["alerts"]:
        document["alerts"]["active"].extend(late_backup_alerts(document))
    document["source"]["notes"] = ctx.notes
    return redact(document, known_secrets(deployment))


# -- secrets ----------------------------------------------------------------------------------

_SECRET_EXTRA_WORDS = ("password", "secret", "token", "key", "webhook")


def known_secrets(deployment: Deployment) -> set[str]:
    """Every password, token and webhook URL of the configured Connections (those that can be
    read): what must never appear in the console."""
    secrets: set[str] = set()
    for conn_id in deployment.settings.connections.model_dump().values():
        try:
            fields = deployment.lookup(conn_id)
        except DisasterRecoveryError:
            continue
        secrets.add(fields.password)
        for key, value in fields.extra.items():
            if isinstance(value, str) and any(word in key.lower() for word in _SECRET_EXTRA_WORDS):
                secrets.add(value)
        if fields.conn_type.startswith("slack"):
            secrets.update(str(v) for v in (fields.host, fields.extra.get("webhook_token")) if v)
    return {s for s in secrets if s and len(s) >= 4}


def redact(value: Any, secrets: set[str]) -> Any:
    if isinstance(value, dict):
        return {k: redact(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, secrets) for v in value]
    if isinstance(value, str):
        for secret in sorted(secrets, key=len, reverse=True):
            value = value.replace(secret, "[hidden]")
    return value


# -- for a terminal ---------------------------------------------------------------------------


def summary(status: dict[str, Any]) -> list[str]:
    """A few lines for a person at a terminal (``dr status`` prints them on stderr)."""
    lines = [f"DR status at {status['generated_at']}"]
    source = status.get("source") or {}
    if "error" in source:
        return [*lines, f"  cannot read any region: {source['error']}"]
    lines.append(
        f"  read from {source['region']}'s bucket"
        + (" (the primary's did not answer)" if source.get("fallback") else "")
    )
    for name, text in _summary_parts(status):
        lines.append(f"  {name}: {text}")
    return lines


def _summary_parts(status: dict[str, Any]) -> Iterable[tuple[str, str]]:
    topo = status.get("topology") or {}
    if "error" in topo:
        yield "topology", f"cannot read: {topo['error']}"
    else:
        unhealthy = [f"{n['role']} {n['region']}" for n in topo["nodes"] if not n["healthy"]]
        lag = topo["replication_lag_seconds"]
        yield (
            "topology",
            f"primary {topo['primary_region']}; "
            + (f"unhealthy: {', '.join(unhealthy)}" if unhealthy else "all nodes healthy")
            + f"; lag {'unknown' if lag is None else f'{lag:.1f} s'}",
        )
    for run in (status.get("failover_in_progress") or {}).get("runs") or []:
        current = next(
            (s for s in run["steps"] if s.get("state") not in ("success", "skipped")), None
        )
        yield (
            f"{run['kind']} in progress",
            f"run {run['run_id']}, "
            + (
                f"at {current['step']} ({current.get('state') or 'waiting'})"
                if current
                else "all steps done"
            ),
        )
    tiers = (status.get("backups") or {}).get("tiers") or []
    late = [t["label"] for t in tiers if t.get("late")]
    yield "backups", f"late: {', '.join(late)}" if late else "every tier on schedule"
    drill_rows = (status.get("drills") or {}).get("drills") or []
    overdue = [d["drill"] for d in drill_rows if d.get("overdue")]
    yield "drills", f"overdue: {', '.join(overdue)}" if overdue else "on time"
    for window in (status.get("availability") or {}).get("windows") or []:
        percent = window["availability_percent"]
        yield (
            window["label"].lower(),
            "not measured"
            if percent is None
            else f"{percent:.3f} % ({window['down_minutes']:.1f} of "
            f"{window['budget_minutes']:.1f} min allowed down)",
        )
    active = (status.get("alerts") or {}).get("active") or []
    yield "alerts", ", ".join(a["name"] for a in active) if active else "none"
