"""Restore to a point in time: base backup + incrementals (``pg_combinebackup``) + archived WAL.

The plan is checked before anything is downloaded, and refused with a clear error when no
verified base backup ends before the target, when the archive has a gap between the chain's
start and the target, or when the target lies in the future or beyond the archived WAL. Recovery
runs with ``recovery_target_action = pause``: the restore checks where replay stopped (last
replayed transaction time and LSN) before promoting, so it never ends silently at the end of WAL.
A restored instance does not archive (``archive_mode = off``): it must not write a new timeline
into the production archive unless an operator makes it the new primary on purpose.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from disaster_recovery.backup.physical import BASE, INCREMENTAL, Chain, download_and_extract
from disaster_recovery.catalog.manifests import ChainManifest
from disaster_recovery.catalog.report import backup_report
from disaster_recovery.clients.runner import run
from disaster_recovery.config.endpoints import Deployment, PostgresEndpoint
from disaster_recovery.config.model import Settings
from disaster_recovery.errors import (
    AbortedError,
    ConfigError,
    ConflictError,
    DisasterRecoveryError,
    NotFoundError,
    RestoreRefused,
    UnavailableError,
    VerificationError,
)
from disaster_recovery.monitoring import topology
from disaster_recovery.postgres import db, pgbin
from disaster_recovery.postgres.instance import (
    ROLE_SETTINGS,
    LocalInstance,
    hand_over,
    server_user,
)
from disaster_recovery.postgres.throwaway import free_port
from disaster_recovery.postgres.walfiles import (
    expected_segments,
    is_segment,
    newest_timeline,
    parse_lsn,
    parse_segment,
    segments_on_path,
    timeline_of,
)
from disaster_recovery.wal.archive import WalArchive
from disaster_recovery.wal.host import archiver_command, write_archiver_files
from disaster_recovery.wal.prefetch import FOLDER as PREFETCH_FOLDER
from disaster_recovery.wal.prefetch import served_from_spool

log = logging.getLogger(__name__)

RESTORE_POINTS = "restore_points"
_RESTORE_POINT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,63}$")


@dataclass(frozen=True)
class Target:
    """Exactly one of a time, an LSN or a named restore point."""

    time: datetime | None = None
    lsn: str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        given = [v for v in (self.time, self.lsn, self.name) if v is not None]
        if len(given) != 1:
            raise ConfigError(
                "give exactly one recovery target: a point in time, an LSN or a restore point name"
            )
        if self.time is not None and self.time.tzinfo is None:
            raise ConfigError(
                f"target time {self.time.isoformat()} has no UTC offset; write it "
                "like 2024-01-15T14:30:00-05:00"
            )
        if self.lsn is not None:
            parse_lsn(self.lsn)

    def describe(self) -> str:
        if self.time is not None:
            return f"time {self.time.isoformat()}"
        return f"LSN {self.lsn}" if self.lsn is not None else f"restore point {self.name!r}"


@dataclass
class RestorePlan:
    region: str
    target: Target
    elements: list[ChainManifest]
    wal_needed: list[str]
    target_time: datetime | None = None  # of a named restore point, recorded when created
    target_lsn: int | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "target": self.target.describe(),
            "base": self.elements[0].file,
            "incrementals": [m.file for m in self.elements[1:]],
            "wal_from": self.wal_needed[0] if self.wal_needed else None,
            "wal_to": self.wal_needed[-1] if self.wal_needed else None,
            "wal_segments": len(self.wal_needed),
            "notes": self.notes,
        }


# -- restore points -----------------------------------------------------------------------


def _restore_point_key(deployment: Deployment, name: str) -> str:
    return f"{deployment.settings.storage.prefix}/{RESTORE_POINTS}/{name}.json".lstrip("/")


def create_restore_point(deployment: Deployment, name: str) -> dict[str, Any]:
    """``pg_create_restore_point(name)`` on the primary, recorded in both regions' buckets.

    The WAL is switched right after, so the point is archived (restorable) at once rather than
    after ``archive_timeout``. Names are unique: recovery stops at the *first* point of a name.
    """
    if not _RESTORE_POINT_NAME.match(name):
        raise ConfigError(f"restore point name {name!r}: use 1-63 letters, digits, '_', '.', '-'")
    archive = WalArchive.for_deployment(deployment)
    key = _restore_point_key(deployment, name)
    if archive.store(archive.regions[0]).exists(key):
        raise ConflictError(f"a restore point named {name!r} already exists; choose another name")
    with db.connect(deployment.postgres("primary"), "postgres") as conn:
        row = conn.execute(
            "SELECT pg_create_restore_point(%s)::text, now(),"
            " pg_walfile_name(pg_current_wal_lsn())",
            (name,),
        ).fetchone()
        conn.execute("SELECT pg_switch_wal()")
    assert row is not None
    record = {
        "name": name,
        "lsn": row[0],
        "time": row[1].isoformat(),
        "segment": row[2],
        "timeline": timeline_of(row[2]),
    }
    body = json.dumps(record, sort_keys=True).encode()
    for region in archive.regions:
        archive.store(region).put_if_absent(key, body)
    return record


def load_restore_point(deployment: Deployment, name: str, region: str) -> dict[str, Any]:
    archive = WalArchive.for_deployment(deployment)
    key = _restore_point_key(deployment, name)
    store = archive.store(region)
    if not store.exists(key):
        raise NotFoundError(
            f"no restore point named {name!r} in {store.url(key)} "
            "(create one with `dr restore-point create NAME`)"
        )
    return store.get_json(key)


# -- planning --------------------------------------------------------------------------------


def plan_restore(
    deployment: Deployment, target: Target, region: str | None = None, now: datetime | None = None
) -> RestorePlan:
    """Choose the chain and check the WAL for ``target``; refuse with a clear error.

    Without ``region``: the current primary's region first, then the other when the first's
    S3 does not answer or holds no base backup for the target (a region lost, or a chain
    copy missing there). ``region`` forces one."""
    deployment = topology.following(deployment)  # the current primary's region first
    settings = deployment.settings
    now = now or datetime.now(UTC)
    regions = [region] if region else [settings.regions.primary, settings.regions.secondary]
    refusals: list[DisasterRecoveryError] = []
    for candidate in regions:
        try:
            plan_time, plan_lsn = _target_position(deployment, target, candidate, now)
            elements = _chain_for(
                deployment, candidate, target, plan_time=plan_time, plan_lsn=plan_lsn, now=now
            )
        except (UnavailableError, NotFoundError, RestoreRefused) as exc:
            log.warning("%s cannot serve the restore: %s", candidate, exc)
            refusals.append(exc)
            continue
        wal = _wal_needed(deployment, elements[-1], plan_time, plan_lsn, target)
        notes = [f"{r}: {str(e).splitlines()[0]}" for r, e in zip(regions, refusals, strict=False)]
        return RestorePlan(candidate, target, elements, wal, plan_time, plan_lsn, notes)
    # The most telling refusal: the first region's, unless it was only unreachable.
    raise next((e for e in refusals if not isinstance(e, UnavailableError)), refusals[0])


def _target_position(
    deployment: Deployment, target: Target, region: str, now: datetime
) -> tuple[datetime | None, int | None]:
    """The target as a time and/or an LSN (a named restore point is looked up in ``region``);
    a target in the future is refused."""
    plan_time, plan_lsn = target.time, parse_lsn(target.lsn) if target.lsn else None
    if target.name is not None:
        point = load_restore_point(deployment, target.name, region)
        plan_time, plan_lsn = datetime.fromisoformat(point["time"]), parse_lsn(point["lsn"])
    if target.time is not None and target.time > now:
        raise RestoreRefused(f"target {target.describe()} is in the future (now {now.isoformat()})")
    if target.lsn is not None:
        _refuse_future_lsn(deployment, target.lsn)
    return plan_time, plan_lsn


def _chain_for(
    deployment: Deployment,
    region: str,
    target: Target,
    *,
    plan_time: datetime | None,
    plan_lsn: int | None,
    now: datetime,
) -> list[ChainManifest]:
    """The newest verified base backup of ``region`` that ends before the target, followed by
    its newest incrementals that also do."""
    verified = Chain(deployment, region).verified()

    def ends_before(element: ChainManifest) -> bool:
        if plan_lsn is not None:
            return parse_lsn(element.end_lsn) <= plan_lsn and (
                plan_time is None or (element.finished_at or now) < plan_time
            )
        assert plan_time is not None
        return element.finished_at is not None and element.finished_at < plan_time

    bases = [m for m in verified if m.backup_type == BASE and ends_before(m)]
    if not bases:
        oldest = next((m for m in verified if m.backup_type == BASE), None)
        hint = (
            (
                f"the oldest verified base backup, {oldest.file}, ends at "
                f"{oldest.finished_at.isoformat() if oldest.finished_at else '?'} "
                f"(LSN {oldest.end_lsn})"
            )
            if oldest
            else "there is no verified base backup"
        )
        raise RestoreRefused(
            f"no base backup precedes target {target.describe()} in {region}: {hint}"
        )
    elements = [bases[-1]]
    while True:
        children = [
            m
            for m in verified
            if m.backup_type == INCREMENTAL and m.parent == elements[-1].file and ends_before(m)
        ]
        if not children:
            return elements
        elements.append(children[-1])


def as_target_time(value: datetime | str, tz: Any) -> datetime:
    """A target time from a datetime or ISO text; a value without an offset is in ``tz``."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ConfigError(
                f"point in time {value!r} is not an ISO time (like 2024-01-15T14:30:00-05:00)"
            ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=tz)


