"""SQL connections to PostgreSQL (psycopg 3), with errors that name the server."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from disaster_recovery.config.endpoints import PostgresEndpoint
from disaster_recovery.errors import ConfigError, UnavailableError


def libpq_reason(exc: BaseException) -> str:
    """libpq's cause in one line: ``Connection refused (Is the server running ...?)``.

    libpq puts the cause at the end of its first line ("connection to server at ... failed:
    Connection refused") and a hint on the next; keeping only the last line loses the cause.
    """
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return repr(exc)
    cause = lines[0].rsplit("failed: ", 1)[-1]
    return f"{cause} ({' '.join(lines[1:])})" if len(lines) > 1 else cause


@contextmanager
def connect(
    endpoint: PostgresEndpoint,
    dbname: str | None = None,
    *,
    autocommit: bool = True,
    timeout: int | None = None,
) -> Iterator[psycopg.Connection[Any]]:
    """A connection that is closed on exit; unreachable servers raise :class:`UnavailableError`,
    bad credentials :class:`ConfigError` naming the Connection. ``timeout`` (seconds to
    connect) defaults to the Connection's ``connect_timeout`` extra, else 10."""
    kwargs = endpoint.connect_kwargs(dbname)
    if timeout is not None:
        kwargs["connect_timeout"] = timeout
    try:
        conn = psycopg.connect(autocommit=autocommit, **kwargs)
    except psycopg.OperationalError as exc:
        message = libpq_reason(exc)
        text = f"cannot connect to PostgreSQL ({endpoint.describe(dbname)}, connection {endpoint.conn_id!r}): {message}"
        if "password authentication failed" in str(exc) or "no password supplied" in str(exc):
            raise ConfigError(text) from None
        raise UnavailableError(text) from None
    try:
        yield conn
    finally:
        conn.close()


def query_one(
    endpoint: PostgresEndpoint, sql: str, params: tuple[Any, ...] = (), dbname: str | None = None
) -> Any:
    """The first column of the first row of ``sql``."""
    with connect(endpoint, dbname) as conn:
        row = conn.execute(sql, params).fetchone()
    return row[0] if row else None


def server_major(endpoint: PostgresEndpoint) -> int:
    return int(query_one(endpoint, "SHOW server_version_num")) // 10000


def is_in_recovery(endpoint: PostgresEndpoint) -> bool:
    return bool(query_one(endpoint, "SELECT pg_is_in_recovery()"))
