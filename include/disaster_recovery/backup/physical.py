"""The physical chain: daily base backups and hourly native incrementals (``pg_basebackup``).

A base backup is ``pg_basebackup -D - -Ft -X fetch`` streamed through the ``pitr.compression``
codec and a SHA-256 hasher into S3 (the tar holds ``backup_manifest``; the manifest records the
codec). An incremental is the same with
``--incremental=<backup_manifest of the previous chain element>`` (PostgreSQL 17+, with
``summarize_wal = on``); its parent is recorded in its manifest. Verification downloads the tar
into a temporary folder, checks the SHA-256 recorded while streaming and runs
``pg_verifybackup -n`` on it (tar backups cannot have their WAL parsed), then stores the
``backup_manifest`` next to the tar so the next incremental needs no download of its parent.

Who takes the daily base backup: the incremental DAG, whenever the chain has no verified base
backup for the current day (in the configured time zone) -- see :func:`scheduled_kind` and
docs/pitr.md for why.
"""

from __future__ import annotations

import json
import logging
import re
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from disaster_recovery.backup.claims import Lease, default_who
from disaster_recovery.backup.replicate import copied_ahead, copy_to_region
from disaster_recovery.catalog.listing import Catalog
from disaster_recovery.catalog.manifests import ChainManifest, Verification
from disaster_recovery.catalog.names import backup_file_name
from disaster_recovery.catalog.report import backup_report
from disaster_recovery.clients.compression import CountingReader, compressing, decompressing
from disaster_recovery.clients.runner import run, streaming
from disaster_recovery.clients.s3 import READ_CHUNK, HashingReader, ObjectStore, regional_store
from disaster_recovery.config.compression import Codec
from disaster_recovery.config.endpoints import Deployment
from disaster_recovery.errors import (
    CommandFailed,
    ConflictError,
    DisasterRecoveryError,
    NotFoundError,
    ToolError,
    VerificationError,
)
from disaster_recovery.monitoring import topology
from disaster_recovery.postgres import db, pgbin
from disaster_recovery.postgres.walfiles import parse_lsn, segment_name, timeline_of

log = logging.getLogger(__name__)

BASE = "postgresql_base"
INCREMENTAL = "postgresql_incremental"
CHAIN_TYPES = (BASE, INCREMENTAL)
BACKUP_MANIFEST_SUFFIX = ".backup_manifest"
INCREMENTAL_MIN_MAJOR = 17

Kind = Literal["auto", "base", "incremental"]

_START = re.compile(r"write-ahead log start point: ([0-9A-F]+/[0-9A-F]+) on timeline (\d+)")
_END = re.compile(r"write-ahead log end point: ([0-9A-F]+/[0-9A-F]+)")


def require_incremental_support(server_major: int, summarize_wal: str = "on") -> None:
    """Native incremental backups need PostgreSQL 17+ with ``summarize_wal = on``."""
    if server_major < INCREMENTAL_MIN_MAJOR:
        raise ToolError(
            f"incremental backups need PostgreSQL {INCREMENTAL_MIN_MAJOR} or newer (native "
            f"`pg_basebackup --incremental`); this server is PostgreSQL {server_major}. Base "
            "backups and WAL archiving still give point-in-time recovery: pause the "
            "postgresql_backup_incremental DAG, or upgrade the server"
        )
    if summarize_wal != "on":
        raise ToolError(
            "incremental backups need `summarize_wal = on` on the server (it is "
            f"{summarize_wal!r}): set it with ALTER SYSTEM and reload, then take a new base backup"
        )


@dataclass
class Chain:
    """The physical backups of one region's catalog."""

    deployment: Deployment
    region: str

    @property
    def settings(self) -> Any:
        return self.deployment.settings

    @property
    def store(self) -> ObjectStore:
        return regional_store(self.deployment, self.region)

    @property
    def catalog(self) -> Catalog:
        return Catalog(self.store, self.settings.storage.prefix)

    def elements(self) -> list[ChainManifest]:
        """Every base and incremental manifest, oldest first (by recorded start time)."""
        return self.catalog.chain_manifests(CHAIN_TYPES)

    def verified(self) -> list[ChainManifest]:
        return [m for m in self.elements() if m.verified]


