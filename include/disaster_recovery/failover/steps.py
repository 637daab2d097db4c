"""Failover from the primary region to the secondary: eight small, idempotent steps.

DETECT, DECIDE, STOP WRITES, SYNC, PROMOTE, ACTIVATE SERVICES, DNS, VALIDATE. Each step is a
function of a :class:`Plan` (which region loses the primary role, which gains it) returning a
record; a step that already happened reports ``already_done`` instead of doing it twice, so an
Airflow retry or a re-run is safe. ``dry_run`` runs every check and says what each step would do.

The order carries the product's promise (no acknowledged commit lost): the old primary is fenced
before anything is promoted, the standby must have replayed the old primary's final LSN (or, when
the primary is gone, the run must have accepted possible loss), and only then is it promoted.
The Airflow DAG (``dr_failover``) and the runbook CLI (``python -m disaster_recovery.failover``)
call the same functions; :class:`FailoverOrchestrator` is the seed API around them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from disaster_recovery.clients import redisnode
from disaster_recovery.clients.s3 import regional_store
from disaster_recovery.config.endpoints import PostgresEndpoint, RedisEndpoint
from disaster_recovery.errors import AbortedError, DisasterRecoveryError, UnavailableError
from disaster_recovery.failover.engine import run_steps
from disaster_recovery.failover.plan import (
    INHERITED_SETTINGS,
    PROBE_TABLE,
    Approver,
    Plan,
    Progress,
    first_line,
    in_recovery,
    record,
    target_promoted,
)
from disaster_recovery.monitoring import topology
from disaster_recovery.monitoring.health import (
    check_health,
)
from disaster_recovery.postgres import db
from disaster_recovery.postgres.nodecontrol import fence_online
from disaster_recovery.postgres.walfiles import parse_optional_lsn, timeline_of

# -- 1. DETECT ----------------------------------------------------------------------------------


def newest_archived_wal(plan: Plan) -> str | None:
    """The newest object under the WAL archive prefix in the target region's bucket, if any."""

    settings = plan.settings
    try:
        store = regional_store(plan.deployment, plan.target)
        keys = [
            item["Key"] for item in store.list_keys(f"{settings.storage.prefix}/postgresql_wal/")
        ]
    except DisasterRecoveryError as exc:
        return f"unknown ({first_line(exc)})"
    keys = [k for k in keys if not k.endswith(".json")]
    return max(keys, default=None)


def estimate_loss(health: dict[str, Any]) -> dict[str, Any]:
    """What a promotion now could lose, from what the check saw."""
    replication = health.get("replication", {})
    primary_up = health["primary"].get("database_state") in ("healthy", "read_only")
    if primary_up:
        current, replay = (
            parse_optional_lsn(replication.get("primary_lsn")),
            parse_optional_lsn(replication.get("standby_replay_lsn")),
        )
        behind = (current - replay) if current is not None and replay is not None else None
        return {
            "primary_reachable": True,
            "wal_bytes_behind": behind,
            "summary": "none: the old primary is reachable, SYNC waits for its final LSN",
        }
    return {
        "primary_reachable": False,
        "standby_receive_lsn": replication.get("standby_receive_lsn"),
        "summary": (
            "unknown: the old primary is unreachable; anything it wrote after the standby's "
            f"received LSN {replication.get('standby_receive_lsn')} is lost. Commits it "
            "acknowledged under synchronous replication are on the standby."
        ),
    }


def detect(plan: Plan, failing_since: str | None = None) -> dict[str, Any]:
    """Re-check health now and gather the evidence a person decides on."""
    health = check_health(plan.deployment, plan.source, plan.target)
    evidence = {
        "source_region": plan.source,
        "target_region": plan.target,
        "primary": health["primary"],
        "secondary": health["secondary"],
        "primary_failing_since": failing_since
        or ("now" if not health["primary_healthy"] else None),
        "standby_replay_lsn": health["replication"].get("standby_replay_lsn"),
        "standby_last_replay_at": health["replication"].get("last_replay_at"),
        "newest_archived_wal": newest_archived_wal(plan),
        "estimated_data_loss": estimate_loss(health),
        "redis_offsets": health["redis_offsets"],
        "errors": health["errors"],
        "warnings": [
            f"STOP WRITES: {w}"
            for w in [read_only_switch_missing(plan, plan.source)]
            if w is not None
        ],
    }
    if target_promoted(plan):
        return record(
            "detect",
            "already_done",
            note=f"{plan.target} is already the primary",
            evidence=evidence,
        )
    if health["secondary"]["database"] == "down":
        raise AbortedError(
            f"the standby in {plan.target} is unreachable: nothing to fail over to "
            f"({health['errors'].get('secondary.database')})"
        )
    return record("detect", "done", evidence=evidence)


