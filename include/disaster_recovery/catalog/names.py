"""Backup file names and object keys: ``postgresql_full_20240115_030000.dump`` and the tiers they belong to."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

from disaster_recovery.errors import (
    ConfigError,
    NotFoundError,
)

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
# The seed's other spelling: a day only, ``postgresql_full_20240115.dump``.
_DAY_NAME = re.compile(r"^(?P<type>postgresql_[a-z]+)_(?P<day>\d{8})\.(?P<ext>[a-z.]+)$")


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


def parse_day_name(file: str) -> tuple[str, date] | None:
    """The backup type and day of a date-only name (``postgresql_full_20240115.dump``), or None
    when ``file`` is not one."""
    match = _DAY_NAME.match(file.rsplit("/", 1)[-1])
    if not match or match.group("type") not in EXTENSIONS:
        return None
    try:
        return match.group("type"), datetime.strptime(match.group("day"), "%Y%m%d").date()
    except ValueError:
        raise NotFoundError(f"{file!r}: {match.group('day')} is not a date (YYYYMMDD)") from None


def object_key(prefix: str, file: str) -> str:
    backup_type, when = parse_backup_file(file)
    return f"{prefix}/{backup_type}/{when:%Y/%m/%d}/{file}".lstrip("/")


def manifest_key(key: str) -> str:
    return key + MANIFEST_SUFFIX


def check_backup_type(backup_type: str) -> str:
    if backup_type not in LOGICAL_TYPES:
        raise ConfigError(
            f"{backup_type!r} is not a logical backup type; known: {', '.join(LOGICAL_TYPES)}"
        )
    return backup_type
