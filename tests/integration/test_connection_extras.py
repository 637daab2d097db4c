"""A postgres Connection's libpq extras (sslmode, sslrootcert, connect_timeout, options, ...)
reach psycopg connections and the client programs alike; the provider's own extras (cursor,
...) are not libpq's and stay out."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest

from disaster_recovery.clients.runner import run
from disaster_recovery.config.endpoints import PostgresEndpoint, parse_connection, postgres_endpoint
from disaster_recovery.errors import CommandFailed, UnavailableError
from disaster_recovery.postgres import db, pgbin
from dr_sandbox import Sandbox


def endpoint_with(base: PostgresEndpoint, **extra: str) -> PostgresEndpoint:
    """``base`` as a Connection JSON with ``extra``, parsed the way the library reads it."""
    value = json.dumps(
        {
            "conn_type": "postgres",
            "host": base.host,
            "port": base.port,
            "login": base.user,
            "password": base.password,
            "schema": base.dbname,
            "extra": extra,
        }
    )
    return postgres_endpoint(parse_connection("dr_postgres_primary", value))


def test_libpq_extras_go_to_the_environment_the_connection_and_the_uri() -> None:
    base = PostgresEndpoint("c", "db.example", 5432, "dr", "litper", "s3cret")
    endpoint = endpoint_with(
        base,
        sslmode="verify-full",
        sslrootcert="/etc/ssl/rds.pem",
        connect_timeout="3",
        target_session_attrs="read-write",
        cursor="dictcursor",  # the provider's, not libpq's
    )
    assert endpoint.options == {
        "sslmode": "verify-full",
        "sslrootcert": "/etc/ssl/rds.pem",
        "connect_timeout": "3",
        "target_session_attrs": "read-write",
    }
    env = endpoint.libpq_env()
    assert env["PGSSLMODE"] == "verify-full" and env["PGSSLROOTCERT"] == "/etc/ssl/rds.pem"
    assert env["PGCONNECT_TIMEOUT"] == "3" and env["PGTARGETSESSIONATTRS"] == "read-write"
    assert "cursor" not in json.dumps(env)
    kwargs = endpoint.connect_kwargs()
    assert kwargs["sslmode"] == "verify-full" and kwargs["connect_timeout"] == "3"
    query = parse_qs(urlsplit(endpoint.uri()).query)
    assert query["sslmode"] == ["verify-full"] and "cursor" not in query
    # A copy for another database keeps them.
    assert endpoint.with_database("postgres").options == endpoint.options
    # Without extras: the defaults as before.
    assert base.libpq_env()["PGCONNECT_TIMEOUT"] == "10" and "PGSSLMODE" not in base.libpq_env()


def _psql(endpoint: PostgresEndpoint, sql: str) -> str:
    result = run(
        [pgbin.program("psql"), "--no-password", "-XAtc", sql],
        env=endpoint.libpq_env(),
        target=endpoint.describe(),
        timeout=30,
    )
    return str(result.stdout).strip()


def test_options_reach_psycopg_and_the_programs(sandbox: Sandbox) -> None:
    endpoint = endpoint_with(
        sandbox.postgres("primary"), options="-c statement_timeout=4321", sslmode="disable"
    )
    with db.connect(endpoint) as conn:
        row = conn.execute("SHOW statement_timeout").fetchone()
    assert row is not None and row[0] == "4321ms"
    assert _psql(endpoint, "SHOW statement_timeout") == "4321ms"


def test_sslmode_require_is_enforced_by_psycopg_and_the_programs(sandbox: Sandbox) -> None:
    # The sandbox's PostgreSQL has no TLS: requiring it must fail in both kinds of client,
    # which is how we know the setting reached them.
    endpoint = endpoint_with(sandbox.postgres("primary"), sslmode="require")
    with pytest.raises(UnavailableError, match="SSL") as refused, db.connect(endpoint) as conn:
        conn.execute("SELECT 1")
    assert endpoint.conn_id in str(refused.value)
    assert not endpoint.password or endpoint.password not in str(refused.value)
    with pytest.raises(CommandFailed, match=r"(?i)ssl"):
        _psql(endpoint, "SELECT 1")