def approval_body(evidence: dict[str, Any], reason: str, initiated_by: str) -> str:
    """The Markdown a person reads before approving (Airflow's approval page, the CLI prompt)."""
    loss = evidence.get("estimated_data_loss", {})
    lines = [
        f"**Failover {evidence['source_region']} → {evidence['target_region']}** requested by "
        f"`{initiated_by}`: {reason}",
        "",
        "| fact | value |",
        "|---|---|",
        f"| primary | database {evidence['primary'].get('database')}, "
        f"redis {evidence['primary'].get('redis')}, "
        f"services {evidence['primary'].get('services')} |",
        f"| primary failing since | {evidence.get('primary_failing_since') or 'not failing'} |",
        f"| standby | {evidence['secondary'].get('database')} |",
        f"| standby last replayed LSN | {evidence.get('standby_replay_lsn')} |",
        f"| standby last replayed commit | {evidence.get('standby_last_replay_at')} |",
        f"| newest archived WAL | {evidence.get('newest_archived_wal') or 'none found'} |",
        f"| estimated data loss | {loss.get('summary')} |",
        f"| Redis offsets | master {evidence['redis_offsets'].get('master')}, "
        f"replica {evidence['redis_offsets'].get('replica')} |",
    ]
    if evidence.get("errors"):
        lines += [
            "",
            "Errors seen: " + "; ".join(f"`{k}`: {v}" for k, v in evidence["errors"].items()),
        ]
    if evidence.get("warnings"):
        lines += ["", "**Warnings** (the result will say completed_with_warnings):"]
        lines += [f"- {warning}" for warning in evidence["warnings"]]
    lines += [
        "",
        "Approve to fence the old primary and promote the standby. Reject (or no answer "
        "before the timeout) aborts and changes nothing.",
    ]
    return "\n".join(lines)


# -- 3. STOP WRITES -----------------------------------------------------------------------------


def stop_writes(plan: Plan) -> dict[str, Any]:
    """Application read-only, old primary fenced (or recorded as fenced because unreachable),
    Redis master paused for writes; returns the old primary's final LSN for SYNC."""
    source_pg = plan.pg(plan.source)
    role = in_recovery(source_pg)
    if plan.dry_run:
        return record(
            "stop_writes",
            "would_do",
            source_reachable=role is not None,
            would=[
                f"set the {plan.source} application read-only",
                f"fence {source_pg.describe()} (default_transaction_read_only, end sessions)"
                if role is not None
                else f"record {source_pg.describe()} as fenced (unreachable)",
                f"pause writes on Redis {plan.redis(plan.source).describe()}",
            ],
        )
    app = plan.services.set_read_only(plan.source, True)
    if role is False:
        database = fence_online(source_pg)
    elif role is True:
        database = {"fenced": "already a standby", "final_lsn": None}
    else:
        database = {"fenced": "unreachable", "final_lsn": None}
    try:
        database["on_disk"] = plan.node(plan.source).fence()
    except DisasterRecoveryError as exc:
        database["on_disk"] = f"failed: {first_line(exc)}"
    warnings = stop_writes_warnings(plan, app, database)
    redis_facts: dict[str, Any]
    try:
        redis_state = redisnode.state(plan.redis(plan.source))
        if redis_state.role == "master":
            redisnode.pause_writes(
                plan.redis(plan.source), plan.settings.failover.sync_timeout.total_seconds() + 60
            )
            redis_facts = {
                "paused": True,
                "offset": redisnode.state(plan.redis(plan.source)).offset,
            }
        else:
            redis_facts = {"paused": False, "role": redis_state.role}
    except DisasterRecoveryError as exc:
        redis_facts = {"paused": False, "unreachable": first_line(exc)}
        warnings.append(f"Redis writes not paused: failed: {redis_facts['unreachable']}")
    return record(
        "stop_writes",
        "done",
        application=app,
        database=database,
        redis=redis_facts,
        final_lsn=database.get("final_lsn"),
        warnings=warnings,
    )


def read_only_switch_missing(plan: Plan, region: str) -> str | None:
    """The warning when ``region``'s application has no read-only switch configured."""
    if plan.services.config(region).read_only_url:
        return None
    return (
        f"application not made read-only: skipped: not configured "
        f"(services.{region}.read_only_url); it keeps writing to the old primary until the "
        "database is fenced"
    )