def chain_of(element: ChainManifest, by_file: dict[str, ChainManifest]) -> list[ChainManifest]:
    """``element`` and its ancestors, base first."""
    chain = [element]
    while (parent := chain[0].parent) is not None:
        if parent not in by_file:
            raise NotFoundError(f"{chain[0].file}: its parent {parent} is not in the catalog")
        chain.insert(0, by_file[parent])
    return chain


def _server_facts(deployment: Deployment) -> dict[str, Any]:
    with db.connect(deployment.postgres("primary"), "postgres") as conn:
        row = conn.execute(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int,"
            " (SELECT system_identifier::text FROM pg_control_system()),"
            " pg_walfile_name(pg_current_wal_lsn()),"
            " (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'),"
            " current_setting('summarize_wal')"
        ).fetchone()
    assert row is not None
    return {
        "server_version": row[0],
        "server_major": row[1] // 10000,
        "system_identifier": row[2],
        "timeline": timeline_of(row[3]),
        "wal_segment_size": int(row[4]),
        "summarize_wal": row[5],
    }


def scheduled_kind(
    deployment: Deployment, now: datetime | None = None
) -> Literal["base", "incremental"]:
    """What the hourly run takes: a base backup when the chain has no verified base backup
    started today (configured time zone), or when the server is no longer the one or on the
    timeline of the chain's newest element (after a failover); an incremental otherwise."""
    now = now or datetime.now(UTC)
    deployment = topology.following(deployment)
    settings = deployment.settings
    chain = Chain(deployment, settings.regions.primary).verified()
    today = now.astimezone(settings.tz).date()
    bases_today = [
        m
        for m in chain
        if m.backup_type == BASE and m.started_at.astimezone(settings.tz).date() == today
    ]
    if not bases_today:
        return "base"
    facts = _server_facts(deployment)
    newest = chain[-1]
    if (
        newest.system_identifier != facts["system_identifier"]
        or newest.timeline != facts["timeline"]
    ):
        return "base"
    return "incremental"


def chain_writer(deployment: Deployment) -> Lease:
    """The physical chain's one-writer lease, in the primary region's bucket: two runs would
    otherwise take incrementals on the same parent, or race for the same name."""
    settings = deployment.settings
    key = f"{settings.storage.prefix}/locks/physical_chain.json".lstrip("/")
    store = Chain(deployment, settings.regions.primary).store
    return Lease(store, key, who=default_who(), duration=settings.pitr.chain_lock_lease)


def take_backup(
    deployment: Deployment, kind: Kind = "auto", now: datetime | None = None
) -> ChainManifest:
    """Take (and upload, unverified) a base or incremental backup; ``auto`` decides as the
    schedule does. Verify it with :func:`verify_backup` before it counts. Refused with
    :class:`BusyError` while another run writes the chain."""
    with chain_writer(deployment):
        chosen = scheduled_kind(deployment, now) if kind == "auto" else kind
        if chosen == "base":
            return take_base_backup(deployment, now)
        return take_incremental_backup(deployment, now)


def take_base_backup(deployment: Deployment, now: datetime | None = None) -> ChainManifest:
    return _take(deployment, BASE, parent=None, now=now)


def take_incremental_backup(deployment: Deployment, now: datetime | None = None) -> ChainManifest:
    """An incremental on the newest verified chain element (base or incremental)."""
    deployment = topology.following(deployment)
    facts = _server_facts(deployment)
    require_incremental_support(facts["server_major"], facts["summarize_wal"])
    chain = Chain(deployment, deployment.settings.regions.primary).verified()
    if not chain:
        raise NotFoundError(
            "no verified base backup to take an incremental on: take a base "
            "backup first (`dr backup base`)"
        )
    parent = chain[-1]
    if parent.system_identifier != facts["system_identifier"]:
        raise ConflictError(
            f"the chain's newest element {parent.file} is of another cluster "
            f"(system identifier {parent.system_identifier}); "
            "take a base backup"
        )
    if getattr(parent, "timeline", None) != facts["timeline"]:
        # WAL summaries do not cross a timeline switch: the chain restarts from a new base.
        raise ConflictError(
            f"the chain's newest element {parent.file} is on timeline "
            f"{getattr(parent, 'timeline', '?')}, the primary is on timeline {facts['timeline']} "
            "(a failover happened): take a base backup (`dr backup-physical base`, or let the "
            "hourly run choose)"
        )
    return _take(deployment, INCREMENTAL, parent=parent, now=now)


