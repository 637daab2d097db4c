"""The seed's API, kept as the team already uses it: ``BackupManager`` with async methods.

    manager = BackupManager(config={"db_host": "db.litper.internal", "db_name": "litper",
                                    "backup_bucket": "litper-dr-backups-us-east-1",
                                    "retention": {"daily": 7, "weekly": 4, "monthly": 12}})
    manifest = await manager.backup_postgresql_full()

The methods call the same library functions as the Airflow tasks and the ``dr`` CLI, in a worker
thread (they run programs and stream objects; the event loop stays free).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from disaster_recovery.backup.logical import run_backup, verify_existing
from disaster_recovery.catalog.names import LOGICAL_TYPES
from disaster_recovery.catalog.report import backup_report
from disaster_recovery.config.endpoints import ConnectionFields, Deployment, connection_from_env
from disaster_recovery.config.model import Settings, load_settings
from disaster_recovery.config.seed import settings_from_seed
from disaster_recovery.errors import ConfigError
from disaster_recovery.restore import logical as restore
from disaster_recovery.restore import pitr
from disaster_recovery.retention import cleanup


def _seed_lookup(
    config: dict[str, Any], settings: Settings, fallback: Callable[[str], ConnectionFields]
) -> Callable[[str], ConnectionFields]:
    """A Connection lookup where the seed's ``db_host``/``db_port``/``db_name``/``db_user``
    override the primary PostgreSQL Connection (its password, if any, still comes from it)."""
    primary_id = settings.connections.postgres_primary
    overrides: dict[str, Any] = {
        "host": config.get("db_host"),
        "port": config.get("db_port"),
        "schema": config.get("db_name"),
        "login": config.get("db_user"),
    }
    overrides = {key: value for key, value in overrides.items() if value}
    if "port" in overrides:
        overrides["port"] = int(overrides["port"])

    def lookup(conn_id: str) -> ConnectionFields:
        if conn_id != primary_id or not overrides:
            return fallback(conn_id)
        try:
            base = fallback(conn_id)
        except ConfigError:
            base = ConnectionFields(conn_id=conn_id, conn_type="postgres")
        return dataclasses.replace(base, **overrides)

    return lookup


class BackupManager:
    """Backups, verification, restores and retention of the logical tiers (async)."""

    def __init__(
        self,
        config: dict[str, Any] | None = None,
        deployment: Deployment | None = None,
        settings: Settings | None = None,
    ):
        if deployment is not None:
            self.deployment = deployment
        else:
            base = settings or load_settings()
            seed = dict(config or {})
            resolved = settings_from_seed(seed, base) if seed else base
            self.deployment = Deployment(
                resolved, lookup=_seed_lookup(seed, resolved, connection_from_env)
            )

    @property
    def settings(self) -> Settings:
        return self.deployment.settings

    async def backup_postgresql_full(self, backup_type: str = "postgresql_full") -> dict[str, Any]:
        """Dump, checksum, verify, replicate and publish one logical backup."""
        manifest = await asyncio.to_thread(run_backup, self.deployment, backup_type)
        return backup_report(manifest)

    async def verify_backup(self, backup_type: str, backup_file: str) -> dict[str, Any]:
        """Every check's result for an existing backup (``valid`` is True when all passed)."""
        return await asyncio.to_thread(verify_existing, self.deployment, backup_type, backup_file)

    async def restore_postgresql(
        self,
        backup_file: str | None = None,
        point_in_time: datetime | str | None = None,
        *,
        target_db: str = "litper_restored",
        replace: bool = False,
        **options: Any,
    ) -> dict[str, Any]:
        """Restore the newest verified full backup (or ``backup_file``) into ``target_db``; with
        ``point_in_time``, a point-in-time recovery from the physical chain instead."""
        if point_in_time is not None:
            return await asyncio.to_thread(self._restore_point_in_time, point_in_time, options)
        return await asyncio.to_thread(
            restore.restore_logical,
            self.deployment,
            target_db=target_db,
            backup_file=backup_file,
            replace=replace,
            **options,
        )

    def _restore_point_in_time(
        self, point_in_time: datetime | str, options: dict[str, Any]
    ) -> dict[str, Any]:
        # PITR hook: point-in-time recovery lives in disaster_recovery.restore.pitr (the physical chain:
        # base backup + WAL archive); imported lazily so logical backups do not depend on it.

        result: dict[str, Any] = pitr.restore_to_point_in_time(
            self.deployment, point_in_time=point_in_time, **options
        )
        return result

    async def cleanup_old_backups(self, dry_run: bool = False) -> dict[str, Any]:
        """Apply the retention policy: ``{"daily": n, "weekly": n, "monthly": n, ...}``."""
        return await asyncio.to_thread(
            cleanup.cleanup_old_backups, self.deployment, dry_run=dry_run
        )

    async def list_backups(self) -> dict[str, list[dict[str, Any]]]:
        """Every logical backup per tier, oldest first."""
        return await asyncio.to_thread(list_backups, self.deployment)


def list_backups(
    deployment: Deployment, now: datetime | None = None
) -> dict[str, list[dict[str, Any]]]:
    """``{backup_type: [{file, started_at, size_bytes, verified, age, replicated_to}, ...]}``."""

    from disaster_recovery.backup.both_regions import one_catalog

    when = now or datetime.now(UTC)
    tiers: dict[str, list[dict[str, Any]]] = {backup_type: [] for backup_type in LOGICAL_TYPES}
    # Both regions' catalogs, each backup once with every place it is stored.
    for listed in one_catalog(deployment, LOGICAL_TYPES).backups:
        manifest = listed.manifest
        entry = backup_report(manifest)
        entry["locations"] = listed.locations
        entry["age_hours"] = round((when - manifest.started_at).total_seconds() / 3600, 1)
        if manifest.error:
            entry["error"] = manifest.error
        tiers[manifest.backup_type].append(entry)
    return tiers
