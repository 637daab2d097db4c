"""DR drills: prove the objectives on a drill target and keep the evidence.

Monthly: restore the newest verified full backup into a throwaway PostgreSQL instance that the
drill starts and removes (row counts against the manifest, ``pg_amcheck``, restore time and
throughput); a point-in-time restore to a random
moment of the last 24 hours (the heartbeats recovered must be exactly those committed up to it);
a simulated failover to the secondary, approved by the drill's policy, then failback.

Quarterly: the whole primary region is lost at once (PostgreSQL crashed, the Redis master shut
down without saving, the region's services stopped) while the application writes; detection by
consecutive failed health checks, the failover procedure, validation, failback. RTO is measured
from the loss to a validated secondary; RPO from the heartbeat, for the synchronous standby and
for the WAL archive (a point-in-time restore to the newest archived moment).

Each drill is a list of named steps (:data:`STEPS`): ``dr drill`` runs them in one process, the
drill DAGs run each as its own task and pass the drill's state (:func:`drill_state`,
:func:`resume`) between them, so the Airflow grid shows where a drill is. Either way the record
is timed per step, the RTO is measured across the steps, and a failed or interrupted step is
followed by :func:`restore_topology` (the DAG's teardown task).

A drill runs only against the environment its configuration names, changes a production one's
topology only after a person approved it (unless that configuration opts out), and always tries
to leave the target in its
original topology. Every drill writes a record (:mod:`disaster_recovery.drills.evidence`), posts a
Slack summary, and raises ``DRDrillFailed`` when anything failed.
"""

from __future__ import annotations

import logging
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis as redis_client

from disaster_recovery.backup.both_regions import one_catalog
from disaster_recovery.backup.logical import run_backup
from disaster_recovery.catalog.listing import Catalog
from disaster_recovery.clients.runner import run
from disaster_recovery.clients.s3 import regional_store
from disaster_recovery.clients.services import Services
from disaster_recovery.clients.slack import Alert, AlertSink, slack_sink
from disaster_recovery.config.endpoints import Deployment, PostgresEndpoint
from disaster_recovery.drills.evidence import DrillKind, DrillRecord, DrillStep, EvidenceStore
from disaster_recovery.drills.names import RESTORE_TOPOLOGY
from disaster_recovery.errors import (
    AbortedError,
    DisasterRecoveryError,
    DrillFailed,
    DrillRefused,
    NotFoundError,
    UnavailableError,
    VerificationError,
)
from disaster_recovery.failover.failback import run_failback
from disaster_recovery.failover.plan import COMPLETED, Plan
from disaster_recovery.failover.steps import run_failover
from disaster_recovery.monitoring import heartbeat
from disaster_recovery.monitoring.health import check_health, current_roles
from disaster_recovery.monitoring.topology import following
from disaster_recovery.postgres import db, pgbin
from disaster_recovery.postgres.instance import server_user
from disaster_recovery.postgres.throwaway import throwaway_instance
from disaster_recovery.restore.logical import restore_logical
from disaster_recovery.restore.pitr import RestoredCluster, describe_chain, restore_to_point_in_time

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
# A person's answer to a drill's approval request: {"by": name, "approved": bool}.
Approval = dict[str, Any]


def check_target(deployment: Deployment, approval: Approval | None = None) -> dict[str, Any]:
    """Refuse a production target that no person approved (unless its configuration opts out);
    refuse a target that is not in its original topology (a drill must start from, and return
    to, the normal state)."""
    settings = deployment.settings
    environment = settings.environment
    if settings.drills_need_a_person:
        if approval is None:
            raise DrillRefused(
                f"drill target {environment.name!r} is marked production: a drill changes its "
                "topology only after a person approves it (the drill DAG's Required Action); "
                "nobody approved this one (or set environment.allow_drills_on_production and "
                "drills.auto_approve to opt out)"
            )
        if not approval.get("approved"):
            raise DrillRefused(
                f"drill target {environment.name!r} is marked production and "
                f"{approval.get('by') or 'the approver'} rejected the drill: nothing was changed"
            )

    regions = settings.regions
    primary, _ = current_roles(deployment)
    if primary != regions.primary:
        raise DrillRefused(
            f"drill target {environment.name!r} runs its primary in {primary}, not {regions.primary}: "
            "fail back before drilling"
        )
    return {
        "environment": environment.name,
        "production": environment.production,
        "primary_region": primary,
        "approval": approval or {"by": "drill policy (drills.auto_approve)"},
    }


