"""Both regions' buckets for one deployment, and the catalog in each."""

from __future__ import annotations

from dataclasses import dataclass

from disaster_recovery.catalog.listing import Catalog
from disaster_recovery.clients.s3 import ObjectStore, regional_store
from disaster_recovery.config.endpoints import Deployment
from disaster_recovery.config.model import Settings
from disaster_recovery.monitoring import topology


@dataclass
class Stores:
    """The buckets of both regions and the catalog in the primary one."""

    primary: ObjectStore
    secondary: ObjectStore
    settings: Settings

    @classmethod
    def of(cls, deployment: Deployment) -> Stores:
        """``primary`` is the bucket of the region that is primary now (the topology record)."""
        deployment = topology.following(deployment)
        regions = deployment.settings.regions
        return cls(
            regional_store(deployment, regions.primary),
            regional_store(deployment, regions.secondary),
            deployment.settings,
        )

    @property
    def both(self) -> tuple[ObjectStore, ObjectStore]:
        return self.primary, self.secondary

    @property
    def catalog(self) -> Catalog:
        return Catalog(self.primary, self.settings.storage.prefix)

    @property
    def secondary_catalog(self) -> Catalog:
        return Catalog(self.secondary, self.settings.storage.prefix)
