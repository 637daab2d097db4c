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
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

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
        if not isinstance(data, dict):
            raise ConfigError(
                f"connection {conn_id!r}: {env_var_name(conn_id)} must be a JSON object"
            )
        extra = _parse_extra(conn_id, data.get("extra") or {})
        return ConnectionFields(
            conn_id=conn_id,
            conn_type=data.get("conn_type", ""),
            host=data.get("host") or "",
            port=_parse_port(conn_id, data.get("port")),
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
    query: dict[str, Any] = dict(parse_qsl(parts.query))
    if "__extra__" in query:
        query = _parse_extra(conn_id, query["__extra__"])
    try:
        port = parts.port
    except ValueError:
        # urllib's "Port could not be cast to integer value as '...'" names neither the
        # connection nor what to do. The text is not echoed: with an unencoded '#' or '/' in
        # the password, what urllib takes for the port is a piece of the password.
        raise ConfigError(
            f"connection {conn_id!r}: the port in {env_var_name(conn_id)} is not a port number "
            "(1-65535); characters such as ':', '@', '/' or '#' in the login or password must "
            "be percent-encoded"
        ) from None
    return ConnectionFields(
        conn_id=conn_id,
        conn_type=parts.scheme.replace("-", "_"),
        host=unquote(parts.hostname or ""),
        port=port,
        login=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        schema=unquote(parts.path.lstrip("/")),
        extra=query,
    )


def _parse_port(conn_id: str, value: Any) -> int | None:
    """A Connection's port: empty means the default; anything else must be 1-65535."""
    if value in (None, ""):
        return None
    text = str(value).strip()
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ConfigError(
            f"connection {conn_id!r}: port {text!r} is not a port number (1-65535); "
            f"fix {env_var_name(conn_id)} or the Connection in Airflow"
        )
    return int(text)


def _parse_extra(conn_id: str, extra: Any) -> dict[str, Any]:
    """A Connection's extra: a mapping, or JSON text of one."""
    if isinstance(extra, str):
        try:
            extra = json.loads(extra) if extra.strip() else {}
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"connection {conn_id!r}: its extra is not valid JSON ({exc.msg} at "
                f"character {exc.pos}); fix {env_var_name(conn_id)} or the Connection in Airflow"
            ) from None
    if not isinstance(extra, dict):
        raise ConfigError(f"connection {conn_id!r}: its extra must be a JSON object")
    return extra


def check_env_connections(conn_ids: list[str]) -> None:
    """Parse every one of ``conn_ids`` that is set in the environment, so a malformed one is
    refused when the command starts, not after other servers were already asked. Undefined
    ones stay lazy: a command fails on them only if it needs them."""
    for conn_id in conn_ids:
        if value := os.environ.get(env_var_name(conn_id)):
            parse_connection(conn_id, value)


def connection_from_env(conn_id: str) -> ConnectionFields:
    value = os.environ.get(env_var_name(conn_id))
    if not value:
        raise ConfigError(
            f"connection {conn_id!r} is not defined: set {env_var_name(conn_id)} "
            "(or define it in Airflow)"
        )
    return parse_connection(conn_id, value)


# libpq connection keywords a postgres Connection's extra may carry, with the environment
# variable through which they reach the client programs (pg_dump, pg_basebackup, psql...).
LIBPQ_ENV = {
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslcrl": "PGSSLCRL",
    "sslcrldir": "PGSSLCRLDIR",
    "sslsni": "PGSSLSNI",
    "sslnegotiation": "PGSSLNEGOTIATION",
    "sslcertmode": "PGSSLCERTMODE",
    "ssl_min_protocol_version": "PGSSLMINPROTOCOLVERSION",
    "ssl_max_protocol_version": "PGSSLMAXPROTOCOLVERSION",
    "requirepeer": "PGREQUIREPEER",
    "require_auth": "PGREQUIREAUTH",
    "channel_binding": "PGCHANNELBINDING",
    "gssencmode": "PGGSSENCMODE",
    "krbsrvname": "PGKRBSRVNAME",
    "gsslib": "PGGSSLIB",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "load_balance_hosts": "PGLOADBALANCEHOSTS",
    "options": "PGOPTIONS",
    "passfile": "PGPASSFILE",
}


