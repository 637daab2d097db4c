"""The local two-region sandbox, all on loopback.

us-east-1 (primary region): PostgreSQL primary, Redis master.
us-west-2 (secondary region): a synchronous streaming standby, a Redis replica.
Shared: one moto server (S3, a backup bucket per region; Route 53, a hosted zone whose records
point at the primary region) and a Slack webhook receiver writing JSON lines.

``up`` is idempotent; ``down`` stops exactly what ``up`` started (recorded in ``state.json``);
``status`` checks each component. Tests use the same class on free ports.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import secrets
import shutil
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import redis
import yaml

from disaster_recovery.clients.runner import run
from disaster_recovery.clients.s3 import ObjectStore  # boto3 is slow to import
from disaster_recovery.clients.services import http_json
from disaster_recovery.config.endpoints import (
    AwsEndpoint,
    Deployment,
    PostgresEndpoint,
    RedisEndpoint,
    env_var_name,
    parse_connection,
)
from disaster_recovery.config.model import DEFAULT_CONFIG_PATH, Settings, load_settings
from disaster_recovery.errors import DisasterRecoveryError, UnavailableError
from disaster_recovery.monitoring import heartbeat
from disaster_recovery.postgres import db
from disaster_recovery.postgres.instance import LocalInstance, quote_conf
from disaster_recovery.wal.host import archiver_command, write_archiver_files
from dr_sandbox import archiver_install, processes
from dr_sandbox.sample_data import load_sample_data

if TYPE_CHECKING:
    from disaster_recovery.clients.s3 import ObjectStore

log = logging.getLogger(__name__)

SUPERUSER = "postgres"
DATABASE = "litper"
STANDBY_SLOT = "us_west_2"
ZONE_NAME = "litper.internal."
AWS_TEST_KEY = "testing"
# The bot token of the sandbox's Slack Web API stand-in (the webhook receiver checks it).
SANDBOX_SLACK_TOKEN = "xoxb-sandbox-token"  # noqa: S105 (a stand-in, not a secret)
WEBHOOK_PATH = "/services/T0SANDBOX/B0ALERTS/sandboxsecret"
PRIMARY_REGION, SECONDARY_REGION = "us-east-1", "us-west-2"


def sandbox_kms_key(region: str) -> str:
    """The KMS key ARN the sandbox encrypts a region's objects with (moto accepts any)."""
    return f"arn:aws:kms:{region}:000000000000:key/litper-dr-{region}"


DEMO_APP = Path(__file__).resolve().parent / "demo_app.py"
PORT_COUNT = 10
# The moto server of each region's S3 (state.pids key) and the global one (Route 53).
MOTO_KEYS = {PRIMARY_REGION: "moto", SECONDARY_REGION: "moto_us_west_2", "global": "moto_global"}


# PostgreSQL refuses to run as root: when the sandbox is started by root, its servers (and the
# PITR restores its config asks for) run as this unprivileged user, created if missing.
SERVER_OS_USER = "drsandbox"