def _refuse_future_lsn(deployment: Deployment, lsn: str) -> None:
    try:
        current = db.query_one(
            deployment.postgres("primary"), "SELECT pg_current_wal_lsn()::text", dbname="postgres"
        )
    except UnavailableError:
        log.warning("primary unreachable: cannot check that LSN %s is not in the future", lsn)
        return
    if parse_lsn(lsn) > parse_lsn(str(current)):
        raise RestoreRefused(f"target LSN {lsn} is in the future: the primary is at {current}")


def _wal_needed(
    deployment: Deployment,
    last: ChainManifest,
    plan_time: datetime | None,
    plan_lsn: int | None,
    target: Target,
) -> list[str]:
    """Segments from the last chain element's start to the one that holds the target, all of
    which must be archived (in either region) -- else the restore is refused."""
    archive = WalArchive.for_deployment(deployment)
    seg_size = last.wal_segment_size
    listing: dict[str, dict[str, Any]] = {}
    answering = []
    for region in archive.regions:
        try:
            for name, entry in archive.listing(region).items():
                listing.setdefault(name, entry)
            answering.append(region)
        except UnavailableError as exc:
            log.warning("WAL archive in %s unreachable: %s", region, exc)
    # recovery_target_timeline = 'latest': recovery follows the newest timeline in the archive.
    timeline = newest_timeline(listing, last.timeline)
    history = archive.history(timeline)
    start_segno = parse_segment(last.start_segment, seg_size)[1]
    on_path = segments_on_path(listing, timeline, history, seg_size)
    if plan_lsn is not None:
        end_segno = plan_lsn // seg_size
    else:
        assert plan_time is not None
        # Only a segment archived after the target can hold WAL written after it. S3 gives
        # LastModified in whole seconds, cut down: compare to the target's second.
        target_second = plan_time.replace(microsecond=0)
        after = sorted(
            s
            for s, n in on_path.items()
            if s >= start_segno and listing[n]["last_modified"] >= target_second
        )
        candidates = [(on_path[s], listing[on_path[s]]["last_modified"]) for s in after]
        end = _first_written_after(archive, answering, candidates, plan_time)
        if end is None:
            raise RestoreRefused(
                _beyond_the_archive(
                    archive,
                    target,
                    regions=answering,
                    last=last,
                    listing=listing,
                    on_path=on_path,
                    start_segno=start_segno,
                )
            )
        end_segno = parse_segment(end, seg_size)[1]
    needed = expected_segments(start_segno, end_segno, timeline, history, seg_size)
    missing = [name for name in needed if name not in listing]
    if missing:
        raise RestoreRefused(
            f"WAL gap: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} "
            f"({len(missing)} segment(s)) missing from the archive between {needed[0]} and "
            f"{needed[-1]}; target {target.describe()} cannot be reached from {last.file}"
        )
    return needed


