"""The seed's ``BackupManager(config={...})`` dict turned into settings."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from disaster_recovery.config.model import Settings, settings_from_dict
from disaster_recovery.errors import ConfigError

# The seed API's dict: {"db_host", "db_name", "backup_bucket", "retention": {daily, weekly, monthly}}.
_SEED_KEYS = {"db_host", "db_port", "db_name", "db_user", "backup_bucket", "retention", "region"}
_SEED_RETENTION_DAYS = {"daily": 1, "weekly": 7, "monthly": 31}
_SEED_TIER = {
    "daily": "postgresql_full",
    "weekly": "postgresql_weekly",
    "monthly": "postgresql_monthly",
}


def settings_from_seed(config: dict[str, Any], base: Settings | None = None) -> Settings:
    """Map the seed API's dict onto :class:`Settings` (on top of ``base`` or the defaults).

    ``retention: {"daily": 7}`` means keep 7 daily backups and any younger than 7 days.
    ``db_host``/``db_name`` are not policy: :mod:`disaster_recovery.config.endpoints` reads them.
    """
    unknown = set(config) - _SEED_KEYS
    retention = config.get("retention") or {}
    problems = [f"  {key}: unknown key" for key in sorted(unknown)]
    problems += [
        f"  retention.{key}: unknown key (use daily, weekly, monthly)"
        for key in sorted(set(retention) - set(_SEED_RETENTION_DAYS))
    ]
    if problems:
        raise ConfigError(
            "BackupManager config: " + f"{len(problems)} problem(s):\n" + "\n".join(problems)
        )
    data = (base or Settings()).model_dump(mode="python")
    for name, count in retention.items():
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            problems.append(f"  retention.{name}: must be a whole number >= 0, got {count!r}")
            continue
        data["tiers"][_SEED_TIER[name]]["retention"] = {
            "max_age": timedelta(days=count * _SEED_RETENTION_DAYS[name]),
            "keep_last": count,
        }
    if bucket := config.get("backup_bucket"):
        region = config.get("region") or data["regions"]["primary"]
        data["storage"]["buckets"][region] = bucket
    if problems:
        raise ConfigError(
            "BackupManager config: " + f"{len(problems)} problem(s):\n" + "\n".join(problems)
        )
    return settings_from_dict(data, "BackupManager config")
