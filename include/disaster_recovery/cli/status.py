"""``dr status``: the DR console's data as JSON, read from S3 and the nodes directly, for the
operator whose Airflow is in the lost region. A short summary for a person goes to stderr.

Library imports sit inside the handler on purpose (see :mod:`disaster_recovery.cli`).
"""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: Any) -> None:
    status = commands.add_parser(
        "status",
        help="the DR console's data (topology, where protection goes, RPO, backups, drills, "
        "availability); exit 1 when the topology record and the nodes disagree",
    )
    status.set_defaults(handler=show_status)


def show_status(args: argparse.Namespace) -> dict[str, Any]:
    import sys

    from disaster_recovery.cli.common import deployment
    from disaster_recovery.console.sections import collect, summary

    document = collect(deployment(args))
    print("\n".join(summary(document)), file=sys.stderr)
    # Exit 1 when the topology record and the nodes disagree (or no primary answers).
    document["healthy"] = (document.get("protection") or {}).get("healthy", False)
    return document