@dataclass
class DrillContext:
    deployment: Deployment
    record: DrillRecord
    rng: random.Random
    progress: Progress
    work_dir: Path
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def settings(self) -> Any:
        return self.deployment.settings

    def primary(self) -> PostgresEndpoint:
        return self.deployment.postgres("primary")


# -- monthly steps ------------------------------------------------------------------------------


def newest_full_backup(ctx: DrillContext) -> tuple[str, str]:
    """The newest verified full backup in either region's catalog (one taken in the other
    region during an outage included) and the region to restore it from: the current
    primary's when it holds a copy. Only that copy: a drill must catch a damaged copy, not
    fall back to another."""
    listing = one_catalog(ctx.deployment, ["postgresql_full"])
    verified = [listed for listed in listing.backups if listed.manifest.verified]
    if not verified:
        unreachable = "; ".join(f"{r}: {why}" for r, why in listing.unreachable.items())
        raise NotFoundError(
            "no verified postgresql_full backup in either region"
            + (f" (unreachable: {unreachable})" if unreachable else "")
        )
    newest = verified[-1]
    primary = following(ctx.deployment).settings.regions.primary
    region = primary if primary in newest.locations else next(iter(newest.locations))
    return newest.manifest.file, region


def restore_newest_full(ctx: DrillContext) -> dict[str, Any]:
    """Restore the newest verified full backup into a throwaway instance (started here, removed
    after: never a database on a live server), compare row counts with the manifest, run
    pg_amcheck."""
    file, region = newest_full_backup(ctx)
    database = ctx.primary().dbname
    os_user = server_user(ctx.settings.pitr.restore_os_user, "pitr.restore_os_user")
    with throwaway_instance(ctx.work_dir / "restore", os_user=os_user) as server:
        started = time.monotonic()
        result = restore_logical(
            ctx.deployment, target_db=database, backup_file=file, region=region, server=server
        )
        seconds = time.monotonic() - started
        if not result["counts_match"]:
            raise VerificationError(
                f"restored {result['backup_file']} into a throwaway instance: row counts differ "
                f"from the manifest: {result['differences']}",
                check="row_counts",
            )
        amcheck = run_amcheck(server.with_database(database))
    size = _backup_size(ctx, result["backup_file"], result["region"])
    throughput = round(size / 1_000_000 / seconds, 2) if seconds > 0 else None
    ctx.record.restore_throughput_mb_s = throughput
    return {
        "backup_file": result["backup_file"],
        "restored_into": f"throwaway instance {result['target']} (removed)",
        "tables": result["tables"],
        "rows": result["rows"],
        "counts_match": True,
        "amcheck": amcheck,
        "restore_seconds": round(seconds, 2),
        "backup_bytes": size,
        "throughput_mb_s": throughput,
    }


def _backup_size(ctx: DrillContext, file: str, region: str) -> int:
    """The restored backup's size, from the catalog of the region it was restored from."""
    store = regional_store(ctx.deployment, region)
    return Catalog(store, ctx.settings.storage.prefix).load(file).size_bytes


def run_amcheck(endpoint: PostgresEndpoint) -> str:
    """pg_amcheck over every table and index of the restored database (heap and B-tree)."""
    major = db.server_major(endpoint)
    with db.connect(endpoint) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
    run(
        [
            pgbin.require_at_least("pg_amcheck", major),
            "--no-password",
            "--heapallindexed",
            "--install-missing",
            "-d",
            endpoint.dbname,
        ],
        env=endpoint.libpq_env(),
        target=endpoint.describe(),
        timeout=3600,
    )
    return "no corruption found"


