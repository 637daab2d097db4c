"""Failover and failback, end to end, on a private sandbox: seconds per step, median of N rounds.

The approval is answered at once (an approver that says yes), so the numbers are the automated
steps: what the RTO costs beyond the human decision. Each round fails over us-east-1 -> us-west-2
with the primary reachable (fenced, LSNs equal) and fails back (pg_rewind, switchover).

    PYTHONPATH=include .venv/bin/python bench/failover.py [--rounds 5] [--scale 0.2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

TARGET_SECONDS = 30.0  # the target for the automated steps
SEED_EXAMPLE_SECONDS = 847.0  # the seed's example result
RTO_SECONDS = 1800.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scale", type=float, default=0.2)
    args = parser.parse_args()

    from disaster_recovery.config.endpoints import Deployment
    from disaster_recovery.config.model import load_settings
    from disaster_recovery.failover.failback import run_failback
    from disaster_recovery.failover.plan import Plan
    from disaster_recovery.failover.steps import run_failover
    from dr_sandbox import Sandbox, SandboxPorts

    root = Path(tempfile.mkdtemp(prefix="dr-bench-failover-", dir="/tmp"))
    root.chmod(0o755)
    box = Sandbox(root, SandboxPorts.free(), scale=args.scale)
    runs: dict[str, list[dict[str, Any]]] = {"failover": [], "failback": []}
    try:
        box.up()
        os.environ.update(box.environment())
        deployment = Deployment(load_settings())
        for round_number in range(1, args.rounds + 1):
            over = run_failover(
                Plan(deployment, "us-east-1", "us-west-2"),
                "benchmark",
                "bench",
                approve=lambda _evidence, _body: True,
            )
            back = run_failback(
                Plan(deployment, "us-west-2", "us-east-1"),
                "benchmark",
                "bench",
                approve=lambda _evidence, _body: True,
            )
            for kind, result in (("failover", over), ("failback", back)):
                if result["status"] != "completed":
                    print(json.dumps(result, indent=2, default=str), file=sys.stderr)
                    return 1
                runs[kind].append(result)
            print(
                f"round {round_number}: failover {over['total_time_seconds']:.2f} s, "
                f"failback {back['total_time_seconds']:.2f} s",
                file=sys.stderr,
            )
    finally:
        box.down(purge=True)
    for kind, results in runs.items():
        steps = list(results[0]["step_seconds"])
        print(f"\n{kind} (median of {len(results)}, seconds)")
        print("| step | median | min | max |\n|---|---:|---:|---:|")
        for step in steps:
            values = [r["step_seconds"][step] for r in results]
            print(
                f"| {step} | {statistics.median(values):.2f} | {min(values):.2f} "
                f"| {max(values):.2f} |"
            )
        total = statistics.median(r["total_time_seconds"] for r in results)
        print(
            f"| **total** | **{total:.2f}** "
            f"| {min(r['total_time_seconds'] for r in results):.2f} | "
            f"{max(r['total_time_seconds'] for r in results):.2f} |"
        )
        print(
            f"{kind}: {total:.2f} s = {total / TARGET_SECONDS:.3f} of the 30 s target, "
            f"{total / SEED_EXAMPLE_SECONDS:.4f} of the seed's 847 s, "
            f"{total / RTO_SECONDS:.4f} of the 30 min RTO"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
