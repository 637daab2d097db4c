"""One catalog across both regions: each backup once, with every place it is stored.

A backup taken in us-west-2 during an outage, or a copy made later, is listed once: the manifest
of the current primary's region when it has one (it is the commit point), else the other's.
A region whose S3 does not answer is skipped and named, so a listing works during an outage.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from disaster_recovery.catalog.listing import Catalog
from disaster_recovery.catalog.manifests import Manifest
from disaster_recovery.clients.s3 import regional_store
from disaster_recovery.config.endpoints import Deployment
from disaster_recovery.errors import UnavailableError
from disaster_recovery.monitoring import topology

log = logging.getLogger(__name__)


@dataclass
class Listed:
    manifest: Manifest
    # region -> s3 URL of the object, for each region whose catalog holds the backup
    locations: dict[str, str] = field(default_factory=dict)


@dataclass
class Listing:
    backups: list[Listed]
    unreachable: dict[str, str]


def one_catalog(deployment: Deployment, backup_types: Iterable[str]) -> Listing:
    """Every backup of ``backup_types`` in either region, oldest first, each once."""
    view = topology.following(deployment)
    settings = view.settings
    types = list(backup_types)
    merged: dict[str, Listed] = {}
    unreachable: dict[str, str] = {}
    for region in (settings.regions.primary, settings.regions.secondary):
        store = regional_store(view, region)
        try:
            manifests = Catalog(store, settings.storage.prefix).manifests(types)
        except UnavailableError as exc:
            unreachable[region] = str(exc).splitlines()[0]
            log.warning("catalog of %s unreachable: %s", region, exc)
            continue
        for manifest in manifests:
            listed = merged.setdefault(manifest.file, Listed(manifest))
            listed.locations[region] = store.url(manifest.key)
    backups = sorted(merged.values(), key=lambda item: item.manifest.started_at)
    return Listing(backups, unreachable)