def restorable_window(ctx: DrillContext) -> tuple[datetime, datetime]:
    """The window of the current primary's region, or of the other when that one's S3 is lost."""

    regions = following(ctx.deployment).settings.regions
    region = regions.primary
    try:
        described = describe_chain(ctx.deployment, region)["regions"][region]
    except UnavailableError as exc:
        log.warning("%s unreachable (%s): the window of %s", region, exc, regions.secondary)
        region = regions.secondary
        described = describe_chain(ctx.deployment, region)["regions"][region]
    if not described.get("earliest_restorable") or not described.get("latest_restorable"):
        raise VerificationError(
            f"the {region} archive cannot restore to any point in time: "
            f"{described.get('note') or 'no verified base backup with its WAL'}",
            check="pitr",
        )
    return (
        datetime.fromisoformat(described["earliest_restorable"]),
        datetime.fromisoformat(described["latest_restorable"]),
    )


def restore_to(
    ctx: DrillContext, moment: datetime, label: str
) -> tuple[dict[str, Any], PostgresEndpoint]:
    """A point-in-time restore into the drill's work folder, on a free port."""

    result = restore_to_point_in_time(
        ctx.deployment, target_dir=ctx.work_dir / label, target_time=moment
    )
    primary = ctx.primary()
    restored = PostgresEndpoint(
        f"drill-{label}",
        "127.0.0.1",
        int(result["port"]),
        primary.user,
        primary.dbname,
        primary.password,
    )
    return result, restored


def point_in_time_check(ctx: DrillContext) -> dict[str, Any]:
    """Restore to a random moment of the last 24 hours; the heartbeats recovered must be exactly
    those the primary committed up to that moment."""
    earliest, latest = restorable_window(ctx)
    window = ctx.settings.drills.pitr_window
    low = max(earliest, ctx.record.started_at - window)
    # Stay a little inside the archive: recovery must see a commit after the target to stop.
    high = latest - timedelta(seconds=2)
    if high <= low:
        raise VerificationError(
            f"the restorable window {earliest.isoformat()} .. {latest.isoformat()} "
            "is too short for a point-in-time drill",
            check="pitr",
        )
    moment = low + (high - low) * ctx.rng.random()
    ctx.progress(f"point-in-time restore to {moment.isoformat()}")
    started = time.monotonic()
    result, restored = restore_to(ctx, moment, "pitr")
    try:
        expected = heartbeat.ids_up_to(ctx.primary(), moment)
        recovered = heartbeat.ids_up_to(restored, datetime.now(UTC) + timedelta(days=1))
    finally:
        RestoredCluster.of(result).stop_and_remove()
    if recovered != expected:
        missing = sorted(set(expected) - set(recovered))[:5]
        extra = sorted(set(recovered) - set(expected))[:5]
        raise VerificationError(
            f"restore to {moment.isoformat()} holds {len(recovered)} heartbeats, the primary "
            f"committed {len(expected)} by then (missing {missing}, extra {extra})",
            check="pitr",
        )
    return {
        "target": moment.isoformat(),
        "recovered_to": result["recovered_to"],
        "heartbeats": len(recovered),
        "exact": True,
        "seconds": round(time.monotonic() - started, 2),
    }


def drill_approval(ctx: DrillContext) -> Callable[[dict[str, Any], str], bool]:
    """DECIDE during a drill: the drill's policy answers, and the record says so."""

    def approve(evidence: dict[str, Any], body: str) -> bool:
        person = ctx.notes.get("person_approval")
        if person:
            # Approved before the drill started (check_target refuses anything else).
            ctx.notes["approval"] = person
            return bool(person["approved"])
        approved = ctx.settings.drills.auto_approve is not False
        ctx.notes["approval"] = {"by": "drill policy (drills.auto_approve)", "approved": approved}
        return approved

    return approve


