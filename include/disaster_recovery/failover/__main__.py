"""The runbook command: ``python -m disaster_recovery.failover --reason ...`` is ``dr failover``
(the same arguments, JSON result and exit codes; see :mod:`disaster_recovery.cli.failover`).

Without ``--reason``, as the runbook types it, the command asks: on a terminal it reads the
reason, shows the dry-run plan (every check, nothing changed, nothing posted), then runs the
failover, whose DECIDE asks whether to proceed. Without a terminal (a script, a pipe) there is
nobody to ask: it exits with a usage error instead of guessing.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from typing import TextIO

from disaster_recovery.cli import UsageError, emit, main
from disaster_recovery.cli.answers import answer

USAGE = "usage: python -m disaster_recovery.failover --reason TEXT [--dry-run] [--yes] ..."


def has_reason(argv: Sequence[str]) -> bool:
    return any(arg == "--reason" or arg.startswith("--reason=") for arg in argv)


def usage_error(message: str) -> int:
    """Answered like every bad command line of ``dr`` (exit code 2, the JSON failure)."""
    code, result = answer("failover", UsageError(message))
    print(f"{message}\n{USAGE}", file=sys.stderr)
    emit(result)
    return int(code)


def ask_reason(terminal: TextIO) -> str:
    print("Reason for the failover (recorded with the run): ", end="", file=sys.stderr, flush=True)
    line = terminal.readline()
    return line.strip()


def runbook(argv: Sequence[str], terminal: TextIO = sys.stdin) -> int:
    """``dr failover`` with the runbook's conversation when no reason was given."""
    if has_reason(argv) or "-h" in argv or "--help" in argv:
        return main(["failover", *argv])
    if not terminal.isatty():
        return usage_error(
            "python -m disaster_recovery.failover: --reason is required when not run from a "
            "terminal (there is nobody to ask)"
        )
    reason = ask_reason(terminal)
    if not reason:
        return usage_error("python -m disaster_recovery.failover: a reason is required")
    print("\nThe plan (a dry run: every check, nothing changes):", file=sys.stderr, flush=True)
    # The plan's JSON goes to the terminal with the rest of the conversation: stdout carries
    # one JSON result, the real run's.
    with contextlib.redirect_stdout(sys.stderr):
        planned = main(["failover", "--reason", reason, "--dry-run", "--yes", "--no-publish"])
    if planned != 0:
        print("The dry run failed: not proceeding.", file=sys.stderr)
        return planned
    print("\nNow the failover itself; DECIDE asks before anything changes.", file=sys.stderr)
    return main(["failover", "--reason", reason, *argv])


if __name__ == "__main__":
    sys.exit(runbook(sys.argv[1:]))
