"""Where the servers are and how to log in: typed endpoints built from Connections.

Outside Airflow (the CLI, the WAL archiver on a database host) Connections come from the same
``AIRFLOW_CONN_<ID>`` environment variables Airflow reads (JSON or URI form), so one
``sandbox.env`` serves both. Inside Airflow,
:mod:`disaster_recovery.airflow_support.connections` supplies them from Airflow itself.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from disaster_recovery.errors import ConfigError

if TYPE_CHECKING:  # the WAL archiver reads Connections without loading the settings model
    from disaster_recovery.config.model import Settings


@dataclass(frozen=True)
class ConnectionFields:
    """The fields of an Airflow Connection that this package reads."""

    conn_id: str
    conn_type: str = ""
    host: str = ""
    port: int | None = None
    login: str = ""
    password: str = field(default="", repr=False)
    schema: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


ConnectionLookup = Callable[[str], ConnectionFields]


def env_var_name(conn_id: str) -> str:
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def parse_connection(conn_id: str, value: str) -> ConnectionFields:
    """Parse an ``AIRFLOW_CONN_*`` value in Airflow's JSON or URI form."""
    value = value.strip()
    if value.startswith("{"):
        try:
            data = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"connection {conn_id!r}: {env_var_name(conn_id)} is not valid JSON: {exc}"
            ) from None
        extra = data.get("extra") or {}
        if isinstance(extra, str):
            extra = json.loads(extra) if extra.strip() else {}
        return ConnectionFields(
            conn_id=conn_id,
            conn_type=data.get("conn_type", ""),
            host=data.get("host") or "",
            port=int(data["port"]) if data.get("port") else None,
            login=data.get("login") or "",
            password=data.get("password") or "",
            schema=data.get("schema") or "",
            extra=extra,
        )
    parts = urlsplit(value)
    if not parts.scheme:
        raise ConfigError(
            f"connection {conn_id!r}: {env_var_name(conn_id)} is neither JSON nor a URI"
        )
    extra = dict(parse_qsl(parts.query))
    if "__extra__" in extra:
        extra = json.loads(extra["__extra__"])
    return ConnectionFields(
        conn_id=conn_id,
        conn_type=parts.scheme.replace("-", "_"),
        host=unquote(parts.hostname or ""),
        port=parts.port,
        login=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        schema=unquote(parts.path.lstrip("/")),
        extra=extra,
    )


def connection_from_env(conn_id: str) -> ConnectionFields:
    value = os.environ.get(env_var_name(conn_id))
    if not value:
        raise ConfigError(
            f"connection {conn_id!r} is not defined: set {env_var_name(conn_id)} "
            "(or define it in Airflow)"
        )
    return parse_connection(conn_id, value)


@dataclass(frozen=True)
class PostgresEndpoint:
    conn_id: str
    host: str
    port: int
    user: str
    dbname: str
    password: str = field(default="", repr=False)

    def describe(self, dbname: str | None = None) -> str:
        return f"db={dbname or self.dbname} host={self.host}:{self.port}"

    def libpq_env(self, dbname: str | None = None) -> dict[str, str]:
        """Environment for client programs: the password never appears on a command line."""
        env = {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGDATABASE": dbname or self.dbname,
            "PGCONNECT_TIMEOUT": "10",
            "PGAPPNAME": "litper-dr",
        }
        if self.password:
            env["PGPASSWORD"] = self.password
        return env

    def connect_kwargs(self, dbname: str | None = None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "dbname": dbname or self.dbname,
            "connect_timeout": 10,
            "application_name": "litper-dr",
        }
        if self.password:
            kwargs["password"] = self.password
        return kwargs

    def uri(self, dbname: str | None = None) -> str:
        auth = quote(self.user, safe="")
        if self.password:
            auth += ":" + quote(self.password, safe="")
        return f"postgresql://{auth}@{self.host}:{self.port}/{dbname or self.dbname}"

    def with_database(self, dbname: str) -> PostgresEndpoint:
        return PostgresEndpoint(
            self.conn_id, self.host, self.port, self.user, dbname, self.password
        )