def failover(ctx: DrillContext, reason: str, **options: Any) -> dict[str, Any]:

    regions = ctx.settings.regions
    plan = Plan(ctx.deployment, regions.primary, regions.secondary, **options)
    result = run_failover(
        plan,
        reason,
        f"drill:{ctx.record.drill}",
        approve=drill_approval(ctx),
        progress=ctx.progress,
    )
    if result["status"] not in COMPLETED:
        raise AbortedError(f"failover {result['status']}: {result.get('error') or 'see steps'}")
    return result


def failback(ctx: DrillContext) -> dict[str, Any]:

    regions = ctx.settings.regions
    plan = Plan(ctx.deployment, regions.secondary, regions.primary)
    result = run_failback(
        plan,
        f"{ctx.record.drill} drill: return to {regions.primary}",
        f"drill:{ctx.record.drill}",
        approve=lambda _e, _b: True,
        progress=ctx.progress,
    )
    if result["status"] not in COMPLETED:
        raise AbortedError(f"failback {result['status']}: {result.get('error') or 'see steps'}")
    return result


def lost_heartbeats(before: list[int], survivor: PostgresEndpoint) -> int:
    """How many acknowledged heartbeats the new primary does not hold."""
    held = set(heartbeat.ids_up_to(survivor, datetime.now(UTC) + timedelta(days=1)))
    return len([i for i in before if i not in held])


def simulated_failover(ctx: DrillContext) -> dict[str, Any]:
    """Fail over to the secondary (a planned switch: the old primary stays up and is fenced),
    validate, count the acknowledged heartbeats the new primary holds."""
    primary = ctx.primary()
    acknowledged = [
        heartbeat.beat(primary, f"drill:{ctx.record.drill}", synchronous=True)[0] for _ in range(5)
    ]
    result = failover(ctx, f"{ctx.record.drill} DR drill (simulated failover)")
    lost = lost_heartbeats(acknowledged, ctx.deployment.postgres("standby"))
    ctx.record.rto_seconds = result["total_time_seconds"]
    ctx.record.rpo_seconds = 0.0 if lost == 0 else None
    if lost:
        raise VerificationError(
            f"{lost} acknowledged heartbeats are missing on the new primary", check="rpo"
        )
    return {
        "status": result["status"],
        "new_primary": result["new_primary"],
        "total_time_seconds": result["total_time_seconds"],
        "step_seconds": result.get("step_seconds"),
        "approval": ctx.notes.get("approval"),
        "heartbeats_lost": lost,
    }


# -- quarterly steps ----------------------------------------------------------------------------


def lose_primary_region(ctx: DrillContext) -> dict[str, Any]:
    """Lose the primary region at once, with the configured command, or else: PostgreSQL
    crashed (immediate stop: no checkpoint), the Redis master shut down without saving, the
    region's services stopped."""

    regions = ctx.settings.regions
    command = ctx.settings.drills.region_loss_command
    if command:
        killed_at = datetime.now(UTC)
        result = run(command, target=f"lose {regions.primary}", timeout=120)
        ctx.notes["killed_at"] = killed_at
        return {
            "killed_at": killed_at.isoformat(),
            "command": command[-3:],
            "output": result.stdout[-500:],
        }
    plan = Plan(ctx.deployment, regions.primary, regions.secondary)
    services = Services(ctx.deployment)
    killed_at = datetime.now(UTC)
    plan.node(regions.primary).stop("immediate")
    try:
        redis_client.Redis.from_url(
            ctx.deployment.redis("primary").url(), socket_timeout=2
        ).shutdown(nosave=True)
    except redis_client.ConnectionError:
        pass  # the server went away while answering: that is the shutdown
    services.deactivate(regions.primary)
    ctx.notes["killed_at"] = killed_at
    return {
        "killed_at": killed_at.isoformat(),
        "postgres": "crashed (immediate)",
        "redis": "shut down without saving",
        "services": "stopped",
    }


