"""Benchmark: point-in-time restore vs the plain steps it is made of, measured separately in
the same run, and the size of an incremental relative to its base after N MB of changes.

Restore (``restore_to_point_in_time``): stream-download + extract, ``pg_combinebackup --link``,
start with ``dr wal fetch`` as restore_command, replay to the target, check, promote.
Plain steps: boto3 ``download_file`` of each tar, ``tar -xf``, ``pg_combinebackup --link``,
WAL segments downloaded beforehand and replayed with ``restore_command = 'cp ...'``.

Usage: PYTHONPATH=include python bench/pitr.py [--scale 20] [--change-mb 50]
(scale 1 is about 10 MB of sample data; add --pgbench-scale 60 for about 1 GB)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers import private_sandbox
from pitr_support import (
    Ticker,
    add_pgbench_tables,
    deployment_for,
    stop_restored,
    switch_and_wait_archived,
)

from disaster_recovery.backup import physical
from disaster_recovery.clients.runner import run
from disaster_recovery.postgres import db, pgbin
from disaster_recovery.postgres.instance import LocalInstance, hand_over
from disaster_recovery.restore.pitr import Target, plan_restore, restore_to_point_in_time
from disaster_recovery.wal.archive import WalArchive
from dr_sandbox import server_os_user


def clock(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - started


def plain_steps(deployment: Any, target: Target, port: int) -> dict[str, float]:
    plan = plan_restore(deployment, target)
    store = physical.Chain(deployment, plan.region).store
    work = Path(tempfile.mkdtemp(prefix="dr-bench-plain-", dir="/tmp"))
    work.chmod(0o755)
    tars = [work / f"{i}.tar" for i in range(len(plan.elements))]

    def fetch(key: str, path: Path) -> None:
        # One plain streaming GET to a file (like `curl`); boto3's download_file issues ranged
        # GETs in parallel, which moto serves very slowly for large objects.
        body = store.client.get_object(Bucket=store.bucket, Key=key)["Body"]
        with path.open("wb") as out:
            for chunk in body.iter_chunks(1024 * 1024):
                out.write(chunk)

    _, download = clock(lambda: [fetch(m.key, t) for m, t in zip(plan.elements, tars, strict=True)])
    parts = [work / f"part{i}" for i in range(len(tars))]

    def extract() -> None:
        for tar, part in zip(tars, parts, strict=True):
            part.mkdir()
            subprocess.run(["tar", "-xf", str(tar), "-C", str(part)], check=True)

    _, untar = clock(extract)
    data = work / "data"
    combine = 0.0
    if len(parts) > 1:
        _, combine = clock(run, [pgbin.program("pg_combinebackup"), "--link", *parts, "-o", data])
    else:
        parts[0].rename(data)
    archive = WalArchive.for_deployment(deployment)
    wal_dir = work / "wal"
    wal_dir.mkdir()
    listing = archive.listing(plan.region)
    _, wal_download = clock(
        lambda: [
            archive.store(plan.region).client.download_file(
                archive.store(plan.region).bucket, archive.key(n), str(wal_dir / n)
            )
            for n in listing
            if n in plan.wal_needed or n.endswith(".history")
        ]
    )
    instance = LocalInstance(
        data, port, "bench_plain", work / "run", work / "postgres.log", os_user=server_os_user()
    )
    for leftover in ("standby.signal", "postmaster.pid"):
        (data / leftover).unlink(missing_ok=True)
    settings = {
        "restore_command": f"cp {wal_dir}/%f %p",
        "recovery_target_action": "pause",
        "recovery_target_time": str(target.time),
    }
    instance.set_role_settings(settings)
    with (data / "postgresql.auto.conf").open("a") as auto:
        auto.write("archive_mode = 'off'\n")
    (data / "recovery.signal").touch()
    data.chmod(0o700)
    hand_over(work, server_os_user())
    source = deployment.postgres("primary")
    endpoint = source.__class__(
        "bench", "127.0.0.1", port, source.user, "postgres", source.password
    )

    def replay() -> None:
        instance.start(timeout=600)
        while db.query_one(endpoint, "SELECT pg_get_wal_replay_pause_state()") != "paused":
            time.sleep(0.1)

    _, replayed = clock(replay)
    instance.stop(mode="immediate")
    shutil.rmtree(work)
    return {
        "download": download,
        "extract": untar,
        "combine": combine,
        "wal download": wal_download,
        "replay": replayed,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=20)
    parser.add_argument("--change-mb", type=int, default=50)
    parser.add_argument(
        "--pgbench-scale",
        type=int,
        default=0,
        help="add pgbench tables (scale 1 is about 15 MB) to reach a size",
    )
    args = parser.parse_args()
    with private_sandbox(scale=args.scale) as box:
        deployment = deployment_for(box)
        primary = box.postgres("primary")
        if args.pgbench_scale:
            add_pgbench_tables(primary, args.pgbench_scale)
        size = int(db.query_one(primary, "SELECT sum(pg_database_size(datname)) FROM pg_database"))
        taken, take_seconds = clock(physical.take_base_backup, deployment)
        _, verify_seconds = clock(physical.verify_backup, deployment, taken.file)
        replicated, replicate_seconds = clock(physical.replicate_backup, deployment, taken.file)
        base = physical.summary(replicated)
        print(
            f"base backup: take {take_seconds:.1f} s, verify {verify_seconds:.1f} s,"
            f" replicate {replicate_seconds:.1f} s",
            flush=True,
        )
        base_seconds = take_seconds + verify_seconds + replicate_seconds
        with db.connect(primary) as conn:
            conn.execute(
                "CREATE TABLE churn AS SELECT g AS id, repeat(md5(g::text), 30) AS pad"
                " FROM generate_series(1, %s) AS g",
                (args.change_mb * 1000,),
            )
        inc, inc_seconds = clock(physical.backup_and_verify, deployment, "incremental")
        Ticker.prepare(primary)
        ticker = Ticker(primary).start()
        time.sleep(2)
        ticker.stop()
        time.sleep(1.2)
        switch_and_wait_archived(primary)
        when = ticker.pause_between(len(ticker.ticks) // 2)
        folder = Path(tempfile.mkdtemp(prefix="dr-bench-pitr-", dir="/tmp")) / "data"
        result, total = clock(
            restore_to_point_in_time, deployment, target_dir=folder, target_time=when
        )
        stop_restored(result)
        plain = plain_steps(deployment, Target(time=when), result["port"] + 1)
    print(f"database size                 {size / 1e6:10.1f} MB")
    print(
        f"base backup                   {base['size_bytes'] / 1e6:10.1f} MB in {base_seconds:.1f} s"
        " (take + verify + replicate)"
    )
    print(
        f"incremental after {args.change_mb} MB     {inc['size_bytes'] / 1e6:10.1f} MB"
        f" in {inc_seconds:.1f} s"
        f"  = {inc['size_bytes'] / base['size_bytes']:.0%} of the base"
    )
    print(f"PITR restore, total           {total:10.2f} s  {result['timings']}")
    plain_total = sum(plain.values())
    print(
        f"plain steps, total            {plain_total:10.2f} s  "
        + ", ".join(f"{k} {v:.2f}" for k, v in plain.items())
    )
    print(f"restore / plain steps         {total / plain_total:10.2f}")


if __name__ == "__main__":
    main()
