"""Both regions' buckets for one deployment, and the catalog in each."""

from __future__ import annotations

from dataclasses import dataclass

from disaster_recovery.catalog.listing import Catalog
from disaster_recovery.clients.s3 import ObjectStore
from disaster_recovery.config.endpoints import Deployment
from disaster_recovery.config.model import Settings


@dataclass
class Stores:
    """The buckets of both regions and the catalog in the primary one."""

    primary: ObjectStore
    secondary: ObjectStore
    settings: Settings

    @classmethod
    def of(cls, deployment: Deployment) -> Stores:
        settings = deployment.settings
        chunk = settings.storage.multipart_chunk_mib
        regions = settings.regions
        return cls(
            ObjectStore(
                deployment.aws(regions.primary), settings.bucket(regions.primary), chunk_mib=chunk
            ),
            ObjectStore(
                deployment.aws(regions.secondary),
                settings.bucket(regions.secondary),
                chunk_mib=chunk,
            ),
            settings,
        )

    @property
    def catalog(self) -> Catalog:
        return Catalog(self.primary, self.settings.storage.prefix)

    @property
    def secondary_catalog(self) -> Catalog:
        return Catalog(self.secondary, self.settings.storage.prefix)
