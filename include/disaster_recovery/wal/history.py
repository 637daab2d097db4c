"""Timeline history files that the WAL archive lost, archived again from the primary.

Point-in-time recovery across a failover needs ``0000000N.history`` of every timeline on the
way to the target. PostgreSQL archives a history file once, when the timeline begins; an archive
that lost it (a new bucket or prefix, a deletion, a region that was down) never gets it again,
and every restore past that timeline fails. The primary still holds each history file in its
``pg_wal/``: :func:`archive_missing_history` reads it there over SQL (``pg_read_binary_file``,
no shell on the database host) and archives it in every region that answers.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import psycopg

from disaster_recovery.config.endpoints import Deployment
from disaster_recovery.errors import UnavailableError, VerificationError
from disaster_recovery.monitoring import topology
from disaster_recovery.postgres import db
from disaster_recovery.wal.archive import WalArchive

log = logging.getLogger(__name__)


def history_name(timeline: int) -> str:
    return f"{timeline:08X}.history"


def _archived_names(archive: WalArchive) -> tuple[set[str], list[str]]:
    names: set[str] = set()
    reachable = []
    for region in archive.regions:
        try:
            names |= {n for n in archive.listing(region) if n.endswith(".history")}
            reachable.append(region)
        except UnavailableError as exc:
            log.warning("WAL archive in %s unreachable: %s", region, exc)
    if not reachable:
        raise UnavailableError("no region's WAL archive answers: history files cannot be checked")
    return names, reachable


def archive_missing_history(deployment: Deployment) -> dict[str, Any]:
    """Every history file of the current primary's timelines (2..current) that no region holds,
    archived from the primary's ``pg_wal``; the ones the primary no longer has are reported."""
    view = topology.following(deployment)
    archive = WalArchive.for_deployment(view)
    endpoint = view.postgres("primary")
    with db.connect(endpoint, "postgres") as conn:
        row = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()
        assert row is not None
        timeline = int(str(row[0])[:8], 16)
        names, reachable = _archived_names(archive)
        archived, lost = [], []
        for number in range(2, timeline + 1):
            name = history_name(number)
            if name in names:
                continue
            try:
                data = conn.execute(
                    "SELECT pg_read_binary_file(%s)", (f"pg_wal/{name}",)
                ).fetchone()[0]  # type: ignore[index]
            except psycopg.Error as exc:
                lost.append(f"{name}: {str(exc).splitlines()[0]}")
                continue
            for region in reachable:
                archive.store(region).put_if_absent(archive.key(name), bytes(data))
            archived.append(name)
            log.info(
                "archived %s again from %s (sha256 %s)",
                name,
                endpoint.describe(),
                hashlib.sha256(bytes(data)).hexdigest(),
            )
    return {"timeline": timeline, "archived": archived, "missing_on_primary": lost}


def require_history(deployment: Deployment, timeline: int, key: str = "") -> None:
    """A base backup on ``timeline`` restores only with that timeline's history file archived:
    archive it again from the primary if needed, else refuse with what is missing."""
    if timeline <= 1:
        return
    name = history_name(timeline)
    names, _ = _archived_names(WalArchive.for_deployment(topology.following(deployment)))
    if name in names:
        return
    repaired = archive_missing_history(deployment)
    if name not in repaired["archived"]:
        raise VerificationError(
            f"timeline history {name} is not in the WAL archive and the primary cannot give it "
            f"again ({'; '.join(repaired['missing_on_primary']) or 'not found'}): a "
            f"point-in-time restore from this backup (timeline {timeline}) would fail",
            check="timeline_history",
            key=key,
        )
