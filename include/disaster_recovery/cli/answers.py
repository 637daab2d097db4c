"""Every failure is an answer: how the ``dr`` command turns any exception into its JSON result.

The library raises typed errors (:mod:`disaster_recovery.errors`) that already name what failed.
Anything else that escapes a handler (a psycopg or botocore error the library did not wrap, an
OSError, a bug) still becomes ``{"status": "failed", "reason": ...}`` with a documented exit
code; the traceback goes to the log at debug level (``dr -v`` shows it), never to the user.
"""

from __future__ import annotations

import logging
from typing import Any

from disaster_recovery.errors import DisasterRecoveryError, ExitCode

log = logging.getLogger(__name__)

# A reason is one line; the full text stays in "error".
REASON_LIMIT = 400


def one_line(text: str) -> str:
    """The message's lines joined with "; " (a config error lists one problem per line)."""
    lines = [line.strip().rstrip(":") for line in text.strip().splitlines() if line.strip()]
    reason = "; ".join(lines) or "no message"
    return reason if len(reason) <= REASON_LIMIT else reason[: REASON_LIMIT - 1] + "…"


def classify(exc: BaseException) -> tuple[ExitCode, str]:
    """The exit code and reason for an exception the library did not type itself."""
    import psycopg
    from botocore.exceptions import BotoCoreError, ClientError
    from botocore.parsers import ResponseParserError

    from disaster_recovery.postgres.db import libpq_reason

    if isinstance(exc, psycopg.OperationalError):
        return ExitCode.UNAVAILABLE, f"PostgreSQL: {libpq_reason(exc)}"
    if isinstance(exc, psycopg.Error):
        return ExitCode.FAILED, f"PostgreSQL: {one_line(str(exc))}"
    if isinstance(exc, ResponseParserError):
        return (
            ExitCode.UNAVAILABLE,
            "the S3 endpoint answered something that is not S3 (check the AWS Connection's "
            "endpoint_url)",
        )
    if isinstance(exc, (BotoCoreError, ClientError)):
        return ExitCode.UNAVAILABLE, f"S3: {one_line(str(exc))}"
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return ExitCode.FAILED, f"{exc.strerror or type(exc).__name__}{where}"
    return ExitCode.FAILED, f"unexpected {type(exc).__name__}: {one_line(str(exc))}"


def answer(command: str, exc: BaseException) -> tuple[ExitCode, dict[str, Any]]:
    """The exit code and JSON result of a command that raised ``exc``."""
    log.debug("dr %s failed", command, exc_info=exc)
    if isinstance(exc, DisasterRecoveryError):
        code, reason, text = exc.exit_code, one_line(str(exc)), str(exc)
    else:
        code, reason = classify(exc)
        text = reason
    result: dict[str, Any] = {
        "status": "failed",
        "command": command,
        "reason": reason,
        "error": text,
        "error_type": type(exc).__name__,
        "exit_code": int(code),
    }
    return code, result
