"""Helpers for the point-in-time recovery tests: a ticker writing rows continuously, waiting
for WAL to be archived, and deployments bound to one sandbox."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from disaster_recovery.config.endpoints import (
    Deployment,
    PostgresEndpoint,
    env_var_name,
    parse_connection,
)
from disaster_recovery.postgres import db, pgbin
from disaster_recovery.restore.pitr import RestoredCluster
from dr_sandbox import Sandbox

TICKER_DB = "ticker"


def deployment_for(box: Sandbox) -> Deployment:
    """A deployment whose Connections are this sandbox's (not the process environment's)."""
    env = box.environment()
    return Deployment(
        box.settings(), lookup=lambda conn_id: parse_connection(conn_id, env[env_var_name(conn_id)])
    )


def with_codec(deployment: Deployment, codec: str) -> Deployment:
    """``deployment`` with ``pitr.compression`` set to ``codec``."""
    settings = deployment.settings
    pitr = settings.pitr.model_copy(update={"compression": codec})
    return Deployment(settings.model_copy(update={"pitr": pitr}), lookup=deployment.lookup)


def add_pgbench_tables(endpoint: PostgresEndpoint, scale: int) -> None:
    """pgbench's tables in ``endpoint``'s database (scale 1 is about 15 MB), to reach a size."""
    subprocess.run(
        [pgbin.program("pgbench"), "-i", "-q", "--no-vacuum", "-s", str(scale)],
        env={**os.environ, **endpoint.libpq_env()},
        check=True,
        capture_output=True,
    )


@dataclass
class Tick:
    id: int
    before: datetime  # clock before the INSERT was sent
    after: datetime  # clock after its COMMIT returned
    lsn: str  # WAL insert position just after the commit


@dataclass
class Ticker:
    """Inserts one row per transaction into ``ticker.ticks`` every ``interval`` seconds, on a
    thread, recording when each commit happened (client clock = server clock here)."""

    endpoint: PostgresEndpoint
    interval: float = 0.02
    ticks: list[Tick] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    error: BaseException | None = None

    @staticmethod
    def prepare(endpoint: PostgresEndpoint) -> None:
        with db.connect(endpoint, "postgres") as conn:
            if (
                conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (TICKER_DB,)
                ).fetchone()
                is None
            ):
                conn.execute(f"CREATE DATABASE {TICKER_DB}")
        with db.connect(endpoint, TICKER_DB) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS ticks (id bigint PRIMARY KEY, note text)")
            conn.execute("TRUNCATE ticks")

    def start(self, first_id: int = 1) -> Ticker:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(first_id,), daemon=True)
        self._thread.start()
        return self

    def _run(self, next_id: int) -> None:
        try:
            with db.connect(self.endpoint, TICKER_DB) as conn:
                while not self._stop.is_set():
                    before = datetime.now(UTC)
                    conn.execute("INSERT INTO ticks VALUES (%s, 'tick')", (next_id,))
                    after = datetime.now(UTC)
                    # Autocommit: the row is committed; this LSN is just past its commit record.
                    row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
                    assert row is not None
                    self.ticks.append(Tick(next_id, before, after, row[0]))
                    next_id += 1
                    time.sleep(self.interval)
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        assert self.error is None, f"ticker failed: {self.error!r}"

    def pause_between(self, index: int) -> datetime:
        """A time strictly between tick ``index``'s commit and the next tick's INSERT."""
        this, following = self.ticks[index], self.ticks[index + 1]
        assert following.before - this.after > timedelta(milliseconds=5)
        return this.after + (following.before - this.after) / 2

    def index_at(self, when: datetime) -> int:
        """The last tick committed before ``when``."""
        return max(i for i, t in enumerate(self.ticks) if t.after < when)


def switch_and_wait_archived(endpoint: PostgresEndpoint, timeout: float = 30) -> str:
    """Force a segment switch and wait until the archiver has stored it; returns its name."""
    segment = switch_wal(endpoint)
    wait_archived(endpoint, segment, timeout)
    return segment


def wait_archived(endpoint: PostgresEndpoint, segment: str, timeout: float = 30) -> None:
    """Until the server's archiver reports ``segment`` (or a later file) stored."""
    with db.connect(endpoint, "postgres") as conn:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = conn.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()
            last = (row[0] if row else None) or ""
            # Same timeline: names sort in WAL order (a .backup file sorts after its segment).
            if last == segment or last[:24] > segment:
                return
            time.sleep(0.1)
    raise AssertionError(f"segment {segment} was not archived within {timeout} s")


def switch_wal(endpoint: PostgresEndpoint) -> str:
    """Write something, switch segments (without waiting for the archive); the finished one."""
    with db.connect(endpoint, "postgres") as conn:
        conn.execute("SELECT txid_current()")
        row = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
        assert row is not None
        return str(row[0])


@contextlib.contextmanager
def archive_store_lost(box: Sandbox) -> Iterator[None]:
    """The database hosts lose S3 in both regions for the duration (the archiver's endpoints
    point at a closed port): finished segments wait in pg_wal and go when it is back."""
    env_file = box.root / "wal" / "wal.env"
    good = env_file.read_text()
    lost = good
    for region in ("us-east-1", "us-west-2"):
        lost = lost.replace(box.s3_endpoint_of(region), "http://127.0.0.1:9")
    env_file.write_text(lost)
    try:
        yield
    finally:
        env_file.write_text(good)


def rows_in(port: int, source: PostgresEndpoint) -> tuple[int, int]:
    endpoint = PostgresEndpoint(
        "restored", "127.0.0.1", port, source.user, TICKER_DB, source.password
    )
    with db.connect(endpoint) as conn:
        row = conn.execute("SELECT count(*), coalesce(max(id), 0) FROM ticks").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def stop_restored(result: dict[str, Any]) -> None:
    RestoredCluster.of(result).stop_and_remove()


def prepare_for_drills(box: Sandbox) -> None:
    """What a drill needs of a fresh sandbox (its variables in os.environ): a verified full
    backup, a verified base backup, and archived WAL after it holding the demo application's
    heartbeats."""
    from disaster_recovery.backup.logical import run_backup
    from disaster_recovery.backup.physical import backup_and_verify

    deployment = Deployment(box.settings())
    run_backup(deployment, "postgresql_full")
    backup_and_verify(deployment, "base")
    time.sleep(3)  # heartbeats after the base backup, then archived
    switch_and_wait_archived(box.postgres("primary"))
