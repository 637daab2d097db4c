"""Restore a logical backup into a database, then compare its row counts with the manifest.

Only a verified backup is restored (the newest verified one of its tier, or a named one). The
target must be empty, or ``replace`` must be given (the database is then dropped and recreated).
A parallel restore (``restore_jobs`` > 1) needs a seekable archive: PostgreSQL refuses
``pg_restore -j`` from a pipe ("parallel restore from standard input is not supported"), so the
object is downloaded into a private temporary file, its SHA-256 checked on the way, and the file
is removed when the restore ends. With one job the object streams straight into pg_restore.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from psycopg import sql

from disaster_recovery.backup.logical import exact_row_counts
from disaster_recovery.backup.stores import Stores
from disaster_recovery.backup.verify import feed_object
from disaster_recovery.catalog.manifests import Manifest
from disaster_recovery.catalog.names import check_backup_type
from disaster_recovery.clients.runner import run
from disaster_recovery.clients.s3 import ObjectStore
from disaster_recovery.config.endpoints import Deployment, PostgresEndpoint
from disaster_recovery.errors import (
    CommandFailed,
    ConfigError,
    ConflictError,
    DisasterRecoveryError,
    NotFoundError,
    UnavailableError,
    VerificationError,
)
from disaster_recovery.monitoring import topology
from disaster_recovery.postgres import db, pgbin, pgdump

log = logging.getLogger(__name__)

_RELATIONS = """
SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%%'
"""


def choose_backup(stores: Stores, backup_type: str, backup_file: str | None) -> Manifest:
    """The named backup (it must be verified; the seed's date-only and local-time names are
    resolved: :meth:`Catalog.resolve`), or the newest verified one of the tier."""
    check_backup_type(backup_type)
    if backup_file:
        resolved = stores.catalog.resolve(backup_file, stores.settings.tz)
        manifest = stores.catalog.load(resolved.file)
        if resolved.note:
            log.info("%s", resolved.note)
            manifest = manifest.model_copy(update={"resolved_from": resolved.note})
        file = manifest.file
        if not manifest.verified:
            raise VerificationError(
                f"{file} is not verified (status {manifest.status}"
                f"{': ' + manifest.error if manifest.error else ''}); refusing to restore it",
                check="manifest",
                key=manifest.key,
            )
        return manifest
    newest = stores.catalog.newest_verified(backup_type)
    if newest is None:
        raise NotFoundError(
            f"no verified {backup_type} backup in "
            f"{stores.primary.url(stores.settings.storage.prefix)}"
        )
    return newest


def restore_sources(stores: Stores, region: str | None) -> list[Stores]:
    """The buckets to restore from, in order: ``region`` alone when forced; otherwise the
    current primary's region first, then the other (when the first is down or damaged)."""
    swapped = Stores(stores.secondary, stores.primary, stores.settings)
    if region is None:
        return [stores, swapped]
    for candidate in (stores, swapped):
        if candidate.primary.endpoint.region == region:
            return [candidate]
    raise ConfigError(
        f"--region {region!r} is neither {stores.primary.endpoint.region} nor "
        f"{stores.secondary.endpoint.region}"
    )


def restore_candidate(
    sources: list[Stores], backup_type: str, backup_file: str | None
) -> tuple[Stores, Manifest]:
    """A named backup from the first region whose catalog holds it verified; otherwise the
    newest verified backup of the tier in either region (one taken in the other region during
    an outage included), from the first region that holds that one."""
    found: list[tuple[Stores, Manifest]] = []
    errors: list[DisasterRecoveryError] = []
    for stores in sources:
        try:
            found.append((stores, choose_backup(stores, backup_type, backup_file)))
        except (UnavailableError, NotFoundError, VerificationError) as exc:
            log.warning("%s cannot serve the backup: %s", stores.primary.endpoint.region, exc)
            errors.append(exc)
            continue
        if backup_file:
            break
    if not found:
        # The most telling error: the first region's, unless it was only unreachable.
        raise next((e for e in errors if not isinstance(e, UnavailableError)), errors[0])
    return max(found, key=lambda pair: pair[1].started_at)  # on a tie, the first region's


def download_from_first_intact(
    sources: list[Stores], chosen: Stores, manifest: Manifest, archive: Path
) -> Stores:
    """Download ``manifest``'s object with its SHA-256 checked, from ``chosen`` or, when that
    copy is damaged or unreachable, from the next region that holds it. Returns the source."""
    candidates = [chosen, *[s for s in sources if s is not chosen]]
    errors = []
    for stores in candidates:
        try:
            download_checked(stores.primary, manifest, archive)
            return stores
        except (VerificationError, UnavailableError, NotFoundError) as exc:
            errors.append(exc)
            log.warning("cannot restore from %s: %s", stores.primary.url(manifest.key), exc)
    raise errors[0]


