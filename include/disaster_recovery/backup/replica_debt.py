"""Backups published while the other region was lost: their copy there is owed.

A backup taken while the other region's S3 is down is verified and published in the current
primary's region with ``replica_owed: {region: since}`` in its manifest (it counts at once: it is
the only recent backup there is). :func:`fill_owed_replicas` (run by the WAL DAG every few
minutes, and by ``dr status``'s figures as debt) copies each one when that region answers,
checks the copy's SHA-256 there, saves the manifest in both catalogs and clears the debt, so
both regions' catalogs agree again.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from disaster_recovery.backup.physical import BACKUP_MANIFEST_SUFFIX
from disaster_recovery.backup.replicate import copy_to_region
from disaster_recovery.catalog.listing import Catalog
from disaster_recovery.catalog.manifests import Manifest
from disaster_recovery.catalog.names import LOGICAL_TYPES, PHYSICAL_TYPES
from disaster_recovery.clients.s3 import ObjectStore, region_lost, regional_store
from disaster_recovery.config.endpoints import Deployment
from disaster_recovery.monitoring import topology

log = logging.getLogger(__name__)

BACKUP_TYPES = (*LOGICAL_TYPES, *PHYSICAL_TYPES)
# Physical elements carry PostgreSQL's backup_manifest beside the tar (incrementals need it).


def owed(deployment: Deployment) -> list[Manifest]:
    """Verified backups of the current primary's catalog whose copy in the other region is owed."""
    view = topology.following(deployment)
    catalog = Catalog(
        regional_store(view, view.settings.regions.primary), view.settings.storage.prefix
    )
    return [m for m in catalog.manifests(BACKUP_TYPES) if m.verified and m.replica_owed]


def replication_debt(deployment: Deployment) -> dict[str, Any]:
    """Per region: how many backups it is owed and since when."""
    debt: dict[str, dict[str, Any]] = {}
    for manifest in owed(deployment):
        for region, since in (manifest.replica_owed or {}).items():
            entry = debt.setdefault(region, {"backups": 0, "since": since})
            entry["backups"] += 1
            entry["since"] = min(entry["since"], since)
    return debt


def fill_owed_replicas(deployment: Deployment) -> dict[str, Any]:
    """Copy every owed backup to the region that lacks it, if that region answers."""
    view = topology.following(deployment)
    primary_region, other = view.settings.regions.primary, view.settings.regions.secondary
    source, target = regional_store(view, primary_region), regional_store(view, other)
    pending = owed(view)
    if pending and (lost := region_lost(target, pending[0].key)):
        return {"copied": [], "waiting": {other: lost}, "owed": len(pending)}
    prefix = view.settings.storage.prefix
    copied = []
    for manifest in pending:
        _copy_checked(source, target, manifest, view)
        filled = manifest.model_copy(
            update={
                "replica_owed": None,
                "replicas": {
                    **manifest.replicas,
                    other: {
                        "bucket": target.bucket,
                        "key": manifest.key,
                        "sha256": manifest.sha256,
                        "mode": "copy",
                        "filled_at": datetime.now(UTC).isoformat(),
                    },
                },
            }
        )
        # The copy's manifest first: the primary's is the commit point, as when publishing.
        Catalog(target, prefix).save(filled)
        Catalog(source, prefix).save(filled)
        copied.append(manifest.file)
    return {"copied": copied, "waiting": {}, "owed": 0}


def _copy_checked(
    source: ObjectStore, target: ObjectStore, manifest: Manifest, deployment: Deployment
) -> None:
    """The owed copy, by the one replication rule (check, copy or wait; never overwrite)."""
    companions = (
        [manifest.key + BACKUP_MANIFEST_SUFFIX] if manifest.backup_type in PHYSICAL_TYPES else []
    )
    copy_to_region(source, target, manifest, deployment.settings, companions=companions)
    log.info("owed replica of %s made in %s", manifest.file, target.bucket)
