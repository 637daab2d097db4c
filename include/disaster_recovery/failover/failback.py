"""Failback: give the primary role back to the original primary region, losing nothing.

After a failover the old primary is fenced (a standby by ``standby.signal``, read-only by default)
and has diverged by whatever it wrote that never reached the standby. Failback:

1. DETECT — the current primary is healthy; the old primary's node can be controlled.
2. DECIDE — the same approval as a failover.
3. REBUILD OLD PRIMARY — ``pg_rewind`` it onto the current primary's timeline (a fresh base
   backup when rewind is impossible), reapply its own role settings (``pg_rewind`` copied the
   source's), start it as a standby, wait until it streams and has caught up, make it the
   synchronous standby; its Redis follows the current master.
4.-6. STOP WRITES, SYNC, PROMOTE — a planned switchover: writes stopped, LSNs equal before the
   promotion (zero data loss, no ``accept_data_loss`` path).
7. REBUILD FORMER PRIMARY — the region that served during the outage becomes the standby again.
8.-10. ACTIVATE SERVICES (and stop the secondary's), DNS, VALIDATE.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from psycopg import sql
from psycopg.conninfo import make_conninfo

from disaster_recovery.clients import redisnode
from disaster_recovery.errors import AbortedError, CommandFailed, UnavailableError
from disaster_recovery.failover.engine import run_steps
from disaster_recovery.failover.plan import Approver, Plan, Progress, in_recovery, record
from disaster_recovery.failover.steps import (
    activate_services,
    decide_step,
    promote,
    stop_writes,
    switch_dns,
    sync,
    validate,
)
from disaster_recovery.monitoring.health import check_health
from disaster_recovery.postgres import db


def _replication_row(source: Any, name: str) -> tuple[Any, ...] | None:
    with db.connect(source, "postgres") as conn:
        return conn.execute(
            "SELECT r.state, r.replay_lsn >= pg_current_wal_lsn(), r.sync_state "
            "FROM pg_stat_replication r "
            "WHERE r.application_name = %s",
            (name,),
        ).fetchone()


def ensure_slot(source: Any, slot: str) -> None:
    """A physical slot for the standby on its primary; a stale inactive one is replaced."""
    with db.connect(source, "postgres") as conn:
        active = conn.execute(
            "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)
        ).fetchone()
        if active and active[0]:
            return
        if active:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", (slot,))


def set_synchronous(source: Any, name: str) -> None:
    with db.connect(source, "postgres") as conn:
        conn.execute(
            sql.SQL("ALTER SYSTEM SET synchronous_standby_names = {}").format(sql.Literal(name))
        )
        conn.execute("SELECT pg_reload_conf()")


def wait_streaming(plan: Plan, source_region: str, name: str, synchronous: bool) -> dict[str, Any]:
    """Wait until standby ``name`` streams from the source, has replayed its current LSN, and
    (when wanted) is its synchronous standby."""
    source = plan.pg(source_region)
    timeout = plan.settings.failover.rebuild_timeout.total_seconds()
    deadline = time.monotonic() + timeout
    row = None
    while time.monotonic() < deadline:
        row = _replication_row(source, name)
        if row and row[0] == "streaming" and row[1] and (not synchronous or row[2] == "sync"):
            return {"state": row[0], "sync_state": row[2]}
        # A rewound node is consistent only past the source's LSN at rewind time, and an idle
        # source writes nothing for many seconds: log a standby snapshot to move WAL on.
        with db.connect(source, "postgres") as conn:
            conn.execute("SELECT pg_log_standby_snapshot()")
        time.sleep(0.1)
    raise UnavailableError(
        f"standby {name} not in sync with {source.describe()} after {timeout:g} s "
        f"(pg_stat_replication: {row})"
    )


def rebuild_as_standby(
    plan: Plan, node_region: str, source_region: str, step: str
) -> dict[str, Any]:
    """Make ``node_region``'s node a streaming (synchronous) standby of ``source_region``'s."""
    name = plan.replication_name(node_region)
    source, node = plan.pg(source_region), plan.node(node_region)
    synchronous = plan.settings.failover.synchronous_replication
    row = _replication_row(source, name)
    phases: dict[str, float] = {}
    began = time.monotonic()

    def phase(label: str) -> None:
        nonlocal began
        phases[label] = round(time.monotonic() - began, 3)
        began = time.monotonic()

    if row and row[0] == "streaming":
        status, how = "already_done", "already streaming"
    elif plan.dry_run:
        return record(
            step,
            "would_do",
            would=f"pg_rewind {node_region} from {source.describe()}, start it as a standby",
        )
    else:
        node.stop("fast")
        phase("stop")
        # A just-promoted source runs its first checkpoint spread out; pg_rewind reads the
        # timeline from the source's control file and the rewound node is consistent only
        # after that checkpoint: finish it now instead of waiting for it.
        with db.connect(source, "postgres") as conn:
            conn.execute("CHECKPOINT")
        phase("checkpoint")
        source_env = source.libpq_env("postgres")
        try:
            node.rewind(source_env)
            how = "pg_rewind"
            phase("rewind")
        except CommandFailed as exc:
            # Rewind is impossible (WAL gone, no checksums/wal_log_hints...): copy it whole.
            node.clone(source_env, name)
            last = exc.stderr_tail.strip().splitlines()[-1:] or [str(exc)]
            how = f"base backup (pg_rewind failed: {last[0]})"
        ensure_slot(source, name)
        conninfo = make_conninfo(
            host=source.host,
            port=str(source.port),
            user=source.user,
            password=source.password,
            application_name=name,
            **source.options,  # sslmode and the rest of the Connection's libpq extras
        )
        node.configure_standby(conninfo, name)
        node.start()
        phase("start")
        status = "done"
    if synchronous:
        set_synchronous(source, name)
    streaming = wait_streaming(plan, source_region, name, synchronous)
    phase("catch_up")
    node_redis, source_redis = plan.redis(node_region), plan.redis(source_region)
    redisnode.follow(node_redis, source_redis)
    redis_sync = redisnode.wait_in_sync(
        source_redis, node_redis, plan.settings.failover.sync_timeout.total_seconds()
    )
    phase("redis")
    return record(
        step,
        status,
        node=node_region,
        source=source_region,
        how=how,
        replication=streaming,
        redis=redis_sync,
        phase_seconds=phases,
    )


def detect_failback(plan: Plan) -> dict[str, Any]:
    """The current primary (plan.source) must be a writable primary to give the role back; the
    original primary may be down, fenced or already a standby."""
    source_role, target_role = (
        in_recovery(plan.pg(plan.source)),
        in_recovery(plan.pg(plan.target)),
    )
    if source_role is True and target_role is False:
        return record("detect", "already_done", note=f"{plan.target} is already the primary")
    if source_role is not False:
        raise AbortedError(
            f"{plan.source} is not a reachable primary: there is nothing to fail back from"
        )
    health = check_health(plan.deployment, plan.source, plan.target)
    evidence = {
        "source_region": plan.source,
        "target_region": plan.target,
        "primary": health["primary"],
        "secondary": health["secondary"],
        "primary_failing_since": None,
        "standby_replay_lsn": health["replication"].get("standby_replay_lsn"),
        "standby_last_replay_at": health["replication"].get("last_replay_at"),
        "newest_archived_wal": None,
        "estimated_data_loss": {
            "summary": "none: a planned switchover waits until the LSNs are equal"
        },
        "redis_offsets": health["redis_offsets"],
        "errors": health["errors"],
        "old_primary_state": {None: "down", True: "standby", False: "fenced primary"}[target_role],
    }
    return record("detect", "done", evidence=evidence)


def failback_steps(
    plan: Plan, reason: str, initiated_by: str, approve: Approver | None
) -> list[tuple[str, Callable[[dict[str, Any]], dict[str, Any]]]]:
    return [
        ("detect", lambda _r: detect_failback(plan)),
        (
            "decide",
            lambda r: decide_step(
                plan, reason, initiated_by, approve, r["detect"].get("evidence") or {}
            ),
        ),
        (
            "rebuild_old_primary",
            lambda _r: rebuild_as_standby(plan, plan.target, plan.source, "rebuild_old_primary"),
        ),
        ("stop_writes", lambda _r: stop_writes(plan)),
        (
            "sync",
            lambda r: sync(
                plan, (r.get("stop_writes") or {}).get("final_lsn") or _current_lsn(plan)
            ),
        ),
        ("promote", lambda _r: promote(plan)),
        (
            "rebuild_former_primary",
            lambda _r: rebuild_as_standby(plan, plan.source, plan.target, "rebuild_former_primary"),
        ),
        ("activate_services", lambda _r: activate_services(plan, deactivate_source=True)),
        ("dns", lambda _r: switch_dns(plan)),
        ("validate", lambda _r: validate(plan)),
    ]


def run_failback(
    plan: Plan,
    reason: str,
    initiated_by: str,
    *,
    approve: Approver | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """``plan.source`` is the current primary region, ``plan.target`` the original one."""
    return run_steps(
        "failback",
        plan,
        failback_steps(plan, reason, initiated_by, approve),
        reason=reason,
        initiated_by=initiated_by,
        progress=progress,
    )


def _current_lsn(plan: Plan) -> str | None:
    """A re-run after STOP WRITES: the source is read-only; its current LSN is still final."""
    try:
        return str(db.query_one(plan.pg(plan.source), "SELECT pg_current_wal_lsn()::text"))
    except Exception:
        return None
