"""Benchmark of the logical backup pipeline, measured side by side in one run.

    PYTHONPATH=include python bench/logical_backup.py --scales 10 50 90 --repeat 3

On a private sandbox (its own PostgreSQL pair and moto server), at several database sizes:

- ``pg_dump -Fc --no-sync -f /dev/null`` alone, with the configured compression;
- our dump -> S3 pipeline (row counts in the exported snapshot + pg_dump streamed through SHA-256
  into a multipart upload), same compression, with the time S3 spent assembling the object
  after the last byte (CompleteMultipartUpload: moto copies every part in Python, on our cores);
- the naive two-step baseline: pg_dump to a local file, then boto3 ``upload_file``;
- our verification pass (``pg_restore -l`` + full read, hashing) vs a plain download;
- the pipeline's peak RSS (a separate process, so pg_dump's memory is not counted);
- a compression table: gzip levels 0/1/6 (and zstd when the build has it): time and size.

Each contender runs ``--repeat`` times, interleaved; medians are reported.
Prints a JSON document and a Markdown table; nothing is asserted (numbers, not tests).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from disaster_recovery.backup.stores import Stores
from disaster_recovery.backup.verify import check_readable
from disaster_recovery.config.endpoints import Deployment, PostgresEndpoint
from disaster_recovery.postgres import db, pgbin
from dr_sandbox import Sandbox, SandboxPorts
from dr_sandbox.sample_data import load_sample_data

PIPELINE_CHILD = """
import json, resource, sys, time
from datetime import datetime, timezone
from botocore.client import BaseClient
from disaster_recovery.config import load_settings
from disaster_recovery.config.endpoints import Deployment, PostgresEndpoint
from disaster_recovery.logical import dump_to_s3

# Time S3's CompleteMultipartUpload: after the last byte, the server assembles the object (moto
# copies every part in Python; real S3 does it on its own hardware).
assembly = [0.0]
make_api_call = BaseClient._make_api_call
def timed_call(self, operation, params):
    started = time.monotonic()
    try:
        return make_api_call(self, operation, params)
    finally:
        if operation == "CompleteMultipartUpload":
            assembly[0] += time.monotonic() - started
BaseClient._make_api_call = timed_call

