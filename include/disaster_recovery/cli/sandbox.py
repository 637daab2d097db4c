"""``dr sandbox up|down|status``: the local two-region sandbox.

Library imports sit inside the handlers on purpose: every ``dr`` command builds all parsers, so
a module-level import would slow ``dr wal push`` (see :mod:`disaster_recovery.cli`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from disaster_recovery.cli.arguments import folder, port_number, positive_float
from disaster_recovery.errors import ToolError

DEFAULT_ROOT = Path(".sandbox")


def register(commands: Any) -> None:
    parser = commands.add_parser("sandbox", help="the local two-region sandbox on loopback")
    actions = parser.add_subparsers(dest="action", required=True)
    up = actions.add_parser("up", help="start every component (idempotent)")
    up.add_argument(
        "--scale",
        type=positive_float,
        default=None,
        help="sample data size: 1 is about 20 MB, 80 about 1 GB (default 1)",
    )
    up.add_argument(
        "--base-port",
        type=port_number,
        default=None,
        help="first of ten consecutive ports (default 25432, 25433, 26379, 26380, 25500-25505)",
    )
    up.add_argument(
        "--object-lock",
        choices=["governance", "compliance"],
        default=None,
        help="create the buckets with S3 Object Lock and lock backups and WAL (docs/security.md)",
    )
    for action in (
        up,
        actions.add_parser("down", help="stop what `up` started"),
        actions.add_parser("status", help="each component's health; exit 1 if any is down"),
    ):
        action.add_argument(
            "--root", type=folder, default=DEFAULT_ROOT, help="state folder (default .sandbox)"
        )
        action.set_defaults(handler=run)
    actions.choices["down"].add_argument(
        "--purge", action="store_true", help="also delete the state folder"
    )
    for name, text in (
        ("kill-region", "lose a region at once (drills): SIGKILL its PostgreSQL, Redis, app"),
        ("revive-region", "restart a lost region's Redis (failback rebuilds PostgreSQL)"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("region", choices=["us-east-1", "us-west-2"])
        action.add_argument(
            "--root", type=folder, default=DEFAULT_ROOT, help="state folder (default .sandbox)"
        )
        action.set_defaults(handler=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    try:
        from dr_sandbox import Sandbox, SandboxPorts
    except ModuleNotFoundError:
        # The sandbox is a development tool beside the library, not part of the installed package.
        raise ToolError(
            "the sandbox is not installed: `dr sandbox` runs from a checkout of the project "
            "(make demo), where include/dr_sandbox sits beside the library"
        ) from None

    if args.action == "up":
        ports = SandboxPorts.from_base(args.base_port) if args.base_port else None
        return Sandbox(args.root, ports, args.scale, args.object_lock).up()
    sandbox = Sandbox(args.root)
    if args.action == "down":
        return sandbox.down(purge=args.purge)
    if args.action == "kill-region":
        return sandbox.kill_region(args.region)
    if args.action == "revive-region":
        return sandbox.revive_region(args.region)
    return sandbox.status()
