"""WAL file names, LSNs, segments and timelines: pure arithmetic, no I/O."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from disaster_recovery.config.defaults import DEFAULT_SEGMENT_SIZE

_SEGMENT = re.compile(r"^[0-9A-F]{24}$")
_ARCHIVABLE = re.compile(
    r"^(?:[0-9A-F]{24}(?:\.partial|\.[0-9A-F]{8}\.backup)?|[0-9A-F]{8}\.history)$"
)


# -- names and positions ------------------------------------------------------------------


def is_archivable(name: str) -> bool:
    return bool(_ARCHIVABLE.match(name))


def is_segment(name: str) -> bool:
    return bool(_SEGMENT.match(name))


def segments_per_xlogid(segment_size: int) -> int:
    return 0x1_0000_0000 // segment_size


def segment_name(timeline: int, segno: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
    per = segments_per_xlogid(segment_size)
    return f"{timeline:08X}{segno // per:08X}{segno % per:08X}"


def parse_segment(name: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> tuple[int, int]:
    """(timeline, segment number) of a segment name (or of a ``.partial``/``.backup`` file)."""
    base = name[:24]
    if not _SEGMENT.match(base):
        raise ValueError(f"not a WAL segment name: {name!r}")
    per = segments_per_xlogid(segment_size)
    return int(base[:8], 16), int(base[8:16], 16) * per + int(base[16:24], 16)


def timeline_of(name: str) -> int:
    """The timeline a WAL file name (segment, ``.partial``, ``.backup`` or ``.history``) is on."""
    try:
        return int(name[:8], 16)
    except ValueError:
        raise ValueError(f"not a WAL file name: {name!r}") from None


def parse_lsn(lsn: str) -> int:
    """``"0/16B3748"`` -> an integer byte position."""
    high, _, low = lsn.strip().partition("/")
    try:
        return (int(high, 16) << 32) | int(low, 16)
    except ValueError:
        raise ValueError(f"not an LSN: {lsn!r} (expected like 0/16B3748)") from None


def parse_optional_lsn(lsn: str | None) -> int | None:
    """:func:`parse_lsn`, with None (a node that reported no position) kept as None."""
    return parse_lsn(lsn) if lsn else None


def format_lsn(position: int) -> str:
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"


@dataclass(frozen=True)
class TimelineSwitch:
    """One line of a ``.history`` file: ``timeline`` ended at ``switch_lsn``."""

    timeline: int
    switch_lsn: int


def parse_history(text: str) -> list[TimelineSwitch]:
    """Parse a timeline history file (``parentTLI <tab> switchpoint <tab> reason`` lines)."""
    switches = []
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        switches.append(TimelineSwitch(int(fields[0]), parse_lsn(fields[1])))
    return switches


def timeline_of_segment(
    segno: int, timeline: int, history: list[TimelineSwitch], segment_size: int
) -> int:
    """The timeline from which recovery reads segment ``segno`` when it follows ``timeline``.

    As PostgreSQL does: the newest timeline of the history that had begun by that segment (a
    new timeline's first segment holds a copy of its parent's WAL before the switch point).
    """
    begins = {timeline: history[-1].switch_lsn // segment_size if history else 0}
    for index, switch in enumerate(history):
        begins[switch.timeline] = history[index - 1].switch_lsn // segment_size if index else 0
    for candidate in sorted(begins, reverse=True):
        if begins[candidate] <= segno:
            return candidate
    return min(begins)


def expected_segments(
    start_segno: int,
    end_segno: int,
    timeline: int,
    history: list[TimelineSwitch],
    segment_size: int,
) -> list[str]:
    """Segment names recovery needs from ``start_segno`` to ``end_segno`` (inclusive)."""
    return [
        segment_name(
            timeline_of_segment(segno, timeline, history, segment_size), segno, segment_size
        )
        for segno in range(start_segno, end_segno + 1)
    ]


def segments_on_path(
    names: Iterable[str], timeline: int, history: list[TimelineSwitch], segment_size: int
) -> dict[int, str]:
    """segment number -> name, for the archived segments that recovery following ``timeline``
    would read (segments of abandoned timeline branches are left out)."""
    found = {}
    for name in names:
        if is_segment(name):
            segno = parse_segment(name, segment_size)[1]
            if (
                segment_name(
                    timeline_of_segment(segno, timeline, history, segment_size), segno, segment_size
                )
                == name
            ):
                found[segno] = name
    return found


def newest_timeline(names: Iterable[str], at_least: int = 1) -> int:
    """The newest timeline the archive knows of (its highest ``.history`` file)."""
    return max([at_least, *(timeline_of(n) for n in names if n.endswith(".history"))])
