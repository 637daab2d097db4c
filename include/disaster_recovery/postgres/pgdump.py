"""pg_dump and pg_restore: argument builders and the table of contents.

Argument lists are built here and nowhere else, so the flags are unit-testable without a server.
Credentials go through the libpq environment (``PostgresEndpoint.libpq_env``) and every program
gets ``--no-password``, so a missing credential fails at once instead of waiting for a prompt.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from disaster_recovery.errors import ConfigError
from disaster_recovery.postgres import pgbin

# pg_dump's application_name, so an operator (and the fault tests) can tell its backend apart.
PG_DUMP_APPLICATION = "litper-dr-pg_dump"

_COMPRESSION = re.compile(r"^(?P<method>none|gzip|lz4|zstd)(?::(?P<level>\d{1,2}))?$")
_TOC_TABLE = re.compile(r"^\d+; \d+ \d+ (?P<kind>TABLE DATA|TABLE) (?P<schema>\S+) (?P<name>\S+) ")


@dataclass(frozen=True)
class Compression:
    """A pg_dump compression spec: ``gzip:1``, ``zstd:3``, ``none``."""

    method: str
    level: int | None = None

    @classmethod
    def parse(cls, spec: str) -> Compression:
        match = _COMPRESSION.match(spec.strip().lower())
        if not match:
            raise ConfigError(
                f"backup.compression: {spec!r} is not a compression spec "
                "(use none, gzip:N, lz4:N or zstd:N)"
            )
        level = match.group("level")
        return cls(match.group("method"), int(level) if level is not None else None)

    def flag(self) -> str:
        """The ``--compress`` value PostgreSQL 16+ understands."""
        if self.method == "none":
            return "none"
        return self.method if self.level is None else f"{self.method}:{self.level}"

    def __str__(self) -> str:
        return self.flag()


def dump_args(*, compression: Compression, snapshot: str | None = None) -> list[str]:
    """``pg_dump`` in custom format to stdout; the database comes from ``PGDATABASE``.

    ``--snapshot`` makes pg_dump read the snapshot in which the row counts were taken, so the
    counts recorded in the manifest describe exactly the data in the dump.
    """
    args = [
        pgbin.program("pg_dump"),
        "--format=custom",
        f"--compress={compression.flag()}",
        "--no-password",
    ]
    if snapshot:
        args.append(f"--snapshot={snapshot}")
    return args


def list_args() -> list[str]:
    """``pg_restore -l`` reading the archive from stdin: only the header and table of contents."""
    return [pgbin.program("pg_restore"), "--list"]


def full_read_args() -> list[str]:
    """``pg_restore`` reading every byte of the archive from stdin into /dev/null: catches the
    truncation and damage that ``--list`` misses (it reads only the table of contents)."""
    return [pgbin.program("pg_restore"), "--file=/dev/null"]


def restore_args(
    *, jobs: int, archive: str | None = None, dbname: str, privileges: bool = True
) -> list[str]:
    """``pg_restore`` into ``dbname``; parallel (``--jobs``) needs a seekable ``archive`` file:
    PostgreSQL refuses a parallel restore from standard input. Without ``privileges`` the GRANTs
    are left out (a throwaway instance has none of the production roles they name)."""
    args = [
        pgbin.program("pg_restore"),
        "--no-password",
        "--exit-on-error",
        "--no-owner",
        f"--dbname={dbname}",
    ]
    if not privileges:
        args.append("--no-privileges")
    if jobs > 1:
        if archive is None:
            raise ConfigError("a parallel restore (jobs > 1) needs an archive file, not a pipe")
        args.append(f"--jobs={jobs}")
    if archive is not None:
        args.append(archive)
    return args


def tables_in_toc(listing: str) -> dict[str, set[str]]:
    """From ``pg_restore -l`` output: ``{"schema.table": {"TABLE", "TABLE DATA"}}``."""
    found: dict[str, set[str]] = {}
    for line in listing.splitlines():
        match = _TOC_TABLE.match(line)
        if match:
            found.setdefault(f"{match.group('schema')}.{match.group('name')}", set()).add(
                match.group("kind")
            )
    return found


def missing_tables(listing: str, expected: Iterable[str]) -> list[str]:
    """Tables of the manifest whose definition or data the archive's table of contents lacks."""
    toc = tables_in_toc(listing)
    return sorted(t for t in expected if not {"TABLE", "TABLE DATA"} <= toc.get(t, set()))
