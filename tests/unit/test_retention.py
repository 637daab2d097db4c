"""The retention policy as a pure function: a table of cases and property-based tests."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from disaster_recovery.catalog.manifests import Manifest, Verification
from disaster_recovery.config.model import Retention, Settings
from disaster_recovery.retention.logical import (
    TIER_ALIASES,
    count_by_alias,
    plan_deletions,
    policies_from_settings,
)

NOW = datetime(2025, 3, 20, 12, 0, tzinfo=UTC)
DAILY = {"postgresql_full": Retention(max_age=timedelta(days=7), keep_last=7)}


def backup(
    days_ago: float,
    status: str = "verified",
    backup_type: str = "postgresql_full",
    name_time: datetime | None = None,
) -> Manifest:
    started = NOW - timedelta(days=days_ago)
    stamp = (name_time or started).strftime("%Y%m%d_%H%M%S")
    file = f"{backup_type}_{stamp}.dump"
    verification = (
        Verification(checks={"checksum": {"ok": True}}, verified_at=started, verified_by="t")
        if status == "verified"
        else None
    )
    return Manifest(
        backup_type=backup_type,
        file=file,
        bucket="b",
        key=f"p/{backup_type}/{file}",
        started_at=started,
        status=status,
        verification=verification,
    )  # type: ignore[arg-type]


def deleted_days(manifests: list[Manifest], policies: dict[str, Retention] = DAILY) -> list[float]:
    return sorted(
        round((NOW - d.manifest.started_at).total_seconds() / 86400, 2)
        for d in plan_deletions(manifests, NOW, policies)
    )


@pytest.mark.parametrize(
    ("ages", "statuses", "expected_deleted"),
    [
        # 10 daily verified backups: those older than 7 days and beyond the newest 7 go (the
        # 7-day-old one is not older than max_age: it stays).
        (list(range(10)), None, [8, 9]),
        # Old but among the newest 7: kept (count and age together).
        ([1, 20, 30], None, []),
        # Only old backups, none among the newest 7 is missing: all 8 old ones except newest 7.
        ([10, 11, 12, 13, 14, 15, 16, 17], None, [17]),
        # Nothing recent and every one old: the newest verified survives even with keep_last 7.
        ([30, 31], None, []),
        # Unverified/failed ones never count as kept: the old verified ones beyond 7 still go,
        # and old failed ones go too.
        ([0, 0.5, 1, 2, 3, 4, 5, 6, 8, 9, 10], ["failed", "uploaded"] + ["verified"] * 9, [9, 10]),
        # A failed backup younger than max_age stays (it may be looked at); older ones go.
        ([1, 8], ["failed", "failed"], [8]),
        # An old failed backup goes although it is the newest of the tier; the verified one stays.
        ([20, 40], ["failed", "verified"], [20]),
        # A backup from the future (clock skew) is never deleted.
        ([-1, 0, 1, 2, 3, 4, 5, 6, 8], None, [8]),
    ],
)
def test_policy_table(
    ages: list[float], statuses: list[str] | None, expected_deleted: list[float]
) -> None:
    manifests = [
        backup(age, (statuses or ["verified"] * len(ages))[i]) for i, age in enumerate(ages)
    ]
    assert deleted_days(manifests) == expected_deleted


def test_keep_last_zero_still_keeps_the_newest_verified() -> None:
    policies = {"postgresql_full": Retention(max_age=timedelta(days=1), keep_last=0)}
    assert deleted_days([backup(5), backup(6), backup(7)], policies) == [6, 7]


def test_order_comes_from_the_recorded_start_never_from_the_name() -> None:
    # Names claim the opposite order of the recorded start times.
    newest = backup(30, name_time=NOW - timedelta(days=90))
    oldest = backup(40, name_time=NOW - timedelta(days=1))
    policies = {"postgresql_full": Retention(max_age=timedelta(days=7), keep_last=1)}
    deleted = plan_deletions([newest, oldest], NOW, policies)
    assert [d.manifest.key for d in deleted] == [oldest.key]


def test_tiers_are_independent_and_counted_by_seed_alias() -> None:
    settings = Settings()
    manifests = [backup(d) for d in range(12)]  # full: 12 daily
    manifests += [backup(7 * w + 0.1, backup_type="postgresql_weekly") for w in range(7)]
    manifests += [backup(31 * m + 0.2, backup_type="postgresql_monthly") for m in range(14)]
    deletions = plan_deletions(manifests, NOW, policies_from_settings(settings))
    assert count_by_alias(deletions) == {"daily": 4, "weekly": 3, "monthly": 2}


def test_other_tiers_are_left_alone() -> None:
    foreign = backup(400, backup_type="postgresql_incremental")
    assert plan_deletions([foreign, backup(1)], NOW, DAILY) == []


# -- properties --------------------------------------------------------------------------------

TIERS = list(TIER_ALIASES.values())

backups = st.lists(
    st.tuples(
        st.sampled_from(TIERS),
        st.floats(min_value=-2, max_value=800, allow_nan=False),
        st.sampled_from(["verified", "verified", "verified", "uploaded", "failed"]),
    ),
    max_size=40,
)
policies = st.fixed_dictionaries(
    {
        tier: st.builds(
            Retention,
            max_age=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=400)),
            keep_last=st.integers(min_value=0, max_value=15),
        )
        for tier in TIERS
    }
)


def build(spec: list[tuple[str, float, str]]) -> list[Manifest]:
    made = []
    for index, (tier, age, status) in enumerate(spec):
        manifest = backup(age, status, tier)
        # Unique keys even for equal times; names deliberately unrelated to the start time.
        made.append(
            manifest.model_copy(update={"key": f"p/{tier}/{index:04d}", "file": f"{tier}_{index}"})
        )
    return made


@settings(max_examples=300, deadline=None)
@given(backups, policies)
def test_property_the_newest_verified_of_every_tier_survives(
    spec: list[tuple[str, float, str]], policy: dict[str, Retention]
) -> None:
    manifests = build(spec)
    deleted = {d.manifest.key for d in plan_deletions(manifests, NOW, policy)}
    for tier in TIERS:
        verified = [m for m in manifests if m.backup_type == tier and m.verified]
        if verified:
            newest = max(verified, key=lambda m: (m.started_at, m.key))
            assert newest.key not in deleted


@settings(max_examples=300, deadline=None)
@given(backups, policies)
def test_property_nothing_young_and_enough_verified_are_kept(
    spec: list[tuple[str, float, str]], policy: dict[str, Retention]
) -> None:
    manifests = build(spec)
    deleted = {d.manifest.key for d in plan_deletions(manifests, NOW, policy)}
    assert deleted <= {m.key for m in manifests}
    for manifest in manifests:
        if NOW - manifest.started_at <= policy[manifest.backup_type].max_age:
            assert manifest.key not in deleted
    for tier in TIERS:
        verified = [m for m in manifests if m.backup_type == tier and m.verified]
        kept = [m for m in verified if m.key not in deleted]
        assert len(kept) >= min(len(verified), max(policy[tier].keep_last, 1))


@settings(max_examples=200, deadline=None)
@given(backups, policies, st.randoms(use_true_random=False))
def test_property_input_order_does_not_matter(
    spec: list[tuple[str, float, str]], policy: dict[str, Retention], rng: random.Random
) -> None:
    manifests = build(spec)
    shuffled = manifests[:]
    rng.shuffle(shuffled)
    first = [d.manifest.key for d in plan_deletions(manifests, NOW, policy)]
    assert [d.manifest.key for d in plan_deletions(shuffled, NOW, policy)] == first


@settings(max_examples=200, deadline=None)
@given(backups, backups, policies)
def test_property_unverified_backups_never_count_as_kept(
    spec: list[tuple[str, float, str]],
    extra: list[tuple[str, float, str]],
    policy: dict[str, Retention],
) -> None:
    manifests = build(spec)
    unverified = [
        m.model_copy(update={"key": f"x/{i}", "status": "failed", "verification": None})
        for i, m in enumerate(build(extra))
    ]
    verified_deleted = {
        d.manifest.key for d in plan_deletions(manifests, NOW, policy) if d.manifest.verified
    }
    with_extra = {
        d.manifest.key
        for d in plan_deletions(manifests + unverified, NOW, policy)
        if d.manifest.verified
    }
    assert with_extra == verified_deleted
