"""Benchmark of the logical backup pipeline, measured side by side in one run.

    PYTHONPATH=include python bench/logical_backup.py --scale 50 --small-scale 10

On a private sandbox (its own PostgreSQL pair and moto server), at two database sizes:

- ``pg_dump -Fc --no-sync -f /dev/null`` alone, with the configured compression;
- our dump -> S3 pipeline (row counts in the exported snapshot + pg_dump streamed through SHA-256
  into a multipart upload), same compression;
- the naive two-step baseline: pg_dump to a local file, then boto3 ``upload_file``;
- our verification pass (``pg_restore -l`` + full read, hashing) vs a plain download;
- the pipeline's peak RSS (a separate process, so pg_dump's memory is not counted);
- a compression table: gzip levels 0/1/6 (and zstd when the build has it): time and size.

Prints a JSON document and a Markdown table; nothing is asserted (numbers, not tests).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from disaster_recovery import db, pgbin
from disaster_recovery.endpoints import Deployment
from disaster_recovery.logical import Stores, check_readable
from disaster_recovery.sandbox import Sandbox, SandboxPorts
from disaster_recovery.sandbox.sample_data import load_sample_data

PIPELINE_CHILD = """
import json, resource, sys, time
from datetime import datetime, timezone
from disaster_recovery.config import load_settings
from disaster_recovery.endpoints import Deployment
from disaster_recovery.logical import dump_to_s3
started = time.monotonic()
dumped = dump_to_s3(Deployment(load_settings()), "postgresql_full", datetime.now(timezone.utc))
print(json.dumps({"seconds": time.monotonic() - started, "file": dumped["file"],
                  "key": dumped["key"],
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
    stores.primary.client.upload_file(
        str(archive), stores.primary.bucket, "bench/two_step.dump", Config=stores.primary.transfer
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


def measure(box: Sandbox, compression: str, folder: Path, env: dict[str, str]) -> dict[str, Any]:
    deployment = Deployment(box.settings())
    stores = Stores.of(deployment)
    result: dict[str, Any] = {
        "database_mb": round(database_size_mb(box), 1),
        "compression": compression,
    }
    result["pg_dump_alone_s"] = round(pg_dump_devnull(box, compression), 2)
    piped = pipeline(box, env)
    result["pipeline_s"] = round(piped["seconds"], 2)
    result["pipeline_peak_rss_mb"] = round(piped["peak_rss_mb"], 1)
    result["two_step_s"] = round(two_step(box, stores, compression, folder), 2)
    result["download_s"] = round(timed(lambda: stores.primary.digest(piped["key"]))[0], 2)
    result["verify_s"] = round(
        timed(lambda: check_readable(deployment, "postgresql_full", piped["file"]))[0], 2
    )
    head = stores.primary.head(piped["key"]) or {}
    result["dump_mb"] = round(int(head.get("ContentLength", 0)) / 1e6, 1)
    result["pipeline_vs_pg_dump"] = round(result["pipeline_s"] / result["pg_dump_alone_s"], 2)
    result["pipeline_vs_two_step"] = round(result["pipeline_s"] / result["two_step_s"], 2)
    result["verify_vs_download"] = round(result["verify_s"] / result["download_s"], 2)
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
    parser.add_argument("--scale", type=float, default=50, help="large size (50 is about 1 GB)")
    parser.add_argument(
        "--small-scale", type=float, default=10, help="small size, for the RSS comparison"
    )
    parser.add_argument(
        "--compression", default=None, help="default: backup.compression of the config"
    )
    parser.add_argument("--keep", action="store_true", help="leave the sandbox running")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="dr-bench-", dir="/tmp"))
    root.chmod(0o755)
    box = Sandbox(root / "sandbox", SandboxPorts.free(), scale=args.small_scale)
    folder = root / "work"
    folder.mkdir()
    report: dict[str, Any] = {"sizes": []}
    try:
        print(f"starting a sandbox at scale {args.small_scale} in {root}", file=sys.stderr)
        box.up()
        env = {**os.environ, **box.environment()}
        compression = args.compression or box.settings().backup.compression
        os.environ.update(box.environment())
        report["sizes"].append(measure(box, compression, folder, env))
        print(json.dumps(report["sizes"][-1]), file=sys.stderr)
        print(f"growing the database to scale {args.scale}", file=sys.stderr)
        started = time.monotonic()
        load_sample_data(box.postgres("primary"), args.scale)
        print(f"loaded in {time.monotonic() - started:.0f} s", file=sys.stderr)
        report["sizes"].append(measure(box, compression, folder, env))
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
        "\n| database | dump | pg_dump alone | pipeline | two-step | pipeline/pg_dump "
        "| pipeline/two-step "
        "| download | verify | verify/download | pipeline peak RSS |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for s in report["sizes"]:
        print(
            f"| {s['database_mb']} MB | {s['dump_mb']} MB | {s['pg_dump_alone_s']} s "
            f"| {s['pipeline_s']} s "
            f"| {s['two_step_s']} s | {s['pipeline_vs_pg_dump']} | {s['pipeline_vs_two_step']} "
            f"| {s['download_s']} s | {s['verify_s']} s | {s['verify_vs_download']} "
            f"| {s['pipeline_peak_rss_mb']} MB |"
        )
    print("\n| compression | time | size | MB/s out |")
    print("|---|---|---|---|")
    for row in report["compression"]:
        print(f"| {row['compression']} | {row['seconds']} s | {row['mb']} MB | {row['mb_per_s']} |")


if __name__ == "__main__":
    main()