def _take(
    deployment: Deployment, backup_type: str, parent: ChainManifest | None, now: datetime | None
) -> ChainManifest:
    # Only from the node the checked topology names (SplitBrain / unavailable raise here).
    deployment, checked = topology.protected(deployment)
    settings = deployment.settings
    region = settings.regions.primary
    chain = Chain(deployment, region)
    store, catalog = chain.store, chain.catalog
    endpoint = deployment.postgres("primary")
    facts = _server_facts(deployment)
    program = pgbin.require_at_least("pg_basebackup", facts["server_major"])
    codec = Codec.parse(settings.pitr.compression)
    started = now or datetime.now(UTC)
    file = backup_file_name(backup_type, started)
    key = catalog.key_for(file)
    if store.exists(key) or store.exists(key + ".manifest.json"):
        raise ConflictError(
            f"{store.url(key)} already exists; a backup was already taken at this second"
        )

    args = [program, "-D", "-", "-Ft", "-X", "fetch", "--checkpoint=fast", "--no-password", "-v"]
    with tempfile.TemporaryDirectory(prefix="dr-incremental-") as scratch:
        if parent is not None:
            parent_manifest = Path(scratch) / "parent_backup_manifest"
            parent_manifest.write_bytes(store.get_bytes(parent.key + BACKUP_MANIFEST_SUFFIX))
            args.append(f"--incremental={parent_manifest}")
        log.info("taking %s %s from %s", backup_type, file, endpoint.describe())
        with streaming(
            args,
            env=endpoint.libpq_env("postgres"),
            target=endpoint.describe(),
            timeout=settings.backup.command_timeout.total_seconds(),
        ) as proc:

            def producer_finished() -> None:
                code = proc.wait()
                if code != 0:
                    raise proc.failure(code)

            tar = CountingReader(proc.stdout)
            stored = store.upload_stream(
                key,
                compressing(tar, codec),
                at_eof=producer_finished,
                metadata={"compression": str(codec)},
            )
            tail = proc.stderr_tail
    finished = datetime.now(UTC)
    start, end = _START.search(tail), _END.search(tail)
    if not start or not end:
        raise CommandFailed(
            f"pg_basebackup output has no WAL start/end point:\n{tail}",
            program="pg_basebackup",
            returncode=0,
            stderr_tail=tail,
        )
    start_lsn, timeline = start.group(1), int(start.group(2))
    seg_size = facts["wal_segment_size"]
    manifest = ChainManifest.model_validate(
        {
            "backup_type": backup_type,
            "file": file,
            "bucket": store.bucket,
            "key": key,
            "size_bytes": stored.size,
            "sha256": stored.sha256,
            "s3_checksum": stored.s3_checksum,
            "compression": str(codec),
            "uncompressed_bytes": tar.size,
            "started_at": started,
            "finished_at": finished,
            "server_version": facts["server_version"],
            "database": "(whole cluster)",
            "format": "tar",
            "status": "uploaded",
            "encryption": store.encryption.to_dict(),
            "start_lsn": start_lsn,
            "end_lsn": end.group(1),
            "timeline": timeline,
            "start_segment": segment_name(timeline, parse_lsn(start_lsn) // seg_size, seg_size),
            "wal_segment_size": seg_size,
            "system_identifier": facts["system_identifier"],
            "server_major": facts["server_major"],
            "parent": parent.file if parent else None,
            "source": {"role": "primary", "connection": endpoint.conn_id, **checked.source()},
            "chain_base": parent.chain_base if parent else file,
        }
    )
    catalog.save(manifest)
    log.info(
        "uploaded %s (%d bytes, %s of %d, WAL %s-%s on timeline %d)",
        file,
        stored.size,
        codec,
        tar.size,
        start_lsn,
        end.group(1),
        timeline,
    )
    return manifest


def download_and_extract(store: ObjectStore, manifest: ChainManifest, folder: Path) -> None:
    """Stream a backup's tar from S3 into ``folder`` (no tar file on disk), decompressing it
    with the manifest's codec on the way and checking the stored object's SHA-256 and size
    against the manifest; raises :class:`VerificationError` on a mismatch or damage."""

    folder.mkdir(parents=True, exist_ok=True)
    body = store.open(manifest.key)
    reader = HashingReader(body)
    plain = decompressing(
        reader,
        Codec.parse(manifest.compression, where=f"{manifest.file}: compression"),
        store.url(manifest.key),
    )
    try:
        with tarfile.open(fileobj=plain, mode="r|") as tar:
            tar.extractall(folder, filter="tar")
        while plain.read(1024 * 1024):  # tar padding after the end-of-archive marker
            pass
        while reader.read(1024 * 1024):  # anything stored after the compressed stream
            pass
    except tarfile.TarError as exc:
        raise VerificationError(
            f"{store.url(manifest.key)}: not a readable tar: {exc}", check="tar", key=manifest.key
        ) from None
    finally:
        body.close()
    manifest.check_digest(reader.size, reader.sha256, where=store.url(manifest.key), check="sha256")


def verify_backup(deployment: Deployment, file: str, region: str | None = None) -> ChainManifest:
    """Download the tar to a temporary folder, check its SHA-256, run ``pg_verifybackup -n``,
    keep its ``backup_manifest`` next to it, and mark the manifest verified (or failed)."""
    deployment = topology.following(deployment)
    settings = deployment.settings
    region = region or settings.regions.primary
    chain = Chain(deployment, region)
    store, catalog = chain.store, chain.catalog
    manifest = catalog.load_chain(file)
    checks: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="dr-verify-") as scratch:
            folder = Path(scratch)
            checks["encryption"] = store.check_encrypted(manifest.key)
            tar_path = _download_for_verify(store, manifest, folder)
            checks["exists"] = True
            checks["sha256"] = manifest.sha256
            checks["compression"] = manifest.compression
            backup_manifest = _extract_backup_manifest(tar_path, folder, manifest)
            checks["backup_manifest"] = _check_backup_manifest(backup_manifest, manifest)
            program = pgbin.require_at_least("pg_verifybackup", manifest.server_major)
            try:
                run([program, "-n", "-F", "t", folder], target=f"backup {file}", timeout=3600)
            except CommandFailed as exc:
                raise VerificationError(
                    f"pg_verifybackup rejected {file}: {exc}",
                    check="pg_verifybackup",
                    key=manifest.key,
                ) from None
            checks["pg_verifybackup"] = "backup successfully verified"
            store.put_if_absent(manifest.key + BACKUP_MANIFEST_SUFFIX, backup_manifest.read_bytes())
            if manifest.status != "verified":
                from disaster_recovery.wal.history import require_history

                # Restorable only with its timeline's history archived (after a failover).
                require_history(deployment, int(getattr(manifest, "timeline", 1)), manifest.key)
            source = getattr(manifest, "source", None)
            if isinstance(source, dict) and manifest.status != "verified":
                # A node deposed since the backup began is never the source of a chain element.
                topology.require_current_source(deployment, source, file, key=manifest.key)
                checks["topology"] = {"generation": source.get("topology_generation")}
    except DisasterRecoveryError as exc:
        manifest.status = "failed"
        manifest.error = str(exc)
        catalog.save(manifest)
        raise
    manifest.status = "verified"
    manifest.error = None
    manifest.verification = Verification(
        checks=checks, verified_at=datetime.now(UTC), verified_by="sha256+pg_verifybackup"
    )
    catalog.save(manifest)
    return manifest