def prepare_target(server: PostgresEndpoint, target_db: str, *, replace: bool) -> str:
    """Make ``target_db`` an empty database. Returns what was done: created/reused/replaced."""
    exists = db.query_one(
        server, "SELECT 1 FROM pg_database WHERE datname = %s", (target_db,), dbname="postgres"
    )
    name = sql.Identifier(target_db)
    if exists:
        relations = int(db.query_one(server, _RELATIONS, dbname=target_db))
        if relations == 0:
            return "reused (empty)"
        if not replace:
            raise ConflictError(
                f"target database {target_db!r} ({server.describe(target_db)}) is not empty "
                f"({relations} relations); restore into another database or pass replace "
                "(--replace) to drop and recreate it"
            )
        with db.connect(server, "postgres") as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(name))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
        return "replaced"
    with db.connect(server, "postgres") as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
    return "created"


def download_checked(store: ObjectStore, manifest: Manifest, path: Path) -> None:
    """Download the object to ``path``; its size and SHA-256 must match the manifest."""
    copy = store.digest(manifest.key, copy_to=path)
    manifest.check_digest(copy.size, copy.sha256, where=store.url(manifest.key), check="checksum")


def compare_counts(
    expected: dict[str, int], actual: dict[str, int]
) -> dict[str, dict[str, int | None]]:
    """Tables whose row count differs (or that are missing) after the restore."""
    differences: dict[str, dict[str, int | None]] = {}
    for table in sorted(set(expected) | set(actual)):
        if expected.get(table) != actual.get(table):
            differences[table] = {"expected": expected.get(table), "restored": actual.get(table)}
    return differences


def restore_logical(
    deployment: Deployment,
    *,
    target_db: str,
    backup_file: str | None = None,
    backup_type: str = "postgresql_full",
    replace: bool = False,
    jobs: int | None = None,
    server_role: str = "primary",
    temp_dir: str | None = None,
    region: str | None = None,
    server: PostgresEndpoint | None = None,
) -> dict[str, Any]:
    """Restore a verified logical backup into ``target_db`` on the ``server_role`` node (or on
    ``server``, e.g. a throwaway instance) and compare every table's row count with the counts
    recorded in the dump's snapshot."""
    if not target_db:
        raise ConfigError("a target database name is required")
    deployment = topology.following(deployment)  # "primary" is the current primary's node
    sources = restore_sources(Stores.of(deployment), region)
    stores, manifest = restore_candidate(sources, backup_type, backup_file)
    on_deployment_node = server is None
    server = server or deployment.postgres(server_role)  # type: ignore[arg-type]
    target = server.with_database(target_db)
    jobs = jobs or deployment.settings.backup.restore_jobs
    timeout = deployment.settings.backup.command_timeout.total_seconds()
    server_major = db.server_major(server.with_database("postgres"))
    pgbin.require_at_least("pg_restore", server_major)
    started = time.monotonic()
    prepared = prepare_target(server, target_db, replace=replace)
    env = target.libpq_env()
    try:
        if jobs > 1:
            with tempfile.TemporaryDirectory(prefix="dr-restore-", dir=temp_dir) as folder:
                archive = Path(folder) / manifest.file
                stores = download_from_first_intact(sources, stores, manifest, archive)
                run(
                    pgdump.restore_args(
                        jobs=jobs,
                        archive=str(archive),
                        dbname=target_db,
                        privileges=on_deployment_node,
                    ),
                    target=target.describe(),
                    env=env,
                    timeout=timeout,
                )
        else:
            fed = feed_object(
                stores.primary,
                manifest.key,
                pgdump.restore_args(jobs=1, dbname=target_db, privileges=on_deployment_node),
                env=env,
                target=target.describe(),
                timeout=timeout,
            )
            manifest.check_digest(
                fed.size,
                fed.sha256,
                where=f"{stores.primary.url(manifest.key)} (restored into {target_db}: do not trust it)",
                check="checksum",
            )
    except CommandFailed as exc:
        raise CommandFailed(
            f"restore of {manifest.file} into {target_db} failed: {exc}",
            program=exc.program,
            returncode=exc.returncode,
            stderr_tail=exc.stderr_tail,
        ) from None
    restored_seconds = time.monotonic() - started
    expected = (manifest.model_extra or {}).get("table_counts", {})
    with db.connect(target) as conn:
        actual = exact_row_counts(conn)
    differences = compare_counts(expected, actual)
    if differences:
        log.error("row counts differ after restoring %s: %s", manifest.file, differences)
    resolved = (manifest.model_extra or {}).get("resolved_from")
    return {
        "status": "restored" if not differences else "restored_with_differences",
        "backup_file": manifest.file,
        **({"resolved": resolved} if resolved else {}),
        "backup_type": manifest.backup_type,
        "region": stores.primary.endpoint.region,
        "started_at": manifest.started_at.isoformat(),
        "target": target.describe(),
        "target_db": target_db,
        "target_prepared": prepared,
        "jobs": jobs,
        "tables": len(actual),
        "rows": sum(actual.values()),
        "counts_match": not differences,
        "differences": differences,
        "restore_seconds": round(restored_seconds, 3),
    }