def detect_loss(ctx: DrillContext) -> dict[str, Any]:
    """The health check, repeated until the primary failed the configured number of consecutive
    times (as dr_health_check does every minute; the drill checks every few seconds)."""

    needed = ctx.settings.thresholds.health_failures_before_failover
    interval = ctx.settings.drills.health_check_interval.total_seconds()
    regions = ctx.settings.regions
    failures, checks = 0, 0
    deadline = time.monotonic() + 300
    while failures < needed:
        if time.monotonic() > deadline:
            raise AbortedError(f"the primary failed only {failures} consecutive checks in 300 s")
        health = check_health(ctx.deployment, regions.primary, regions.secondary)
        checks += 1
        failures = failures + 1 if health["primary"]["database"] != "healthy" else 0
        if failures < needed:
            time.sleep(interval)
    detected_at = datetime.now(UTC)
    return {
        "consecutive_failures": failures,
        "checks": checks,
        "detected_after_seconds": round((detected_at - ctx.notes["killed_at"]).total_seconds(), 2),
    }


def archive_rpo(ctx: DrillContext) -> dict[str, Any]:
    """The RPO the WAL archive alone would give: restore to the newest moment the archive held
    when the region was lost, and compare its newest heartbeat with the time of the loss."""
    moment = min(ctx.notes["archive_latest"], ctx.notes["killed_at"]) - timedelta(seconds=1)
    result, restored = restore_to(ctx, moment, "archive_rpo")
    try:
        newest = heartbeat.newest(restored)
    finally:
        RestoredCluster.of(result).stop_and_remove()
    if newest is None:
        raise VerificationError("the archive restore holds no heartbeat", check="rpo")
    rpo = (ctx.notes["killed_at"] - newest["committed_at"]).total_seconds()
    return {
        "restored_to": moment.isoformat(),
        "newest_heartbeat": newest["committed_at"].isoformat(),
        "rpo_seconds": round(rpo, 2),
    }


def survivor_protection(ctx: DrillContext) -> dict[str, Any]:
    """Protection goes on in the surviving region: a verified full backup and base backup land
    in its bucket, and a point-in-time restore from its archive holds a heartbeat committed
    after the failover."""
    from disaster_recovery.backup import physical

    view = following(ctx.deployment)
    region = view.settings.regions.primary
    full = run_backup(ctx.deployment, "postgresql_full")
    base = physical.backup_and_verify(ctx.deployment, "base")
    survivor = view.postgres("primary")
    beat_id, _ = heartbeat.beat(survivor, "drill:survivor")
    time.sleep(1.1)  # the target lies after the beat's commit, S3 times have whole seconds
    moment = datetime.now(UTC)
    time.sleep(1.1)
    segment = switch_and_wait_archived(survivor)
    result, restored = restore_to(ctx, moment, "survivor_pitr")
    try:
        newest = heartbeat.newest(restored)
    finally:
        RestoredCluster.of(result).stop_and_remove()
    if newest is None or newest["id"] < beat_id:
        raise VerificationError(
            f"the point-in-time restore from {region} lacks heartbeat {beat_id} committed "
            f"before {moment.isoformat()} (newest {newest})",
            check="survivor_pitr",
        )
    if full.bucket != view.settings.bucket(region):
        raise VerificationError(
            f"the full backup went to {full.bucket}, not {region}'s bucket", check="survivor"
        )
    return {
        "region": region,
        "full_backup": full.file,
        "base_backup": base["backup_file"],
        "timeline": base["timeline"],
        "pitr_target": moment.isoformat(),
        "pitr_plan_region": result["plan"]["region"],
        "heartbeat_restored": newest["id"],
        "wal_switched_to": segment,
    }


def switch_and_wait_archived(endpoint: PostgresEndpoint, timeout: float = 60) -> str:
    """Close the current WAL segment and wait until the archiver stored it."""
    with db.connect(endpoint, "postgres") as conn:
        conn.execute("SELECT txid_current()")
        row = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
        assert row is not None
        segment = str(row[0])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = conn.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()
            last = str((row[0] if row else None) or "")
            if last == segment or last[:24] > segment:
                return segment
            time.sleep(0.1)
    raise UnavailableError(f"WAL segment {segment} was not archived within {timeout:g} s")


