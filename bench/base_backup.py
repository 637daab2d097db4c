"""Benchmark: `dr backup base` per codec (``pitr.compression``) -- time, stored bytes, CPU --
and the replica copy before and after issue 15, beside ``barman-cloud-backup`` when a barman
virtualenv is given (install it apart from the project's: ``python3 -m venv V &&
V/bin/pip install "barman[cloud,snappy]"``).

Per codec: take (pg_basebackup -> codec -> S3), verify (download, SHA-256, pg_verifybackup),
replicate (to the other region's moto server: a stream copy hashed on the way), one by one;
then ``dr backup base`` whole (``backup_and_verify``: the copy to the other region overlaps
the verification). CPU is the whole's: this process plus its finished children
(pg_basebackup, pg_verifybackup), not the moto servers.

Replica copy of the uncompressed base backup, old way vs new, on one endpoint (a second bucket
behind us-east-1's moto: server-side copy possible) and across endpoints (us-west-2's moto):
old = boto3's managed copy (UploadPartCopy of 16 MiB parts) or a stream copy, then a download
to check the SHA-256; new = :func:`copy_to_region` (one CopyObject, or the stream hashed once,
proven by S3's checksum).

Usage: PYTHONPATH=include python bench/base_backup.py [--scale 20] [--pgbench-scale 25]
       [--codecs none gzip:1 zstd:1 zstd:3] [--barman /path/to/venv]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers import private_sandbox
from pitr_support import add_pgbench_tables, deployment_for, with_codec

from disaster_recovery.backup import physical
from disaster_recovery.backup.replicate import copy_to_region
from disaster_recovery.catalog.manifests import ChainManifest
from disaster_recovery.clients.s3 import ObjectStore
from disaster_recovery.config.endpoints import Deployment
from disaster_recovery.postgres import db
from dr_sandbox import server_os_user


def cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measured(fn: Any, *args: Any) -> tuple[Any, float, float]:
    """(value, wall seconds, CPU seconds)."""
    wall, used = time.perf_counter(), cpu()
    value = fn(*args)
    return value, time.perf_counter() - wall, cpu() - used


def codec_row(deployment: Deployment, codec: str) -> dict[str, Any]:
    deployment = with_codec(deployment, codec)
    taken, take_s, take_cpu = measured(physical.take_base_backup, deployment)
    _, verify_s, _ = measured(physical.verify_backup, deployment, taken.file)
    _, replicate_s, _ = measured(physical.replicate_backup, deployment, taken.file)
    # `dr backup base` itself: the same steps, the copy to the other region overlapping the
    # verification (a second base backup of the same cluster).
    _, whole_s, whole_cpu = measured(physical.backup_and_verify, deployment, "base")
    return {
        "codec": codec,
        "manifest": taken,
        "take": take_s,
        "take_cpu": take_cpu,
        "verify": verify_s,
        "replicate": replicate_s,
        "steps": take_s + verify_s + replicate_s,
        "whole": whole_s,
        "cpu": whole_cpu,
        "bytes": taken.size_bytes,
        "ratio": taken.size_bytes / (taken.uncompressed_bytes or taken.size_bytes),
    }


def old_same_endpoint(source: ObjectStore, target: ObjectStore, key: str) -> None:
    """Before: boto3's managed copy (UploadPartCopy above 16 MiB), then a download to hash."""
    target.client.copy(
        CopySource={"Bucket": source.bucket, "Key": key},
        Bucket=target.bucket,
        Key=key,
        ExtraArgs=target.encryption.write_args(),
        Config=target.transfer,
        SourceClient=source.client,
    )
    target.digest(key)


def old_across(source: ObjectStore, target: ObjectStore, key: str) -> None:
    """Before: the bytes streamed through this process, then downloaded again to hash."""
    target.copy_from(source, key)
    target.digest(key)


def replica_rows(deployment: Deployment, manifest: ChainManifest) -> list[tuple[str, float, float]]:
    settings = deployment.settings
    source = physical.Chain(deployment, settings.regions.primary).store
    same = ObjectStore(
        source.endpoint, f"bench-replica-{uuid.uuid4().hex[:8]}", encryption=source.encryption
    )
    same.ensure_bucket()
    across = physical.Chain(deployment, settings.regions.secondary).store
    rows = []
    for label, target, old in (
        ("one endpoint (server-side)", same, old_same_endpoint),
        ("across endpoints (stream)", across, old_across),
    ):
        target.delete([manifest.key])
        _, before, _ = measured(old, source, target, manifest.key)
        target.delete([manifest.key])
        result, after, _ = measured(copy_to_region, source, target, manifest, settings)
        rows.append((f"{label}, proof: {result['proof']}", before, after))
    return rows


