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

import argparse
import asyncio
import functools
import json
import logging
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from disaster_recovery import db, redisnode
from disaster_recovery.alerts import Alert, SlackWebhookSink
from disaster_recovery.config import Settings, load_settings, settings_from_dict
from disaster_recovery.dns import DnsSwitch
from disaster_recovery.endpoints import Deployment, PostgresEndpoint, RedisEndpoint
from disaster_recovery.errors import AbortedError, DisasterRecoveryError, UnavailableError
from disaster_recovery.health import check_health, lsn_int, region_postgres, region_redis, utcnow
from disaster_recovery.nodecontrol import NodeControl, node_control
from disaster_recovery.services import Services

log = logging.getLogger(__name__)

# Settings a promoted node inherits from the node it was cloned or rewound from (NOTES.md):
# a promoted clone with synchronous_standby_names hangs on its first commit.
INHERITED_SETTINGS = (
    "synchronous_standby_names",
    "primary_conninfo",
    "primary_slot_name",
    "default_transaction_read_only",
)
PROBE_TABLE = "dr_failover_probe"

Progress = Callable[[str], None]


@dataclass
class Plan:
    """One change of the primary role: ``source`` loses it, ``target`` gains it."""

    deployment: Deployment
    source: str
    target: str
    run_id: str = field(
        default_factory=lambda: utcnow().strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
    )
    dry_run: bool = False
    accept_data_loss: bool = False

    @property
    def settings(self) -> Settings:
        return self.deployment.settings

    def pg(self, region: str) -> PostgresEndpoint:
        return region_postgres(self.deployment, region)

    def redis(self, region: str) -> RedisEndpoint:
        return region_redis(self.deployment, region)

    def node(self, region: str) -> NodeControl:
        return node_control(region, self.settings.failover.nodes.get(region))

    def replication_name(self, region: str) -> str:
        config = self.settings.failover.nodes.get(region)
        return (
            config.replication_name
            if config and config.replication_name
            else region.replace("-", "_")
        )

    @property
    def services(self) -> Services:
        return Services(self.deployment)

    @property
    def dns(self) -> DnsSwitch:
        # Route 53 is global; reach it through the target region's endpoint (the failover must
        # not need anything in the region it leaves).
        return DnsSwitch(self.deployment.aws(self.target), self.settings.dns)


def record(step: str, status: str, **details: Any) -> dict[str, Any]:
    return {"step": step, "status": status, **details}


def _first_line(exc: BaseException) -> str:
    return next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)


def _in_recovery(endpoint: PostgresEndpoint) -> bool | None:
    """True/False, or None when the node does not answer."""
    try:
        return db.is_in_recovery(endpoint)
    except DisasterRecoveryError:
        return None


def target_promoted(plan: Plan) -> bool:
    return _in_recovery(plan.pg(plan.target)) is False


# -- 1. DETECT ----------------------------------------------------------------------------------


def newest_archived_wal(plan: Plan) -> str | None:
    """The newest object under the WAL archive prefix in the target region's bucket, if any."""
    from disaster_recovery.storage import ObjectStore

    settings = plan.settings
    try:
        store = ObjectStore(plan.deployment.aws(plan.target), settings.bucket(plan.target))
        keys = [
            item["Key"] for item in store.list_keys(f"{settings.storage.prefix}/postgresql_wal/")
        ]
    except DisasterRecoveryError as exc:
        return f"unknown ({_first_line(exc)})"
    keys = [k for k in keys if not k.endswith(".json")]
    return max(keys, default=None)


def estimate_loss(health: dict[str, Any]) -> dict[str, Any]:
    """What a promotion now could lose, from what the check saw."""
    replication = health.get("replication", {})
    primary_up = health["primary"].get("database") in ("healthy", "read_only")
    if primary_up:
        current, replay = (
            lsn_int(replication.get("primary_lsn")),
            lsn_int(replication.get("standby_replay_lsn")),
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
    lines += [
        "",
        "Approve to fence the old primary and promote the standby. Reject (or no answer "
        "before the timeout) aborts and changes nothing.",
    ]
    return "\n".join(lines)


# -- 3. STOP WRITES -----------------------------------------------------------------------------


def fence_database(endpoint: PostgresEndpoint) -> dict[str, Any]:
    """Make the old primary read-only for new transactions and end every client session."""
    with db.connect(endpoint, "postgres", timeout=5) as conn:
        conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")
        conn.execute("SELECT pg_reload_conf()")
        # Sessions opened before the reload keep their old default: end them.
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        ).fetchone()
        final = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None and final is not None
    return {"fenced": "read_only", "terminated_sessions": int(row[0]), "final_lsn": final[0]}