def revive_region(ctx: DrillContext) -> dict[str, Any]:
    command = ctx.settings.drills.region_revive_command
    if not command or ctx.notes.get("revived"):
        return {"revived": False}
    result = run(command, target="revive the lost region", timeout=120)
    ctx.notes["revived"] = True
    return {"revived": True, "output": result.stdout[-500:]}


def kill_primary_region(ctx: DrillContext) -> dict[str, Any]:
    """Heartbeats the synchronous standby acknowledged, then the region lost at once."""
    ctx.notes["acknowledged"] = [
        heartbeat.beat(ctx.primary(), "drill:quarterly", synchronous=True)[0] for _ in range(5)
    ]
    return lose_primary_region(ctx)


def detect(ctx: DrillContext) -> dict[str, Any]:
    details = detect_loss(ctx)
    # What the archive alone holds now, before a promoted standby adds its own timeline.
    ctx.notes["archive_latest"] = restorable_window(ctx)[1]
    return details


def region_failover(ctx: DrillContext) -> dict[str, Any]:
    accept = ctx.settings.drills.accept_data_loss_on_region_loss
    result = failover(ctx, "quarterly DR drill: primary region lost", accept_data_loss=accept)
    return {
        "total_time_seconds": result["total_time_seconds"],
        "step_seconds": result.get("step_seconds"),
        "approval": ctx.notes.get("approval"),
    }


def validate_survivor(ctx: DrillContext) -> dict[str, Any]:
    """The drill's RTO (from the loss to this validated secondary) and RPO (the newest heartbeat
    the new primary holds); every acknowledged heartbeat must be there."""
    validated_at = datetime.now(UTC)
    survivor = ctx.deployment.postgres("standby")
    newest = heartbeat.newest(survivor)
    lost = lost_heartbeats(ctx.notes.get("acknowledged", []), survivor)
    killed_at = ctx.notes["killed_at"]
    ctx.record.rto_seconds = round((validated_at - killed_at).total_seconds(), 2)
    ctx.record.rpo_seconds = (
        round((killed_at - newest["committed_at"]).total_seconds(), 2) if newest else None
    )
    if lost:
        raise VerificationError(
            f"{lost} acknowledged heartbeats are missing on the new primary", check="rpo"
        )
    return {
        "heartbeats_lost": lost,
        "rto_seconds": ctx.record.rto_seconds,
        "rpo_seconds": ctx.record.rpo_seconds,
    }


def failback_step(ctx: DrillContext) -> dict[str, Any]:
    result = failback(ctx)
    return {"total_time_seconds": result["total_time_seconds"]}


# -- the steps of each drill --------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One step of a drill: the library runs them in order, the drill DAG makes a task of each."""

    name: str
    run: Callable[[DrillContext], dict[str, Any]]
    # A step that does not apply to this target leaves no entry in the record.
    applies: Callable[[DrillContext], bool] = lambda _ctx: True


PREFLIGHT = Step(
    "preflight", lambda ctx: check_target(ctx.deployment, ctx.notes.get("person_approval"))
)
STEPS: dict[str, tuple[Step, ...]] = {
    "monthly": (
        PREFLIGHT,
        Step("restore_full", restore_newest_full),
        Step("point_in_time", point_in_time_check),
        Step("failover", simulated_failover),
        Step("failback", failback_step),
    ),
    "quarterly": (
        PREFLIGHT,
        Step("kill_primary_region", kill_primary_region),
        Step("detect", detect),
        Step("failover", region_failover),
        Step("validate", validate_survivor),
        Step("archive_rpo", archive_rpo),
        Step("survivor_protection", survivor_protection),
        Step(
            "revive_region",
            revive_region,
            applies=lambda ctx: bool(ctx.settings.drills.region_revive_command),
        ),
        Step("failback", failback_step),
    ),
}


def run_step(ctx: DrillContext, name: str) -> DrillStep | None:
    """Run one step of the context's drill, timed and recorded (its error re-raised); None when
    it does not apply to this target."""
    step = next(s for s in STEPS[ctx.record.drill] if s.name == name)
    if not step.applies(ctx):
        return None
    ctx.progress(f"{ctx.record.drill} drill: {name}")
    with ctx.record.step(name) as entry:
        entry.details = step.run(ctx)
    return entry


