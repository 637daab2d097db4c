"""The ``dr`` command (also ``python -m disaster_recovery``).

Every command prints one JSON document on stdout; progress and human text go to stderr; the
exit code is non-zero on failure (see :class:`disaster_recovery.errors.ExitCode`). Command
modules import their heavy dependencies inside their handlers so ``dr wal push`` starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from disaster_recovery.errors import ConfigError, ExitCode

# Each module has register(subparsers); its handlers take the parsed args and return a dict.
COMMAND_MODULES = ("sandbox", "backup", "wal", "physical", "failover", "drill", "status", "iam")


class UsageError(ConfigError):
    """The command line itself is wrong (unknown option, a number out of range)."""

    exit_code = ExitCode.USAGE


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting, so a bad command line gets
    the same JSON answer as any other failure (subparsers are built from this class too)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dr", description="Litper disaster recovery")
    parser.add_argument(
        "--config", help="policy file (default: $DR_CONFIG or include/dr_config.yaml)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"disaster_recovery.cli.{name}").register(commands)
    return parser


def emit(result: Any) -> None:
    print(json.dumps(result, indent=2, default=str))


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every failure, a bad command line included, prints a JSON answer."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["wal"] and arguments[1:2] in (["push"], ["fetch"]):
        # PostgreSQL's archive_command / restore_command: the lean path, without the other
        # commands' parsers (the same code as `python -m disaster_recovery.wal`).
        from disaster_recovery.wal.__main__ import main as archiver_main

        return archiver_main(arguments[1:])
    from disaster_recovery.cli.answers import answer

    try:
        args = build_parser().parse_args(arguments)
    except UsageError as exc:
        code, result = answer("(usage)", exc)
        print(f"{result['reason']} (dr --help shows the usage)", file=sys.stderr)
        emit(result)
        return int(code)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        result = args.handler(args)
    except KeyboardInterrupt:
        emit({"status": "aborted", "error": "interrupted"})
        return int(ExitCode.ABORTED)
    except Exception as exc:
        code, result = answer(args.command, exc)
        print(f"dr {args.command}: error: {result['error']}", file=sys.stderr)
        emit(result)
        return int(code)
    if isinstance(result, int):
        return result
    emit(result)
    failed = isinstance(result, dict) and result.get("healthy") is False
    return int(ExitCode.FAILED if failed else ExitCode.OK)
