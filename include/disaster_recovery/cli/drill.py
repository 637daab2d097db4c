"""``dr drill monthly|quarterly`` (a drill outside Airflow) and ``dr drills`` (the evidence).

Library imports sit inside the handlers on purpose: every ``dr`` command builds all parsers, so
a module-level import would slow ``dr wal push`` (see :mod:`disaster_recovery.cli`).
"""

from __future__ import annotations

import argparse
from typing import Any

from disaster_recovery.cli.arguments import non_negative_int


def register(commands: Any) -> None:
    drill = commands.add_parser("drill", help="run a DR drill against the configured drill target")
    drill.add_argument("kind", choices=["monthly", "quarterly"])
    drill.add_argument(
        "--seed", type=non_negative_int, help="seed of the random point-in-time target"
    )
    drill.set_defaults(handler=run_drill)
    drills = commands.add_parser("drills", help="list drill evidence records and overdue drills")
    drills.add_argument("--kind", choices=["monthly", "quarterly"])
    drills.set_defaults(handler=list_drills)


def run_drill(args: argparse.Namespace) -> dict[str, Any]:
    from disaster_recovery.cli.common import deployment, progress
    from disaster_recovery.drills.procedures import run_drill as run

    record = run(deployment(args), args.kind, seed=args.seed, progress=progress)
    return record.model_dump(mode="json")


def list_drills(args: argparse.Namespace) -> dict[str, Any]:
    from datetime import UTC, datetime

    from disaster_recovery.cli.common import deployment
    from disaster_recovery.clients.s3 import regional_store
    from disaster_recovery.drills.evidence import EvidenceStore, first_run, overdue_alerts

    target = deployment(args)
    settings = target.settings
    region = settings.regions.primary
    store = regional_store(target, region)
    records = EvidenceStore(store).records(args.kind)
    now = datetime.now(UTC)
    deployed = first_run(store, now, record=False)
    return {
        "records": [
            {
                "drill": r.drill,
                "started_at": r.started_at.isoformat(),
                "passed": r.passed,
                "rto_seconds": r.rto_seconds,
                "rpo_seconds": r.rpo_seconds,
                "key": r.key,
                "error": r.error,
            }
            for r in records
        ],
        "overdue": [a.summary for a in overdue_alerts(records, now, deployed=deployed)],
    }