def stop_writes(plan: Plan) -> dict[str, Any]:
    """Application read-only, old primary fenced (or recorded as fenced because unreachable),
    Redis master paused for writes; returns the old primary's final LSN for SYNC."""
    source_pg = plan.pg(plan.source)
    role = _in_recovery(source_pg)
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
        database = fence_database(source_pg)
    elif role is True:
        database = {"fenced": "already a standby", "final_lsn": None}
    else:
        database = {"fenced": "unreachable", "final_lsn": None}
    try:
        database["on_disk"] = plan.node(plan.source).fence()
    except DisasterRecoveryError as exc:
        database["on_disk"] = f"failed: {_first_line(exc)}"
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
        redis_facts = {"paused": False, "unreachable": _first_line(exc)}
    return record(
        "stop_writes",
        "done",
        application=app,
        database=database,
        redis=redis_facts,
        final_lsn=database.get("final_lsn"),
    )


# -- 4. SYNC ------------------------------------------------------------------------------------


def wait_replayed(standby: PostgresEndpoint, lsn: str, timeout: float) -> str:
    """Wait until the standby has replayed ``lsn``; its replay LSN."""
    deadline = time.monotonic() + timeout
    wanted = lsn_int(lsn) or 0
    while True:
        replay = db.query_one(standby, "SELECT pg_last_wal_replay_lsn()::text")
        if (lsn_int(replay) or 0) >= wanted:
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
        if (lsn_int(row[1]) or 0) >= (lsn_int(row[0]) or 0) or time.monotonic() >= deadline:
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
            "not_in_sync": _first_line(exc),
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
    return int(str(name)[:8], 16)


