"""The exception tree and the CLI's exit codes.

Every error the library raises derives from :class:`DisasterRecoveryError`. The split that matters
at the Airflow boundary is :class:`PermanentError` (retrying cannot help: bad config, missing tool,
checksum mismatch) versus everything else (a connection refused, an S3 5xx), which retries may fix.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    CONFIG = 3
    VERIFICATION = 4
    UNAVAILABLE = 5
    ABORTED = 6


class DisasterRecoveryError(Exception):
    """Root of every error raised by the library."""

    exit_code: ExitCode = ExitCode.FAILED


class PermanentError(DisasterRecoveryError):
    """A failure that a retry cannot fix; Airflow tasks fail at once instead of retrying."""


class ConfigError(PermanentError):
    """The configuration file, a Connection or a parameter is wrong."""

    exit_code = ExitCode.CONFIG


class ToolError(PermanentError):
    """A required program is missing or of an unusable version."""

    exit_code = ExitCode.CONFIG


class CommandFailed(DisasterRecoveryError):
    """An external program exited non-zero; the message names it, its target and its stderr."""

    def __init__(self, message: str, *, program: str, returncode: int | None, stderr_tail: str):
        super().__init__(message)
        self.program = program
        self.returncode = returncode
        self.stderr_tail = stderr_tail


class VerificationError(PermanentError):
    """A backup, a segment or a copy is not what its manifest says."""

    exit_code = ExitCode.VERIFICATION

    def __init__(self, message: str, *, check: str = "", key: str = ""):
        super().__init__(message)
        self.check = check
        self.key = key


class ConflictError(PermanentError):
    """An object already exists under a name with different content: never overwritten."""

    exit_code = ExitCode.VERIFICATION


class NotFoundError(PermanentError):
    """A backup, manifest or segment that was asked for does not exist."""


class UnavailableError(DisasterRecoveryError):
    """A server (PostgreSQL, Redis, S3, HTTP) could not be reached; a retry may help."""

    exit_code = ExitCode.UNAVAILABLE


class AbortedError(DisasterRecoveryError):
    """A procedure was stopped on purpose: rejected approval, timeout, refused data loss."""

    exit_code = ExitCode.ABORTED


class BusyError(DisasterRecoveryError):
    """Another run holds what this run would write (a backup's name, the physical chain): this
    run refused and wrote nothing. A retry after the other run finishes may succeed."""

    exit_code = ExitCode.ABORTED


class DrillRefused(PermanentError):
    """The drill target is production (and the configuration does not allow drills there), or
    it is not in its original topology."""

    exit_code = ExitCode.ABORTED


class DrillFailed(PermanentError):
    """A drill ran and something in it failed; the evidence record says what. Never retried:
    a retry would repeat a failover."""

    def __init__(self, message: str, record: Any):
        super().__init__(message)
        self.record = record  # the drill's DrillRecord (drills.evidence), with every step


class RestoreRefused(PermanentError):
    """The target cannot be reached from what the archive holds; nothing was changed."""

    exit_code = ExitCode.ABORTED


class ProducerFailed(DisasterRecoveryError):
    """Raised from inside a stream when the program feeding it failed: the upload aborts."""


class WalGapError(PermanentError):
    """The archive misses a segment, or holds one whose SHA-256 does not match (WALArchiveGap)."""

    exit_code = ExitCode.VERIFICATION


class WalStaleError(PermanentError):
    """The newest archived WAL is older than allowed while the primary has newer WAL
    (WALArchiveStale)."""

    exit_code = ExitCode.VERIFICATION


class WalBacklogError(DisasterRecoveryError):
    """More files wait to be archived than ``pitr.async_max_backlog`` allows
    (WALArchiveBacklog)."""

    exit_code = ExitCode.UNAVAILABLE


class WalCorruptError(VerificationError):
    """A fetched segment's SHA-256 does not match the one recorded when it was archived."""
