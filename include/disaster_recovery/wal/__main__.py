"""The lean entry point PostgreSQL runs: ``python -m disaster_recovery.wal [--env-file F] push|fetch ...``.

Quiet on success, one line on stderr on failure, exit status as PostgreSQL expects (:mod:`disaster_recovery.wal.archive`)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from disaster_recovery.errors import (
    DisasterRecoveryError,
    NotFoundError,
)
from disaster_recovery.wal.archive import FETCH_FATAL_EXIT, FETCH_NOT_FOUND_EXIT, WalArchive
from disaster_recovery.wal.host import load_env_file

ENV_FILE_HELP = "KEY=value file with DR_CONFIG and AIRFLOW_CONN_* (S3)"


def add_archiver_actions(actions: Any) -> list[Any]:
    """``push %p`` and ``fetch %f %p``: the same arguments for ``python -m disaster_recovery.wal``
    and ``dr wal`` (``--env-file`` before or after the action)."""
    push = actions.add_parser("push", help="archive_command: push %%p")
    push.add_argument("path", help="the file PostgreSQL offers (%%p)")
    fetch = actions.add_parser("fetch", help="restore_command: fetch %%f %%p")
    fetch.add_argument("name", help="the file PostgreSQL asks for (%%f)")
    fetch.add_argument("destination", help="where to write it (%%p)")
    for action in (push, fetch):
        action.add_argument("--env-file", default=argparse.SUPPRESS, help=ENV_FILE_HELP)
    return [push, fetch]


def operands(args: Any) -> list[str]:
    return [args.path] if args.action == "push" else [args.name, args.destination]


def main(argv: list[str] | None = None) -> int:
    """``archive_command`` / ``restore_command`` entry point: quiet on success, one line on
    stderr on failure, exit status as PostgreSQL expects (module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m disaster_recovery.wal")
    parser.add_argument("--env-file", help=ENV_FILE_HELP)
    add_archiver_actions(parser.add_subparsers(dest="action", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="dr wal: %(levelname)s %(message)s"
    )
    return run_action(args.action, getattr(args, "env_file", None), operands(args))


def run_action(action: str, env_file: str | None, operands: list[str]) -> int:
    """Run push or fetch and map the outcome to the exit status PostgreSQL needs: for fetch,
    1 only for "not archived"; any other failure (corrupt, unreachable, misconfigured) is
    FETCH_FATAL_EXIT so recovery stops instead of taking it for the end of WAL."""
    failure = FETCH_FATAL_EXIT if action == "fetch" else 1
    try:
        if env_file:
            os.environ.update(load_env_file(env_file))
        archive = WalArchive.from_environment()
        if action == "push":
            archive.push(operands[0])
        else:
            archive.fetch(operands[0], operands[1])
    except NotFoundError as exc:
        if action == "fetch":
            return FETCH_NOT_FOUND_EXIT  # the normal end of the archive: say nothing
        print(f"dr wal {action}: {exc}", file=sys.stderr)
        return failure
    except Exception as exc:  # any failure, never a traceback's status PostgreSQL could misread
        kind = "" if isinstance(exc, DisasterRecoveryError) else "unexpected error: "
        print(f"dr wal {action}: {kind}{exc}", file=sys.stderr)
        return failure
    return 0


if __name__ == "__main__":
    sys.exit(main())