def promote_database(endpoint: PostgresEndpoint) -> bool:
    """``pg_promote()``; False when it already was a primary."""
    if _in_recovery(endpoint) is False:
        return False
    with db.connect(endpoint, "postgres") as conn:
        row = conn.execute("SELECT pg_promote(true, 60)").fetchone()
    if not row or not row[0]:
        raise UnavailableError(f"pg_promote() on {endpoint.describe()} did not finish within 60 s")
    return True


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
    redis_promoted = redisnode.promote(target_redis)
    try:
        redisnode.follow(source_redis, target_redis)
        redisnode.unpause(source_redis)
        old_redis = "now a replica of the new master"
    except DisasterRecoveryError as exc:
        old_redis = f"unreachable: {_first_line(exc)}"
    return record(
        "promote",
        "done" if promoted or redis_promoted else "already_done",
        postgres_promoted=promoted,
        timeline=timeline(target_pg),
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
    if deactivate_source:
        details["deactivated_source"] = services.deactivate(plan.source)
    return record("activate_services", "done", **details)


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


# -- the whole run ------------------------------------------------------------------------------

Approver = Callable[[dict[str, Any], str], bool]


def result_document(
    kind: str,
    plan: Plan,
    *,
    reason: str,
    initiated_by: str,
    status: str,
    records: list[dict[str, Any]],
    timings: dict[str, float],
    started: float,
    started_at: str,
    error: str | None = None,
) -> dict[str, Any]:
    """The seed's shape plus per-step timings and records."""
    completed = [r["step"] for r in records if r["status"] in ("done", "already_done", "approved")]
    document: dict[str, Any] = {
        "status": status,
        "kind": kind,
        "steps_completed": completed,
        "new_primary": plan.target if status == "completed" else plan.source,
        "total_time_seconds": round(time.monotonic() - started, 3),
        "step_seconds": timings,
        "reason": reason,
        "initiated_by": initiated_by,
        "run_id": plan.run_id,
        "dry_run": plan.dry_run,
        "started_at": started_at,
        "finished_at": utcnow().isoformat(),
        "steps": records,
    }
    if error:
        document["error"] = error
    return document


def run_steps(
    kind: str,
    plan: Plan,
    steps: list[tuple[str, Callable[[dict[str, Any]], dict[str, Any]]]],
    *,
    reason: str,
    initiated_by: str,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run ``steps`` in order (each gets the records so far by step name), timing each; stop at
    the first failure or abort. Returns the result document (never raises a step's error)."""
    started, started_at = time.monotonic(), utcnow().isoformat()
    say = progress or (lambda _message: None)
    records: list[dict[str, Any]] = []
    by_step: dict[str, dict[str, Any]] = {}
    timings: dict[str, float] = {}
    status, error = "completed", None
    for number, (name, function) in enumerate(steps, 1):
        say(f"[{number}/{len(steps)}] {name.upper()} ...")
        began = time.monotonic()
        try:
            outcome = function(by_step)
        except AbortedError as exc:
            status, error = "aborted", str(exc)
            outcome = record(name, "aborted", error=str(exc))
        except Exception as exc:
            # Any error ends the run with a result that names the step (psycopg, botocore and
            # redis errors included): the operator needs the document more than a traceback.
            log.exception("%s step %s failed", kind, name)
            text = (
                str(exc)
                if isinstance(exc, DisasterRecoveryError)
                else f"{type(exc).__name__}: {exc}"
            )
            status, error = "failed", f"{name}: {text}"
            outcome = record(name, "failed", error=text)
        timings[name] = round(time.monotonic() - began, 3)
        records.append(outcome)
        by_step[name] = outcome
        say(f"[{number}/{len(steps)}] {name.upper()}: {outcome['status']} ({timings[name]:.2f} s)")
        if outcome["status"] in ("aborted", "failed", "rejected"):
            if outcome["status"] == "rejected":
                status, error = "aborted", f"rejected at {name}"
            break
    if plan.dry_run and status == "completed":
        status = "dry_run"
    return result_document(
        kind,
        plan,
        reason=reason,
        initiated_by=initiated_by,
        status=status,
        records=records,
        timings=timings,
        started=started,
        started_at=started_at,
        error=error,
    )


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


def history_key(settings: Settings, result: dict[str, Any]) -> str:
    finished = result.get("finished_at") or utcnow().isoformat()
    return (
        f"{settings.storage.prefix}/failovers/{finished[:4]}/"
        f"{result['run_id']}_{result.get('kind', 'failover')}.json"
    )


def publish_result(
    deployment: Deployment, region: str, result: dict[str, Any], sink: Any = None
) -> dict[str, Any]:
    """Store the result with the run history in ``region``'s bucket and post it to Slack.
    Neither failure hides the result: each is reported in the returned dict."""
    from disaster_recovery.storage import ObjectStore

    settings = deployment.settings
    published: dict[str, Any] = {}
    try:
        key = history_key(settings, result)
        ObjectStore(deployment.aws(region), settings.bucket(region)).put_json(key, result)
        published["history"] = f"s3://{settings.bucket(region)}/{key}"
    except DisasterRecoveryError as exc:
        published["history_error"] = _first_line(exc)
    ok = result["status"] in ("completed", "dry_run")
    kind = result.get("kind", "failover")
    alert = Alert(
        # FailoverFailed is not in the catalogue of Info alerts, so it goes out as Critical.
        name="FailoverCompleted" if ok else "FailoverFailed",
        summary=(
            f"{kind} {result['status']}: primary is {result['new_primary']} "
            f"({result['total_time_seconds']:.1f} s)"
        ),
        details={
            "reason": result.get("reason"),
            "initiated_by": result.get("initiated_by"),
            "steps": ", ".join(result["steps_completed"]),
            "error": result.get("error"),
            "history": published.get("history"),
        },
    )
    try:
        (sink or SlackWebhookSink(deployment.slack())).send(alert)
        published["slack"] = "sent"
    except DisasterRecoveryError as exc:
        published["slack_error"] = _first_line(exc)
    return published


class FailoverOrchestrator:
    """The seed API: ``await FailoverOrchestrator(primary, secondary, config).execute_failover()``.

    ``config`` is a :class:`Settings`, a dict of settings sections, or None (``load_settings()``);
    endpoints come from Connections (``AIRFLOW_CONN_*`` outside Airflow) unless a
    :class:`Deployment` is given.
    """

    def __init__(
        self,
        primary_region: str,
        secondary_region: str,
        config: Settings | dict[str, Any] | None = None,
        deployment: Deployment | None = None,
    ):
        if deployment is not None:
            settings = deployment.settings
        elif isinstance(config, Settings):
            settings = config
        elif isinstance(config, dict):
            settings = settings_from_dict(config, "FailoverOrchestrator config")
        else:
            settings = load_settings()
        self.deployment = deployment or Deployment(settings)
        self.primary_region = primary_region
        self.secondary_region = secondary_region

    async def check_health(self) -> dict[str, Any]:
        return await asyncio.to_thread(
            check_health, self.deployment, self.primary_region, self.secondary_region
        )

    def plan(self, *, dry_run: bool = False, accept_data_loss: bool = False) -> Plan:
        return Plan(
            self.deployment,
            self.primary_region,
            self.secondary_region,
            dry_run=dry_run,
            accept_data_loss=accept_data_loss,
        )

    async def execute_failover(
        self,
        reason: str,
        initiated_by: str,
        *,
        dry_run: bool = False,
        accept_data_loss: bool = False,
        approve: Approver | None = None,
        progress: Progress | None = None,
        publish: bool = True,
    ) -> dict[str, Any]:
        """Fail over to the secondary region; the result document (status completed, aborted,
        failed or dry_run). Calling it is the decision unless ``approve`` is given."""
        plan = self.plan(dry_run=dry_run, accept_data_loss=accept_data_loss)
        return await self._run(
            run_failover,
            plan,
            reason,
            initiated_by,
            approve=approve,
            progress=progress,
            publish=publish,
        )

    async def execute_failback(
        self,
        reason: str,
        initiated_by: str,
        *,
        approve: Approver | None = None,
        progress: Progress | None = None,
        publish: bool = True,
    ) -> dict[str, Any]:
        """Return the primary role to ``primary_region`` (see :mod:`disaster_recovery.failback`)."""
        from disaster_recovery.failback import run_failback

        plan = Plan(self.deployment, self.secondary_region, self.primary_region)
        return await self._run(
            run_failback,
            plan,
            reason,
            initiated_by,
            approve=approve,
            progress=progress,
            publish=publish,
        )

    async def _run(
        self,
        runner: Callable[..., dict[str, Any]],
        plan: Plan,
        reason: str,
        initiated_by: str,
        *,
        approve: Approver | None,
        progress: Progress | None,
        publish: bool,
    ) -> dict[str, Any]:
        """``runner`` (run_failover or run_failback) off the event loop; the result to S3."""
        result = await asyncio.to_thread(
            functools.partial(runner, approve=approve, progress=progress),
            plan,
            reason,
            initiated_by,
        )
        if publish:
            result["published"] = await asyncio.to_thread(
                publish_result, self.deployment, plan.target, result
            )
        return result


# -- the runbook CLI ----------------------------------------------------------------------------


def ask_person(evidence: dict[str, Any], body: str) -> bool:
    """The CLI's DECIDE: show the evidence, read yes/no from the terminal."""
    print("\n" + body + "\n", file=sys.stderr)
    print(
        "Type 'yes' to approve the failover, anything else rejects: ",
        end="",
        file=sys.stderr,
        flush=True,
    )
    try:
        answer = input()
    except EOFError:
        answer = ""
    return answer.strip().lower() == "yes"


def build_parser(prog: str = "python -m disaster_recovery.failover") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Fail over to the secondary region (runbook)."
    )
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reason", required=True, help="why (recorded with the run)")
    parser.add_argument("--initiated-by", default="manual", help="who or what (default: manual)")
    parser.add_argument("--dry-run", action="store_true", help="run every check, change nothing")
    parser.add_argument("--yes", action="store_true", help="approve at DECIDE without asking")
    parser.add_argument(
        "--accept-data-loss",
        action="store_true",
        help="promote even when the old primary is unreachable",
    )
    parser.add_argument(
        "--no-publish", action="store_true", help="do not store in S3 or post to Slack"
    )


def cli_run(
    args: argparse.Namespace, deployment: Deployment, kind: str = "failover"
) -> dict[str, Any]:
    regions = deployment.settings.regions
    orchestrator = FailoverOrchestrator(regions.primary, regions.secondary, deployment=deployment)
    approve = None if args.yes else ask_person

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    if kind == "failback":
        return asyncio.run(
            orchestrator.execute_failback(
                args.reason,
                args.initiated_by,
                approve=approve,
                progress=progress,
                publish=not args.no_publish,
            )
        )
    return asyncio.run(
        orchestrator.execute_failover(
            args.reason,
            args.initiated_by,
            dry_run=args.dry_run,
            accept_data_loss=args.accept_data_loss,
            approve=approve,
            progress=progress,
            publish=not args.no_publish,
        )
    )


def main(argv: list[str] | None = None) -> int:
    from disaster_recovery.errors import ExitCode

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        result = cli_run(args, Deployment(load_settings()))
    except DisasterRecoveryError as exc:
        print(json.dumps({"status": "failed", "error": str(exc)}, indent=2))
        return int(exc.exit_code)
    print(json.dumps(result, indent=2, default=str))
    return {"completed": 0, "dry_run": 0, "aborted": int(ExitCode.ABORTED)}.get(result["status"], 1)


if __name__ == "__main__":
    sys.exit(main())
