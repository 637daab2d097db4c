"""Benchmark: protection through the loss of a region, side by side in one run.

1. WAL archiving with both regions' S3 up vs with one region lost: a burst of WAL (segments/s
   until all archived) and pgbench (WAL rate and the ``.ready`` backlog in ``pg_wal``). With a
   region lost, ``dr wal push`` stores each segment in the surviving region and records what
   the lost one is owed; the backlog must stay flat.
2. The time from losing us-east-1 (PostgreSQL, Redis, application and S3 killed at once) to the
   first verified full backup in us-west-2: the failover (accepting the data loss of a dead
   primary), then ``dr backup full`` against the new primary.

Usage: PYTHONPATH=include python bench/region_loss.py [--burst-mb 160] [--pgbench-seconds 20]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers import private_sandbox, sandbox_environment
from wal_archive import burst_throughput, sustained_rate

from disaster_recovery.backup.logical import run_backup
from disaster_recovery.config.endpoints import Deployment
from disaster_recovery.config.model import load_settings
from disaster_recovery.failover.plan import Plan
from disaster_recovery.failover.steps import run_failover

EAST, WEST = "us-east-1", "us-west-2"


def archiving(box: object, role: str, label: str, megabytes: int, seconds: int) -> dict[str, float]:
    burst = burst_throughput(box, megabytes, push_ahead=4, role=role)
    steady = sustained_rate(box, seconds, role=role)
    return {f"{label}: {key}": value for key, value in {**burst, **steady}.items()}


def first_backup_after_losing(box: object, region: str, survivor: str) -> dict[str, float]:
    started = time.perf_counter()
    box.kill_region(region)  # type: ignore[attr-defined]
    plan = Plan(Deployment(load_settings()), region, survivor, accept_data_loss=True)
    result = run_failover(plan, "benchmark: region loss", "bench")
    if result["status"] != "completed":
        raise SystemExit(f"failover did not complete: {result.get('error')}")
    failed_over = time.perf_counter()
    backup = run_backup(Deployment(load_settings()), "postgresql_full")
    if not (backup.verified and backup.bucket == load_settings().bucket(survivor)):
        raise SystemExit(f"the first backup after the loss is not a verified {survivor} one")
    done = time.perf_counter()
    return {
        "region loss -> failover completed (s)": failed_over - started,
        "failover completed -> verified full backup in survivor (s)": done - failed_over,
        "region loss -> first verified backup in survivor (s)": done - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--burst-mb", type=int, default=160)
    parser.add_argument("--pgbench-seconds", type=int, default=20)
    args = parser.parse_args()
    results: dict[str, float] = {}
    with private_sandbox(scale=0.2) as box, sandbox_environment(box):
        results.update(archiving(box, "primary", "both up", args.burst_mb, args.pgbench_seconds))
        results.update(first_backup_after_losing(box, EAST, WEST))
        # The survivor is the primary now, archiving with us-east-1's S3 gone.
        results.update(
            archiving(box, "standby", "us-east-1 lost", args.burst_mb, args.pgbench_seconds)
        )
    both = results["both up: burst, push_ahead=4: segments archived /s"]
    lost = results["us-east-1 lost: burst, push_ahead=4: segments archived /s"]
    results["segments/s, one region lost / both up"] = lost / both
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value:10.3f}")
    print("command:", " ".join(shlex.quote(a) for a in sys.argv))


if __name__ == "__main__":
    main()
