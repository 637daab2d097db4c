"""``dr pitr`` and ``dr chain`` (and the handler behind ``dr backup base|incremental|auto``): the physical chain and point-in-time
restores.

Handlers are plain functions of the parsed arguments, so the same code can also be mounted as
``dr backup base|incremental``, ``dr restore --point-in-time`` and inside ``dr list``.

Library imports sit inside the handlers on purpose: every ``dr`` command builds all parsers, so
a module-level import would slow ``dr wal push`` (see :mod:`disaster_recovery.cli`).
"""

from __future__ import annotations

import argparse
from typing import Any

from disaster_recovery.cli.arguments import folder, parse_timestamp, port_number


def register(commands: Any) -> None:
    restore = commands.add_parser("pitr", help="restore the cluster to a point in time")
    add_pitr_arguments(restore)
    restore.set_defaults(handler=restore_point_in_time)

    chain = commands.add_parser("chain", help="the physical chain and the WAL window")
    actions = chain.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="bases, incrementals, restorable window per region")
    listing.add_argument("--region", help="one region only")
    listing.set_defaults(handler=list_chain)
    cleanup = actions.add_parser("cleanup", help="apply the chain's retention")
    cleanup.add_argument("--dry-run", action="store_true", help="report, delete nothing")
    cleanup.set_defaults(handler=cleanup_chain)


def add_pitr_arguments(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--point-in-time",
        type=parse_timestamp,
        help="e.g. 2024-01-15T14:30:00-05:00 (no offset: the configured time zone)",
    )
    target.add_argument("--target-lsn", help="e.g. 0/16B3748")
    target.add_argument("--target-name", help="a restore point (dr restore-point create NAME)")
    parser.add_argument("--target-dir", type=folder, required=True, help="new, empty data folder")
    parser.add_argument(
        "--target-port", type=port_number, help="port of the restored instance (default: free)"
    )
    parser.add_argument("--region", help="restore from this region's bucket (default: primary)")
    parser.add_argument(
        "--plan-only",
        action="store_true",
        help="check the chain and the WAL for the target; restore nothing",
    )


def backup_physical(args: argparse.Namespace) -> dict[str, Any]:
    from disaster_recovery.backup.physical import backup_and_verify
    from disaster_recovery.cli.common import deployment

    return backup_and_verify(deployment(args), args.kind)


def restore_point_in_time(args: argparse.Namespace) -> dict[str, Any]:
    from disaster_recovery.cli.common import deployment, progress
    from disaster_recovery.restore.pitr import (
        Target,
        as_target_time,
        plan_restore,
        restore_to_point_in_time,
    )

    target_deployment = deployment(args)
    when = args.point_in_time
    if when is not None:
        when = as_target_time(when, target_deployment.settings.tz)
    if args.plan_only:
        target = Target(when, args.target_lsn, args.target_name)
        return plan_restore(target_deployment, target, args.region).to_dict()
    progress(f"restoring into {args.target_dir} ...")
    return restore_to_point_in_time(
        target_deployment,
        target_dir=args.target_dir,
        target_time=when,
        target_lsn=args.target_lsn,
        target_name=args.target_name,
        target_port=args.target_port,
        region=args.region,
    )


def list_chain(args: argparse.Namespace) -> dict[str, Any]:
    from disaster_recovery.cli.common import deployment
    from disaster_recovery.restore.pitr import describe_chain

    return describe_chain(deployment(args), args.region)


def cleanup_chain(args: argparse.Namespace) -> dict[str, Any]:
    from disaster_recovery.cli.common import deployment
    from disaster_recovery.retention.cleanup import cleanup_physical_chain

    return cleanup_physical_chain(deployment(args), dry_run=args.dry_run)
