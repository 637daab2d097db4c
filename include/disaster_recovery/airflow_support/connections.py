"""Airflow Connections -> the library's :class:`~disaster_recovery.config.endpoints.Deployment`.

Called inside tasks only (never at DAG parse time): ``airflow.sdk.Connection.get`` goes through
the task SDK, not the ORM, so it works on any worker.

Library imports sit inside task bodies on purpose: DAG files import this module at parse time,
which must stay cheap (no psycopg, boto3 or redis; Airflow's parse-time budget).
"""

from __future__ import annotations

from typing import Any

from disaster_recovery.config.endpoints import ConnectionFields, Deployment
from disaster_recovery.config.model import Settings, load_settings
from disaster_recovery.errors import ConfigError


def connection_from_airflow(conn_id: str) -> ConnectionFields:
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = Connection.get(conn_id)
    except AirflowNotFoundException:
        raise ConfigError(f"Airflow connection {conn_id!r} is not defined") from None
    except ValueError as exc:
        # A URI Airflow cannot parse (a non-numeric port, an unencoded '@' in the password).
        raise ConfigError(f"Airflow connection {conn_id!r} cannot be read: {exc}") from None
    return fields_of(conn_id, conn)


def fields_of(conn_id: str, conn: Any) -> ConnectionFields:
    """The fields we read, from either kind of Airflow Connection object."""
    return ConnectionFields(
        conn_id=conn_id,
        conn_type=conn.conn_type or "",
        host=conn.host or "",
        port=conn.port,
        login=conn.login or "",
        password=conn.password or "",
        schema=conn.schema or "",
        extra=conn.extra_dejson or {},
    )


def deployment(settings: Settings | None = None) -> Deployment:
    """The deployment as Airflow knows it: policy from dr_config.yaml, secrets from Connections,
    AWS sessions from the amazon provider's hook."""
    from disaster_recovery.airflow_support.aws_hook import provider_session

    return Deployment(
        settings or load_settings(), lookup=connection_from_airflow, aws_sessions=provider_session
    )


def connection_from_airflow_server(conn_id: str) -> ConnectionFields:
    """The same, from inside the API server (plugins), where the task SDK is not available."""
    from airflow.models.connection import Connection

    try:
        conn = Connection.get_connection_from_secrets(conn_id)
    except Exception as exc:
        raise ConfigError(f"Airflow connection {conn_id!r}: {exc}") from None
    return fields_of(conn_id, conn)


def server_deployment(settings: Settings | None = None) -> Deployment:
    """The deployment for code running in the API server (the dashboard plugin)."""
    return Deployment(settings or load_settings(), lookup=connection_from_airflow_server)
