"""Retention cleanup: apply the policy to what the buckets hold, or show what it would delete.

Cleanup is a list of steps; each returns counts per tier alias and the items it deleted (or would
delete). The logical tiers are one step (``daily``/``weekly``/``monthly``); the physical chain
(base, incremental and WAL, whose retention follows dependencies) adds its own step returning
``incremental`` and ``wal`` counts: append it to :data:`CLEANUP_STEPS`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from disaster_recovery.backup.both_regions import one_catalog
from disaster_recovery.backup.physical import BACKUP_MANIFEST_SUFFIX, Chain
from disaster_recovery.backup.stores import Stores
from disaster_recovery.catalog.manifests import ChainManifest, Manifest
from disaster_recovery.catalog.names import EXTENSIONS, MANIFEST_SUFFIX, parse_backup_file
from disaster_recovery.clients.object_lock import Locked
from disaster_recovery.clients.s3 import ObjectStore, locked_keys, regional_store, versions_by_key
from disaster_recovery.config.defaults import DEFAULT_SEGMENT_SIZE
from disaster_recovery.config.endpoints import Deployment
from disaster_recovery.errors import NotFoundError
from disaster_recovery.monitoring import heartbeat
from disaster_recovery.monitoring.health import current_roles, region_postgres
from disaster_recovery.monitoring.history import prune_history
from disaster_recovery.postgres.walfiles import parse_segment
from disaster_recovery.retention.chain import (
    ChainElement,
    ChainPolicy,
    WalFile,
    plan_chain_deletions,
)
from disaster_recovery.retention.logical import (
    TIER_ALIASES,
    count_by_alias,
    plan_deletions,
    policies_from_settings,
)
from disaster_recovery.wal.archive import WalArchive
from disaster_recovery.wal.replica_debt import owed_files

log = logging.getLogger(__name__)

_BACKUP_NAME = re.compile(r"^postgresql_[a-z]+_\d{8}_\d{6}\.(?:dump|tar)")


@dataclass
class StepReport:
    counts: dict[str, int]
    items: list[dict[str, Any]] = field(default_factory=list)
    # region -> why its bucket was passed over (cleaned when it answers again)
    unreachable: dict[str, str] = field(default_factory=dict)


CleanupStep = Callable[[Deployment, datetime, bool], StepReport]


def delete_backup(stores: Iterable[ObjectStore], manifest: Manifest) -> None:
    """Delete one backup in each bucket that holds it: the manifest first (it leaves the
    catalog, so it is never a restore candidate whose object is gone), then the object."""
    for store in stores:
        for key in (manifest.manifest_key, manifest.key):
            if store.exists(key):
                store.delete([key])


def backup_locks(stores: Iterable[ObjectStore], manifest: Manifest) -> list[Locked]:
    """The backup's objects still under Object Lock in these buckets (none without a lock):
    such a backup is kept whole, its manifest too, until every lock has passed."""
    held = []
    for store in stores:
        if store.lock is None:
            continue
        locked = locked_keys(store, versions_by_key(store, [manifest.manifest_key, manifest.key]))
        held += [Locked(key, store.endpoint.region, until) for key, until in locked.items()]
    return held


def cleanup_logical(deployment: Deployment, now: datetime, dry_run: bool) -> StepReport:
    """The full, weekly and monthly tiers. With Object Lock, a backup the policy lets go but
    whose lock has not passed is kept and reported (``locked``), never an error."""
    stores = Stores.of(deployment)
    listing = one_catalog(deployment, TIER_ALIASES.values())
    manifests = [listed.manifest for listed in listing.backups]
    held_in = {
        listed.manifest.file: [s for s in stores.both if s.endpoint.region in listed.locations]
        for listed in listing.backups
    }
    deletions = plan_deletions(manifests, now, policies_from_settings(deployment.settings))
    items = []
    gone = []
    locked = 0
    for deletion in deletions:
        item = {
            "file": deletion.file,
            "backup_type": deletion.manifest.backup_type,
            "started_at": deletion.manifest.started_at.isoformat(),
            "status": deletion.manifest.status,
            "reason": deletion.reason,
        }
        held = backup_locks(held_in[deletion.file], deletion.manifest)
        if held:
            locked += 1
            until = max(lock.until for lock in held)
            log.info("kept %s: Object Lock until %s", deletion.file, until.isoformat())
            items.append({**item, "reason": f"kept: Object Lock until {until.isoformat()}"})
            continue
        if not dry_run:
            delete_backup(held_in[deletion.file], deletion.manifest)
            log.info("deleted %s: %s", deletion.file, deletion.reason)
        gone.append(deletion)
        items.append(item)
    counts = count_by_alias(gone)
    if stores.primary.lock is not None:
        counts["locked"] = locked
    return StepReport(counts, items, listing.unreachable)


def cleanup_chain(deployment: Deployment, now: datetime, dry_run: bool) -> StepReport:
    """The physical chain: base backups, incrementals and WAL, kept by dependency."""

    report = cleanup_physical_chain(deployment, now=now, dry_run=dry_run)
    counts = {name: int(report[name]) for name in ("base", "incremental", "wal")}
    if deployment.settings.storage.object_lock is not None:
        counts["locked"] = report["locked"]
    # Backups are listed one by one; WAL segments only counted (there are thousands), those
    # kept under Object Lock as one range per region.
    items: list[dict[str, Any]] = []
    for region, plan in report["regions"].items():
        items += [
            {"file": file, "backup_type": f"postgresql_{kind}", "region": region}
            for kind in ("base", "incremental")
            for file in plan[kind]
        ]
        items += [
            {
                "file": file,
                "backup_type": parse_backup_file(file)[0],
                "region": region,
                "reason": f"kept: Object Lock until {until}",
            }
            for file, until in plan["locked"].items()
        ]
        if plan["locked_wal"]:
            names = sorted(plan["locked_wal"])
            items.append(
                {
                    "file": f"{names[0]}..{names[-1]}" if len(names) > 1 else names[0],
                    "backup_type": "postgresql_wal",
                    "region": region,
                    "count": len(names),
                    "reason": f"kept: Object Lock until {max(plan['locked_wal'].values())}",
                }
            )
    return StepReport(counts, items)


def cleanup_leftovers(deployment: Deployment, now: datetime, dry_run: bool) -> StepReport:
    """What no manifest accounts for, in both regions, once older than
    ``backup.leftover_grace``: backup objects whose manifest was never written (a run killed
    between upload and manifest; never a restore candidate) and multipart uploads never
    completed or aborted (a SIGKILLed worker; S3 bills their parts until aborted)."""
    stores = Stores.of(deployment)
    prefix = deployment.settings.storage.prefix
    cutoff = now - deployment.settings.backup.leftover_grace
    counts = {"orphans": 0, "stale_uploads": 0}
    items: list[dict[str, Any]] = []
    for store in (stores.primary, stores.secondary):
        region = store.endpoint.region
        for key in orphaned_objects(store, prefix, cutoff):
            items.append(
                {
                    "file": key.rsplit("/", 1)[-1],
                    "key": key,
                    "region": region,
                    "reason": "no manifest",
                }
            )
            counts["orphans"] += 1
            if not dry_run:
                store.delete([key])
        for upload in store.multipart_uploads(f"{prefix}/".lstrip("/")):
            if _upload_started(upload) < cutoff:
                items.append(
                    {
                        "key": upload["Key"],
                        "region": region,
                        "reason": "multipart upload never completed",
                    }
                )
                counts["stale_uploads"] += 1
                if not dry_run:
                    store.abort_upload(upload["Key"], upload["UploadId"])
    if counts["orphans"] or counts["stale_uploads"]:
        log.warning("leftovers%s: %s", " (dry run)" if dry_run else "", items)
    return StepReport(counts, items)


def _upload_started(upload: dict[str, Any]) -> datetime:
    """When an upload began: S3's ``Initiated``, or the run time in a backup's name if later
    (moto and some S3-compatible stores report a fixed or missing time, which must not make a
    backup in progress look stale)."""
    started: datetime = upload.get("Initiated") or datetime.min.replace(tzinfo=UTC)
    try:
        _, named = parse_backup_file(upload["Key"])
    except NotFoundError:
        return started
    return max(started, named)


def orphaned_objects(store: ObjectStore, prefix: str, cutoff: datetime) -> list[str]:
    """Keys of backup objects (and their companions) older than ``cutoff`` whose backup has no
    manifest."""
    orphans = []
    for backup_type in EXTENSIONS:
        entries = list(store.list_keys(f"{prefix}/{backup_type}/".lstrip("/")))
        catalogued = {
            e["Key"].removesuffix(MANIFEST_SUFFIX)
            for e in entries
            if e["Key"].endswith(MANIFEST_SUFFIX)
        }
        for entry in entries:
            key = entry["Key"]
            backup = _backup_key(key)
            if backup and backup not in catalogued and entry["LastModified"] < cutoff:
                orphans.append(key)
    return orphans


def _backup_key(key: str) -> str | None:
    """The backup object a key belongs to (itself, or the backup whose companion it is, as
    ``...tar.backup_manifest``); None for manifests and foreign keys."""
    if key.endswith(MANIFEST_SUFFIX):
        return None
    folder, _, name = key.rpartition("/")
    match = _BACKUP_NAME.match(name)
    return f"{folder}/{match.group(0)}" if match else None


def cleanup_health_history(deployment: Deployment, now: datetime, dry_run: bool) -> StepReport:
    """The health checks' history: each check's record, the per-day availability records (in
    both regions' buckets) and old dr.heartbeat rows on the primary, after the periods of
    ``health_history``."""
    periods = deployment.settings.health_history
    counts = {"health_records": 0, "availability_records": 0, "heartbeats": 0}
    items: list[dict[str, Any]] = []
    for region in (deployment.settings.regions.primary, deployment.settings.regions.secondary):
        doomed = prune_history(
            regional_store(deployment, region),
            deployment.settings.storage.prefix,
            keep_checks=periods.check_records,
            keep_availability=periods.availability_records,
            now=now,
            dry_run=dry_run,
        )
        for kind, keys in doomed.items():
            counts[kind] += len(keys)
            items += [
                {"kind": kind, "region": region, "file": key.rsplit("/", 1)[-1], "key": key}
                for key in keys
            ]
    primary, _secondary = current_roles(deployment)
    counts["heartbeats"] = heartbeat.prune(
        region_postgres(deployment, primary), now - periods.heartbeats, dry_run=dry_run
    )
    return StepReport(counts, items)


CLEANUP_STEPS: list[CleanupStep] = [
    cleanup_logical,
    cleanup_chain,
    cleanup_leftovers,
    cleanup_health_history,
]


def cleanup_old_backups(
    deployment: Deployment,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    steps: list[CleanupStep] | None = None,
) -> dict[str, Any]:
    """Run every cleanup step: ``{"daily": n, "weekly": n, "monthly": n, ..., "dry_run": bool,
    "deleted": [...]}``; with ``dry_run`` nothing is deleted and ``deleted`` lists what would go."""
    when = now or datetime.now(UTC)
    # The seed's three keys first, whatever the steps count: callers read them by position too.
    result: dict[str, Any] = {"daily": 0, "weekly": 0, "monthly": 0}
    items: list[dict[str, Any]] = []
    for step in steps or CLEANUP_STEPS:
        report = step(deployment, when, dry_run)
        for name, count in report.counts.items():
            result[name] = result.get(name, 0) + count
        items += report.items
        if report.unreachable:
            result.setdefault("unreachable", {}).update(report.unreachable)
    result["dry_run"] = dry_run
    result["deleted"] = items
    return result


# -- the physical chain: applying retention.chain to each region's bucket ------------------------------------------------------------


def elements_from_manifests(manifests: Iterable[ChainManifest]) -> list[ChainElement]:
    result = []
    for m in manifests:
        result.append(
            ChainElement(
                file=m.file,
                kind="base" if m.backup_type == "postgresql_base" else "incremental",
                started_at=m.started_at,
                finished_at=m.finished_at,
                start_segno=parse_segment(m.start_segment, m.wal_segment_size)[1],
                parent=m.parent,
                verified=m.verified,
            )
        )
    return result


def wal_files_from_listing(listing: dict[str, dict[str, Any]], segment_size: int) -> list[WalFile]:
    return [
        WalFile(
            name,
            None if name.endswith(".history") else parse_segment(name, segment_size)[1],
            entry["last_modified"],
        )
        for name, entry in listing.items()
    ]


def policy_from_settings(settings: Any) -> ChainPolicy:
    return ChainPolicy(
        base=settings.pitr.base_retention,
        incremental=settings.tiers.postgresql_incremental.retention,
        wal_max_age=settings.tiers.postgresql_wal.retention.max_age,
    )


def cleanup_physical_chain(
    deployment: Any, now: datetime | None = None, dry_run: bool = False
) -> dict[str, Any]:
    """Apply the chain retention in each region's bucket.

    Returns ``{"incremental": n, "wal": n, "base": n, "locked": n}`` (distinct files deleted, or
    that would be with ``dry_run``; ``locked``: elements and WAL segments the policy lets go but
    Object Lock still holds, kept and reported) plus ``"regions"`` with the names per region.
    """

    now = now or datetime.now(UTC)
    settings = deployment.settings
    policy = policy_from_settings(settings)
    archive = WalArchive.for_deployment(deployment)
    totals: dict[str, set[str]] = {"incremental": set(), "wal": set(), "base": set()}
    locked_total = 0
    regions: dict[str, Any] = {}
    owed = set().union(*owed_files(archive).values())
    for region in archive.regions:
        store = archive.store(region)
        manifests = Chain(deployment, region).elements()
        seg_size = manifests[0].wal_segment_size if manifests else DEFAULT_SEGMENT_SIZE
        elements = elements_from_manifests(manifests)
        wal = wal_files_from_listing(archive.listing(region), seg_size)
        plan = plan_chain_deletions(elements, wal, policy, now)
        by_file = {m.file: m for m in manifests}
        held = _held_elements(store, [by_file[f] for f in plan.base + plan.incremental])
        if held:
            # Kept with what they stand on (their parents, a base's WAL): plan again.
            plan = plan_chain_deletions(elements, wal, policy, now, held=held)
        wal_locked = _locked_wal(store, [archive.key(name) for name in plan.wal])
        plan.wal = [name for name in plan.wal if archive.key(name) not in wal_locked]
        # A segment another region still waits for stays until it was copied there (the
        # fill copies from this region; deleting it would leave that region's gap for ever).
        doomed_wal = [name for name in plan.wal if name not in owed]
        data_keys = [archive.key(name) for name in doomed_wal]
        manifest_keys = []
        for file in plan.base + plan.incremental:
            key = by_file[file].key
            data_keys += [key, key + BACKUP_MANIFEST_SUFFIX]
            manifest_keys.append(key + MANIFEST_SUFFIX)
        if not dry_run:
            # Manifests last: a crash in between leaves a manifest whose tar is gone (reported
            # as broken by verification), never a tar that no manifest describes.
            for keys in (data_keys, manifest_keys):
                if keys:
                    store.delete(keys)
        locked_total += len(held) + len(wal_locked)
        regions[region] = {
            "base": plan.base,
            "incremental": plan.incremental,
            "wal": len(doomed_wal),
            "wal_kept_owed": len(plan.wal) - len(doomed_wal),
            "wal_kept_from_segno": plan.wal_kept_from_segno,
            # What the policy lets go but Object Lock still holds: name -> retain-until.
            "locked": {file: until.isoformat() for file, until in held.items()},
            "locked_wal": {
                key.rsplit("/", 1)[-1]: until.isoformat() for key, until in wal_locked.items()
            },
        }
        totals["wal"].update(doomed_wal)
        totals["base"].update(plan.base)
        totals["incremental"].update(plan.incremental)
        log.info(
            "chain retention in %s: %s, kept under Object Lock: %d element(s), %d WAL file(s)%s",
            region,
            plan.counts(),
            len(held),
            len(wal_locked),
            " (dry run)" if dry_run else "",
        )
    return {
        **{kind: len(names) for kind, names in totals.items()},
        "locked": locked_total,
        "dry_run": dry_run,
        "regions": regions,
    }


def _held_elements(store: ObjectStore, doomed: list[ChainManifest]) -> dict[str, datetime]:
    """The chain elements among ``doomed`` with an object still under Object Lock (tar, its
    backup_manifest or its manifest), with the latest retain-until date: kept whole."""
    if store.lock is None:
        return {}
    keys = {
        manifest.file: [manifest.key, manifest.key + BACKUP_MANIFEST_SUFFIX, manifest.manifest_key]
        for manifest in doomed
    }
    locked = locked_keys(store, versions_by_key(store, [k for ks in keys.values() for k in ks]))
    held = {}
    for file, its_keys in keys.items():
        untils = [locked[k] for k in its_keys if k in locked]
        if untils:
            held[file] = max(untils)
    return held


def _locked_wal(store: ObjectStore, keys: list[str]) -> dict[str, datetime]:
    """The WAL segments among ``keys`` still under Object Lock, with their retain-until date."""
    if store.lock is None:
        return {}
    return locked_keys(store, versions_by_key(store, keys))
