"""The heartbeat: rows committed on the primary at a known time, so data loss is measurable.

``dr.heartbeat`` gets a row from every health check (and, in the sandbox, from the demo
application several times a second). After a restore or a failover, the newest heartbeat that
survived tells how much time was lost: RPO measured = failure time - newest heartbeat recovered.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from disaster_recovery.config.endpoints import PostgresEndpoint
from disaster_recovery.postgres.db import connect

SCHEMA_SQL = """
CREATE SCHEMA IF NOT EXISTS dr;
CREATE TABLE IF NOT EXISTS dr.heartbeat (
    id           bigserial PRIMARY KEY,
    source       text NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS heartbeat_committed_idx ON dr.heartbeat (committed_at);
"""


def ensure_schema(endpoint: PostgresEndpoint) -> None:
    with connect(endpoint) as conn:
        conn.execute(SCHEMA_SQL)


def beat(
    endpoint: PostgresEndpoint, source: str, *, synchronous: bool = False
) -> tuple[int, datetime]:
    """Commit one heartbeat; returns its id and time (taken just before the commit).

    By default the commit does not wait for a synchronous standby: a health check must never
    hang because the standby it is about to report as down does not acknowledge. Drills that
    count acknowledged heartbeats ask for ``synchronous=True``.
    """
    with connect(endpoint, autocommit=False) as conn:
        if not synchronous:
            conn.execute("SET LOCAL synchronous_commit TO local")
        row = conn.execute(
            "INSERT INTO dr.heartbeat (source) VALUES (%s) RETURNING id, committed_at", (source,)
        ).fetchone()
        conn.commit()
    assert row is not None
    return int(row[0]), row[1]


def newest(endpoint: PostgresEndpoint, dbname: str | None = None) -> dict[str, Any] | None:
    """The newest heartbeat on a server (a restored copy, a promoted standby), or None."""
    with connect(endpoint, dbname) as conn:
        exists = conn.execute("SELECT to_regclass('dr.heartbeat') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return None
        row = conn.execute(
            "SELECT id, source, committed_at FROM dr.heartbeat ORDER BY id DESC LIMIT 1"
        ).fetchone()
    if row is None:
        return None
    return {"id": int(row[0]), "source": row[1], "committed_at": row[2]}


def ids_up_to(endpoint: PostgresEndpoint, moment: datetime, dbname: str | None = None) -> list[int]:
    """Ids of the heartbeats committed at or before ``moment``.

    With ``track_commit_timestamp`` on, the transaction's real commit time decides, which is
    what ``recovery_target_time`` compares; the row's own time is taken a moment before its
    commit, so near the target it could disagree.
    """
    with connect(endpoint, dbname) as conn:
        exact = conn.execute("SELECT current_setting('track_commit_timestamp') = 'on'").fetchone()
        when = "pg_xact_commit_timestamp(xmin)" if exact and exact[0] else "committed_at"
        rows = conn.execute(
            f"SELECT id FROM dr.heartbeat WHERE {when} <= %s ORDER BY id", (moment,)
        ).fetchall()
    return [int(r[0]) for r in rows]


def prune(endpoint: PostgresEndpoint, older_than: datetime, *, dry_run: bool = False) -> int:
    """Delete (or count, with ``dry_run``) the heartbeats committed before ``older_than`` on
    the primary; the newest one is always kept, so data loss stays measurable."""
    where = "committed_at < %s AND id < (SELECT max(id) FROM dr.heartbeat)"
    with connect(endpoint, autocommit=False) as conn:
        exists = conn.execute("SELECT to_regclass('dr.heartbeat') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return 0
        # Like beat(): never wait for a synchronous standby that may be the one that is down.
        conn.execute("SET LOCAL synchronous_commit TO local")
        if dry_run:
            row = conn.execute(
                f"SELECT count(*) FROM dr.heartbeat WHERE {where}", (older_than,)
            ).fetchone()
            conn.rollback()
            return int(row[0]) if row else 0
        deleted = conn.execute(f"DELETE FROM dr.heartbeat WHERE {where}", (older_than,)).rowcount
        conn.commit()
    return int(deleted)