def server_os_user() -> str | None:
    """The OS user the sandbox's servers run as: None when we are not root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_OS_USER)
    except KeyError:
        run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SERVER_OS_USER,
            ],
            timeout=30,
        )
    return SERVER_OS_USER


def redis_server_command(server: str, port: int, folder: Path) -> list[str]:
    """A throw-away redis-server on loopback, in the foreground: no persistence, and a replica's
    first sync at once (the sandbox's pair; also the demo's Celery broker)."""
    folder.mkdir(parents=True, exist_ok=True)
    return [
        server,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(folder),
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "no",
        "--repl-diskless-sync-delay",
        "0",
        "--daemonize",
        "no",
    ]


@dataclass
class SandboxPorts:
    pg_primary: int = 25432
    pg_standby: int = 25433
    redis_primary: int = 26379
    redis_replica: int = 26380
    moto: int = 25500
    webhook: int = 25501
    # The demo application of each region (us-east-1, us-west-2).
    app_primary: int = 25502
    app_secondary: int = 25503
    # One S3 per region (``moto`` is us-east-1's), and Route 53, which is global, on its own:
    # losing a region loses its S3 and nothing else's.
    moto_secondary: int = 25504
    moto_global: int = 25505

    @classmethod
    def from_base(cls, base: int) -> SandboxPorts:
        return cls(*(base + offset for offset in range(PORT_COUNT)))

    @classmethod
    def free(cls) -> SandboxPorts:
        """A block of free ports below the ephemeral range (see processes.free_port_block)."""
        return cls.from_base(processes.free_port_block(PORT_COUNT))


@dataclass
class SandboxState:
    ports: SandboxPorts
    password: str
    scale: float
    pids: dict[str, int] = field(default_factory=dict)
    hosted_zone_id: str = ""
    object_lock: str | None = None  # governance | compliance: buckets made with Object Lock

    @classmethod
    def load(cls, path: Path) -> SandboxState | None:
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        data["ports"] = SandboxPorts(**data["ports"])
        return cls(**data)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))


class Sandbox:
    def __init__(
        self,
        root: Path,
        ports: SandboxPorts | None = None,
        scale: float | None = None,
        object_lock: str | None = None,
    ):
        self.root = root.resolve()
        state = SandboxState.load(self.state_file)
        if state is None:
            state = SandboxState(ports or SandboxPorts(), secrets.token_urlsafe(12), scale or 1.0)
        elif ports is not None and ports != state.ports:
            raise DisasterRecoveryError(
                f"the sandbox in {self.root} already uses other ports; run `dr sandbox down` first"
            )
        elif scale is not None:
            state.scale = scale
        if object_lock is not None:
            state.object_lock = object_lock
        self.state = state

    # -- layout --------------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def env_file(self) -> Path:
        return self.root / "sandbox.env"

    @property
    def config_file(self) -> Path:
        return self.root / "dr_config.yaml"

    @property
    def slack_log(self) -> Path:
        return self.root / "slack.jsonl"

    @property
    def ports(self) -> SandboxPorts:
        return self.state.ports

    def instance(self, role: str) -> LocalInstance:
        port = self.ports.pg_primary if role == "primary" else self.ports.pg_standby
        name = "us_east_1" if role == "primary" else "us_west_2"
        return LocalInstance(
            data_dir=self.root / "pg" / role,
            port=port,
            cluster_name=name,
            socket_dir=self.root / "run",
            log_file=self.root / "logs" / f"postgres-{role}.log",
            os_user=server_os_user(),
        )

    def postgres(self, role: str = "primary", dbname: str = DATABASE) -> PostgresEndpoint:
        port = self.ports.pg_primary if role == "primary" else self.ports.pg_standby
        return PostgresEndpoint(
            f"dr_postgres_{role}", "127.0.0.1", port, SUPERUSER, dbname, self.state.password
        )

    def redis(self, role: str = "primary") -> RedisEndpoint:
        port = self.ports.redis_primary if role == "primary" else self.ports.redis_replica
        return RedisEndpoint(f"dr_redis_{role}", "127.0.0.1", port)

    def aws(self, region: str) -> AwsEndpoint:
        return AwsEndpoint(
            f"dr_aws_{region}",
            region,
            AWS_TEST_KEY,
            AWS_TEST_KEY,
            self.s3_endpoint_of(region),
            route53_endpoint_url=self.route53_endpoint,
        )

    def store(self, region: str) -> ObjectStore:
        """The region's bucket as the sandbox's policy configures it (encryption, lock)."""
        from disaster_recovery.clients.object_lock import lock_policy

        settings = self.settings()
        return ObjectStore(
            self.aws(region),
            settings.bucket(region),
            encryption=settings.storage.encryption_for(region),
            lock=lock_policy(settings),
        )

    @property
    def s3_endpoint(self) -> str:
        """us-east-1's S3 (``DR_S3_ENDPOINT``)."""
        return self.s3_endpoint_of(PRIMARY_REGION)

    def moto_port(self, which: str) -> int:
        return {
            PRIMARY_REGION: self.ports.moto,
            SECONDARY_REGION: self.ports.moto_secondary,
            "global": self.ports.moto_global,
        }[which]

    def s3_endpoint_of(self, region: str) -> str:
        return f"http://127.0.0.1:{self.moto_port(region)}"

    @property
    def route53_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.moto_port('global')}"

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.webhook}{WEBHOOK_PATH}"

    def settings(self) -> Settings:
        return load_settings(self.config_file)

    # -- up ------------------------------------------------------------------------------

    def up(self) -> dict[str, Any]:
        """Start every component that is not running; safe to run again."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        self.state.save(self.state_file)
        self._write_config()
        self._start_moto()
        # Buckets before the primary: its archiver pushes WAL as soon as it starts.
        self._prepare_aws()
        self._start_webhook()
        self._start_redis("primary")
        self._start_redis("replica")
        self._start_primary()
        self._start_standby()
        self.state.save(self.state_file)
        self._write_env()
        # The primary region's application runs; the secondary's is started by a failover.
        self._write_app_config(SECONDARY_REGION)
        self._demo_app(PRIMARY_REGION, "start")
        return self.summary()

    def _start_moto(self) -> None:
        for which in MOTO_KEYS:
            self._start_moto_server(which)

    def _start_moto_server(self, which: str) -> None:
        key = MOTO_KEYS[which]
        if processes.pid_alive(self.state.pids.get(key), "moto"):
            return
        port = self.moto_port(which)
        log_file = self.root / "logs" / f"{key}.log"
        self.state.pids[key] = processes.start_detached(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            log_file,
        )
        self.state.save(self.state_file)
        processes.wait_for_port(port, f"moto server ({which})", log_file=log_file)

    def _start_webhook(self) -> None:
        if processes.pid_alive(self.state.pids.get("webhook"), "webhook"):
            return
        log_file = self.root / "logs" / "webhook.log"
        self.state.pids["webhook"] = processes.start_detached(
            [
                sys.executable,
                "-m",
                "dr_sandbox.webhook",
                "--port",
                str(self.ports.webhook),
                "--log",
                str(self.slack_log),
            ],
            log_file,
        )
        self.state.save(self.state_file)
        processes.wait_for_port(self.ports.webhook, "webhook receiver", log_file=log_file)

    def _start_redis(self, role: str, follow_primary: bool = True) -> None:
        key = f"redis_{role}"
        if processes.pid_alive(self.state.pids.get(key), "redis-server"):
            return
        server = shutil.which("redis-server")
        if not server:
            raise DisasterRecoveryError(
                "redis-server not found: install Debian's redis-server package"
            )
        port = self.ports.redis_primary if role == "primary" else self.ports.redis_replica
        args = redis_server_command(server, port, self.root / "redis" / role)
        if role == "replica" and follow_primary:
            args += ["--replicaof", "127.0.0.1", str(self.ports.redis_primary)]
        log_file = self.root / "logs" / f"redis-{role}.log"
        self.state.pids[key] = processes.start_detached(args, log_file)
        self.state.save(self.state_file)
        processes.wait_for_port(port, f"redis {role}", log_file=log_file)

    def _start_primary(self) -> None:
        node = self.instance("primary")
        if not (node.data_dir / "PG_VERSION").exists():
            node.initdb(SUPERUSER, self.state.password)
            node.append_config(
                {
                    "wal_level": "replica",
                    "summarize_wal": "on",
                    "wal_log_hints": "on",
                    # Heartbeats are judged by their real commit time (drills, point-in-time checks).
                    "track_commit_timestamp": "on",
                    "max_wal_senders": "10",
                    "max_replication_slots": "10",
                    "hot_standby": "on",
                    "wal_keep_size": "'256MB'",
                    "synchronous_commit": "on",
                    # "always": the standby (a clone of this file) archives every segment it
                    # receives too, into the same archive (identical files are success), so WAL
                    # the primary could not archive before it was lost is there after a failover.
                    "archive_mode": "always",
                    # The WAL archiver (`dr wal push`), to both regions' buckets (docs/pitr.md).
                    "archive_command": quote_conf(self._archive_command()),
                    "archive_timeout": str(
                        int(self.settings().pitr.archive_timeout.total_seconds())
                    ),
                    "log_line_prefix": "'%m [%p] %q%u@%d '",
                    "fsync": "on",
                }
            )
            node.set_role_settings({"synchronous_standby_names": STANDBY_SLOT})
            fresh = True
        else:
            fresh = False
        node.start()
        if fresh:
            with db.connect(self.postgres("primary", "postgres")) as conn:
                # Until the standby is attached, a synchronous primary would block every commit.
                conn.execute("ALTER SYSTEM SET synchronous_standby_names = ''")
                conn.execute("SELECT pg_reload_conf()")
                conn.execute(f"CREATE DATABASE {DATABASE}")
            load_sample_data(self.postgres("primary"), self.state.scale)
            heartbeat.ensure_schema(self.postgres("primary"))
            with db.connect(self.postgres("primary", "postgres")) as conn:
                conn.execute(
                    f"ALTER SYSTEM SET synchronous_standby_names = {quote_conf(STANDBY_SLOT)}"
                )
                conn.execute("SELECT pg_reload_conf()")

    def _archive_command(self) -> str:
        """`dr wal push %p` as the server's OS user runs it: absolute paths and an env file
        (S3 Connections and the policy) under the sandbox root, readable only by that user."""

        env = self.environment()
        deployment = Deployment(
            self.settings(),
            lookup=lambda conn_id: parse_connection(conn_id, env[env_var_name(conn_id)]),
        )
        env_file = write_archiver_files(
            self.root / "wal", self.settings(), deployment, server_os_user()
        )
        # The archiver as a database host installs it (archiver_install), not our virtualenv.
        python = str(archiver_install.archiver_python())
        return archiver_command("push", env_file, server_os_user(), python)

    def _standby_conninfo(self) -> str:
        return (
            f"host=127.0.0.1 port={self.ports.pg_primary} user={SUPERUSER} "
            f"password={self.state.password} application_name={STANDBY_SLOT}"
        )

    def _start_standby(self) -> None:
        node = self.instance("standby")
        if not (node.data_dir / "PG_VERSION").exists():
            primary = self.postgres("primary", "postgres")
            with db.connect(primary) as conn:
                conn.execute(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                    (STANDBY_SLOT,),
                )
            node.clone_from(primary.libpq_env(), slot=STANDBY_SLOT)
            node.set_role_settings(
                {
                    "primary_conninfo": self._standby_conninfo(),
                    "primary_slot_name": STANDBY_SLOT,
                }
            )
            node.mark_standby()
        node.start()
        self._wait_for_sync_standby()

    def _wait_for_sync_standby(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            state = db.query_one(
                self.postgres("primary", "postgres"),
                "SELECT sync_state FROM pg_stat_replication WHERE application_name = %s",
                (STANDBY_SLOT,),
            )
            if state == "sync":
                return
            time.sleep(0.1)
        raise UnavailableError(
            f"standby did not become a synchronous standby in {timeout} s (state {state})"
        )

    def _prepare_aws(self) -> None:
        from disaster_recovery.clients.object_lock import lock_policy

        settings = self.settings()
        for region, bucket in settings.storage.buckets.items():
            ObjectStore(self.aws(region), bucket, lock=lock_policy(settings)).ensure_bucket()
        self.state.hosted_zone_id = self._ensure_zone()

    def _route53(self) -> Any:

        return boto3.client("route53", **self.aws("us-east-1").client_kwargs("route53"))

    def _ensure_zone(self) -> str:
        client = self._route53()
        zones = client.list_hosted_zones_by_name(DNSName=ZONE_NAME)["HostedZones"]
        zone = next((z for z in zones if z["Name"] == ZONE_NAME), None)
        if zone is None:
            zone = client.create_hosted_zone(Name=ZONE_NAME, CallerReference=secrets.token_hex(8))[
                "HostedZone"
            ]
            changes = [
                {
                    "Action": "UPSERT",
                    "ResourceRecordSet": {
                        "Name": f"{name}.{ZONE_NAME}",
                        "Type": "CNAME",
                        "TTL": 30,
                        "ResourceRecords": [{"Value": f"{name}.us-east-1.{ZONE_NAME}"}],
                    },
                }
                for name in ("db", "redis", "app")
            ]
            client.change_resource_record_sets(
                HostedZoneId=zone["Id"], ChangeBatch={"Changes": changes}
            )
        return str(zone["Id"]).split("/")[-1]

    def _write_config(self) -> None:
        data = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
        data["environment"] = {
            "name": "sandbox",
            "production": False,
            "allow_drills_on_production": False,
        }
        data["dns"] = {"zone": ZONE_NAME, "records": ["db", "redis", "app"]}
        if self.state.object_lock:
            data["storage"]["object_lock"] = {"mode": self.state.object_lock, "margin": "1d"}
        # KMS in the sandbox (moto records the headers): each region has its own key, so a
        # cross-region copy must be encrypted again with the destination's.
        data["storage"]["encryption"] = {
            region: {"algorithm": "aws:kms", "kms_key_id": sandbox_kms_key(region)}
            for region in (PRIMARY_REGION, SECONDARY_REGION)
        }
        data["services"] = {
            region: self._services_config(region) for region in (PRIMARY_REGION, SECONDARY_REGION)
        }
        data.setdefault("pitr", {})["restore_os_user"] = server_os_user() or ""
        data["failover"] = {
            "nodes": {
                region: self._node_config(region) for region in (PRIMARY_REGION, SECONDARY_REGION)
            }
        }
        # The quarterly drill loses the primary region through the sandbox's own commands.
        region_command = [
            sys.executable,
            "-m",
            "disaster_recovery",
            "sandbox",
            "{action}",
            PRIMARY_REGION,
            "--root",
            str(self.root),
        ]
        data["drills"] = {
            "region_loss_command": [p.replace("{action}", "kill-region") for p in region_command],
            "region_revive_command": [
                p.replace("{action}", "revive-region") for p in region_command
            ],
        }
        self.config_file.write_text(
            "# Written by `dr sandbox up`: the default policy with the sandbox's own endpoints.\n"
            + yaml.safe_dump(data, sort_keys=False)
        )

    # -- the demo application and the failover's view of the nodes ----------------------------

    def app_port(self, region: str) -> int:
        return self.ports.app_primary if region == PRIMARY_REGION else self.ports.app_secondary

    def app_url(self, region: str) -> str:
        return f"http://127.0.0.1:{self.app_port(region)}"

    def _app_config_file(self, region: str) -> Path:
        return self.root / "apps" / f"{region}.json"

    def _services_config(self, region: str) -> dict[str, Any]:
        command = [
            sys.executable,
            str(DEMO_APP),
            "{action}",
            "--config",
            str(self._app_config_file(region)),
        ]
        return {
            "health_urls": [f"{self.app_url(region)}/health"],
            "read_only_url": f"{self.app_url(region)}/read-only",
            "activate": {
                "kind": "command",
                "command": [p.replace("{action}", "start") for p in command],
            },
            "deactivate": {
                "kind": "command",
                "command": [p.replace("{action}", "stop") for p in command],
            },
            "timeout": "30s",
        }

    def _node_config(self, region: str) -> dict[str, Any]:
        node = self.instance("primary" if region == PRIMARY_REGION else "standby")
        return {
            "control": "local",
            "replication_name": node.cluster_name,
            "data_dir": str(node.data_dir),
            "port": node.port,
            "cluster_name": node.cluster_name,
            "socket_dir": str(node.socket_dir),
            "log_file": str(node.log_file),
            "os_user": node.os_user or "",
        }

    def _demo_app(self, region: str, action: str) -> dict[str, Any]:
        config_file = self._write_app_config(region)

        result = run(
            [sys.executable, str(DEMO_APP), action, "--config", str(config_file)],
            target=f"demo app {region}",
            timeout=60,
        )
        return dict(json.loads(result.stdout.strip().splitlines()[-1]))

    def _write_app_config(self, region: str) -> Path:
        """The app's config (DSNs with the password: 0600); ACTIVATE SERVICES starts it from here."""
        config_file = self._app_config_file(region)
        config_file.parent.mkdir(parents=True, exist_ok=True)
        targets = {
            f"db.{r}.{ZONE_NAME}": self.postgres(role).uri()
            for r, role in ((PRIMARY_REGION, "primary"), (SECONDARY_REGION, "standby"))
        }
        config_file.write_text(
            json.dumps(
                {
                    "region": region,
                    "port": self.app_port(region),
                    "zone": ZONE_NAME,
                    "record": "db",
                    "aws": {
                        # The app resolves `db` through Route 53, which is global.
                        "endpoint_url": self.route53_endpoint,
                        "key": AWS_TEST_KEY,
                        "secret": AWS_TEST_KEY,
                    },
                    "targets": targets,
                    "pidfile": str(config_file.with_suffix(".pid")),
                    "log": str(self.root / "logs" / f"app-{region}.log"),
                    "writer": False,
                    "write_interval": 0.02,
                    # A heartbeat a second: drills measure RPO from it (disaster_recovery.monitoring.heartbeat).
                    "heartbeat_interval": 1.0,
                },
                indent=2,
            )
        )
        config_file.chmod(0o600)
        return config_file

    def _check_app(self, region: str) -> dict[str, Any]:

        status, body = http_json(f"{self.app_url(region)}/health", timeout=3)
        if status != 200:
            raise DisasterRecoveryError(f"{region} application answered {status}: {body}")
        return {"url": self.app_url(region), "read_only": body.get("read_only")}

    def environment(self) -> dict[str, str]:
        """The variables of ``sandbox.env``: exactly those of DESIGN.md's contract."""

        def conn(value: dict[str, Any]) -> str:
            return json.dumps(value)

        primary, standby = self.postgres("primary"), self.postgres("standby")
        env = {}
        for role, endpoint in (("primary", primary), ("standby", standby)):
            env[f"AIRFLOW_CONN_DR_POSTGRES_{role.upper()}"] = conn(
                {
                    "conn_type": "postgres",
                    "host": endpoint.host,
                    "port": endpoint.port,
                    "login": endpoint.user,
                    "password": endpoint.password,
                    "schema": endpoint.dbname,
                }
            )
        for role in ("primary", "replica"):
            redis = self.redis(role)
            env[f"AIRFLOW_CONN_DR_REDIS_{role.upper()}"] = conn(
                {"conn_type": "redis", "host": redis.host, "port": redis.port}
            )
        for role, region in (("primary", "us-east-1"), ("secondary", "us-west-2")):
            env[f"AIRFLOW_CONN_DR_AWS_{role.upper()}"] = conn(
                {
                    "conn_type": "aws",
                    "login": AWS_TEST_KEY,
                    "password": AWS_TEST_KEY,
                    "extra": {
                        "endpoint_url": self.s3_endpoint_of(region),
                        "region_name": region,
                        # Airflow's per-service endpoints: Route 53 is global.
                        "service_config": {
                            "s3": {"endpoint_url": self.s3_endpoint_of(region)},
                            "route53": {"endpoint_url": self.route53_endpoint},
                        },
                    },
                }
            )
        env["AIRFLOW_CONN_DR_SLACK_ALERTS"] = conn(
            {"conn_type": "slackwebhook", "password": self.webhook_url}
        )
        # The Web API (used when alerts.slack_channel is set): the receiver's /api/ plays it.
        env["AIRFLOW_CONN_DR_SLACK_API"] = conn(
            {
                "conn_type": "slack",
                "password": SANDBOX_SLACK_TOKEN,
                "extra": {"base_url": self.webhook_url.split("/services/")[0] + "/api/"},
            }
        )
        env["DR_CONFIG"] = str(self.config_file)
        env["DR_S3_ENDPOINT"] = self.s3_endpoint
        env["DR_S3_ENDPOINT_US_EAST_1"] = self.s3_endpoint_of(PRIMARY_REGION)
        env["DR_S3_ENDPOINT_US_WEST_2"] = self.s3_endpoint_of(SECONDARY_REGION)
        env["DR_PRIMARY_DSN"] = primary.uri()
        env["DR_STANDBY_DSN"] = standby.uri()
        env["DR_REDIS_PRIMARY_URL"] = self.redis("primary").url()
        env["DR_REDIS_REPLICA_URL"] = self.redis("replica").url()
        env["DR_SLACK_LOG"] = str(self.slack_log)
        return env

    def _write_env(self) -> None:
        lines = ["# Written by `dr sandbox up`. Source it: `. .sandbox/sandbox.env`"]
        lines += [
            f"export {key}={_shell_quote(value)}" for key, value in self.environment().items()
        ]
        self.env_file.write_text("\n".join(lines) + "\n")
        self.env_file.chmod(0o600)

    # -- status and down -----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Each component's health; ``healthy`` is True only when every one is."""
        checks = {
            "postgres_primary": self._check_pg_primary,
            "postgres_standby": self._check_pg_standby,
            "redis_primary": lambda: self._check_redis("primary"),
            "redis_replica": lambda: self._check_redis("replica"),
            "s3": self._check_s3,
            "route53": self._check_route53,
            "slack_webhook": self._check_webhook,
            f"app_{PRIMARY_REGION}": lambda: self._check_app(PRIMARY_REGION),
        }
        components: dict[str, Any] = {}
        for name, check in checks.items():
            try:
                components[name] = {"healthy": True, **check()}
            except Exception as exc:
                components[name] = {"healthy": False, "error": str(exc).splitlines()[0]}
        return {
            "healthy": all(c["healthy"] for c in components.values()),
            "root": str(self.root),
            "components": components,
        }

    def _check_pg_primary(self) -> dict[str, Any]:
        endpoint = self.postgres("primary")
        if db.is_in_recovery(endpoint):
            raise DisasterRecoveryError("primary is in recovery (not writable)")
        return {"port": endpoint.port, "role": "primary"}

    def _check_pg_standby(self) -> dict[str, Any]:
        endpoint = self.postgres("standby")
        with db.connect(endpoint) as conn:
            row = conn.execute(
                "SELECT pg_is_in_recovery(), (SELECT status FROM pg_stat_wal_receiver)"
            ).fetchone()
        assert row is not None
        if not row[0]:
            raise DisasterRecoveryError("standby is not in recovery (it was promoted)")
        if row[1] != "streaming":
            raise DisasterRecoveryError(f"standby is not streaming (wal receiver: {row[1]})")
        return {"port": endpoint.port, "role": "standby", "wal_receiver": row[1]}

    def _check_redis(self, role: str) -> dict[str, Any]:

        endpoint = self.redis(role)
        info = redis.Redis.from_url(endpoint.url(), socket_timeout=2).info("replication")
        expected = "master" if role == "primary" else "slave"
        if info["role"] != expected:
            raise DisasterRecoveryError(f"role is {info['role']}, expected {expected}")
        if role == "replica" and info.get("master_link_status") != "up":
            raise DisasterRecoveryError(f"replication link is {info.get('master_link_status')}")
        return {"port": endpoint.port, "role": info["role"]}

    def _check_s3(self) -> dict[str, Any]:

        buckets = self.settings().storage.buckets
        for region, bucket in buckets.items():
            if not ObjectStore(self.aws(region), bucket).bucket_exists():
                raise DisasterRecoveryError(f"bucket {bucket} is missing")
        return {
            "endpoints": {region: self.s3_endpoint_of(region) for region in buckets},
            "buckets": sorted(buckets.values()),
        }

    def _check_route53(self) -> dict[str, Any]:
        records = self._route53().list_resource_record_sets(HostedZoneId=self.state.hosted_zone_id)
        names = sorted(r["Name"] for r in records["ResourceRecordSets"] if r["Type"] == "CNAME")
        return {"zone": ZONE_NAME, "records": names}

    def _check_webhook(self) -> dict[str, Any]:

        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.ports.webhook}/health", timeout=2
        ) as resp:
            resp.read()
        return {"url": f"http://127.0.0.1:{self.ports.webhook}", "log": str(self.slack_log)}

    def _region_parts(self, region: str) -> tuple[str, str]:
        """(postgres role, redis role) of the nodes living in ``region``."""
        return ("primary", "primary") if region == PRIMARY_REGION else ("standby", "replica")

    def kill_region(self, region: str) -> dict[str, Any]:
        """Lose a region at once: SIGKILL its PostgreSQL postmaster and Redis server, its
        application, and its S3. Nothing is shut down cleanly. S3 is durable, so its objects
        are kept (moto holds them in memory only: they are saved through the S3 API first and
        come back with :meth:`revive_region`)."""
        pg_role, redis_role = self._region_parts(region)
        self.instance(pg_role).kill()
        pid = self.state.pids.get(f"redis_{redis_role}")
        if processes.pid_alive(pid, "redis-server"):
            processes.kill_group(pid)  # type: ignore[arg-type]
        app = self._demo_app(region, "stop") if self._app_config_file(region).exists() else {}
        saved = self._lose_s3(region)
        return {
            "region": region,
            "killed": [f"postgres_{pg_role}", f"redis_{redis_role}", "app", "s3"],
            "app_was_running": bool(app.get("stopped")),
            "s3_objects_kept": saved,
        }

    def revive_region(self, region: str) -> dict[str, Any]:
        """Bring a lost region's machines back: its S3 with the objects it held, and its Redis
        server (empty, as after a crash without persistence). PostgreSQL stays down: failback
        rebuilds it (pg_rewind needs it stopped)."""
        _, redis_role = self._region_parts(region)
        restored = self._revive_s3(region)
        self._start_redis(redis_role, follow_primary=False)
        self.state.save(self.state_file)
        return {
            "region": region,
            "revived": ["s3", f"redis_{redis_role}"],
            "s3_objects_restored": restored,
        }

    def _s3_snapshot(self, region: str) -> Path:
        return self.root / "s3-kept" / region

    def _lose_s3(self, region: str) -> int:
        from dr_sandbox.s3_snapshot import save_objects

        key = MOTO_KEYS[region]
        pid = self.state.pids.get(key)
        if not processes.pid_alive(pid, "moto"):
            return 0
        saved = save_objects(self.aws(region), self._s3_snapshot(region))
        processes.kill_group(pid)  # type: ignore[arg-type]
        self.state.pids.pop(key, None)
        self.state.save(self.state_file)
        return saved

    def _revive_s3(self, region: str) -> int:
        from dr_sandbox.s3_snapshot import restore_objects

        if processes.pid_alive(self.state.pids.get(MOTO_KEYS[region]), "moto"):
            return 0
        self._start_moto_server(region)
        folder = self._s3_snapshot(region)
        restored = restore_objects(self.aws(region), folder) if folder.exists() else 0
        shutil.rmtree(folder, ignore_errors=True)
        return restored

    def down(self, purge: bool = False) -> dict[str, Any]:
        """Stop everything ``up`` started (and only that); ``purge`` also deletes the state."""
        # Another process (the CLI, a drill reviving a region) may have started components
        # since this object was made: stop what the state file records now.
        saved = SandboxState.load(self.state_file)
        if saved is not None:
            self.state.pids = {**self.state.pids, **saved.pids}
        stopped = []
        for region in (PRIMARY_REGION, SECONDARY_REGION):
            if self._app_config_file(region).exists() and self._demo_app(region, "stop").get(
                "stopped"
            ):
                stopped.append(f"app_{region}")
        for role in ("standby", "primary"):
            node = self.instance(role)
            if node.is_running():
                node.stop(mode="fast")
                stopped.append(f"postgres_{role}")
        markers = {
            **{key: "moto" for key in MOTO_KEYS.values()},
            "webhook": "webhook",
            "redis_primary": "redis-server",
            "redis_replica": "redis-server",
        }
        for key, marker in markers.items():
            pid = self.state.pids.get(key)
            if processes.pid_alive(pid, marker):
                processes.stop_pid(pid, marker)
                stopped.append(key)
        self.state.pids = {}
        if purge:
            shutil.rmtree(self.root, ignore_errors=True)
        elif self.root.exists():
            self.state.save(self.state_file)
        return {"stopped": stopped, "purged": purge}

    def summary(self) -> dict[str, Any]:
        ports = asdict(self.ports)
        return {
            "root": str(self.root),
            "env_file": str(self.env_file),
            "config": str(self.config_file),
            "regions": {
                "us-east-1": {
                    "postgres": f"127.0.0.1:{ports['pg_primary']}",
                    "redis": f"127.0.0.1:{ports['redis_primary']}",
                    "app": self.app_url(PRIMARY_REGION),
                },
                "us-west-2": {
                    "postgres": f"127.0.0.1:{ports['pg_standby']} (synchronous standby)",
                    "redis": f"127.0.0.1:{ports['redis_replica']} (replica)",
                    "app": f"{self.app_url(SECONDARY_REGION)} (started by a failover)",
                },
            },
            "s3": {
                region: self.s3_endpoint_of(region) for region in (PRIMARY_REGION, SECONDARY_REGION)
            },
            "route53": self.route53_endpoint,
            "slack_webhook": self.webhook_url.split("/services/")[0],
            "slack_log": str(self.slack_log),
            "database": DATABASE,
            "scale": self.state.scale,
        }


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"