def _first_written_after(
    archive: WalArchive,
    regions: list[str],
    candidates: list[tuple[str, datetime]],
    plan_time: datetime,
) -> str | None:
    """Of ``candidates`` (segment, archive time; in WAL order, each archived in or after the
    target's second), the first written at or after the target: recovery must read that far.
    Archiving that lags the writes uploads segments written before the target after it, so the
    archive time alone would end the plan early. A binary search on the written times in the
    objects' metadata (they grow along the WAL); a segment archived before they were recorded
    counts by its archive time. None: every candidate was written before the target."""
    low, high = 0, len(candidates)
    while low < high:
        middle = (low + high) // 2
        name, archived_at = candidates[middle]
        written = archive.written_at(name, regions) or archived_at
        if written >= plan_time:
            high = middle
        else:
            low = middle + 1
    return candidates[low][0] if low < len(candidates) else None


def _beyond_the_archive(
    archive: WalArchive,
    target: Target,
    *,
    regions: list[str],
    last: ChainManifest,
    listing: dict[str, dict[str, Any]],
    on_path: dict[int, str],
    start_segno: int,
) -> str:
    """Why no archived segment reaches ``target``, in terms that do not contradict each other:
    the newest segment that the chain's WAL path holds, counted from where ``last`` starts."""
    reachable = {s: n for s, n in on_path.items() if s >= start_segno}
    if not reachable:
        return (
            f"target {target.describe()} cannot be reached from {last.file}: no segment of its "
            f"timeline path is archived from its start ({last.start_segment}) on; the archive "
            "holds no WAL written after that backup on this history"
        )
    name = reachable[max(reachable)]
    archived_at = listing[name]["last_modified"]
    written_at = archive.written_at(name, regions)
    when = (
        f"was written until {written_at.isoformat()} (archived at {archived_at.isoformat()})"
        if written_at
        else f"was archived at {archived_at.isoformat()}"
    )
    return (
        f"target {target.describe()} is beyond the archived WAL: the newest segment after "
        f"{last.file}, {name}, {when}, before the target. The WAL holding the target is not "
        "archived yet: wait for archive_timeout or run `SELECT pg_switch_wal()` on the primary, "
        "then retry"
    )