def _download_for_verify(store: ObjectStore, manifest: ChainManifest, folder: Path) -> Path:
    """Download the stored object once, hashing it: gzip is kept compressed (pg_verifybackup
    reads ``base.tar.gz`` itself); zstd is decompressed on the way, since PostgreSQL builds
    without zstd (the embedded one among them) cannot read ``base.tar.zst``."""
    codec = Codec.parse(manifest.compression, where=f"{manifest.file}: compression")
    where = store.url(manifest.key)
    keep = codec if codec.name == "gzip" else Codec()
    tar_path = folder / f"base{keep.tar_suffix}"
    body = store.open(manifest.key)
    reader = HashingReader(body)
    source = reader if keep == codec else decompressing(reader, codec, where)
    try:
        with open(tar_path, "wb") as out:
            while data := source.read(READ_CHUNK):
                out.write(data)
        while reader.read(READ_CHUNK):  # anything stored after the compressed stream
            pass
    finally:
        body.close()
    manifest.check_digest(reader.size, reader.sha256, where=where, check="sha256")
    return tar_path


def _extract_backup_manifest(tar_path: Path, folder: Path, manifest: ChainManifest) -> Path:
    with tarfile.open(tar_path) as tar:
        try:
            member = tar.extractfile("backup_manifest")
        except KeyError:
            member = None
        if member is None:
            raise VerificationError(
                f"{manifest.file}: the tar holds no backup_manifest",
                check="backup_manifest",
                key=manifest.key,
            )
        target = folder / "backup_manifest"
        target.write_bytes(member.read())
    return target


