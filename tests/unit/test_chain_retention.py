"""Retention of the physical chain: a table of cases, and a property test that no point a kept
backup could restore to is lost, no kept incremental loses an ancestor, and no WAL at or after
the oldest kept base backup's start is deleted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from disaster_recovery.config.model import Retention
from disaster_recovery.retention.chain import (
    ChainElement,
    ChainPolicy,
    WalFile,
    plan_chain_deletions,
)

NOW = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)
SEGMENT_EVERY = timedelta(minutes=30)
POLICY = ChainPolicy(
    base=Retention(max_age=timedelta(days=7), keep_last=7),
    incremental=Retention(max_age=timedelta(hours=24), keep_last=24),
    wal_max_age=timedelta(days=7),
)


def _archived_at(segno: int, total: int) -> datetime:
    return NOW - (total - segno) * SEGMENT_EVERY


def _world(
    total: int,
    base_at: list[int],
    incrementals_after: dict[int, list[int]],
    missing: set[int],
    unverified: set[str] = frozenset(),
) -> tuple[list[ChainElement], list[WalFile]]:
    """Segments 0..total-1 archived every 30 min up to NOW; a base backup starting at each
    segment in ``base_at`` and ending before the next one is archived; incrementals on it."""
    elements = []
    for b in base_at:
        name = f"base{b}"
        start = _archived_at(b, total) - timedelta(minutes=1)
        elements.append(
            ChainElement(
                name, "base", start, start + timedelta(minutes=2), b, None, name not in unverified
            )
        )
        parent = name
        for i in incrementals_after.get(b, []):
            inc = f"inc{i}"
            start = _archived_at(i, total) - timedelta(minutes=1)
            elements.append(
                ChainElement(
                    inc,
                    "incremental",
                    start,
                    start + timedelta(minutes=2),
                    i,
                    parent,
                    inc not in unverified,
                )
            )
            parent = inc
    wal = [
        WalFile(f"{s:024X}", s, _archived_at(s, total)) for s in range(total) if s not in missing
    ]
    wal.append(WalFile("00000002.history", None, _archived_at(0, total)))
    return elements, wal


def _restorable(elements: list[ChainElement], wal: list[WalFile], when: datetime) -> bool:
    """A verified base ends before ``when`` and WAL is unbroken from its start to the first
    segment archived at or after ``when``."""
    present = {w.segno: w.archived_at for w in wal if w.segno is not None}
    after = [s for s, at in present.items() if at >= when]
    if not after:
        return False
    end = min(after)
    for base in (
        e
        for e in elements
        if e.kind == "base" and e.verified and e.finished_at and e.finished_at < when
    ):
        assert base.start_segno is not None
        if all(s in present for s in range(base.start_segno, end + 1)):
            return True
    return False


def _after(
    elements: list[ChainElement], wal: list[WalFile], plan: object
) -> tuple[list[ChainElement], list[WalFile]]:
    gone = set(plan.base) | set(plan.incremental)  # type: ignore[attr-defined]
    gone_wal = set(plan.wal)  # type: ignore[attr-defined]
    return [e for e in elements if e.file not in gone], [w for w in wal if w.name not in gone_wal]


def test_old_incrementals_and_wal_before_the_oldest_kept_base_go() -> None:
    total = 24 * 2 * 10  # ten days of segments
    bases = [0, 48, 96, 144, 192, 240, 288, 336, 384, 432]
    incs = {b: [b + 2, b + 4] for b in bases}
    elements, wal = _world(total, bases, incs, missing=set())
    policy = ChainPolicy(
        base=Retention(max_age=timedelta(days=7), keep_last=2),
        incremental=Retention(max_age=timedelta(hours=24), keep_last=0),
        wal_max_age=timedelta(days=7),
    )
    plan = plan_chain_deletions(elements, wal, policy, NOW)
    # The WAL window opens 7 days ago, at segment 144; base144 ends just after that, so base96
    # is the anchor from which the window's first minutes are restored. Older bases go.
    assert plan.base == ["base0", "base48"]
    assert plan.wal_kept_from_segno == 96
    assert plan.wal == [f"{s:024X}" for s in range(96)]
    assert "00000002.history" not in plan.wal
    # Incrementals older than 24 h go (nothing kept is built on them); the last day's stay.
    assert set(plan.incremental) == {f"inc{b + k}" for b in bases[:-1] for k in (2, 4)}


def test_a_kept_incremental_keeps_its_whole_chain() -> None:
    total = 20 * 48
    elements, wal = _world(total, [0], {0: list(range(2, total - 1, 2))}, missing=set())
    plan = plan_chain_deletions(elements, wal, POLICY, NOW)
    assert plan.base == [] and plan.incremental == []
    assert plan.wal == []  # everything is after the only base backup's start


def test_unverified_backups_go_only_once_past_their_max_age() -> None:
    total = 10 * 48
    elements, wal = _world(
        total, [0, total - 10], {}, missing=set(), unverified={"base0", f"base{total - 10}"}
    )
    plan = plan_chain_deletions(elements, wal, POLICY, NOW)
    assert plan.base == ["base0"]
    assert plan.wal == []  # no kept verified base: no WAL is deleted


def test_without_a_base_backup_no_wal_is_deleted() -> None:
    elements, wal = _world(30 * 48, [], {}, missing=set())
    assert plan_chain_deletions(elements, wal, POLICY, NOW).wal == []


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[ChainElement], list[WalFile], ChainPolicy]:
    total = draw(st.integers(min_value=10, max_value=600))
    base_at = sorted(draw(st.sets(st.integers(0, total - 2), max_size=12)))
    incs: dict[int, list[int]] = {}
    for index, b in enumerate(base_at):
        limit = base_at[index + 1] if index + 1 < len(base_at) else total - 1
        if limit > b + 1:
            incs[b] = sorted(draw(st.sets(st.integers(b + 1, limit - 1), max_size=5)))
    missing = draw(st.sets(st.integers(0, total - 1), max_size=4))
    names = [f"base{b}" for b in base_at] + [f"inc{i}" for v in incs.values() for i in v]
    unverified = draw(st.sets(st.sampled_from(names), max_size=3)) if names else set()
    elements, wal = _world(total, base_at, incs, missing, unverified)
    policy = ChainPolicy(
        base=Retention(
            max_age=timedelta(hours=draw(st.integers(1, 24 * 10))),
            keep_last=draw(st.integers(0, 5)),
        ),
        incremental=Retention(
            max_age=timedelta(hours=draw(st.integers(1, 48))), keep_last=draw(st.integers(0, 5))
        ),
        wal_max_age=timedelta(hours=draw(st.integers(1, 24 * 10))),
    )
    return elements, wal, policy


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_nothing_a_kept_restore_point_needs_is_deleted(
    world: tuple[list[ChainElement], list[WalFile], ChainPolicy],
) -> None:
    elements, wal, policy = world
    plan = plan_chain_deletions(elements, wal, policy, NOW)
    kept_elements, kept_wal = _after(elements, wal, plan)
    kept = {e.file for e in kept_elements}
    # Every point inside the WAL window that was restorable still is.
    window_start = NOW - policy.wal_max_age
    step = max(policy.wal_max_age / 40, timedelta(minutes=7))
    when = window_start
    while when <= NOW:
        if _restorable(elements, wal, when):
            assert _restorable(kept_elements, kept_wal, when), f"lost {when}"
        when += step
    # A kept element never loses an ancestor.
    by_file = {e.file: e for e in elements}
    for file in kept:
        parent = by_file[file].parent
        while parent is not None:
            assert parent in kept
            parent = by_file[parent].parent
    # No WAL at or after the start of the oldest kept verified base backup; no history file.
    starts = [
        e.start_segno
        for e in kept_elements
        if e.kind == "base" and e.verified and e.start_segno is not None
    ]
    deleted_wal = {w.name: w for w in wal if w.name in set(plan.wal)}
    if starts:
        assert all(w.segno is not None and w.segno < min(starts) for w in deleted_wal.values())
    else:
        assert not deleted_wal
    assert all(w.archived_at < window_start for w in deleted_wal.values())
    # The newest verified base backup is always kept.
    verified_bases = [e for e in elements if e.kind == "base" and e.verified]
    if verified_bases:
        assert max(verified_bases, key=lambda e: e.started_at).file in kept


@pytest.mark.parametrize("hours_old", [1, 23])
def test_young_incrementals_stay(hours_old: int) -> None:
    total = 3 * 48
    inc_segno = total - hours_old * 2
    elements, wal = _world(total, [0], {0: [inc_segno]}, missing=set())
    assert plan_chain_deletions(elements, wal, POLICY, NOW).incremental == []


def test_an_element_under_object_lock_stays_with_its_ancestors_and_wal() -> None:
    """A held (still locked) incremental keeps its parents and base; the base keeps its WAL."""
    total = 24 * 2 * 10
    bases = [0, 48, 96, 144, 192, 240, 288, 336, 384, 432]
    elements, wal = _world(total, bases, {b: [b + 2, b + 4] for b in bases}, missing=set())
    policy = ChainPolicy(
        base=Retention(max_age=timedelta(days=7), keep_last=2),
        incremental=Retention(max_age=timedelta(hours=24), keep_last=0),
        wal_max_age=timedelta(days=7),
    )
    free = plan_chain_deletions(elements, wal, policy, NOW)
    held = plan_chain_deletions(elements, wal, policy, NOW, held={"inc50"})
    assert "inc50" in free.incremental and "base48" in free.base
    assert held.base == ["base0"]
    assert set(held.incremental) == set(free.incremental) - {"inc50"}  # its child may go
    assert held.wal_kept_from_segno == 48 and held.wal == [f"{s:024X}" for s in range(48)]


@settings(max_examples=150, deadline=None)
@given(worlds(), st.data())
def test_a_lock_only_delays_deletions(
    world: tuple[list[ChainElement], list[WalFile], ChainPolicy], data: st.DataObject
) -> None:
    """Whatever is held: nothing held is deleted, and nothing is deleted the free plan keeps."""
    elements, wal, policy = world
    free = plan_chain_deletions(elements, wal, policy, NOW)
    doomed = free.base + free.incremental
    held = data.draw(st.sets(st.sampled_from(doomed))) if doomed else set()
    plan = plan_chain_deletions(elements, wal, policy, NOW, held=held)
    assert not held & set(plan.base + plan.incremental)
    assert set(plan.base) <= set(free.base) and set(plan.incremental) <= set(free.incremental)
    assert set(plan.wal) <= set(free.wal)
