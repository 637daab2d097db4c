"""Immutable copies: S3 Object Lock on backups, manifests and WAL (``storage.object_lock``).

Each object under a backup type's folder (``<prefix>/postgresql_full/...``,
``<prefix>/postgresql_wal/...``) is written with a retain-until date: the write time plus its
tier's ``max_age`` plus ``margin``. Until then no credential can delete or overwrite that
version (``compliance``; ``governance`` lets a holder of ``s3:BypassGovernanceRetention`` do
it). A locked bucket is versioned: a plain DELETE only adds a delete marker, so removal here
means deleting every version, and a version still locked is skipped and reported, never an
error. Other objects (evidence, health records, the WAL check's state) are not locked: they are
rewritten often and hold no backup data.

Nothing here imports boto3 or pydantic: the WAL archiver reads the same setting.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from disaster_recovery.errors import ConfigError

if TYPE_CHECKING:
    from disaster_recovery.config.model import Settings


log = logging.getLogger(__name__)

MODES = ("governance", "compliance")
WAL_TYPE = "postgresql_wal"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class LockPolicy:
    """How long each backup type's objects stay locked."""

    mode: str  # governance | compliance
    prefix: str
    keep: dict[str, timedelta]  # backup type (first folder under the prefix) -> retention
    margin: timedelta

    def retain_until(self, key: str, now: datetime | None = None) -> datetime | None:
        """The retain-until date of a new object at ``key``; None for unlocked objects."""
        rest = key[len(self.prefix) + 1 :] if self.prefix else key
        if self.prefix and not key.startswith(self.prefix + "/"):
            return None
        keep = self.keep.get(rest.split("/", 1)[0])
        if keep is None:
            return None
        return (now or datetime.now(UTC)) + keep + self.margin

    def write_args(self, key: str) -> dict[str, Any]:
        until = self.retain_until(key)
        if until is None:
            return {}
        # S3 wants a checksum on every write that sets a lock (Content-MD5 or a flexible one).
        return {
            "ObjectLockMode": self.mode.upper(),
            "ObjectLockRetainUntilDate": until,
            "ChecksumAlgorithm": "SHA256",
        }


def lock_policy(settings: Settings) -> LockPolicy | None:
    lock = settings.storage.object_lock
    if lock is None:
        return None
    keep = {name: settings.tiers.get(name).retention.max_age for name in _tier_names(settings)}
    keep["postgresql_base"] = settings.pitr.base_retention.max_age
    return LockPolicy(lock.mode, settings.storage.prefix, keep, lock.margin)


def _tier_names(settings: Settings) -> list[str]:
    return list(type(settings.tiers).model_fields)


def lean_lock_policy(data: dict[str, Any], prefix: str, where: str) -> LockPolicy | None:
    """The WAL archiver's view (WAL only), from the raw policy file without the settings model."""
    raw = (data.get("storage") or {}).get("object_lock")
    if not raw:
        return None
    mode = str(raw.get("mode", ""))
    if mode not in MODES:
        raise ConfigError(f"{where}: storage.object_lock.mode must be one of {', '.join(MODES)}")
    tiers = data.get("tiers") or {}
    wal_keep = ((tiers.get(WAL_TYPE) or {}).get("retention") or {}).get("max_age", "7d")
    keep = {WAL_TYPE: _duration(wal_keep, where)}
    return LockPolicy(mode, prefix, keep, _duration(raw.get("margin", "1d"), where))


def _duration(value: Any, where: str) -> timedelta:
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    match = _DURATION.match(str(value))
    if not match:
        raise ConfigError(f"{where}: {value!r} is not a duration such as 90s, 15m, 24h, 7d, 4w")
    return timedelta(seconds=float(match.group(1)) * _UNIT[match.group(2)])


# -- removal -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Locked:
    key: str
    region: str
    until: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "region": self.region, "locked_until": self.until.isoformat()}