# -- running a drill ----------------------------------------------------------------------------


def new_record(deployment: Deployment, drill: DrillKind) -> DrillRecord:
    objectives = deployment.settings.objectives
    return DrillRecord(
        drill=drill,
        environment=deployment.settings.environment.name,
        started_at=datetime.now(UTC),
        objectives={
            "rpo_seconds": objectives.rpo.total_seconds(),
            "rto_seconds": objectives.rto.total_seconds(),
        },
    )


def return_to_original_topology(ctx: DrillContext) -> dict[str, Any] | None:
    """After a failed drill: bring the lost region's machines back, then the primary role to the
    primary region if it moved, or restart the crashed primary if it did not."""

    regions = ctx.settings.regions
    if "killed_at" in ctx.notes:
        revive_region(ctx)
    primary, _ = current_roles(ctx.deployment)
    if primary == regions.secondary:
        return failback(ctx)
    if "killed_at" in ctx.notes:
        Plan(ctx.deployment, regions.primary, regions.secondary).node(regions.primary).start()
        return {"status": "restarted the crashed primary"}
    return None


def topology_needs_restoring(record: DrillRecord) -> bool:
    """After a failed or interrupted step, unless the target was refused (nothing touched) or
    the topology was already restored."""
    names = [s.name for s in record.steps]
    if not names or RESTORE_TOPOLOGY in names:
        return False
    if record.steps[0].name == PREFLIGHT.name and record.steps[0].result == "failed":
        return False
    return (
        any(s.result == "failed" for s in record.steps) or names[-1] != STEPS[record.drill][-1].name
    )


def restore_topology(ctx: DrillContext) -> DrillStep | None:
    """The drill's teardown: return the target to its original topology when a step failed or
    the drill stopped part-way (recorded as ``restore_topology``, its error re-raised); None
    when nothing needs it."""
    if not topology_needs_restoring(ctx.record):
        return None
    with ctx.record.step(RESTORE_TOPOLOGY) as entry:
        entry.details = {
            "failback": (return_to_original_topology(ctx) or {}).get("status", "not needed")
        }
    return entry


def judge(record: DrillRecord) -> None:
    """Pass only if every step ran and passed and the measured figures are within the
    objectives."""
    failures = [f"{s.name}: {s.error}" for s in record.steps if s.result == "failed"]
    ran = [s.name for s in record.steps if s.name != RESTORE_TOPOLOGY]
    if not failures and (not ran or ran[-1] != STEPS[record.drill][-1].name):
        failures.append(f"the drill stopped after {ran[-1] if ran else 'nothing'}")
    if record.rto_seconds is not None and record.rto_seconds > record.objectives["rto_seconds"]:
        failures.append(
            f"RTO {record.rto_seconds:.0f} s exceeds the objective {record.objectives['rto_seconds']:.0f} s"
        )
    if record.rpo_seconds is not None and record.rpo_seconds > record.objectives["rpo_seconds"]:
        failures.append(
            f"RPO {record.rpo_seconds:.0f} s exceeds the objective {record.objectives['rpo_seconds']:.0f} s"
        )
    record.passed = not failures
    record.error = "; ".join(failures) or None


def finish(ctx: DrillContext, sink: AlertSink | None = None) -> DrillRecord:
    """Judge the record, store it in both regions and alert; :class:`DrillFailed` when it did
    not pass (after the evidence is written)."""
    record = ctx.record
    record.finished_at = datetime.now(UTC)
    judge(record)
    publish(ctx.deployment, record, sink)
    if not record.passed:
        raise DrillFailed(f"{record.drill} DR drill failed: {record.error}", record)
    return record


