"""The quarterly drill (loss of the whole primary region) on a sandbox at two data sizes.

Prints RTO and RPO against the objectives and each step's share of the drill, beside the seed's
example failover (847 s). Run: `.venv/bin/python bench/drill.py [--scales 1 10]`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from disaster_recovery.backup.logical import run_backup
from disaster_recovery.backup.physical import backup_and_verify
from disaster_recovery.config.endpoints import Deployment
from dr_sandbox import Sandbox, SandboxPorts
from dr_sandbox.demo import archive_now

SEED_EXAMPLE_SECONDS = 847


def quarterly_at(scale: float) -> dict[str, Any]:
    from disaster_recovery.drills.procedures import run_drill
    from disaster_recovery.postgres import db

    root = Path(tempfile.mkdtemp(prefix="dr-bench-drill-", dir="/tmp"))
    root.chmod(0o755)
    box = Sandbox(root, SandboxPorts.free(), scale=scale)
    saved = dict(os.environ)
    try:
        box.up()
        os.environ.update(box.environment())
        deployment = Deployment(box.settings())
        size = db.query_one(box.postgres(), "SELECT pg_database_size(current_database())")
        run_backup(deployment, "postgresql_full")
        backup_and_verify(deployment, "base")
        time.sleep(3)
        archive_now(box)
        record = run_drill(
            deployment, "quarterly", progress=lambda m: print(f"  {m}", file=sys.stderr)
        )
    finally:
        os.environ.clear()
        os.environ.update(saved)
        box.down(purge=True)
    total = sum(s.seconds or 0 for s in record.steps)
    return {
        "scale": scale,
        "database_mb": round(size / 1e6, 1),
        "rto_seconds": record.rto_seconds,
        "rpo_seconds": record.rpo_seconds,
        "archive_rpo_seconds": next(
            s.details["rpo_seconds"] for s in record.steps if s.name == "archive_rpo"
        ),
        "steps": {
            s.name: {
                "seconds": s.seconds,
                "share_percent": round(100 * (s.seconds or 0) / total, 1),
            }
            for s in record.steps
        },
        "rto_vs_objective": round((record.rto_seconds or 0) / record.objectives["rto_seconds"], 4),
        "rto_vs_seed_example": round((record.rto_seconds or 0) / SEED_EXAMPLE_SECONDS, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scales", type=float, nargs="+", default=[1, 10])
    args = parser.parse_args()
    results = [quarterly_at(scale) for scale in args.scales]
    print(json.dumps(results, indent=2))
    print(
        "\n| database | RTO (s) | RPO sync (s) | RPO archive (s) | RTO / objective 1800 s | RTO / seed 847 s |"
    )
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['database_mb']} MB | {r['rto_seconds']} | {r['rpo_seconds']} | {r['archive_rpo_seconds']} "
            f"| {r['rto_vs_objective']:.3f} | {r['rto_vs_seed_example']:.3f} |"
        )
    print("\nstep shares (percent of the drill):")
    for r in results:
        print(
            f"  {r['database_mb']} MB: "
            + ", ".join(f"{k} {v['share_percent']}%" for k, v in r["steps"].items())
        )


if __name__ == "__main__":
    main()
