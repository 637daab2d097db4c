"""Parallel WAL prefetch for ``restore_command`` (``pitr.prefetch``), as barman-cloud-wal-restore
``-p`` and WAL-G do.

Recovery asks for one segment at a time and replays it before asking for the next, so a
sequential fetch pays one S3 round trip (and one interpreter start) per segment. When asked for
segment S, :func:`fetch_with_prefetch` fetches S and the next ``prefetch`` segments of its
timeline in parallel; each is checked against its SHA-256 like any fetch and lands atomically
in a spool inside the restored data directory, ``pg_wal/dr_prefetch/``. Later requests are
served from there by a rename, without S3. A following segment that is not archived (yet, or
ever) is simply not spooled. Spooled files older than the one asked for, or left longer than
:data:`STALE_SECONDS`, are removed; the PITR procedure removes the folder when recovery ends.
"""

from __future__ import annotations

import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from disaster_recovery.config.defaults import DEFAULT_SEGMENT_SIZE
from disaster_recovery.errors import DisasterRecoveryError, NotFoundError
from disaster_recovery.postgres.walfiles import is_segment, parse_segment, segment_name
from disaster_recovery.wal.archive import WalArchive

FOLDER = "dr_prefetch"
SERVED_LOG = "served"  # one line per segment served from the spool (reported by PITR)
STALE_SECONDS = 600


def fetch_with_prefetch(archive: WalArchive, name: str, destination: str | Path) -> dict[str, Any]:
    """restore_command with prefetch: ``name`` from the spool if fetched ahead, else from the
    archive together with the following segments (module docstring)."""
    target = Path(destination).absolute()
    if archive.tuning.prefetch <= 0 or not is_segment(name):
        return archive.fetch(name, target)
    spool = target.parent / FOLDER
    size = _segment_size(target.parent)
    _clean(spool, name, size)
    spooled = spool / name
    if spooled.is_file():
        os.replace(spooled, target)
        with open(spool / SERVED_LOG, "a") as served:
            served.write(f"{name}\n")
        return {"file": name, "from": "prefetch spool"}
    timeline, segno = parse_segment(name, size)
    upcoming = [
        segment_name(timeline, segno + k, size) for k in range(1, archive.tuning.prefetch + 1)
    ]
    upcoming = [n for n in upcoming if not (spool / n).exists()]
    for region in archive.regions:
        archive.store(region)  # built before the threads share them
    with ThreadPoolExecutor(max_workers=1 + len(upcoming)) as pool:
        requested = pool.submit(archive.fetch, name, target)
        for following in upcoming:
            pool.submit(_fetch_ahead, archive, following, spool)
    result = requested.result()
    result["prefetched"] = sorted(n for n in upcoming if (spool / n).exists())
    return result


def _fetch_ahead(archive: WalArchive, name: str, spool: Path) -> None:
    """Fetch one following segment into the spool; a missing or unreadable one is left to its
    own turn, which reports it (as "not archived" or as a fatal error)."""
    with contextlib.suppress(NotFoundError, DisasterRecoveryError):
        archive.fetch(name, spool / name)


def _segment_size(pg_wal: Path) -> int:
    """The cluster's segment size, from a segment already in ``pg_wal`` (the base backup's)."""
    with contextlib.suppress(OSError), os.scandir(pg_wal) as entries:
        for entry in entries:
            if is_segment(entry.name) and entry.is_file():
                return entry.stat().st_size
    return DEFAULT_SEGMENT_SIZE


def _clean(spool: Path, requested: str, size: int) -> None:
    """Remove what recovery will not ask for: segments before the one asked for (any
    timeline), and anything left longer than STALE_SECONDS (leftovers of a crash included)."""
    _, position = parse_segment(requested, size)
    cutoff = time.time() - STALE_SECONDS
    with contextlib.suppress(OSError), os.scandir(spool) as entries:
        for entry in entries:
            if entry.name == SERVED_LOG:
                continue
            behind = is_segment(entry.name) and parse_segment(entry.name, size)[1] < position
            if behind or entry.stat().st_mtime < cutoff:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def served_from_spool(pg_wal: Path) -> int:
    """How many segments restore_command served from the spool of this ``pg_wal``."""
    try:
        return len((pg_wal / FOLDER / SERVED_LOG).read_text().split())
    except OSError:
        return 0
