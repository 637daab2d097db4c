"""Benchmark: point-in-time restore vs the plain steps it is made of, measured separately in
the same run, and the size of an incremental relative to its base after N MB of changes.

Restore (``restore_to_point_in_time``): stream-download + extract, ``pg_combinebackup --link``,
start with ``dr wal fetch`` as restore_command, replay to the target, check, promote.
Plain steps: boto3 ``download_file`` of each tar, ``tar -xf``, ``pg_combinebackup --link``,
WAL segments downloaded beforehand and replayed with ``restore_command = 'cp ...'``.

Replay side by side: ``--replay-mb`` of WAL written after the incremental is replayed from
one combined data directory with each restore_command in turn: ``cp`` from a local folder
(the floor), ``dr wal fetch`` with ``pitr.prefetch`` 0 and 4, and, with ``--barman V`` (a
virtualenv with ``barman[cloud]``), the same WAL archived by barman-cloud-wal-archive and
fetched by ``barman-cloud-wal-restore -p 0`` and ``-p 4``.

Usage: PYTHONPATH=include python bench/pitr.py [--scale 20] [--change-mb 50] [--replay-mb 512]
       [--barman /path/to/venv]
(scale 1 is about 10 MB of sample data; add --pgbench-scale 60 for about 1 GB)
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import yaml
from helpers import private_sandbox
from pitr_support import (
    Ticker,
    add_pgbench_tables,
    deployment_for,
    stop_restored,
    switch_and_wait_archived,
)

from disaster_recovery.backup import physical
from disaster_recovery.catalog.report import backup_report
from disaster_recovery.clients.runner import run
from disaster_recovery.postgres import db, pgbin
from disaster_recovery.postgres.instance import LocalInstance, hand_over
from disaster_recovery.restore.pitr import Target, plan_restore, restore_to_point_in_time
from disaster_recovery.wal.archive import WalArchive
from disaster_recovery.wal.host import archiver_command, load_env_file
from dr_sandbox import archiver_install, server_os_user
from dr_sandbox.processes import free_port_block


def clock(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - started


def prepare_plain(deployment: Any, target: Target) -> tuple[Path, dict[str, float]]:
    """The chain downloaded, extracted and combined by hand, and the WAL it needs downloaded
    (decompressed) into ``<work>/wal``: ``<work>/data`` is a data directory ready to replay."""
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
            part.mkdir()  # GNU tar recognises gzip and zstd by their magic bytes
            subprocess.run(["tar", "-xf", str(tar), "-C", str(part)], check=True)

    _, untar = clock(extract)
    data = work / "data"
    combine = 0.0
    if len(parts) > 1:
        _, combine = clock(run, [pgbin.program("pg_combinebackup"), "--link", *parts, "-o", data])
    else:
        parts[0].rename(data)
    for leftover in ("standby.signal", "postmaster.pid"):
        (data / leftover).unlink(missing_ok=True)
    archive = WalArchive.for_deployment(deployment)
    wal_dir = work / "wal"
    wal_dir.mkdir()
    needed = [
        n for n in archive.listing(plan.region) if n in plan.wal_needed or n.endswith(".history")
    ]
    _, wal_download = clock(
        lambda: [(wal_dir / n).write_bytes(archive._read_verified(plan.region, n)) for n in needed]
    )
    return work, {
        "download": download,
        "extract": untar,
        "combine": combine,
        "wal download": wal_download,
    }


def replay(
    deployment: Any, work: Path, target: Target, port: int, *, restore_command: str, label: str
) -> float:
    """Seconds from start to paused at ``target`` for a fresh copy of ``<work>/data`` replaying
    with ``restore_command``."""
    data = work / f"data-{label}"
    subprocess.run(["cp", "-a", str(work / "data"), str(data)], check=True)
    instance = LocalInstance(
        data, port, f"bench_{label}", work / f"run-{label}", work / f"{label}.log",
        os_user=server_os_user(),
    )  # fmt: skip
    instance.set_role_settings(
        {
            "restore_command": restore_command,
            "recovery_target_action": "pause",
            "recovery_target_time": str(target.time),
        }
    )
    with (data / "postgresql.auto.conf").open("a") as auto:
        auto.write("archive_mode = 'off'\n")
    (data / "recovery.signal").touch()
    data.chmod(0o700)
    hand_over(work, server_os_user())
    source = deployment.postgres("primary")
    endpoint = source.__class__(
        "bench", "127.0.0.1", port, source.user, "postgres", source.password
    )

    def until_paused() -> None:
        instance.start(timeout=600)
        while db.query_one(endpoint, "SELECT pg_get_wal_replay_pause_state()") != "paused":
            time.sleep(0.1)

    _, seconds = clock(until_paused)
    instance.stop(mode="immediate")
    shutil.rmtree(data)
    return seconds


def our_restore_command(box: Any, work: Path, prefetch: int) -> str:
    """``dr wal fetch`` as the sandbox's PostgreSQL runs it (the archiver install), with
    ``pitr.prefetch`` set to ``prefetch`` in a copy of its policy file."""
    env = load_env_file(box.root / "wal" / "wal.env")
    policy = yaml.safe_load(Path(env["DR_CONFIG"]).read_text())
    policy.setdefault("pitr", {})["prefetch"] = prefetch
    config = work / f"wal_config_p{prefetch}.yaml"
    config.write_text(yaml.safe_dump(policy))
    env_file = work / f"wal_p{prefetch}.env"
    env_file.write_text(
        "".join(
            f"export {k}={shlex.quote(v)}\n" for k, v in {**env, "DR_CONFIG": str(config)}.items()
        )
    )
    return archiver_command(
        "fetch", env_file, server_os_user(), python=str(archiver_install.archiver_python())
    )


def barman_restore_command(deployment: Any, work: Path, venv: Path, parallel: int) -> str:
    """The same WAL archived with barman-cloud-wal-archive (untimed), and the
    barman-cloud-wal-restore ``-p parallel`` restore_command reading it back."""
    region = deployment.settings.regions.primary
    aws = deployment.aws(region)
    url = f"s3://{deployment.settings.bucket(region)}/barman-pitr-{os.getpid()}"
    creds = {
        "AWS_ACCESS_KEY_ID": aws.access_key,
        "AWS_SECRET_ACCESS_KEY": aws.secret_key,
        "AWS_DEFAULT_REGION": aws.region,
    }
    endpoint = ["--endpoint-url", str(aws.endpoint_url)]
    for wal in sorted((work / "wal").iterdir()):
        subprocess.run(
            [str(venv / "bin" / "barman-cloud-wal-archive"), *endpoint, url, "pitr", str(wal)],
            check=True,
            env={**os.environ, **creds},
            capture_output=True,
        )
    spool = work / f"barman-spool-{parallel}"
    spool.mkdir()
    passed = " ".join(f"{k}={shlex.quote(v)}" for k, v in creds.items())
    return (
        f"env {passed} {venv}/bin/barman-cloud-wal-restore {' '.join(endpoint)} -p {parallel}"
        f" --spool-dir {spool} {url} pitr %f %p"
    )


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
    parser.add_argument(
        "--replay-mb", type=int, default=512, help="WAL written after the incremental, replayed"
    )
    parser.add_argument("--barman", type=Path, help="a virtualenv with barman[cloud]")
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
        base = backup_report(replicated)
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
        with db.connect(primary) as conn:  # the WAL every restore below replays
            start_lsn = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
            conn.execute(
                "CREATE TABLE replayed AS SELECT g AS id, repeat(md5(g::text), 12) AS pad"
                " FROM generate_series(1, %s) AS g",
                (args.replay_mb * 2000,),
            )
            row = conn.execute("SELECT pg_current_wal_lsn() - %s::pg_lsn", (start_lsn,)).fetchone()
            wal_mb = float(row[0]) / 1e6 if row else 0.0
        Ticker.prepare(primary)
        ticker = Ticker(primary).start()
        time.sleep(2)
        ticker.stop()
        time.sleep(1.2)
        switch_and_wait_archived(primary, timeout=600)
        when = ticker.pause_between(len(ticker.ticks) // 2)
        folder = Path(tempfile.mkdtemp(prefix="dr-bench-pitr-", dir="/tmp")) / "data"
        result, total = clock(
            restore_to_point_in_time, deployment, target_dir=folder, target_time=when
        )
        stop_restored(result)
        target = Target(time=when)
        work, plain = prepare_plain(deployment, target)
        port = free_port_block(1)
        replays = {"cp from a local folder (WAL downloaded beforehand)": f"cp {work}/wal/%f %p"}
        for prefetch in (0, 4):
            replays[f"dr wal fetch, pitr.prefetch {prefetch}"] = our_restore_command(
                box, work, prefetch
            )
        if args.barman:
            for parallel in (0, 4):
                replays[f"barman-cloud-wal-restore -p {parallel}"] = barman_restore_command(
                    deployment, work, args.barman, parallel
                )
        seconds = {}
        for n, (label, command) in enumerate(replays.items()):
            seconds[label] = replay(
                deployment, work, target, port, restore_command=command, label=f"r{n}"
            )
            print(f"replay, {label}: {seconds[label]:.2f} s", flush=True)
        shutil.rmtree(work)
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
    plain_total = sum(plain.values()) + seconds[next(iter(seconds))]
    print(
        f"plain steps, total            {plain_total:10.2f} s  "
        + ", ".join(f"{k} {v:.2f}" for k, v in plain.items())
    )
    print(f"restore / plain steps         {total / plain_total:10.2f}")
    print(f"replay of {wal_mb:.0f} MB of WAL to the target, from the same combined data directory:")
    reference = seconds.get("barman-cloud-wal-restore -p 4")
    for label, value in seconds.items():
        ratio = f"  {value / reference:5.2f}x barman -p 4" if reference else ""
        print(f"  {label:<52} {value:7.2f} s{ratio}")


if __name__ == "__main__":
    main()
