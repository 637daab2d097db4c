"""Retention of the physical chain: base backups, incrementals and archived WAL.

Retention follows dependencies, not names (DESIGN.md). :func:`plan_chain_deletions` is a pure
function from what a bucket holds and a clock to what may go; :func:`~disaster_recovery.retention.cleanup.cleanup_physical_chain`
applies it to both regions and reports ``{"incremental": n, "wal": n, "base": n}`` for the
cleanup DAG. The rules:

- Incrementals go when older than their max age (24 h) and not among the newest ``keep_last``,
  unless a kept incremental is built on them.
- Base backups go when older than their max age and outside the WAL window, not among the
  newest ``keep_last``, not the *anchor* (the newest base that ends before the WAL window opens,
  from which the window's first minutes are restored), and not the base of a kept incremental.
- WAL goes when older than its max age (7 days) AND before the start segment of the oldest
  kept base backup. With no kept base backup nothing is deleted. Timeline history files are
  never deleted (tiny, and recovery needs them to follow timelines).
- Backups that never verified go once older than their tier's max age; younger ones may still
  be in progress and stay.
- An element *held* (still under S3 Object Lock) stays like any kept one, with its ancestors
  and, for a base, its WAL: a lock only delays a deletion, it never leaves half a chain.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from disaster_recovery.config.model import Retention

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChainElement:
    file: str
    kind: Literal["base", "incremental"]
    started_at: datetime
    finished_at: datetime | None
    start_segno: int | None
    parent: str | None
    verified: bool


@dataclass(frozen=True)
class WalFile:
    name: str
    segno: int | None  # None for timeline history files
    archived_at: datetime


@dataclass(frozen=True)
class ChainPolicy:
    base: Retention
    incremental: Retention
    wal_max_age: timedelta


@dataclass
class ChainDeletions:
    base: list[str] = field(default_factory=list)
    incremental: list[str] = field(default_factory=list)
    wal: list[str] = field(default_factory=list)
    kept_base: list[str] = field(default_factory=list)
    wal_kept_from_segno: int | None = None

    def counts(self) -> dict[str, int]:
        return {"incremental": len(self.incremental), "wal": len(self.wal), "base": len(self.base)}


def _age(element: ChainElement, now: datetime) -> timedelta:
    return now - (element.finished_at or element.started_at)


def _newest(elements: Iterable[ChainElement], count: int) -> set[str]:
    ordered = sorted(elements, key=lambda e: (e.started_at, e.start_segno or 0))
    return {e.file for e in ordered[-count:]} if count else set()


def plan_chain_deletions(
    elements: Sequence[ChainElement],
    wal: Sequence[WalFile],
    policy: ChainPolicy,
    now: datetime,
    held: Collection[str] = (),
) -> ChainDeletions:
    """What may be deleted without losing any point a kept backup can restore to; ``held``
    names elements that must stay whatever the policy says (still under Object Lock)."""
    window_start = now - policy.wal_max_age
    bases = [e for e in elements if e.kind == "base"]
    incrementals = [e for e in elements if e.kind == "incremental"]
    verified_bases = [e for e in bases if e.verified]

    keep: set[str] = {e.file for e in elements if e.file in held}
    keep |= _newest(verified_bases, policy.base.keep_last)
    keep |= _newest([e for e in incrementals if e.verified], policy.incremental.keep_last)
    before_window = [e for e in verified_bases if e.finished_at and e.finished_at < window_start]
    if before_window:
        keep.add(max(before_window, key=lambda e: (e.finished_at, e.start_segno or 0)).file)
    for element in elements:
        limit = policy.base.max_age if element.kind == "base" else policy.incremental.max_age
        if _age(element, now) <= limit:
            keep.add(element.file)
        elif (
            element.kind == "base"
            and element.verified
            and element.finished_at
            and element.finished_at >= window_start
        ):
            keep.add(element.file)  # inside the WAL window: a restore may start from it

    # A kept element keeps every ancestor it is built on.
    by_file = {e.file: e for e in elements}
    for file in list(keep):
        parent = by_file[file].parent
        while parent is not None and parent in by_file:
            keep.add(parent)
            parent = by_file[parent].parent

    plan = ChainDeletions()
    for element in sorted(elements, key=lambda e: e.started_at):
        if element.file in keep:
            if element.kind == "base" and element.verified:
                plan.kept_base.append(element.file)
            continue
        (plan.base if element.kind == "base" else plan.incremental).append(element.file)

    kept_starts = [
        by_file[f].start_segno for f in plan.kept_base if by_file[f].start_segno is not None
    ]
    if kept_starts:
        oldest = min(s for s in kept_starts if s is not None)
        plan.wal_kept_from_segno = oldest
        plan.wal = [
            w.name
            for w in sorted(wal, key=lambda w: w.name)
            if w.segno is not None and w.segno < oldest and w.archived_at < window_start
        ]
    return plan