def barman_rows(deployment: Deployment, venv: Path, codecs: list[str]) -> list[dict[str, Any]]:
    """barman-cloud-backup of the same cluster into us-east-1's bucket, as the data's owner."""
    aws = deployment.aws(deployment.settings.regions.primary)
    pg = deployment.postgres("primary")
    bucket = deployment.settings.bucket(deployment.settings.regions.primary)
    env = {
        **os.environ,
        **pg.libpq_env("postgres"),
        "AWS_ACCESS_KEY_ID": aws.access_key,
        "AWS_SECRET_ACCESS_KEY": aws.secret_key,
        "AWS_DEFAULT_REGION": aws.region,
    }
    user = server_os_user()
    rows = []
    for codec in codecs:
        flags = [] if codec == "none" else [f"--{codec}"]
        args = [
            str(venv / "bin" / "barman-cloud-backup"),
            "--endpoint-url",
            str(aws.endpoint_url),
            "--immediate-checkpoint",
            *flags,
            f"s3://{bucket}/barman-bench",
            f"bench-{uuid.uuid4().hex[:6]}",
        ]
        if user:  # it reads the data directory itself: as its owner
            passed = [f"{k}={v}" for k, v in env.items() if k.startswith(("PG", "AWS_"))]
            args = ["runuser", "-u", user, "--", "env", *passed, *args]
        wall, used = time.perf_counter(), cpu()
        done = subprocess.run(
            args, check=False, env=env, capture_output=True, text=True, cwd="/tmp"
        )
        if done.returncode != 0:
            raise SystemExit(f"barman-cloud-backup failed: {done.stderr[-2000:]}")
        rows.append(
            {
                "flags": " ".join(flags) or "(uncompressed)",
                "seconds": time.perf_counter() - wall,
                "cpu": cpu() - used,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=20)
    parser.add_argument("--pgbench-scale", type=int, default=25)
    parser.add_argument("--codecs", nargs="+", default=["none", "gzip:1", "zstd:1", "zstd:3"])
    parser.add_argument("--barman", type=Path, help="a virtualenv with barman[cloud,snappy]")
    parser.add_argument("--barman-codecs", nargs="+", default=["none", "snappy", "gzip"])
    args = parser.parse_args()
    with private_sandbox(scale=args.scale) as box:
        deployment = deployment_for(box)
        primary = box.postgres("primary")
        if args.pgbench_scale:
            add_pgbench_tables(primary, args.pgbench_scale)
        size = int(db.query_one(primary, "SELECT sum(pg_database_size(datname)) FROM pg_database"))
        # The load's checkpoint now, not inside the first codec's backup.
        with db.connect(primary) as conn:
            conn.execute("CHECKPOINT")
        print(f"cluster {size / 1e6:.0f} MB; load average {os.getloadavg()[0]:.1f}", flush=True)
        rows = []
        for codec in args.codecs:
            rows.append(codec_row(deployment, codec))
            row = rows[-1]
            print(
                f"{codec:8} whole {row['whole']:6.1f} s; one by one {row['steps']:5.1f} s (take "
                f"{row['take']:5.1f}, verify {row['verify']:5.1f}, replicate "
                f"{row['replicate']:5.1f}) "
                f"{row['bytes'] / 1e6:7.1f} MB ({row['ratio']:.0%}) CPU {row['cpu']:5.1f} s "
                f"(take {row['take_cpu']:.1f}); load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
        plain = next((r for r in rows if r["codec"] == "none"), rows[0])
        for label, before, after in replica_rows(deployment, plain["manifest"]):
            print(f"replica copy {label}: before {before:.2f} s, after {after:.2f} s", flush=True)
        if args.barman:
            for row in barman_rows(deployment, args.barman, args.barman_codecs):
                print(
                    f"barman-cloud-backup {row['flags']:15} {row['seconds']:6.1f} s "
                    f"CPU {row['cpu']:.1f} s",
                    flush=True,
                )


if __name__ == "__main__":
    main()