@contextmanager
def work_folder(drill: str) -> Iterator[Path]:
    """Where a drill's restores go (PostgreSQL, run as another user, must read it)."""
    path = Path(tempfile.mkdtemp(prefix=f"dr-drill-{drill}-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# Notes that hold a moment: the state between a drill DAG's tasks carries them as text.
_MOMENT_NOTES = ("killed_at", "archive_latest")


def drill_state(ctx: DrillContext) -> dict[str, Any]:
    """What the next step needs, as JSON (a drill DAG passes it between its tasks in XCom)."""
    notes = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in ctx.notes.items()}
    return {"record": ctx.record.model_dump(mode="json"), "notes": notes}


def resume(
    deployment: Deployment,
    state: dict[str, Any],
    work_dir: Path,
    *,
    seed: int | None = None,
    progress: Progress | None = None,
) -> DrillContext:
    """The context of a drill started earlier (by :func:`drill_state`), for its next step."""
    notes = dict(state.get("notes") or {})
    for key in _MOMENT_NOTES:
        if isinstance(notes.get(key), str):
            notes[key] = datetime.fromisoformat(notes[key])
    record = DrillRecord.model_validate(state["record"])
    return DrillContext(
        deployment, record, random.Random(seed), progress or log.info, work_dir, notes
    )


def start(
    deployment: Deployment,
    drill: DrillKind,
    work_dir: Path,
    *,
    seed: int | None = None,
    progress: Progress | None = None,
    approval: Approval | None = None,
) -> DrillContext:
    """A new drill's context; ``approval`` is a person's answer, which preflight requires on
    production (it travels with the drill's notes)."""
    record = new_record(deployment, drill)
    ctx = DrillContext(deployment, record, random.Random(seed), progress or log.info, work_dir)
    if approval is not None:
        ctx.notes["person_approval"] = approval
    return ctx


def run_drill(
    deployment: Deployment,
    drill: DrillKind,
    *,
    seed: int | None = None,
    progress: Progress | None = None,
    sink: AlertSink | None = None,
    approval: Approval | None = None,
) -> DrillRecord:
    """Run one drill end to end, the same steps the drill DAG runs as tasks; write its
    evidence; alert. Raises :class:`DrillFailed` (after writing the evidence) when it did not
    pass; a refused target (``preflight``: a production target without a person's
    ``approval``, a target not in its original topology) is left untouched."""
    with work_folder(drill) as work_dir:
        ctx = start(deployment, drill, work_dir, seed=seed, progress=progress, approval=approval)
        try:
            for step in STEPS[drill]:
                run_step(ctx, step.name)
        except Exception as exc:  # every step error is in the record; the teardown follows
            log.error("%s drill failed: %s", drill, exc)
            try:
                restore_topology(ctx)
            except Exception as teardown_error:  # recorded as the failed restore_topology
                log.error("%s drill could not restore the topology: %s", drill, teardown_error)
    return finish(ctx, sink)


def publish(deployment: Deployment, record: DrillRecord, sink: AlertSink | None = None) -> None:
    """Evidence to both regions' buckets; a Slack summary; DRDrillFailed when it failed."""
    settings = deployment.settings
    for region in (settings.regions.primary, settings.regions.secondary):
        try:
            EvidenceStore(regional_store(deployment, region)).save(record)
        except DisasterRecoveryError as exc:
            log.error("could not store drill evidence in %s: %s", region, exc)
    sink = sink or slack_sink(deployment.slack())
    summary = (
        f"{record.drill} drill {'passed' if record.passed else 'FAILED'} on {record.environment}: "
        f"RTO {_seconds(record.rto_seconds)} (objective {_seconds(record.objectives['rto_seconds'])}), "
        f"RPO {_seconds(record.rpo_seconds)} (objective {_seconds(record.objectives['rpo_seconds'])})"
    )
    details = {step.name: f"{step.result} in {step.seconds} s" for step in record.steps}
    alerts = [Alert("DRDrillReport", summary, details=details)]
    if not record.passed:
        alerts.append(
            Alert(
                "DRDrillFailed",
                f"{record.drill} DR drill failed: {record.error}",
                details={"environment": record.environment, "record": record.key},
            )
        )
    for alert in alerts:
        try:
            sink.send(alert)
        except DisasterRecoveryError as exc:
            log.error("could not send %s: %s", alert.name, exc)


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} s"