@dataclass(frozen=True)
class PostgresEndpoint:
    conn_id: str
    host: str
    port: int
    user: str
    dbname: str
    password: str = field(default="", repr=False)
    # libpq keywords from the Connection's extra (LIBPQ_ENV), for every client and program.
    options: dict[str, str] = field(default_factory=dict, compare=False)

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
        env.update({LIBPQ_ENV[key]: value for key, value in self.options.items()})
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
        kwargs.update(self.options)
        if self.password:
            kwargs["password"] = self.password
        return kwargs

    def uri(self, dbname: str | None = None) -> str:
        auth = quote(self.user, safe="")
        if self.password:
            auth += ":" + quote(self.password, safe="")
        query = "?" + urlencode(self.options) if self.options else ""
        return f"postgresql://{auth}@{self.host}:{self.port}/{dbname or self.dbname}{query}"

    def with_database(self, dbname: str) -> PostgresEndpoint:
        return replace(self, dbname=dbname)


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
    """An AWS Connection in one region. Sessions: :mod:`disaster_recovery.clients.aws_sessions`."""

    conn_id: str
    region: str
    access_key: str = field(default="", repr=False)
    secret_key: str = field(default="", repr=False)
    endpoint_url: str | None = None
    # The amazon provider's credential options (extra): an assumed role, a profile.
    role_arn: str | None = None
    assume_role_method: str = "assume_role"
    assume_role_kwargs: dict[str, Any] = field(default_factory=dict, compare=False)
    web_identity_token_file: str | None = None
    sts_endpoint_url: str | None = None
    profile: str | None = None
    # Inside Airflow: the provider's hook builds the session (airflow_support.aws_hook).
    session_factory: Callable[[], Any] | None = field(default=None, repr=False, compare=False)
    # Route 53 is global: it may answer elsewhere than the region's S3 (emulators, proxies).
    route53_endpoint_url: str | None = None

    @property
    def session_holds_credentials(self) -> bool:
        return bool(self.session_factory or self.role_arn or self.profile)

    def client_kwargs(self, service: str = "s3") -> dict[str, Any]:
        kwargs: dict[str, Any] = {"region_name": self.region}
        url = self.route53_endpoint_url if service == "route53" else self.endpoint_url
        if url:
            kwargs["endpoint_url"] = url
        if self.access_key and not self.session_holds_credentials:
            kwargs["aws_access_key_id"] = self.access_key
            kwargs["aws_secret_access_key"] = self.secret_key
        return kwargs


@dataclass(frozen=True)
class SlackEndpoint:
    """An incoming webhook (``webhook_url``), or the Web API with a bot token and a channel."""

    conn_id: str
    webhook_url: str = field(repr=False)
    channel: str = ""
    token: str = field(default="", repr=False)
    api_url: str = ""


def slack_api_endpoint(conn: ConnectionFields, channel: str) -> SlackEndpoint:
    """The Web API: the bot token is the password; ``base_url`` in extra as the slack provider
    reads it (default Slack's own)."""
    if not conn.password:
        raise ConfigError(
            f"connection {conn.conn_id!r}: the bot token (password) is empty; it is needed "
            "because alerts.slack_channel is set (leave it empty to post through the webhook)"
        )
    base_url = str(conn.extra.get("base_url") or "https://slack.com/api/")
    return SlackEndpoint(
        conn_id=conn.conn_id, webhook_url="", channel=channel, token=conn.password, api_url=base_url
    )


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
        options={key: str(value) for key, value in conn.extra.items() if key in LIBPQ_ENV},
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
    """Per-service endpoints as Airflow's AWS connection has them: ``service_config.<service>.
    endpoint_url`` first, then the connection-wide ``endpoint_url``."""
    extra = conn.extra
    services = extra.get("service_config") or {}

    def url(service: str) -> str | None:
        return (services.get(service) or {}).get("endpoint_url") or extra.get("endpoint_url")

    return AwsEndpoint(
        conn_id=conn.conn_id,
        region=extra.get("region_name") or default_region,
        access_key=conn.login or extra.get("aws_access_key_id", ""),
        secret_key=conn.password or extra.get("aws_secret_access_key", ""),
        endpoint_url=url("s3"),
        route53_endpoint_url=url("route53"),
        role_arn=extra.get("role_arn") or None,
        assume_role_method=extra.get("assume_role_method") or "assume_role",
        assume_role_kwargs=dict(extra.get("assume_role_kwargs") or {}),
        web_identity_token_file=extra.get("assume_role_with_web_identity_token_file"),
        # As the provider: an assumed role's STS endpoint is never the global endpoint_url.
        sts_endpoint_url=(services.get("sts") or {}).get("endpoint_url"),
        profile=extra.get("profile_name") or None,
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
    # (conn_id, region) -> boto3 session; inside Airflow the amazon provider's hook.
    aws_sessions: Callable[[str, str], Any] | None = None
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
        return self._resolve(conn_id, lambda: self._aws_endpoint(conn_id, region))

    def _aws_endpoint(self, conn_id: str, region: str) -> AwsEndpoint:
        endpoint = aws_endpoint(self.lookup(conn_id), region)
        if self.aws_sessions is None:
            return endpoint
        sessions = self.aws_sessions
        return replace(endpoint, session_factory=lambda: sessions(conn_id, endpoint.region))

    def slack(self) -> SlackEndpoint:
        """The Web API when ``alerts.slack_channel`` is set (only it can choose the channel),
        the incoming webhook otherwise."""
        channel = self.settings.alerts.slack_channel
        if channel:
            api_id = self.settings.connections.slack_api
            return self._resolve(api_id, lambda: slack_api_endpoint(self.lookup(api_id), channel))
        conn_id = self.settings.connections.slack_alerts
        return self._resolve(conn_id, lambda: slack_endpoint(self.lookup(conn_id), ""))
