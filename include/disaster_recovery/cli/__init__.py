"""The ``dr`` command (also ``python -m disaster_recovery``).

Every command prints one JSON document on stdout; progress and human text go to stderr; the
exit code is non-zero on failure (see :class:`disaster_recovery.errors.ExitCode`). ``dr
<command>`` builds only the parsers of the module that owns the command (``dr --help`` builds
all), and command modules import their heavy dependencies inside their handlers, so every
command starts fast (``bench/startup.py``).
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
# Which module registers each command: `dr <command> ...` imports that module's parsers only
# (tests/unit/test_cli_startup.py checks this table against what the modules register).
COMMANDS = {
    "sandbox": "sandbox",
    **dict.fromkeys(("backup", "verify", "restore", "cleanup", "list"), "backup"),
    **dict.fromkeys(("wal", "restore-point"), "wal"),
    **dict.fromkeys(("pitr", "chain"), "physical"),
    **dict.fromkeys(("health", "failover", "failback"), "failover"),
    **dict.fromkeys(("drill", "drills"), "drill"),
    "status": "status",
    "iam-policy": "iam",
}


class UsageError(ConfigError):
    """The command line itself is wrong (unknown option, a number out of range)."""

    exit_code = ExitCode.USAGE


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting, so a bad command line gets
    the same JSON answer as any other failure (subparsers are built from this class too)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every command's parser, or only the module's that owns ``command`` when it is known."""
    parser = _Parser(prog="dr", description="Litper disaster recovery")
    parser.add_argument(
        "--config", help="policy file (default: $DR_CONFIG or include/dr_config.yaml)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    owner = COMMANDS.get(command or "")
    for name in (owner,) if owner else COMMAND_MODULES:
        importlib.import_module(f"disaster_recovery.cli.{name}").register(commands)
    return parser


def command_named(arguments: Sequence[str]) -> str | None:
    """The command word of a ``dr`` command line: its first operand after the global options."""
    words = iter(arguments)
    for word in words:
        if word == "--config":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


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
        args = build_parser(command_named(arguments)).parse_args(arguments)
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
