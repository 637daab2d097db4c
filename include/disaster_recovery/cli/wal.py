"""``dr wal push|fetch|check`` and ``dr restore-point create NAME``.

``push``/``fetch`` are PostgreSQL's archive_command/restore_command: they stay quiet on success
and exit as PostgreSQL expects (see :mod:`disaster_recovery.wal.archive`); ``python -m disaster_recovery.wal`` is the same
command without the rest of ``dr``.

Library imports sit inside the handlers on purpose: ``dr --help`` builds every module's parsers,
so a module-level import here would slow every command's help (see :mod:`disaster_recovery.cli`).
"""

from __future__ import annotations

import argparse
from typing import Any

from disaster_recovery.wal.__main__ import (
    add_archiver_actions,
    operands,
    run_action,
)


def register(commands: Any) -> None:
    wal = commands.add_parser(
        "wal", help="the WAL archive: archive_command, restore_command, checks"
    )
    actions = wal.add_subparsers(dest="action", required=True)
    for action in add_archiver_actions(actions):
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
    return run_action(args.action, getattr(args, "env_file", None), operands(args))


def check_archive(args: argparse.Namespace) -> dict[str, Any]:
    from disaster_recovery.cli.common import deployment
    from disaster_recovery.wal.continuity import check_archive as check
    from disaster_recovery.wal.history import archive_missing_history

    # A timeline history file missing from the archive but still on the primary: archive it.
    repaired = archive_missing_history(deployment(args))
    report = check(deployment(args), deep=args.deep).to_dict()
    report["history_archived_again"] = repaired["archived"]
    return report


def create_restore_point(args: argparse.Namespace) -> dict[str, Any]:
    from disaster_recovery.cli.common import deployment
    from disaster_recovery.restore.pitr import create_restore_point as create

    return create(deployment(args), args.name)
