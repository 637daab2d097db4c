"""Benchmark: the retention cleanup's work on an Object Lock bucket -- reading each object's lock
and deleting every version -- for N WAL segments, per key (how the cleanup did it before, and
what a script of ``aws s3api list-object-versions --prefix KEY`` / ``head-object`` /
``delete-objects`` per key does) vs batched (:func:`versions_by_key`: one listing per folder;
:func:`locked_keys`: the HEADs 8 at a time; :func:`remove_versions`: 1000 versions per delete).

A moto server of its own (``python -m moto.server``) holds one lock-enabled bucket. Before each
run the N segments are written again, unlocked (a lock that has passed reads the same: the
HEAD still runs), one version each, beside 2,000 other objects in the same folder (the WAL
kept). Requests are counted per operation; they, not moto's seconds, carry over to real S3,
where a listing costs one round trip whatever the bucket holds (moto scans every key).

Usage: PYTHONPATH=include python bench/lock_cleanup.py [--segments 100 500] [--kept 2000]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "include"))

from disaster_recovery.clients.object_lock import LockPolicy
from disaster_recovery.clients.s3 import ObjectStore, locked_keys, remove_versions, versions_by_key
from disaster_recovery.config.endpoints import AwsEndpoint
from disaster_recovery.postgres.walfiles import segment_name

BUCKET = "bench-lock-cleanup"
FOLDER = "bench/postgresql_wal/"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_moto(port: int) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return server
        time.sleep(0.1)
    server.kill()
    raise SystemExit(f"moto did not start on port {port}")


def stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(timeout=5)
    except subprocess.TimeoutExpired:  # moto's werkzeug server may ignore SIGTERM mid-request
        server.kill()
        server.wait()


def per_key_versions(store: ObjectStore, key: str) -> list[dict[str, Any]]:
    listing = store.client.list_object_versions(Bucket=BUCKET, Prefix=key)
    return [v for v in listing.get("Versions", []) if v["Key"] == key]


def per_key_until(store: ObjectStore, key: str, versions: list[dict[str, Any]]) -> datetime | None:
    now, latest = datetime.now(UTC), None
    for version in versions:
        head = store.client.head_object(Bucket=BUCKET, Key=key, VersionId=version["VersionId"])
        until = head.get("ObjectLockRetainUntilDate")
        if until is not None and until > now and (latest is None or until > latest):
            latest = until
    return latest


def per_key_locks(store: ObjectStore, keys: list[str]) -> dict[str, datetime]:
    """The lock of each key as the cleanup read it before: a listing and a HEAD per version."""
    found = {}
    for key in keys:
        if (until := per_key_until(store, key, per_key_versions(store, key))) is not None:
            found[key] = until
    return found


def per_key_remove(store: ObjectStore, keys: list[str]) -> None:
    """Deleting as the cleanup did before: per key, its versions listed and their locks read
    again, then one delete of its versions."""
    for key in keys:
        versions = per_key_versions(store, key)
        if versions and per_key_until(store, key, versions) is None:
            store.client.delete_objects(
                Bucket=BUCKET,
                Delete={"Objects": [{"Key": key, "VersionId": v["VersionId"]} for v in versions]},
            )


def batched_locks(store: ObjectStore, keys: list[str]) -> dict[str, datetime]:
    return locked_keys(store, versions_by_key(store, keys))


def batched_remove(store: ObjectStore, keys: list[str]) -> None:
    remove_versions(store, keys)


def counted(
    store: ObjectStore, work: Callable[[ObjectStore, list[str]], Any], keys: list[str]
) -> tuple[float, Counter[str]]:
    calls: Counter[str] = Counter()

    def count(event_name: str, **_: Any) -> None:
        calls[event_name.rsplit(".", 1)[-1]] += 1

    store.client.meta.events.register("before-call.s3", count)
    started = time.perf_counter()
    try:
        work(store, keys)
    finally:
        store.client.meta.events.unregister("before-call.s3", count)
    return time.perf_counter() - started, calls


def write(client: Any, keys: list[str]) -> None:
    for key in keys:
        client.put_object(Bucket=BUCKET, Key=key, Body=b"segment")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--kept", type=int, default=2000)
    args = parser.parse_args()
    port = free_port()
    server = start_moto(port)
    try:
        endpoint = AwsEndpoint(
            "bench", "us-east-1", "bench", "bench", endpoint_url=f"http://127.0.0.1:{port}"
        )
        lock = LockPolicy("governance", "bench", {}, margin=timedelta(0))
        store = ObjectStore(endpoint, BUCKET, lock=lock)
        store.ensure_bucket()
        kept = [FOLDER + segment_name(2, n) for n in range(args.kept)]
        write(store.client, kept)
        rows = []
        for count in args.segments:
            keys = [FOLDER + segment_name(1, n) for n in range(1, count + 1)]
            for label, locks, remove in (
                ("per key", per_key_locks, per_key_remove),
                ("batched", batched_locks, batched_remove),
            ):
                write(store.client, keys)
                check_s, check_calls = counted(store, locks, keys)
                remove_s, remove_calls = counted(store, remove, keys)
                left = versions_left(store, keys)
                assert left == 0, f"{label}: {left} version(s) left"
                rows.append((count, label, check_s, check_calls, remove_s, remove_calls))
    finally:
        stop(server)
    print(f"{args.kept} other objects in the folder; moto on 127.0.0.1")
    print(
        "| segments | way | lock check | check + delete | ratio to per key | requests (check + delete) |"
    )
    print("|---|---|---|---|---|---|")
    per_key = {
        count: check_s + remove_s
        for count, label, check_s, _, remove_s, _ in rows
        if label == "per key"
    }
    for count, label, check_s, check_calls, remove_s, remove_calls in rows:
        total = check_s + remove_s
        print(
            f"| {count} | {label} | {check_s:.2f} s | {total:.2f} s | "
            f"{total / per_key[count]:.2f} | {_calls(check_calls + remove_calls)} |"
        )


def versions_left(store: ObjectStore, keys: list[str]) -> int:
    return sum(len(found) for found in versions_by_key(store, keys).values())


def _calls(calls: Counter[str]) -> str:
    return ", ".join(f"{n} {op}" for op, n in sorted(calls.items()))


if __name__ == "__main__":
    main()