@dataclass(frozen=True)
class RedisEndpoint:
    conn_id: str
    host: str
    port: int
    password: str = field(default="", repr=False)
    db: int = 0

    def describe(self) -> str:
        return f"redis {self.host}:{self.port}"

    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/{self.db}"


@dataclass(frozen=True)
class AwsEndpoint:
    conn_id: str
    region: str
    access_key: str = field(default="", repr=False)
    secret_key: str = field(default="", repr=False)
    endpoint_url: str | None = None

    def client_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"region_name": self.region}
        if self.endpoint_url:
            kwargs["endpoint_url"] = self.endpoint_url
        if self.access_key:
            kwargs["aws_access_key_id"] = self.access_key
            kwargs["aws_secret_access_key"] = self.secret_key
        return kwargs


@dataclass(frozen=True)
class SlackEndpoint:
    conn_id: str
    webhook_url: str = field(repr=False)
    channel: str = ""


def postgres_endpoint(conn: ConnectionFields) -> PostgresEndpoint:
    if not conn.host:
        raise ConfigError(f"connection {conn.conn_id!r}: host is empty")
    return PostgresEndpoint(
        conn_id=conn.conn_id,
        host=conn.host,
        port=conn.port or 5432,
        user=conn.login or "postgres",
        dbname=conn.schema or "postgres",
        password=conn.password,
    )


def redis_endpoint(conn: ConnectionFields) -> RedisEndpoint:
    if not conn.host:
        raise ConfigError(f"connection {conn.conn_id!r}: host is empty")
    return RedisEndpoint(
        conn_id=conn.conn_id,
        host=conn.host,
        port=conn.port or 6379,
        password=conn.password,
        db=int(conn.extra.get("db", 0) or (conn.schema or 0)),
    )


def aws_endpoint(conn: ConnectionFields, default_region: str) -> AwsEndpoint:
    extra = conn.extra
    return AwsEndpoint(
        conn_id=conn.conn_id,
        region=extra.get("region_name") or default_region,
        access_key=conn.login or extra.get("aws_access_key_id", ""),
        secret_key=conn.password or extra.get("aws_secret_access_key", ""),
        endpoint_url=extra.get("endpoint_url")
        or (extra.get("service_config") or {}).get("s3", {}).get("endpoint_url"),
    )


def slack_endpoint(conn: ConnectionFields, channel: str) -> SlackEndpoint:
    url = conn.password or conn.host
    if url and not url.startswith("http"):
        url = "https://hooks.slack.com/services/" + url.lstrip("/")
    if not url:
        raise ConfigError(f"connection {conn.conn_id!r}: the webhook URL (password) is empty")
    return SlackEndpoint(conn_id=conn.conn_id, webhook_url=url, channel=channel)


PgRole = Literal["primary", "standby"]
RedisRole = Literal["primary", "replica"]


@dataclass
class Deployment:
    """Settings plus the endpoints they name, resolved lazily and once."""

    settings: Settings
    lookup: ConnectionLookup = connection_from_env
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def _resolve(self, key: str, build: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def postgres(self, role: PgRole = "primary") -> PostgresEndpoint:
        conn_id = getattr(self.settings.connections, f"postgres_{role}")
        return self._resolve(conn_id, lambda: postgres_endpoint(self.lookup(conn_id)))

    def redis(self, role: RedisRole = "primary") -> RedisEndpoint:
        conn_id = getattr(self.settings.connections, f"redis_{role}")
        return self._resolve(conn_id, lambda: redis_endpoint(self.lookup(conn_id)))

    def aws(self, region: str) -> AwsEndpoint:
        regions = self.settings.regions
        if region == regions.primary:
            conn_id = self.settings.connections.aws_primary
        elif region == regions.secondary:
            conn_id = self.settings.connections.aws_secondary
        else:
            raise ConfigError(f"region {region!r} is neither regions.primary nor regions.secondary")
        return self._resolve(conn_id, lambda: aws_endpoint(self.lookup(conn_id), region))

    def slack(self) -> SlackEndpoint:
        conn_id = self.settings.connections.slack_alerts
        channel = self.settings.alerts.slack_channel
        return self._resolve(conn_id, lambda: slack_endpoint(self.lookup(conn_id), channel))