started = time.monotonic()
dumped = dump_to_s3(Deployment(load_settings()), "postgresql_full", datetime.now(timezone.utc))
print(json.dumps({"seconds": time.monotonic() - started, "file": dumped["file"],
                  "key": dumped["key"], "s3_assembly_seconds": assembly[0],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def timed(fn: Any) -> tuple[float, Any]:
    started = time.monotonic()
    result = fn()
    return time.monotonic() - started, result


def database_size_mb(box: Sandbox) -> float:
    return float(db.query_one(box.postgres("primary"), "SELECT pg_database_size('litper')")) / 1e6


def pg_dump_alone(box: Sandbox, compression: str) -> tuple[float, int]:
    """pg_dump to stdout, bytes counted and thrown away (== -f /dev/null, plus the size)."""
    env = {**os.environ, **box.postgres("primary").libpq_env(), "LANG": "C"}
    started = time.monotonic()
    proc = subprocess.Popen(
        [
            pgbin.program("pg_dump"),
            "-Fc",
            "--no-sync",
            f"--compress={compression}",
            "--no-password",
        ],
        stdout=subprocess.PIPE,
        env=env,
    )
    size = 0
    assert proc.stdout is not None
    for chunk in iter(lambda: proc.stdout.read(1 << 20), b""):  # type: ignore[union-attr]
        size += len(chunk)
    if proc.wait() != 0:
        raise RuntimeError(f"pg_dump --compress={compression} failed")
    return time.monotonic() - started, size


def pg_dump_devnull(box: Sandbox, compression: str) -> float:
    env = {**os.environ, **box.postgres("primary").libpq_env(), "LANG": "C"}
    started = time.monotonic()
    subprocess.run(
        [
            pgbin.program("pg_dump"),
            "-Fc",
            "--no-sync",
            f"--compress={compression}",
            "--no-password",
            "-f",
            "/dev/null",
        ],
        env=env,
        check=True,
    )
    return time.monotonic() - started


def pipeline(box: Sandbox, env: dict[str, str]) -> dict[str, Any]:
    child = subprocess.run(
        [sys.executable, "-c", PIPELINE_CHILD], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(child.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def two_step(box: Sandbox, stores: Stores, compression: str, folder: Path) -> float:
    env = {**os.environ, **box.postgres("primary").libpq_env(), "LANG": "C"}
    archive = folder / "two_step.dump"
    started = time.monotonic()
    subprocess.run(
        [
            pgbin.program("pg_dump"),
            "-Fc",
            f"--compress={compression}",
            "--no-password",
            "-f",
            str(archive),
        ],
        env=env,
        check=True,
    )
    # A client of its own, built inside the timing as the pipeline's child builds its own.
    store = Stores.of(Deployment(box.settings())).primary
    store.client.upload_file(
        str(archive), store.bucket, "bench/two_step.dump", Config=store.transfer
    )
    seconds = time.monotonic() - started
    archive.unlink()
    stores.primary.delete(["bench/two_step.dump"])
    return seconds


def zstd_supported(box: Sandbox) -> bool:
    env = {**os.environ, **box.postgres("primary").libpq_env(), "LANG": "C"}
    probe = subprocess.run(
        [
            pgbin.program("pg_dump"),
            "-Fc",
            "--compress=zstd:1",
            "--schema-only",
            "--no-password",
            "-f",
            "/dev/null",
            "--no-sync",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    return probe.returncode == 0


def settle(box: Sandbox, compression: str) -> None:
    """Let the sandbox come to rest before timing. After a bulk load the WAL archiver pushes
    hundreds of segments (``dr wal push``, both regions) for minutes, and autovacuum sets hint
    bits: both ate the CPU of the first runs (pg_dump alone took 6.0 s twice, then 4.3 s).
    Vacuum, checkpoint, wait for the archive to catch up, then warm the caches with one dump."""
    endpoint = box.postgres("primary")
    with db.connect(endpoint, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
        conn.execute("CHECKPOINT")
        conn.execute("SELECT pg_switch_wal()")
    deadline = time.monotonic() + 900
    while (ready := archive_backlog(endpoint)) and time.monotonic() < deadline:
        print(f"waiting for the WAL archiver: {ready} segments to go", file=sys.stderr)
        time.sleep(5)
    pg_dump_devnull(box, compression)


def archive_backlog(endpoint: PostgresEndpoint) -> int:
    """WAL files PostgreSQL has yet to archive (``.ready`` in ``pg_wal/archive_status``)."""
    return int(
        db.query_one(
            endpoint, "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%%.ready'"
        )
    )


def measure(
    box: Sandbox, compression: str, folder: Path, env: dict[str, str], repeat: int
) -> dict[str, Any]:
    """Each contender ``repeat`` times, interleaved so drift hits all alike; medians reported."""
    settle(box, compression)
    deployment = Deployment(box.settings())
    stores = Stores.of(deployment)
    alone, piped, two = [], [], []
    for _ in range(repeat):
        alone.append(pg_dump_devnull(box, compression))
        piped.append(pipeline(box, env))
        two.append(two_step(box, stores, compression, folder))
    last = piped[-1]
    pipeline_s = statistics.median(p["seconds"] for p in piped)
    assembly_s = statistics.median(p["s3_assembly_seconds"] for p in piped)
    alone_s = statistics.median(alone)
    two_step_s = statistics.median(two)
    download_s = timed(lambda: stores.primary.digest(last["key"]))[0]
    verify_s = timed(lambda: check_readable(deployment, "postgresql_full", last["file"]))[0]
    head = stores.primary.head(last["key"]) or {}
    result = {
        "database_mb": round(database_size_mb(box), 1),
        "compression": compression,
        "runs": repeat,
        "dump_mb": round(int(head.get("ContentLength", 0)) / 1e6, 1),
        "pg_dump_alone_s": round(alone_s, 2),
        "pipeline_s": round(pipeline_s, 2),
        "s3_assembly_s": round(assembly_s, 2),
        "two_step_s": round(two_step_s, 2),
        "pipeline_peak_rss_mb": round(max(p["peak_rss_mb"] for p in piped), 1),
        "download_s": round(download_s, 2),
        "verify_s": round(verify_s, 2),
        "pipeline_vs_pg_dump": round(pipeline_s / alone_s, 2),
        "pipeline_without_s3_assembly_vs_pg_dump": round((pipeline_s - assembly_s) / alone_s, 2),
        "pipeline_vs_two_step": round(pipeline_s / two_step_s, 2),
        "verify_vs_download": round(verify_s / download_s, 2),
        "all_runs_s": {
            "pg_dump_alone": [round(x, 2) for x in alone],
            "pipeline": [round(p["seconds"], 2) for p in piped],
            "two_step": [round(x, 2) for x in two],
        },
    }
    # Keep moto's memory in check between sizes.
    stores.primary.delete([k["Key"] for k in stores.primary.list_keys("litper/")])
    return result


def compression_table(box: Sandbox) -> list[dict[str, Any]]:
    methods = ["none", "gzip:1", "gzip:6"]
    if zstd_supported(box):
        methods += ["zstd:1", "zstd:3"]
    rows = []
    for method in methods:
        seconds, size = pg_dump_alone(box, method)
        rows.append(
            {
                "compression": method,
                "seconds": round(seconds, 2),
                "mb": round(size / 1e6, 1),
                "mb_per_s": round(size / 1e6 / seconds, 1),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scales",
        type=float,
        nargs="+",
        default=[10, 50, 90],
        help="database sizes, ascending (10 ~ 130 MB, 50 ~ 620 MB, 90 ~ 1.1 GB); the RSS is "
        "flat only once the dump fills the upload buffers (5 parts of 16 MiB)",
    )
    parser.add_argument(
        "--compression", default=None, help="default: backup.compression of the config"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of each contender (median)")
    parser.add_argument("--keep", action="store_true", help="leave the sandbox running")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="dr-bench-", dir="/tmp"))
    root.chmod(0o755)
    box = Sandbox(root / "sandbox", SandboxPorts.free(), scale=args.scales[0])
    folder = root / "work"
    folder.mkdir()
    report: dict[str, Any] = {"sizes": []}
    try:
        print(f"starting a sandbox at scale {args.scales[0]} in {root}", file=sys.stderr)
        box.up()
        env = {**os.environ, **box.environment()}
        compression = args.compression or box.settings().backup.compression
        os.environ.update(box.environment())
        for number, scale in enumerate(args.scales):
            if number:
                print(f"growing the database to scale {scale}", file=sys.stderr)
                started = time.monotonic()
                load_sample_data(box.postgres("primary"), scale)
                print(f"loaded in {time.monotonic() - started:.0f} s", file=sys.stderr)
            report["sizes"].append(measure(box, compression, folder, env, args.repeat))
            print(json.dumps(report["sizes"][-1]), file=sys.stderr)
        report["compression"] = compression_table(box)
        report["zstd_available"] = any(
            r["compression"].startswith("zstd") for r in report["compression"]
        )
    finally:
        if not args.keep:
            box.down(purge=True)
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(report, indent=2))
    print_markdown(report)


def print_markdown(report: dict[str, Any]) -> None:
    print(
        "\n| database | dump | pg_dump alone | pipeline (of which S3 assembly) | two-step "
        "| pipeline/pg_dump | same, less S3 assembly | pipeline/two-step "
        "| download | verify | verify/download | pipeline peak RSS |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for s in report["sizes"]:
        print(
            f"| {s['database_mb']} MB | {s['dump_mb']} MB | {s['pg_dump_alone_s']} s "
            f"| {s['pipeline_s']} s ({s['s3_assembly_s']} s) | {s['two_step_s']} s "
            f"| {s['pipeline_vs_pg_dump']} | {s['pipeline_without_s3_assembly_vs_pg_dump']} "
            f"| {s['pipeline_vs_two_step']} "
            f"| {s['download_s']} s | {s['verify_s']} s | {s['verify_vs_download']} "
            f"| {s['pipeline_peak_rss_mb']} MB |"
        )
    print("\n| compression | time | size | MB/s out |")
    print("|---|---|---|---|")
    for row in report["compression"]:
        print(f"| {row['compression']} | {row['seconds']} s | {row['mb']} MB | {row['mb_per_s']} |")


if __name__ == "__main__":
    main()
