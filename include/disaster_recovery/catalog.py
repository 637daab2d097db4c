"""The backup catalog: object names, manifests, and listing what a bucket holds.

Layout in each region's bucket::

    <prefix>/<backup_type>/<YYYY>/<MM>/<DD>/<backup_type>_<YYYYMMDD>_<HHMMSS>.<ext>
    <prefix>/<backup_type>/<YYYY>/<MM>/<DD>/<file>.manifest.json

The manifest is the truth about a backup: a backup with no manifest, or whose manifest is not
``verified``, is never a restore candidate and never counts toward retention.
Times in names are UTC, so names sort and never collide across daylight-saving changes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from disaster_recovery.errors import ConfigError, NotFoundError
from disaster_recovery.storage import ObjectStore

MANIFEST_SUFFIX = ".manifest.json"
EXTENSIONS = {
    "postgresql_full": "dump",
    "postgresql_weekly": "dump",
    "postgresql_monthly": "dump",
    "postgresql_base": "tar",
    "postgresql_incremental": "tar",
}
LOGICAL_TYPES = ("postgresql_full", "postgresql_weekly", "postgresql_monthly")
PHYSICAL_TYPES = ("postgresql_base", "postgresql_incremental")
_NAME = re.compile(r"^(?P<type>postgresql_[a-z]+)_(?P<stamp>\d{8}_\d{6})\.(?P<ext>[a-z.]+)$")

Status = Literal["uploaded", "verified", "failed"]


def backup_file_name(backup_type: str, started_at: datetime) -> str:
    """``postgresql_full_20240115_030000.dump`` (UTC)."""
    if backup_type not in EXTENSIONS:
        raise ConfigError(f"unknown backup type {backup_type!r}; known: {', '.join(EXTENSIONS)}")
    stamp = started_at.astimezone(UTC).strftime("%Y%m%d_%H%M%S")
    return f"{backup_type}_{stamp}.{EXTENSIONS[backup_type]}"


def parse_backup_file(file: str) -> tuple[str, datetime]:
    """The backup type and UTC time encoded in a backup's file name."""
    match = _NAME.match(file.rsplit("/", 1)[-1])
    if not match or match.group("type") not in EXTENSIONS:
        raise NotFoundError(
            f"{file!r} is not a backup file name (expected like postgresql_full_20240115_030000.dump)"
        )
    when = datetime.strptime(match.group("stamp"), "%Y%m%d_%H%M%S").replace(tzinfo=UTC)
    return match.group("type"), when


def object_key(prefix: str, file: str) -> str:
    backup_type, when = parse_backup_file(file)
    return f"{prefix}/{backup_type}/{when:%Y/%m/%d}/{file}".lstrip("/")


def manifest_key(key: str) -> str:
    return key + MANIFEST_SUFFIX


class Verification(BaseModel):
    model_config = ConfigDict(extra="allow")

    checks: dict[str, Any]
    verified_at: datetime
    verified_by: str


class Manifest(BaseModel):
    """What we know of one backup. Type-specific fields (LSNs, parents, table counts) are extra
    keys, kept as they are."""

    model_config = ConfigDict(extra="allow")

    backup_type: str
    file: str
    bucket: str
    key: str
    size_bytes: int = 0
    sha256: str = ""
    started_at: datetime
    finished_at: datetime | None = None
    server_version: str = ""
    database: str = ""
    format: str = ""
    status: Status = "uploaded"
    verification: Verification | None = None
    replicas: dict[str, dict[str, Any]] = Field(default_factory=dict)
    error: str | None = None

    @property
    def verified(self) -> bool:
        return self.status == "verified" and self.verification is not None

    @property
    def manifest_key(self) -> str:
        return manifest_key(self.key)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


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
        return Manifest.model_validate(self.store.get_json(key))

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
                    found.append(Manifest.model_validate(self.store.get_json(entry["Key"])))
        return sorted(found, key=lambda m: (m.started_at, m.file))

    def newest_verified(self, backup_type: str) -> Manifest | None:
        verified = [m for m in self.manifests([backup_type]) if m.verified]
        return verified[-1] if verified else None
