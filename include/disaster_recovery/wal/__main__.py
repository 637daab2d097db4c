"""The lean entry point PostgreSQL runs: ``python -m disaster_recovery.wal [--env-file F] push|fetch ...``.

Quiet on success, one line on stderr on failure, exit status as PostgreSQL expects (:mod:`disaster_recovery.wal.archive`)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from disaster_recovery.errors import (
    DisasterRecoveryError,
    NotFoundError,
)
from disaster_recovery.wal.archive import FETCH_FATAL_EXIT, FETCH_NOT_FOUND_EXIT, WalArchive
from disaster_recovery.wal.host import load_env_file
from disaster_recovery.wal.prefetch import fetch_with_prefetch
from disaster_recovery.wal.uploader import push_async, run_uploader

ENV_FILE_HELP = "KEY=value file with DR_CONFIG and AIRFLOW_CONN_* (S3)"


def add_archiver_actions(actions: Any) -> list[Any]:
    """``push %p`` and ``fetch %f %p``: the same arguments for ``python -m disaster_recovery.wal``
    and ``dr wal`` (``--env-file`` before or after the action)."""
    push = actions.add_parser("push", help="archive_command: push %%p")
    push.add_argument("path", help="the file PostgreSQL offers (%%p)")
    fetch = actions.add_parser("fetch", help="restore_command: fetch %%f %%p")
    fetch.add_argument("name", help="the file PostgreSQL asks for (%%f)")
    fetch.add_argument("destination", help="where to write it (%%p)")
    upload = actions.add_parser(
        "upload", help="the async uploader of a pg_wal folder (archive_command starts it)"
    )
    upload.add_argument("pg_wal", help="the pg_wal folder whose .ready files it pushes")
    for action in (push, fetch, upload):
        action.add_argument("--env-file", default=argparse.SUPPRESS, help=ENV_FILE_HELP)
    return [push, fetch, upload]


def operands(args: Any) -> list[str]:
    if args.action == "fetch":
        return [args.name, args.destination]
    return [args.path] if args.action == "push" else [args.pg_wal]


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
        if action == "upload":
            return _upload(archive, env_file, operands[0])
        if action == "push" and archive.tuning.archive_mode == "async":
            push_async(archive, operands[0], env_file)
        elif action == "push":
            archive.push(operands[0])
        else:
            fetch_with_prefetch(archive, operands[0], operands[1])
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


def _upload(archive: WalArchive, env_file: str | None, pg_wal: str) -> int:
    """The async uploader's process: logs to stderr (its spool's uploader.log)."""
    logging.getLogger().setLevel(logging.INFO)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(
            logging.Formatter("%(asctime)s dr wal upload: %(levelname)s %(message)s")
        )
    watched = [Path(p) for p in (env_file, os.environ.get("DR_CONFIG")) if p]
    return run_uploader(archive, Path(pg_wal).absolute(), watched)


if __name__ == "__main__":
    sys.exit(main())
