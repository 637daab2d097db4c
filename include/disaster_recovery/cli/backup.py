"""``dr backup full|weekly|monthly``, ``dr verify``, ``dr restore``, ``dr cleanup``, ``dr list``:
the logical backup tiers from a terminal, calling the same functions as the DAGs.

Library imports sit inside the handlers on purpose: every ``dr`` command builds all parsers, so
a module-level import would slow ``dr wal push`` (see :mod:`disaster_recovery.cli`).
"""

from __future__ import annotations

import argparse
from typing import Any

from disaster_recovery.cli.arguments import folder, parse_timestamp, port_number, positive_int

# `dr backup <kind>` -> backup type; physical kinds (base, incremental) register next to these.
LOGICAL_KINDS = {
    "full": "postgresql_full",
    "weekly": "postgresql_weekly",
    "monthly": "postgresql_monthly",
}


def register(commands: Any) -> None:
    backup = commands.add_parser(
        "backup", help="take a backup now (dump, checksum, verify, replicate, publish)"
    )
    kinds = backup.add_subparsers(dest="kind", required=True, metavar="KIND")
    for kind, backup_type in LOGICAL_KINDS.items():
        parser = kinds.add_parser(kind, help=f"a logical {kind} backup ({backup_type})")
        parser.add_argument(
            "--from",
            dest="dump_from",
            choices=["primary", "standby"],
            help="node to dump (default: backup.dump_from)",
        )
        parser.set_defaults(handler=run_backup, backup_type=backup_type)
    for kind, text in (
        ("base", "a physical base backup (pg_basebackup, tar)"),
        ("incremental", "a native incremental on the chain (a base first if none)"),
        ("auto", "what the hourly DAG does: the day's base backup, else an incremental"),
    ):
        parser = kinds.add_parser(kind, help=text)
        parser.set_defaults(handler=run_physical_backup, physical_kind=kind)

    verify = commands.add_parser("verify", help="re-run every check of an existing backup")
    verify.add_argument(
        "backup_type", help="postgresql_full, postgresql_weekly or postgresql_monthly"
    )
    verify.add_argument("backup_file", help="e.g. postgresql_full_20240115_030000.dump")
    verify.set_defaults(handler=run_verify)

    restore = commands.add_parser(
        "restore",
        help="restore a verified logical backup into a database (--target-db), or the cluster "
        "to a point in time (--point-in-time/--target-lsn/--target-name with --target-dir)",
    )
    restore.add_argument(
        "--backup-file", help="the backup to restore (default: the newest verified full)"
    )
    restore.add_argument(
        "--backup-type",
        default="postgresql_full",
        help="tier to pick the newest verified backup from (default postgresql_full)",
    )
    restore.add_argument("--target-db", help="database to restore into (created if missing)")
    pitr = restore.add_argument_group("point in time (physical chain + WAL)")
    pitr.add_argument(
        "--point-in-time", type=parse_timestamp, help="e.g. 2024-01-15T14:30:00-05:00"
    )
    pitr.add_argument("--target-lsn", help="e.g. 0/16B3748")
    pitr.add_argument("--target-name", help="a restore point (dr restore-point create NAME)")
    pitr.add_argument("--target-dir", type=folder, help="new, empty data folder for the instance")
    pitr.add_argument(
        "--target-port", type=port_number, help="port of the restored instance (default: free)"
    )
    pitr.add_argument(
        "--region",
        help="restore from this region's bucket only, logical or point in time (default: the "
        "current primary's region; a logical restore falls back to the other region when that "
        "one is down or its copy is damaged)",
    )
    pitr.add_argument("--plan-only", action="store_true", help="check the chain and WAL only")
    restore.add_argument(
        "--replace", action="store_true", help="drop and recreate a non-empty target"
    )
    restore.add_argument(
        "--jobs", type=positive_int, help="parallel pg_restore jobs (default: backup.restore_jobs)"
    )
    restore.set_defaults(handler=run_restore)

    cleanup = commands.add_parser("cleanup", help="apply the retention policy to the backup tiers")
    cleanup.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    cleanup.set_defaults(handler=run_cleanup)

    listing = commands.add_parser(
        "list", help="every backup per tier: time, size, verified, age, replicas"
    )
    listing.set_defaults(handler=run_list)


def _deployment(args: argparse.Namespace) -> Any:
    from disaster_recovery.cli.common import deployment

    return deployment(args)


def run_backup(args: argparse.Namespace) -> dict[str, Any]:
    from disaster_recovery.backup.logical import run_backup as take_backup
    from disaster_recovery.catalog.report import backup_report
    from disaster_recovery.cli.common import progress

    deployment = _deployment(args)
    if args.dump_from:
        settings = deployment.settings
        deployment.settings = settings.model_copy(
            update={"backup": settings.backup.model_copy(update={"dump_from": args.dump_from})}
        )
    manifest = take_backup(deployment, args.backup_type, progress=progress)
    return backup_report(manifest)


def run_verify(args: argparse.Namespace) -> dict[str, Any]:
    from disaster_recovery.backup.logical import verify_existing
    from disaster_recovery.cli.common import progress

    progress(f"verifying {args.backup_file}")
    result = verify_existing(_deployment(args), args.backup_type, args.backup_file)
    result["healthy"] = result["valid"]
    return result


def run_physical_backup(args: argparse.Namespace) -> dict[str, Any]:
    from disaster_recovery.cli.physical import backup_physical

    args.kind = args.physical_kind
    return backup_physical(args)


def run_restore(args: argparse.Namespace) -> dict[str, Any]:
    from disaster_recovery.cli.common import progress
    from disaster_recovery.errors import ConfigError
    from disaster_recovery.restore.logical import restore_logical

    point_in_time = args.point_in_time or args.target_lsn or args.target_name
    if point_in_time:
        from disaster_recovery.cli.physical import restore_point_in_time

        if not args.target_dir:
            raise ConfigError("a point-in-time restore needs --target-dir (a new, empty folder)")
        return restore_point_in_time(args)
    if not args.target_db:
        raise ConfigError(
            "say where to restore: --target-db NAME (logical) or "
            "--point-in-time ... --target-dir D (physical)"
        )

    progress(
        f"restoring {args.backup_file or 'the newest verified ' + args.backup_type} "
        f"into {args.target_db}"
    )
    result = restore_logical(
        _deployment(args),
        target_db=args.target_db,
        backup_file=args.backup_file,
        backup_type=args.backup_type,
        replace=args.replace,
        jobs=args.jobs,
        region=args.region,
    )
    result["healthy"] = result["counts_match"]
    return result


def run_cleanup(args: argparse.Namespace) -> dict[str, Any]:
    from disaster_recovery.retention.cleanup import cleanup_old_backups

    return cleanup_old_backups(_deployment(args), dry_run=args.dry_run)


def run_list(args: argparse.Namespace) -> dict[str, Any]:
    from disaster_recovery.manager import list_backups
    from disaster_recovery.restore.pitr import describe_chain

    deployment = _deployment(args)
    listing: dict[str, Any] = dict(list_backups(deployment))
    listing["physical_chain"] = describe_chain(deployment)
    return listing
