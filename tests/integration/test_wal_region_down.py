"""The WAL archiver with one region's S3 black-holed (connections accepted, never answered):
the first push pays the timeout once, the next ones skip that region and record what it lacks,
fetch still answers "not there" for a file no reachable region has, and once the region answers
again the owed files are filled with their SHA-256 checked."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto.server import ThreadedMotoServer

from disaster_recovery.clients.s3 import ObjectStore, s3_client
from disaster_recovery.config.endpoints import AwsEndpoint
from disaster_recovery.errors import NotFoundError
from disaster_recovery.wal import archive as wal_archive
from disaster_recovery.wal.archive import ArchiveLocation, WalArchive
from disaster_recovery.wal.replica_debt import fill_missing, replica_debt

EAST, WEST = "us-east-1", "us-west-2"


class BlackHole:
    """A TCP port that accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def _url(server: ThreadedMotoServer) -> str:
    host, port = server.get_host_and_port()
    return f"http://{host}:{port}"


@pytest.fixture
def servers() -> Iterator[tuple[str, BlackHole, str]]:
    east = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    west = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    east.start()
    west.start()
    hole = BlackHole()
    try:
        yield _url(east), hole, _url(west)
    finally:
        hole.close()
        east.stop()
        west.stop()


def _archive(east_url: str, west_url: str) -> WalArchive:
    locations = []
    for region, url in ((EAST, east_url), (WEST, west_url)):
        endpoint = AwsEndpoint(f"dr_aws_{region}", region, "testing", "testing", url)
        locations.append(ArchiveLocation(region, f"wal-test-{region}", endpoint))
    archive = WalArchive("test", locations)
    for location in locations:
        # Short timeouts so that a black hole costs seconds, not minutes, in a test.
        client = s3_client(location.endpoint, max_attempts=1, connect_timeout=1, read_timeout=1)
        archive._stores[location.region] = ObjectStore(
            location.endpoint, location.bucket, client=client
        )
    return archive


def _segment(pg_wal: Path, number: int) -> Path:
    path = pg_wal / f"00000001000000000000{number:04X}"
    path.write_bytes(os.urandom(64 * 1024))
    return path


def test_a_black_holed_region_is_paid_for_once_then_owed(
    servers: tuple[str, BlackHole, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    east_url, hole, west_url = servers
    pg_wal = tmp_path / "pg_wal"
    (pg_wal / "archive_status").mkdir(parents=True)
    ObjectStore(
        AwsEndpoint("e", EAST, "testing", "testing", east_url), f"wal-test-{EAST}"
    ).ensure_bucket()
    ObjectStore(
        AwsEndpoint("w", WEST, "testing", "testing", west_url), f"wal-test-{WEST}"
    ).ensure_bucket()
    lost = _archive(east_url, f"http://127.0.0.1:{hole.port}")

    started = time.monotonic()
    first = lost.push(_segment(pg_wal, 1))
    first_seconds = time.monotonic() - started
    assert first["regions"][EAST] == "archived"
    assert first["regions"][WEST].startswith("failed") and "owed" in first["regions"][WEST]
    assert (pg_wal / "dr_region_down" / WEST).exists()

    timings = []
    for number in range(2, 7):
        started = time.monotonic()
        result = lost.push(_segment(pg_wal, number))
        timings.append(time.monotonic() - started)
        assert "skipped" in result["regions"][WEST]
    assert max(timings) < first_seconds and max(timings) < 0.9, (first_seconds, timings)
    debt = replica_debt(lost)
    assert debt["behind"][WEST]["files"] == 6

    # Recovery probes for a file nobody has: "not there" from the region that answers.
    with pytest.raises(NotFoundError):
        lost.fetch("00000002.history", tmp_path / "probe")

    # The region answers again (its own endpoint): the owed files are filled, checked.
    back = _archive(east_url, west_url)
    filled = fill_missing(back)
    assert len(filled["copied"][WEST]) == 6 and filled["behind"] == {}
    for number in range(1, 7):
        name = f"00000001000000000000{number:04X}"
        data = (pg_wal / name).read_bytes()
        assert back._read_verified(WEST, name) == data  # decompressed, checked

    # After REGION_RETRY_SECONDS the region is tried again, and a success clears the memo.
    monkeypatch.setattr(wal_archive, "REGION_RETRY_SECONDS", 0)
    again = back.push(_segment(pg_wal, 7))
    assert again["regions"] == {EAST: "archived", WEST: "archived"}
    assert not (pg_wal / "dr_region_down" / WEST).exists()