def _check_backup_manifest(path: Path, manifest: ChainManifest) -> dict[str, Any]:
    """PostgreSQL's backup_manifest must describe the same backup as our manifest."""
    document = json.loads(path.read_text())
    ranges = document.get("WAL-Ranges") or []
    if not ranges:
        raise VerificationError(
            f"{manifest.file}: backup_manifest has no WAL-Ranges",
            check="backup_manifest",
            key=manifest.key,
        )
    start = ranges[0]
    if (
        parse_lsn(start["Start-LSN"]) != parse_lsn(manifest.start_lsn)
        or int(start["Timeline"]) != manifest.timeline
    ):
        raise VerificationError(
            f"{manifest.file}: backup_manifest starts at {start['Start-LSN']} on timeline "
            f"{start['Timeline']}, the catalog says {manifest.start_lsn} on "
            f"{manifest.timeline}",
            check="backup_manifest",
            key=manifest.key,
        )
    return {
        "files": len(document.get("Files", [])),
        "wal_ranges": ranges,
        "system_identifier": str(document.get("System-Identifier", "")),
    }


def replicate_backup(deployment: Deployment, file: str) -> ChainManifest:
    """Copy a verified backup (tar, backup_manifest, manifest) to the secondary region's
    bucket and check the copy's SHA-256 there."""
    deployment = topology.following(deployment)
    settings = deployment.settings
    primary = Chain(deployment, settings.regions.primary)
    secondary = Chain(deployment, settings.regions.secondary)
    manifest = primary.catalog.load_chain(file)
    if not manifest.verified:
        raise VerificationError(
            f"{file} is not verified; only verified backups are replicated",
            check="verified",
            key=manifest.key,
        )
    replica = copy_to_region(
        primary.store,
        secondary.store,
        manifest,
        settings,
        companions=[manifest.key + BACKUP_MANIFEST_SUFFIX],
    )
    if replica.get("owed"):
        # The other region is gone: the element counts here; its copy is owed
        # (backup.replica_debt.fill_owed_replicas makes it when the region answers).
        manifest.replica_owed = {settings.regions.secondary: datetime.now(UTC).isoformat()}
        primary.catalog.save(manifest)
        return manifest
    manifest.replicas[settings.regions.secondary] = {
        "bucket": replica["bucket"],
        "sha256": replica["sha256"],
        "proof": replica["proof"],
        "encryption": replica["encryption"],
        "checked_at": datetime.now(UTC).isoformat(),
    }
    primary.catalog.save(manifest)
    secondary.catalog.save(manifest.model_copy(update={"bucket": replica["bucket"]}))
    return manifest


def backup_and_verify(deployment: Deployment, kind: Kind = "auto") -> dict[str, Any]:
    """Take, verify and replicate one chain element (the CLI's one-shot path). An incremental
    asked for on an empty chain takes (and verifies) a base backup first. The chain's writer
    lease is held throughout, so the next run's incremental builds on this verified one."""
    deployment = topology.following(deployment)
    with chain_writer(deployment):
        if (
            kind == "incremental"
            and not Chain(deployment, deployment.settings.regions.primary).verified()
        ):
            backup_and_verify(deployment, "base")
        manifest = take_backup(deployment, kind)
        settings = deployment.settings
        source = Chain(deployment, settings.regions.primary).store
        target = Chain(deployment, settings.regions.secondary).store
        # The copy to the other region overlaps the verification; only a verified element is
        # entered in that region's catalog (replicate_backup), as before.
        with copied_ahead(source, target, manifest.key, settings.storage.replication):
            verify_backup(deployment, manifest.file)
        replicated = replicate_backup(deployment, manifest.file)
        return backup_report(replicated)
