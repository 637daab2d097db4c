"""Retention cleanup: apply the policy to what the buckets hold, or show what it would delete.

Cleanup is a list of steps; each returns counts per tier alias and the items it deleted (or would
delete). The logical tiers are one step (``daily``/``weekly``/``monthly``); the physical chain
(base, incremental and WAL, whose retention follows dependencies) adds its own step returning
``incremental`` and ``wal`` counts: append it to :data:`CLEANUP_STEPS`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from disaster_recovery.catalog import Manifest
from disaster_recovery.endpoints import Deployment
from disaster_recovery.logical import Stores
from disaster_recovery.retention import (
    TIER_ALIASES,
    count_by_alias,
    plan_deletions,
    policies_from_settings,
)

log = logging.getLogger(__name__)


@dataclass
class StepReport:
    counts: dict[str, int]
    items: list[dict[str, Any]] = field(default_factory=list)


CleanupStep = Callable[[Deployment, datetime, bool], StepReport]


def delete_backup(stores: Stores, manifest: Manifest) -> None:
    """Delete one backup in both regions: the manifest first (it leaves the catalog, so it is
    never a restore candidate whose object is gone), then the object."""
    for store in (stores.primary, stores.secondary):
        for key in (manifest.manifest_key, manifest.key):
            if store.exists(key):
                store.delete([key])


def cleanup_logical(deployment: Deployment, now: datetime, dry_run: bool) -> StepReport:
    """The full, weekly and monthly tiers."""
    stores = Stores.of(deployment)
    manifests = stores.catalog.manifests(TIER_ALIASES.values())
    deletions = plan_deletions(manifests, now, policies_from_settings(deployment.settings))
    items = []
    for deletion in deletions:
        if not dry_run:
            delete_backup(stores, deletion.manifest)
            log.info("deleted %s: %s", deletion.file, deletion.reason)
        items.append({
            "file": deletion.file,
            "backup_type": deletion.manifest.backup_type,
            "started_at": deletion.manifest.started_at.isoformat(),
            "status": deletion.manifest.status,
            "reason": deletion.reason,
        })
    return StepReport(count_by_alias(deletions), items)


CLEANUP_STEPS: list[CleanupStep] = [cleanup_logical]


def cleanup_old_backups(
    deployment: Deployment, *, now: datetime | None = None, dry_run: bool = False,
    steps: list[CleanupStep] | None = None,
) -> dict[str, Any]:
    """Run every cleanup step: ``{"daily": n, "weekly": n, "monthly": n, ..., "dry_run": bool,
    "deleted": [...]}``; with ``dry_run`` nothing is deleted and ``deleted`` lists what would go."""
    when = now or datetime.now(UTC)
    result: dict[str, Any] = {}
    items: list[dict[str, Any]] = []
    for step in steps or CLEANUP_STEPS:
        report = step(deployment, when, dry_run)
        for name, count in report.counts.items():
            result[name] = result.get(name, 0) + count
        items += report.items
    result["dry_run"] = dry_run
    result["deleted"] = items
    return result