def stop_writes_warnings(plan: Plan, app: dict[str, Any], database: dict[str, Any]) -> list[str]:
    """What STOP WRITES could not do, each as ``skipped: not configured`` or ``failed: ...``."""
    warnings = []
    if (missing := read_only_switch_missing(plan, plan.source)) is not None:
        warnings.append(missing)
    elif app.get("read_only") == "unreachable":
        warnings.append(f"application not made read-only: failed: {app.get('error')}")
    on_disk = str(database.get("on_disk", ""))
    if on_disk.startswith("failed"):
        warnings.append(f"old primary not fenced on disk: {on_disk}")
    elif database.get("fenced") == "unreachable" and on_disk.startswith("no node control"):
        warnings.append(
            f"old primary unreachable and not fenced on disk: skipped: not configured "
            f"(failover.nodes.{plan.source}); it would start writable if it came back, so "
            "dr_health_check fences it (read-only) as soon as it answers"
        )
    return warnings


# -- 4. SYNC ------------------------------------------------------------------------------------


def wait_replayed(standby: PostgresEndpoint, lsn: str, timeout: float) -> str:
    """Wait until the standby has replayed ``lsn``; its replay LSN."""
    deadline = time.monotonic() + timeout
    wanted = parse_optional_lsn(lsn) or 0
    while True:
        replay = db.query_one(standby, "SELECT pg_last_wal_replay_lsn()::text")
        if (parse_optional_lsn(replay) or 0) >= wanted:
            return str(replay)
        if time.monotonic() >= deadline:
            raise UnavailableError(
                f"standby {standby.describe()} replayed only {replay} of {lsn} after {timeout:g} s"
            )
        time.sleep(0.02)


def wait_replay_settled(standby: PostgresEndpoint, timeout: float) -> dict[str, str]:
    """Primary gone: wait until the standby has replayed all the WAL it received."""
    deadline = time.monotonic() + timeout
    while True:
        with db.connect(standby) as conn:
            row = conn.execute(
                "SELECT pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text"
            ).fetchone()
        assert row is not None
        if (parse_optional_lsn(row[1]) or 0) >= (
            parse_optional_lsn(row[0]) or 0
        ) or time.monotonic() >= deadline:
            return {"receive_lsn": row[0], "replay_lsn": row[1]}
        time.sleep(0.02)


def sync(plan: Plan, final_lsn: str | None) -> dict[str, Any]:
    """The standby has everything the old primary committed, or the run accepted the loss."""
    if target_promoted(plan):
        return record("sync", "already_done", note=f"{plan.target} is already the primary")
    timeout = plan.settings.failover.sync_timeout.total_seconds()
    standby = plan.pg(plan.target)
    redis_source, redis_target = plan.redis(plan.source), plan.redis(plan.target)
    if plan.dry_run:
        replay = db.query_one(standby, "SELECT pg_last_wal_replay_lsn()::text")
        return record(
            "sync",
            "would_do",
            standby_replay_lsn=replay,
            would=f"wait up to {timeout:g} s for {plan.target} to replay the final LSN",
        )
    details: dict[str, Any] = {}
    if final_lsn:
        details["final_lsn"] = final_lsn
        details["standby_replay_lsn"] = wait_replayed(standby, final_lsn, timeout)
        details["possible_data_loss"] = "none: the standby replayed the old primary's final LSN"
    else:
        settled = wait_replay_settled(standby, timeout)
        details.update(settled)
        details["possible_data_loss"] = (
            f"the old primary is unreachable: WAL it wrote after {settled['receive_lsn']} (if any) "
            "is lost; commits it acknowledged under synchronous replication are on the standby"
        )
        if not plan.accept_data_loss:
            raise AbortedError(
                "SYNC refused: "
                + details["possible_data_loss"]
                + ". Re-run with accept_data_loss to promote anyway."
            )
        details["accepted_data_loss"] = True
    try:
        details["redis"] = redisnode.wait_in_sync(redis_source, redis_target, timeout)
    except UnavailableError as exc:
        if not (plan.accept_data_loss or redisnode_unreachable(redis_source)):
            raise
        details["redis"] = {
            "not_in_sync": first_line(exc),
            "replica_offset": _offset_or_none(redis_target),
        }
    return record("sync", "done", **details)


def redisnode_unreachable(endpoint: RedisEndpoint) -> bool:
    try:
        redisnode.state(endpoint)
    except DisasterRecoveryError:
        return True
    return False