# -- restoring -------------------------------------------------------------------------------


def restore_to_point_in_time(
    deployment: Deployment,
    *,
    target_dir: str | Path | None = None,
    target_time: datetime | None = None,
    target_lsn: str | None = None,
    target_name: str | None = None,
    target_port: int | None = None,
    region: str | None = None,
    now: datetime | None = None,
    point_in_time: datetime | str | None = None,
) -> dict[str, Any]:
    """Restore the cluster into ``target_dir`` as it was at the target, start it on
    ``target_port`` (a free port by default) and report what it recovered to.

    ``point_in_time`` (a datetime or ISO text; without an offset, the configured time zone) is
    the seed API's spelling of ``target_time``. Without ``target_dir`` a new folder under the
    system's temporary directory is used. The instance is left running, promoted, for the
    operator to inspect or copy from (stop it with ``pg_ctl stop -D target_dir``)."""
    if point_in_time is not None:
        target_time = as_target_time(point_in_time, deployment.settings.tz)
    if target_dir is None:
        target_dir = Path(tempfile.mkdtemp(prefix="litper-pitr-")) / "data"
    settings = deployment.settings
    target = Target(target_time, target_lsn, target_name)
    plan = plan_restore(deployment, target, region, now)
    data_dir = Path(target_dir).resolve()
    if data_dir.exists() and any(data_dir.iterdir()):
        raise ConfigError(f"{data_dir} is not empty; restore into a new folder")
    aux = data_dir.with_name(data_dir.name + ".dr")
    if aux.exists():
        shutil.rmtree(aux)
    aux.mkdir(parents=True)
    user = server_user(settings.pitr.restore_os_user, "pitr.restore_os_user")
    timings: dict[str, float] = {}
    # A forced region is the only source; otherwise the other region's copy when one is damaged.
    sources = [plan.region] if region else [plan.region, other_region(settings, plan.region)]

    started = time.monotonic()
    if len(plan.elements) == 1:
        plan.notes += download_intact(deployment, sources, plan.elements[0], data_dir)
    else:
        parts = [aux / "parts" / f"{i}" for i in range(len(plan.elements))]
        for element, folder in zip(plan.elements, parts, strict=True):
            plan.notes += download_intact(deployment, sources, element, folder)
    timings["download_extract_seconds"] = round(time.monotonic() - started, 2)
    if len(plan.elements) > 1:
        started = time.monotonic()
        major = plan.elements[-1].server_major
        run(
            [pgbin.require_at_least("pg_combinebackup", major), "--link", *parts, "-o", data_dir],
            target=f"combine into {data_dir}",
            timeout=settings.pitr.restore_timeout.total_seconds(),
        )
        shutil.rmtree(aux / "parts")
        timings["combine_seconds"] = round(time.monotonic() - started, 2)

    instance = RestoredCluster(data_dir, target_port or free_port(), user).instance()
    _configure_recovery(instance, plan, deployment, aux, user)
    started = time.monotonic()
    recovered = _recover(instance, plan, deployment, settings.pitr.restore_timeout.total_seconds())
    timings["replay_seconds"] = round(time.monotonic() - started, 2)
    (aux / "wal.env").unlink(missing_ok=True)  # S3 credentials are not needed any more
    return {
        "status": "restored",
        "plan": plan.to_dict(),
        "recovered_to": recovered,
        "data_dir": str(data_dir),
        "port": instance.port,
        "log": str(instance.log_file),
        "timings": timings,
        "os_user": user,
        "stop_with": f"pg_ctl stop -D {data_dir}",
    }


