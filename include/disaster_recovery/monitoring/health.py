"""The health of both regions: databases, Redis, applications, and the replication between them.

Replication lag is measured from LSNs first: when the standby has replayed everything the
primary wrote, the lag is 0 however long ago the last transaction was (``now() -
pg_last_xact_replay_timestamp()`` grows forever on an idle primary and is no lag measure by
itself). Only when the standby is behind does time since its last replayed commit count.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

import psycopg

from disaster_recovery.clients import redisnode
from disaster_recovery.clients.services import Services
from disaster_recovery.config.endpoints import Deployment, PostgresEndpoint, RedisEndpoint
from disaster_recovery.errors import DisasterRecoveryError
from disaster_recovery.postgres import db
from disaster_recovery.postgres.walfiles import parse_optional_lsn

# How long a behind standby gets to catch up before its lag counts as real (a write that was
# just committed on an idle primary is not a lag).
CATCH_UP_GRACE_SECONDS = 0.5


def region_postgres(deployment: Deployment, region: str) -> PostgresEndpoint:
    """The database node that lives in ``region`` (the Connections are named by original role)."""
    regions = deployment.settings.regions
    return deployment.postgres("primary" if region == regions.primary else "standby")


def region_redis(deployment: Deployment, region: str) -> RedisEndpoint:
    regions = deployment.settings.regions
    return deployment.redis("primary" if region == regions.primary else "replica")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _error(exc: Exception) -> str:
    return next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)


def primary_database(endpoint: PostgresEndpoint) -> dict[str, Any]:
    with db.connect(endpoint, timeout=5) as conn:
        row = conn.execute(
            "SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only'),"
            " CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END,"
            " (SELECT sync_state FROM pg_stat_replication ORDER BY sync_priority LIMIT 1),"
            " (SELECT extract(epoch FROM replay_lag) FROM pg_stat_replication"
            "  ORDER BY sync_priority LIMIT 1)"
        ).fetchone()
    assert row is not None
    status = "in_recovery" if row[0] else "read_only" if row[1] == "on" else "healthy"
    return {
        "status": status,
        "lsn": row[2],
        "sync_state": row[3],
        "replay_lag": float(row[4]) if row[4] is not None else None,
    }


def standby_database(endpoint: PostgresEndpoint) -> dict[str, Any]:
    with db.connect(endpoint, timeout=5) as conn:
        row = conn.execute(
            "SELECT pg_is_in_recovery(), pg_last_wal_receive_lsn()::text,"
            " pg_last_wal_replay_lsn()::text,"
            " pg_last_xact_replay_timestamp(), (SELECT status FROM pg_stat_wal_receiver), now(),"
            " CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() END,"
            " pg_postmaster_start_time()"
        ).fetchone()
    assert row is not None
    if not row[0]:
        status = "promoted"
    elif row[4] == "streaming":
        status = "streaming"
    else:
        status = f"not streaming ({row[4] or 'no WAL receiver'})"
    return {
        "status": status,
        "receive_lsn": row[1],
        "replay_lsn": row[2],
        "last_replay_at": row[3].isoformat() if row[3] else None,
        # Replay time is known only once a commit was replayed since the standby started;
        # before that, behind means behind for at most its uptime.
        "seconds_since_replay": (row[5] - (row[3] or row[7])).total_seconds(),
        "replay_paused": bool(row[6]),
    }


def replication_lag(primary: PostgresEndpoint, standby: PostgresEndpoint) -> dict[str, Any]:
    """Lag in seconds and bytes, from LSNs first (0 when idle and caught up)."""
    first = primary_database(primary)
    replica = standby_database(standby)
    current, replay = parse_optional_lsn(first["lsn"]), parse_optional_lsn(replica["replay_lsn"])
    facts: dict[str, Any] = {
        "primary_lsn": first["lsn"],
        "standby_receive_lsn": replica["receive_lsn"],
        "standby_replay_lsn": replica["replay_lsn"],
        "last_replay_at": replica["last_replay_at"],
        "sync_state": first["sync_state"],
    }
    if current is None or replay is None:
        return {**facts, "seconds": None, "bytes": None}
    if replay >= current:
        return {**facts, "seconds": 0.0, "bytes": 0}
    time.sleep(CATCH_UP_GRACE_SECONDS)
    later = standby_database(standby)
    caught_up = (parse_optional_lsn(later["replay_lsn"]) or 0) >= current
    if caught_up:
        seconds = max(first["replay_lag"] or 0.0, 0.0)
    else:
        seconds = max(later["seconds_since_replay"] or 0.0, first["replay_lag"] or 0.0)
    return {
        **facts,
        "seconds": round(seconds, 3),
        "bytes": current - replay,
        "standby_replay_lsn_after_grace": later["replay_lsn"],
    }


def redis_role(endpoint: RedisEndpoint, expected: str) -> tuple[str, int | None]:
    state = redisnode.state(endpoint)
    if expected == "master":
        return ("healthy" if state.role == "master" else "replica"), state.offset
    if state.role == "master":
        return "master", state.offset
    return ("replicating" if state.link == "up" else f"link {state.link}"), state.offset


def check_health(
    deployment: Deployment, primary_region: str, secondary_region: str
) -> dict[str, Any]:
    """DESIGN.md's shape: primary {database, redis, services}, secondary {database, redis,
    services}, replication_lag_seconds; plus the LSNs, Redis offsets and every error seen."""
    services = Services(deployment)
    pg_primary, pg_standby = (
        region_postgres(deployment, primary_region),
        region_postgres(deployment, secondary_region),
    )
    errors: dict[str, str] = {}
    primary: dict[str, Any] = {"region": primary_region}
    secondary: dict[str, Any] = {"region": secondary_region}
    replication: dict[str, Any] = {}
    try:
        facts = primary_database(pg_primary)
        primary["database"] = facts["status"]
        replication["primary_lsn"] = facts["lsn"]
        replication["sync_state"] = facts["sync_state"]
    except (DisasterRecoveryError, psycopg.Error) as exc:
        primary["database"] = "down"
        errors["primary.database"] = _error(exc)
    try:
        standby = standby_database(pg_standby)
        secondary["database"] = standby["status"]
        replication.update(
            {
                "standby_receive_lsn": standby["receive_lsn"],
                "standby_replay_lsn": standby["replay_lsn"],
                "last_replay_at": standby["last_replay_at"],
            }
        )
    except (DisasterRecoveryError, psycopg.Error) as exc:
        secondary["database"] = "down"
        errors["secondary.database"] = _error(exc)
    lag: float | None = None
    if primary["database"] in ("healthy", "read_only") and secondary["database"] == "streaming":
        try:
            measured = replication_lag(pg_primary, pg_standby)
            replication.update(measured)
            lag = measured["seconds"]
        except (DisasterRecoveryError, psycopg.Error) as exc:
            errors["replication"] = _error(exc)
    offsets: dict[str, int | None] = {"master": None, "replica": None}
    for side, endpoint, expected, key in (
        (primary, region_redis(deployment, primary_region), "master", "master"),
        (secondary, region_redis(deployment, secondary_region), "replica", "replica"),
    ):
        try:
            side["redis"], offsets[key] = redis_role(endpoint, expected)
        except (DisasterRecoveryError, psycopg.Error) as exc:
            side["redis"] = "down"
            errors[f"{'primary' if key == 'master' else 'secondary'}.redis"] = _error(exc)
    primary["services"] = services.health(primary_region)["status"]
    secondary_app = services.health(secondary_region)["status"]
    secondary["services"] = "active" if secondary_app == "healthy" else "standby"
    primary_ok = (
        primary["database"] == "healthy"
        and primary["redis"] == "healthy"
        and primary["services"] in ("healthy", "none")
    )
    secondary_ok = secondary["database"] == "streaming" and secondary["redis"] == "replicating"
    return {
        "checked_at": utcnow().isoformat(),
        "primary": seed_vocabulary(primary, "primary"),
        "secondary": seed_vocabulary(secondary, "secondary"),
        "replication_lag_seconds": lag,
        "replication": replication,
        "redis_offsets": offsets,
        "primary_healthy": primary_ok,
        "secondary_healthy": secondary_ok,
        "errors": errors,
    }


# What each side's database / Redis state means in the seed's words (healthy, degraded, down);
# anything not listed (read-only, in recovery, not streaming, a link down...) is degraded.
_HEALTHY_STATES = {
    ("primary", "database"): "healthy",
    ("primary", "redis"): "healthy",
    ("secondary", "database"): "streaming",
    ("secondary", "redis"): "replicating",
}
_SERVICES = {"healthy": "healthy", "unhealthy": "degraded", "down": "down", "none": "none"}


def seed_vocabulary(side: dict[str, Any], role: str) -> dict[str, Any]:
    """The seed's keys and values (``database``, ``redis``, ``services``: healthy / degraded /
    down; a secondary's services ``standby`` or ``active``) with the detail under ``*_state``
    (``streaming``, ``replicating``, ``read_only``, ...). Services ``none``: nothing configured
    to check."""
    shaped: dict[str, Any] = {"region": side["region"]}
    for part in ("database", "redis"):
        state = side[part]
        if state == "down":
            shaped[part] = "down"
        else:
            shaped[part] = "healthy" if state == _HEALTHY_STATES[(role, part)] else "degraded"
        shaped[f"{part}_state"] = state
    services = side["services"]
    shaped["services"] = services if role == "secondary" else _SERVICES.get(services, "degraded")
    return shaped


def _writable(endpoint: PostgresEndpoint) -> bool:
    """A primary that accepts writes: not in recovery and not fenced read-only."""
    return bool(
        db.query_one(
            endpoint,
            "SELECT NOT pg_is_in_recovery() "
            "AND current_setting('default_transaction_read_only') = 'off'",
        )
    )


def current_roles(deployment: Deployment) -> tuple[str, str]:
    """(primary region, secondary region) as they are now: after a failover the configured
    secondary's node is the primary, and health must judge the pair that way round. An old
    primary fenced read-only is not a primary, even though it is not in recovery."""
    regions = deployment.settings.regions
    try:
        promoted = not db.is_in_recovery(region_postgres(deployment, regions.secondary))
    except (DisasterRecoveryError, psycopg.Error):
        promoted = False
    if promoted:
        try:
            old_is_primary = _writable(region_postgres(deployment, regions.primary))
        except (DisasterRecoveryError, psycopg.Error):
            old_is_primary = False
        if not old_is_primary:
            return regions.secondary, regions.primary
    return regions.primary, regions.secondary


# -- alerting state across checks -------------------------------------------------------------


def empty_state() -> dict[str, Any]:
    return {
        "active": {},
        "raised_by": {},
        "primary_failures": 0,
        "primary_failing_since": None,
        "failover_triggered": False,
    }


def _conditions(health: dict[str, Any], lag_threshold: float) -> dict[str, str]:
    """Alert name -> summary, for every alert condition true in this check."""
    found: dict[str, str] = {}
    lag = health.get("replication_lag_seconds")
    if lag is not None and lag > lag_threshold:
        found["ReplicationLagHigh"] = f"replication lag {lag:.1f} s > {lag_threshold:g} s"
    secondary = health["secondary"]
    if secondary.get("database") == "down" or secondary.get("redis") == "down":
        down = [part for part in ("database", "redis") if secondary.get(part) == "down"]
        found["SecondaryUnreachable"] = (
            f"secondary region {secondary['region']}: {', '.join(down)} unreachable"
        )
    if not health.get("primary_healthy"):
        primary = health["primary"]
        found["PrimaryDown"] = (
            f"primary region {primary['region']}: database {primary.get('database')}, "
            f"redis {primary.get('redis')}, services {primary.get('services')}"
        )
    return found


def evaluate(
    health: dict[str, Any],
    state: dict[str, Any] | None,
    lag_threshold: float,
    failures_before_failover: int,
    auto_trigger: bool = True,
) -> dict[str, Any]:
    """One check against the state left by the previous ones (pure: no I/O).

    Returns ``alerts`` (each once per incident: ``{"name", "summary", "resolved"}``), the next
    ``state`` (``active``: alert -> first time; ``raised_by``: alert -> the ``health["run"]``
    that raised it, when the check ran in Airflow), and ``trigger_failover`` with its ``reason``
    after N consecutive failed primary checks (once per incident; one success resets the count).
    """
    state = {**empty_state(), **(state or {})}
    active: dict[str, str] = dict(state["active"])
    raised_by: dict[str, Any] = dict(state["raised_by"])
    now = health.get("checked_at") or utcnow().isoformat()
    conditions = _conditions(health, lag_threshold)
    alerts = []
    for name, summary in conditions.items():
        if name not in active:
            alerts.append({"name": name, "summary": summary, "resolved": False})
            active[name] = now
            if health.get("run"):  # the Airflow task that raised it: where its log is
                raised_by[name] = health["run"]
    for name in [n for n in active if n not in conditions]:
        alerts.append(
            {
                "name": name,
                "summary": f"{name} cleared (active since {active[name]})",
                "resolved": True,
            }
        )
        del active[name]
        raised_by.pop(name, None)
    failures, since, triggered = (
        state["primary_failures"],
        state["primary_failing_since"],
        state["failover_triggered"],
    )
    if health.get("primary_healthy"):
        failures, since, triggered = 0, None, False
    else:
        failures += 1
        since = since or now
    trigger = auto_trigger and not triggered and failures >= failures_before_failover
    reason = ""
    if trigger:
        triggered = True
        reason = (
            f"auto: primary {health['primary']['region']} failed {failures} "
            "consecutive health checks "
            f"since {since}: {conditions.get('PrimaryDown', '')}; errors: "
            + "; ".join(f"{k}: {v}" for k, v in health.get("errors", {}).items())
        )
    return {
        "alerts": alerts,
        "state": {
            "active": active,
            "raised_by": raised_by,
            "primary_failures": failures,
            "primary_failing_since": since,
            "failover_triggered": triggered,
        },
        "trigger_failover": trigger,
        "reason": reason,
    }