def _offset_or_none(endpoint: RedisEndpoint) -> int | None:
    try:
        return redisnode.state(endpoint).offset
    except DisasterRecoveryError:
        return None


# -- 5. PROMOTE ---------------------------------------------------------------------------------


def reset_inherited_settings(endpoint: PostgresEndpoint) -> None:
    with db.connect(endpoint, "postgres") as conn:
        for name in INHERITED_SETTINGS:
            conn.execute(f"ALTER SYSTEM RESET {name}")
        conn.execute("SELECT pg_reload_conf()")


def timeline(endpoint: PostgresEndpoint) -> int:
    name = db.query_one(endpoint, "SELECT pg_walfile_name(pg_current_wal_lsn())")
    return timeline_of(str(name))


def promote_database(endpoint: PostgresEndpoint) -> bool:
    """``pg_promote()``; False when it already was a primary."""
    if in_recovery(endpoint) is False:
        return False
    with db.connect(endpoint, "postgres") as conn:
        row = conn.execute("SELECT pg_promote(true, 60)").fetchone()
    if not row or not row[0]:
        raise UnavailableError(f"pg_promote() on {endpoint.describe()} did not finish within 60 s")
    return True


def record_topology(plan: Plan, target_pg: PostgresEndpoint) -> dict[str, Any]:
    """Write the topology record naming ``plan.target`` primary on its new timeline."""
    system_identifier = db.query_one(
        target_pg, "SELECT system_identifier::text FROM pg_control_system()"
    )
    return topology.write_record(
        plan.deployment,
        plan.target,
        timeline=timeline(target_pg),
        system_identifier=str(system_identifier),
        reason=f"promotion of {plan.target} (run {plan.run_id})",
        written_by="litper-dr failover/failback",
    )


def promote(plan: Plan) -> dict[str, Any]:
    """Promote the standby and the Redis replica; reset what the promoted node inherited; the old
    Redis master, if reachable, follows the new one (so it cannot take writes)."""
    target_pg, target_redis, source_redis = (
        plan.pg(plan.target),
        plan.redis(plan.target),
        plan.redis(plan.source),
    )
    if plan.dry_run:
        return record(
            "promote",
            "would_do",
            would=[
                f"pg_promote() on {target_pg.describe()}, reset {', '.join(INHERITED_SETTINGS)}",
                f"REPLICAOF NO ONE on {target_redis.describe()}",
            ],
        )
    promoted = promote_database(target_pg)
    reset_inherited_settings(target_pg)
    # The role has moved: say so where every protection looks (both regions' buckets).
    recorded = record_topology(plan, target_pg)
    redis_promoted = redisnode.promote(target_redis)
    try:
        redisnode.follow(source_redis, target_redis)
        redisnode.unpause(source_redis)
        old_redis = "now a replica of the new master"
    except DisasterRecoveryError as exc:
        old_redis = f"unreachable: {first_line(exc)}"
    return record(
        "promote",
        "done" if promoted or redis_promoted else "already_done",
        postgres_promoted=promoted,
        timeline=timeline(target_pg),
        topology=recorded,
        reset_settings=list(INHERITED_SETTINGS),
        redis_promoted=redis_promoted,
        old_redis_master=old_redis,
    )


# -- 6. ACTIVATE SERVICES -----------------------------------------------------------------------


def activate_services(plan: Plan, deactivate_source: bool = False) -> dict[str, Any]:
    services = plan.services
    if plan.dry_run:
        return record(
            "activate_services",
            "would_do",
            would=f"activate {plan.target}: "
            f"{services.config(plan.target).activate or 'nothing configured'}",
        )
    activated = services.activate(plan.target)
    writable = services.set_read_only(plan.target, False)
    details: dict[str, Any] = {"activated": activated, "read_only_off": writable}
    warnings = []
    if activated.get("kind") == "none":
        warnings.append(
            f"{plan.target} application not started: skipped: not configured "
            f"(services.{plan.target}.activate)"
        )
    if writable.get("read_only") == "unreachable":
        warnings.append(
            f"{plan.target} application not switched to writable: failed: {writable.get('error')}"
        )
    if deactivate_source:
        details["deactivated_source"] = services.deactivate(plan.source)
    return record("activate_services", "done", warnings=warnings, **details)


# -- 7. DNS -------------------------------------------------------------------------------------


def switch_dns(plan: Plan) -> dict[str, Any]:
    dns = plan.dns
    if dns.points_to(plan.target):
        return record("dns", "already_done", records=dns.targets(plan.target))
    if plan.dry_run:
        return record("dns", "would_do", current=dns.current(), would=dns.targets(plan.target))
    return record("dns", "done", **dns.point_to(plan.target, f"litper-dr run {plan.run_id}"))