def other_region(settings: Settings, region: str) -> str:
    regions = settings.regions
    return regions.secondary if region == regions.primary else regions.primary


def download_intact(
    deployment: Deployment, regions: list[str], element: ChainManifest, folder: Path
) -> list[str]:
    """Extract ``element`` from the first region whose copy is reachable and intact (SHA-256
    and size as the manifest says). Returns a note for each copy passed over."""
    passed_over: list[str] = []
    errors: list[DisasterRecoveryError] = []
    for region in regions:
        store = Chain(deployment, region).store
        try:
            download_and_extract(store, element, folder)
            return passed_over
        except (VerificationError, UnavailableError, NotFoundError) as exc:
            log.warning("cannot restore %s from %s: %s", element.file, region, exc)
            errors.append(exc)
            passed_over.append(f"{element.file} from {region}: {str(exc).splitlines()[0]}")
            shutil.rmtree(folder, ignore_errors=True)
    message = f"no intact copy of {element.file}: " + "; ".join(passed_over)
    if any(isinstance(e, VerificationError) for e in errors):
        raise VerificationError(message, check="sha256", key=element.key)
    raise type(errors[0])(message)


@dataclass(frozen=True)
class RestoredCluster:
    """A cluster restored by :func:`restore_to_point_in_time`: its data directory, the folder
    beside it (``<data>.dr``: socket, log, the archiver's env file) and how to stop it."""

    data_dir: Path
    port: int
    os_user: str | None

    @classmethod
    def of(cls, result: dict[str, Any]) -> RestoredCluster:
        """From the result :func:`restore_to_point_in_time` returned."""
        return cls(Path(result["data_dir"]), int(result["port"]), result.get("os_user"))

    @property
    def aux(self) -> Path:
        return self.data_dir.with_name(self.data_dir.name + ".dr")

    def instance(self) -> LocalInstance:
        return LocalInstance(
            data_dir=self.data_dir,
            port=self.port,
            cluster_name="pitr_restore",
            socket_dir=self.aux / "run",
            log_file=self.aux / "postgres.log",
            os_user=self.os_user,
        )

    def stop_and_remove(self) -> None:
        """Stop the instance (immediately: it is a throwaway) and delete its folders, and the
        temporary folder made for it once empty."""
        self.instance().stop(mode="immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)
        shutil.rmtree(self.aux, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.data_dir.parent.rmdir()


def _configure_recovery(
    instance: LocalInstance, plan: RestorePlan, deployment: Deployment, aux: Path, user: str | None
) -> None:
    data_dir = instance.data_dir
    for leftover in ("standby.signal", "postmaster.pid", "postmaster.opts"):
        (data_dir / leftover).unlink(missing_ok=True)
    env_file = write_archiver_files(aux, deployment.settings, deployment, user)
    recovery: dict[str, str] = {
        "restore_command": archiver_command("fetch", env_file, user),
        "recovery_target_action": "pause",
        "recovery_target_timeline": "latest",
    }
    if plan.target.time is not None:
        recovery["recovery_target_time"] = plan.target.time.astimezone(UTC).isoformat(sep=" ")
    elif plan.target.lsn is not None:
        recovery["recovery_target_lsn"] = plan.target.lsn
    else:
        recovery["recovery_target_name"] = str(plan.target.name)
    # Not into the production archive, and no inherited sync standby to wait for.
    instance.edit_auto_conf(
        {**recovery, "archive_mode": "off", "hot_standby": "on"}, drop=ROLE_SETTINGS
    )
    (data_dir / "recovery.signal").touch()
    data_dir.chmod(0o700)
    hand_over(data_dir, user)
    hand_over(aux, user)


def _endpoint(deployment: Deployment, port: int) -> PostgresEndpoint:
    source = deployment.postgres("primary")
    return PostgresEndpoint(
        "pitr_restore", "127.0.0.1", port, source.user, "postgres", source.password
    )


def _recover(
    instance: LocalInstance, plan: RestorePlan, deployment: Deployment, timeout: float
) -> dict[str, Any]:
    """Start the instance, wait until replay pauses at the target, report, then promote."""
    try:
        instance.start(timeout=int(timeout))
    except UnavailableError as exc:
        raise _recovery_failure(instance, plan) or exc from None
    endpoint = _endpoint(deployment, instance.port)
    deadline = time.monotonic() + timeout
    while True:
        try:
            state = db.query_one(endpoint, "SELECT pg_get_wal_replay_pause_state()")
        except UnavailableError:
            state = None
            if not instance.is_running():
                raise _recovery_failure(instance, plan) or AbortedError(
                    f"the restored instance stopped during recovery:\n{instance.log_tail()}"
                ) from None
        if state == "paused":
            break
        if time.monotonic() > deadline:
            raise AbortedError(
                f"recovery did not reach {plan.target.describe()} within "
                f"{timeout:g} s:\n{instance.log_tail()}"
            )
        time.sleep(0.1)
    with db.connect(endpoint) as conn:
        row = conn.execute(
            "SELECT pg_last_xact_replay_timestamp(), pg_last_wal_replay_lsn()::text"
        ).fetchone()
        assert row is not None
        last_time, replay_lsn = row
        _check_reached(plan, last_time, replay_lsn)
        conn.execute("SELECT pg_promote(true, 60)")
        timeline = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()
    pg_wal = instance.data_dir / "pg_wal"
    served = served_from_spool(pg_wal)
    shutil.rmtree(pg_wal / PREFETCH_FOLDER, ignore_errors=True)  # what recovery did not ask for
    return {
        "last_replayed_transaction_time": last_time.isoformat() if last_time else None,
        "last_replayed_lsn": replay_lsn,
        "new_timeline": timeline_of(timeline[0]) if timeline else None,
        "stopped_by": _stop_line(instance),
        "wal_served_from_prefetch": served,
    }


def _check_reached(plan: RestorePlan, last_time: datetime | None, replay_lsn: str) -> None:
    """Replay paused at the target, not somewhere else: never promote a wrong point silently."""
    if plan.target.time is not None and last_time is not None and last_time > plan.target.time:
        raise AbortedError(
            f"replay went past the target: last transaction at {last_time.isoformat()}"
        )
    if plan.target_lsn is not None and parse_lsn(replay_lsn) < plan.target_lsn:
        raise AbortedError(f"replay paused at {replay_lsn}, before the target LSN")


def _stop_line(instance: LocalInstance) -> str | None:
    """The server's own account of where it stopped ("recovery stopping before commit ...")."""
    try:
        lines = instance.log_file.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return None
    stops = [ln.split("LOG:", 1)[-1].strip() for ln in lines if "recovery stopping" in ln]
    return stops[-1] if stops else None


def _recovery_failure(instance: LocalInstance, plan: RestorePlan) -> Exception | None:
    log_text = instance.log_tail(40)
    if "recovery ended before configured recovery target was reached" in log_text:
        return RestoreRefused(
            f"WAL ended before {plan.target.describe()} was reached (segments "
            f"{plan.wal_needed[0]}..{plan.wal_needed[-1]} were planned): the archive holds no "
            f"transaction after the target yet, or a segment could not be read.\n{log_text}"
        )
    if "restore_command" in log_text or "archive" in log_text.lower():
        return AbortedError(f"recovery aborted while reading the WAL archive:\n{log_text}")
    return None


# -- what can be restored -------------------------------------------------------------------


def describe_chain(deployment: Deployment, region: str | None = None) -> dict[str, Any]:
    """Per region: each base backup with its incrementals, the WAL range, and the earliest and
    latest point in time the region's archive can restore to (for ``dr chain`` / ``dr list``)."""
    settings = deployment.settings
    archive = WalArchive.for_deployment(deployment)
    result: dict[str, Any] = {}
    for name in [region] if region else archive.regions:
        result[name] = _describe_region(deployment, archive, name)
    return {"regions": result, "time_zone": settings.timezone}


def _describe_region(deployment: Deployment, archive: WalArchive, region: str) -> dict[str, Any]:
    elements = Chain(deployment, region).elements()
    listing = archive.listing(region)
    chains = []
    for base in (m for m in elements if m.backup_type == BASE):
        members = [base]
        for element in elements:
            if element.parent == members[-1].file:
                members.append(element)
        chains.append(
            {"base": backup_report(base), "incrementals": [backup_report(m) for m in members[1:]]}
        )
    segments = sorted(n for n in listing if is_segment(n))
    restorable = _restorable_window(archive, region, elements, listing)
    return {
        "chains": chains,
        "wal": {
            "segments": len(segments),
            "oldest": segments[0] if segments else None,
            "newest": segments[-1] if segments else None,
            "history_files": sorted(n for n in listing if n.endswith(".history")),
        },
        **restorable,
    }


def _restorable_window(
    archive: WalArchive,
    region: str,
    elements: list[ChainManifest],
    listing: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Earliest: the end of the oldest verified base backup whose WAL is archived from its start.
    Latest: when the last segment of the unbroken run from a verified base was written."""
    bases = [m for m in elements if m.backup_type == BASE and m.verified]
    if not bases:
        return {
            "earliest_restorable": None,
            "latest_restorable": None,
            "note": "no verified base backup: nothing is restorable to a point in time",
        }
    seg_size = bases[-1].wal_segment_size
    timeline = newest_timeline(listing, max(b.timeline for b in bases))
    try:
        history = archive.history(timeline)
    except NotFoundError as exc:
        # Recovery follows the newest timeline and needs its history file: every point-in-time
        # restore fails without it (_wal_needed), so no window may be claimed.
        return {
            "earliest_restorable": None,
            "latest_restorable": None,
            "note": f"{exc}: no point in time is restorable until it is archived again "
            "(`dr wal check` archives it from the primary's pg_wal)",
        }
    on_path = segments_on_path(set(listing), timeline, history, seg_size)
    earliest, latest = None, None
    for base in bases:
        start_name = base.start_segment
        if not start_name:
            continue
        segno = parse_segment(start_name, seg_size)[1]
        if segno not in on_path:
            continue
        while segno + 1 in on_path:
            segno += 1
        # Where the WAL ends in time is when its last segment was written, not uploaded.
        end = on_path[segno]
        end_time = archive.written_at(end, [region]) or listing[end]["last_modified"]
        if base.finished_at and base.finished_at <= end_time:
            earliest = earliest or base.finished_at
            latest = max(latest or end_time, end_time)
    return {
        "earliest_restorable": earliest.isoformat() if earliest else None,
        "latest_restorable": latest.isoformat() if latest else None,
    }
