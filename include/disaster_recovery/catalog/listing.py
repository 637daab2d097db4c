"""The backup catalog: object names, manifests, and listing what a bucket holds.

Layout in each region's bucket::

    <prefix>/<backup_type>/<YYYY>/<MM>/<DD>/<backup_type>_<YYYYMMDD>_<HHMMSS>.<ext>
    <prefix>/<backup_type>/<YYYY>/<MM>/<DD>/<file>.manifest.json

The manifest is the truth about a backup: a backup with no manifest, or whose manifest is not
``verified``, is never a restore candidate and never counts toward retention.
Times in names are UTC, so names sort and never collide across daylight-saving changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from disaster_recovery.catalog.manifests import ChainManifest, Manifest, parse_manifest
from disaster_recovery.catalog.names import (
    EXTENSIONS,
    MANIFEST_SUFFIX,
    backup_file_name,
    manifest_key,
    object_key,
    parse_backup_file,
    parse_day_name,
)
from disaster_recovery.clients.s3 import ObjectStore
from disaster_recovery.errors import NotFoundError


@dataclass(frozen=True)
class Resolved:
    """The backup a name asked for: its stored (UTC) file name, and how it was found when the
    name was one of the seed's other spellings."""

    file: str
    note: str | None = None


class Catalog:
    """Manifests in one bucket."""

    def __init__(self, store: ObjectStore, prefix: str):
        self.store = store
        self.prefix = prefix

    def key_for(self, file: str) -> str:
        return object_key(self.prefix, file)

    def save(self, manifest: Manifest) -> None:
        self.store.put_json(manifest.manifest_key, manifest.to_json())

    def load(self, file: str) -> Manifest:
        key = manifest_key(self.key_for(file))
        if not self.store.exists(key):
            raise NotFoundError(
                f"no manifest for {file} ({self.store.url(key)}): the backup is not in the catalog"
            )
        return parse_manifest(self.store.get_json(key), self.store.url(key))

    def load_chain(self, file: str) -> ChainManifest:
        """A base or incremental backup's manifest."""
        manifest = self.load(file)
        if not isinstance(manifest, ChainManifest):
            raise NotFoundError(f"{file} is a {manifest.backup_type} backup, not a chain element")
        return manifest

    def chain_manifests(self, backup_types: Iterable[str]) -> list[ChainManifest]:
        """Every base/incremental manifest of the given types, oldest first."""
        return [m for m in self.manifests(backup_types) if isinstance(m, ChainManifest)]

    def resolve(self, name: str, tz: ZoneInfo) -> Resolved:
        """The backup ``name`` means. Stored names are UTC (``..._080000.dump`` for 03:00
        Bogota); the seed's spellings are accepted too: a date-only name (the newest verified
        backup of that day in ``tz``) and a name in local time. An exact UTC name wins."""
        file = name.rsplit("/", 1)[-1]
        day_name = parse_day_name(file)
        if day_name is not None:
            backup_type, day = day_name
            # The day of each backup's nominal time (its name: the scheduled run's time).
            same_day = sorted(
                m.file
                for m in self.manifests([backup_type])
                if m.verified and parse_backup_file(m.file)[1].astimezone(tz).date() == day
            )
            if not same_day:
                raise NotFoundError(
                    f"{file}: no verified {backup_type} backup of {day} ({tz.key}) in "
                    f"{self.store.url(self.prefix)}"
                )
            chosen = same_day[-1]
            return Resolved(
                chosen,
                f"{file} (a date-only name) resolved to {chosen}, the newest verified "
                f"{backup_type} backup of {day} ({tz.key})",
            )
        backup_type, when = parse_backup_file(file)
        if self.store.exists(manifest_key(self.key_for(file))):
            return Resolved(file)
        local = backup_file_name(backup_type, when.replace(tzinfo=tz))
        if local != file and self.store.exists(manifest_key(self.key_for(local))):
            return Resolved(
                local,
                f"{file} read as local time ({when:%Y-%m-%d %H:%M:%S} {tz.key}) resolved to "
                f"{local} (backup names are UTC)",
            )
        raise NotFoundError(
            f"no manifest for {file} in {self.store.url(self.prefix)}: no backup started at "
            f"{when:%Y-%m-%d %H:%M:%S} UTC, nor at that local time in {tz.key} ({local})"
        )

    def find(self, file: str) -> Manifest | None:
        try:
            return self.load(file)
        except NotFoundError:
            return None

    def manifests(self, backup_types: Iterable[str] | None = None) -> list[Manifest]:
        """Every manifest of the given types, oldest first by recorded start time."""
        found: list[Manifest] = []
        for backup_type in backup_types or EXTENSIONS:
            for entry in self.store.list_keys(f"{self.prefix}/{backup_type}/".lstrip("/")):
                if entry["Key"].endswith(MANIFEST_SUFFIX):
                    key = entry["Key"]
                    found.append(parse_manifest(self.store.get_json(key), self.store.url(key)))
        return sorted(found, key=lambda m: (m.started_at, m.file))

    def newest_verified(self, backup_type: str) -> Manifest | None:
        verified = [m for m in self.manifests([backup_type]) if m.verified]
        return verified[-1] if verified else None