# -- 8. VALIDATE --------------------------------------------------------------------------------


def validate(plan: Plan) -> dict[str, Any]:
    """End to end on the new primary: SQL write and read, Redis writable master, services
    healthy, DNS answering the new targets. Any failure raises (a retry may pass later)."""
    if plan.dry_run:
        health = check_health(plan.deployment, plan.source, plan.target)
        return record("validate", "would_do", health=health)
    target_pg = plan.pg(plan.target).with_database(plan.settings.failover.probe_database)
    with db.connect(target_pg) as conn:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {PROBE_TABLE} (id bigserial PRIMARY KEY, run_id text, "
            "region text, written_at timestamptz DEFAULT now())"
        )
        row = conn.execute(
            f"INSERT INTO {PROBE_TABLE} (run_id, region) VALUES (%s, %s) RETURNING id",
            (plan.run_id, plan.target),
        ).fetchone()
        assert row is not None
        back = conn.execute(f"SELECT run_id FROM {PROBE_TABLE} WHERE id = %s", (row[0],)).fetchone()
    if not back or back[0] != plan.run_id:
        raise UnavailableError(
            f"validation of {plan.target} failed: the probe row did not read back"
        )
    # Applications notice a DNS change within their resolver's TTL: give them that long.
    deadline = time.monotonic() + plan.settings.dns.ttl + 5
    while True:
        problems, facts = _validate_platform(plan)
        if not problems or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    if problems:
        raise UnavailableError(f"validation of {plan.target} failed: " + "; ".join(problems))
    return record("validate", "done", probe_row=row[0], **facts)


def _validate_platform(plan: Plan) -> tuple[list[str], dict[str, Any]]:
    problems: list[str] = []
    redis_target = plan.redis(plan.target)
    state = redisnode.state(redis_target)
    if state.role != "master":
        problems.append(f"Redis {redis_target.describe()} is a {state.role}")
    elif not redisnode.write_probe(redis_target, f"litper-dr:probe:{plan.run_id}", plan.run_id):
        problems.append("Redis probe did not read back")
    services = plan.services.health(plan.target)
    if services["status"] not in ("healthy", "none"):
        problems.append(f"services in {plan.target} are {services['status']}: {services['urls']}")
    dns_ok = plan.dns.points_to(plan.target)
    if not dns_ok:
        problems.append(f"DNS does not answer {plan.target}'s targets: {plan.dns.current()}")
    return problems, {
        "redis_role": state.role,
        "services": services,
        "dns": plan.dns.targets(plan.target),
    }


def decide_step(
    plan: Plan, reason: str, initiated_by: str, approve: Approver | None, evidence: dict[str, Any]
) -> dict[str, Any]:
    body = approval_body(evidence, reason, initiated_by)
    if approve is None:
        return record("decide", "approved", by=initiated_by, how="the caller decided (API call)")
    if approve(evidence, body):
        return record("decide", "approved", by=initiated_by)
    return record("decide", "rejected", by=initiated_by)


def failover_steps(
    plan: Plan,
    reason: str,
    initiated_by: str,
    approve: Approver | None,
    failing_since: str | None = None,
) -> list[tuple[str, Callable[[dict[str, Any]], dict[str, Any]]]]:
    return [
        ("detect", lambda _r: detect(plan, failing_since)),
        (
            "decide",
            lambda r: decide_step(plan, reason, initiated_by, approve, r["detect"]["evidence"]),
        ),
        ("stop_writes", lambda _r: stop_writes(plan)),
        ("sync", lambda r: sync(plan, (r.get("stop_writes") or {}).get("final_lsn"))),
        ("promote", lambda _r: promote(plan)),
        ("activate_services", lambda _r: activate_services(plan)),
        ("dns", lambda _r: switch_dns(plan)),
        ("validate", lambda _r: validate(plan)),
    ]


def run_failover(
    plan: Plan,
    reason: str,
    initiated_by: str,
    *,
    approve: Approver | None = None,
    progress: Progress | None = None,
    failing_since: str | None = None,
) -> dict[str, Any]:
    """The eight steps, in process (CLI, orchestrator, tests); the DAG runs them as tasks."""
    return run_steps(
        "failover",
        plan,
        failover_steps(plan, reason, initiated_by, approve, failing_since),
        reason=reason,
        initiated_by=initiated_by,
        progress=progress,
    )
