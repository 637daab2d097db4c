"""``dr wal push|fetch|check`` and ``dr restore-point create NAME``.

``push``/``fetch`` are PostgreSQL's archive_command/restore_command: they stay quiet on success
and exit as PostgreSQL expects (see :mod:`disaster_recovery.wal`); the same code runs leaner as
``python -m disaster_recovery.wal``.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: Any) -> None:
    wal = commands.add_parser(
        "wal", help="the WAL archive: archive_command, restore_command, checks"
    )
    actions = wal.add_subparsers(dest="action", required=True)
    push = actions.add_parser("push", help="archive_command: dr wal push %%p")
    push.add_argument("path", help="the file PostgreSQL offers (%%p)")
    fetch = actions.add_parser("fetch", help="restore_command: dr wal fetch %%f %%p")
    fetch.add_argument("name", help="the file PostgreSQL asks for (%%f)")
    fetch.add_argument("destination", help="where to write it (%%p)")
    for action in (push, fetch):
        action.add_argument(
            "--env-file", help="KEY=value file with DR_CONFIG and AIRFLOW_CONN_* (S3)"
        )
        action.set_defaults(handler=run_archiver)
    check = actions.add_parser("check", help="is the archive continuous, intact and fresh?")
    check.add_argument("--deep", action="store_true", help="hash every segment, not only new ones")
    check.set_defaults(handler=check_archive)

    point = commands.add_parser("restore-point", help="named restore points for PITR")
    point_actions = point.add_subparsers(dest="action", required=True)
    create = point_actions.add_parser("create", help="mark this moment before a risky change")
    create.add_argument("name")
    create.set_defaults(handler=create_restore_point)


def run_archiver(args: argparse.Namespace) -> int:
    from disaster_recovery.wal.__main__ import run_action

    operands = [args.path] if args.action == "push" else [args.name, args.destination]
    return run_action(args.action, args.env_file, operands)


def check_archive(args: argparse.Namespace) -> dict[str, Any]:
    from disaster_recovery.cli.common import deployment
    from disaster_recovery.wal.continuity import check_archive as check

    return check(deployment(args), deep=args.deep).to_dict()


def create_restore_point(args: argparse.Namespace) -> dict[str, Any]:
    from disaster_recovery.cli.common import deployment
    from disaster_recovery.restore.pitr import create_restore_point as create

    return create(deployment(args), args.name)
