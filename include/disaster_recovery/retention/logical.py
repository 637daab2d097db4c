"""The retention policy for logical backups, as a pure function: manifests + clock -> deletions.

Per tier, a backup goes only when it is older than the tier's ``max_age`` AND not among the
newest ``keep_last`` verified backups (pgBackRest-like: age and count together). On top:

- the newest verified backup of a tier is never deleted, whatever the policy says;
- an unverified or failed backup never counts as one of the kept ones; it goes once it is older
  than ``max_age`` (and never before :data:`UNVERIFIED_GRACE`, so a run in progress is safe);
- age and order come from the recorded start time, never from the file name;
- a backup that started in the future (clock skew) is never deleted.

No I/O here: :mod:`disaster_recovery.retention.cleanup` lists the manifests and deletes what this returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from disaster_recovery.catalog.manifests import Manifest
from disaster_recovery.config.model import Retention, Settings

# The seed API's tier names and the backup types they stand for.
TIER_ALIASES = {
    "daily": "postgresql_full",
    "weekly": "postgresql_weekly",
    "monthly": "postgresql_monthly",
}

# An unverified backup younger than this may still be running: never deleted.
UNVERIFIED_GRACE = timedelta(days=1)


@dataclass(frozen=True)
class Deletion:
    manifest: Manifest
    reason: str

    @property
    def file(self) -> str:
        return self.manifest.file


def policies_from_settings(settings: Settings) -> dict[str, Retention]:
    """``{"postgresql_full": Retention(...), ...}`` for the logical tiers."""
    return {
        backup_type: settings.tiers.get(backup_type).retention
        for backup_type in TIER_ALIASES.values()
    }


def plan_deletions(
    manifests: Iterable[Manifest], now: datetime, policies: Mapping[str, Retention]
) -> list[Deletion]:
    """The backups the policy deletes, oldest first. Tiers without a policy are left alone."""
    by_tier: dict[str, list[Manifest]] = {}
    for manifest in manifests:
        if manifest.backup_type in policies:
            by_tier.setdefault(manifest.backup_type, []).append(manifest)
    deletions: list[Deletion] = []
    for backup_type, members in by_tier.items():
        deletions += _plan_tier(members, now, policies[backup_type])
    return sorted(
        deletions, key=lambda d: (d.manifest.started_at, d.manifest.backup_type, d.manifest.key)
    )


def _plan_tier(members: list[Manifest], now: datetime, policy: Retention) -> list[Deletion]:
    # Newest first by the recorded start time; the key only breaks exact ties deterministically.
    newest_first = sorted(members, key=lambda m: (m.started_at, m.key), reverse=True)
    verified = [m for m in newest_first if m.verified]
    kept_by_count = {id(m) for m in verified[: max(policy.keep_last, 1)]}
    deletions = []
    for manifest in newest_first:
        age = now - manifest.started_at
        if manifest.verified:
            if id(manifest) in kept_by_count or age <= policy.max_age:
                continue
            deletions.append(
                Deletion(
                    manifest,
                    f"verified, {_days(age)} old > max_age "
                    f"{_days(policy.max_age)}, not among the newest "
                    f"{policy.keep_last}",
                )
            )
        elif age > max(policy.max_age, UNVERIFIED_GRACE):
            deletions.append(
                Deletion(manifest, f"{manifest.status} (never verified), {_days(age)} old")
            )
    return deletions


def _days(value: timedelta) -> str:
    days = value.total_seconds() / 86400
    return f"{days:.1f}d"


def count_by_alias(deletions: Iterable[Deletion]) -> dict[str, int]:
    """``{"daily": n, "weekly": n, "monthly": n}`` as the seed API reports cleanups."""
    counts = dict.fromkeys(TIER_ALIASES, 0)
    alias_of = {backup_type: alias for alias, backup_type in TIER_ALIASES.items()}
    for deletion in deletions:
        alias = alias_of.get(deletion.manifest.backup_type)
        if alias:
            counts[alias] += 1
    return counts
