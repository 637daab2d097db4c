"""Typed, validated settings: the policy from ``dr_config.yaml``.

Secrets never live here: they come from Connections (see :mod:`disaster_recovery.config.endpoints`).
Every problem in a file is reported at once, each with its dotted key and the file's path.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from croniter import croniter
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from disaster_recovery.config.compression import Codec
from disaster_recovery.config.defaults import (
    DEFAULT_ARCHIVE_MODE,
    DEFAULT_ASYNC_MAX_BACKLOG,
    DEFAULT_ASYNC_UPLOADS,
    DEFAULT_PREFETCH,
    DEFAULT_PUSH_AHEAD,
    DEFAULT_WAL_COMPRESSION,
)
from disaster_recovery.config.durations import parse_duration
from disaster_recovery.config.encryption import Encryption, encryption_by_region
from disaster_recovery.config.policy_file import read_policy_text
from disaster_recovery.errors import ConfigError

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parents[2] / "dr_config.yaml"
CONFIG_ENV_VAR = "DR_CONFIG"


def _check_cron(value: Any) -> str:
    if not isinstance(value, str) or not croniter.is_valid(value):
        raise ValueError(f"not a valid cron expression: {value!r}")
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Cron = Annotated[str, BeforeValidator(_check_cron)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Regions(_Section):
    primary: str = "us-east-1"
    secondary: str = "us-west-2"


class Objectives(_Section):
    rpo: Duration = timedelta(minutes=15)
    rto: Duration = timedelta(minutes=30)
    availability_percent: float = Field(99.9, gt=0, le=100)


class Retention(_Section):
    """A backup goes only when it is older than ``max_age`` AND not among the newest
    ``keep_last`` verified ones of its tier (pgBackRest-like: age and count together)."""

    max_age: Duration
    keep_last: int = Field(ge=0)


class Tier(_Section):
    schedule: Cron
    retention: Retention


class Tiers(_Section):
    postgresql_full: Tier = Tier(
        schedule="0 3 * * *", retention=Retention(max_age=timedelta(days=7), keep_last=7)
    )
    postgresql_incremental: Tier = Tier(
        schedule="0 * * * *", retention=Retention(max_age=timedelta(hours=24), keep_last=24)
    )
    postgresql_wal: Tier = Tier(
        schedule="*/5 * * * *", retention=Retention(max_age=timedelta(days=7), keep_last=0)
    )
    postgresql_weekly: Tier = Tier(
        schedule="0 3 * * 1", retention=Retention(max_age=timedelta(weeks=4), keep_last=4)
    )
    postgresql_monthly: Tier = Tier(
        schedule="0 3 1 * *", retention=Retention(max_age=timedelta(days=366), keep_last=12)
    )

    def get(self, backup_type: str) -> Tier:
        tier = getattr(self, backup_type, None)
        if not isinstance(tier, Tier):
            raise ConfigError(
                f"unknown backup type {backup_type!r}; known: {', '.join(TIER_NAMES)}"
            )
        return tier


TIER_NAMES = (
    "postgresql_full",
    "postgresql_incremental",
    "postgresql_wal",
    "postgresql_weekly",
    "postgresql_monthly",
)


class Thresholds(_Section):
    replication_lag: Duration = timedelta(seconds=60)
    health_failures_before_failover: int = Field(3, ge=1)
    # The newest archived WAL may be this old before WALArchiveStale fires; defaults to the RPO.
    wal_stale: Duration | None = None


class Alerts(_Section):
    # Empty: post through the incoming webhook (connections.slack_alerts), which posts to the
    # channel it was created for and cannot choose another. Set: post with the bot token of
    # connections.slack_api (Slack's Web API, chat.postMessage), which can choose the channel.
    slack_channel: str = ""
    # Where log links in alerts point; the Airflow UI as operators reach it.
    airflow_base_url: str = "http://localhost:8080"


class ObjectLock(_Section):
    """S3 Object Lock on backups, manifests and WAL (docs/security.md): each object locked for
    its tier's max_age plus ``margin``. The buckets must have been created with Object Lock."""

    mode: Literal["governance", "compliance"]
    margin: Duration = timedelta(days=1)


class Storage(_Section):
    prefix: str = "litper"
    buckets: dict[str, str] = {
        "us-east-1": "litper-dr-backups-us-east-1",
        "us-west-2": "litper-dr-backups-us-west-2",
    }
    # "copy": the DAG copies each backup to the secondary bucket itself; "native": S3
    # cross-region replication is configured and the DAG only waits for it and checks it.
    replication: Literal["copy", "native"] = "copy"
    replication_wait: Duration = timedelta(minutes=15)
    multipart_chunk_mib: int = Field(16, ge=5, le=512)
    # Per region: {algorithm: AES256} or {algorithm: aws:kms, kms_key_id: <that region's key>}
    # (docs/security.md). A region left out gets AES256: no object is written unencrypted.
    encryption: dict[str, dict[str, str]] = {}
    object_lock: ObjectLock | None = None

    @field_validator("prefix")
    @classmethod
    def _strip_slashes(cls, value: str) -> str:
        return value.strip("/")

    @model_validator(mode="after")
    def _encryption_of_known_buckets(self) -> Storage:
        try:
            encryption_by_region(self.encryption, list(self.buckets), "storage.encryption")
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self

    def encryption_for(self, region: str) -> Encryption:
        return encryption_by_region(self.encryption, list(self.buckets), "storage.encryption")[
            region
        ]


class Connections(_Section):
    postgres_primary: str = "dr_postgres_primary"
    postgres_standby: str = "dr_postgres_standby"
    redis_primary: str = "dr_redis_primary"
    redis_replica: str = "dr_redis_replica"
    aws_primary: str = "dr_aws_primary"
    aws_secondary: str = "dr_aws_secondary"
    slack_alerts: str = "dr_slack_alerts"
    # A slack provider "slack" Connection (bot token as password): used when alerts.slack_channel
    # is set.
    slack_api: str = "dr_slack_api"


class Backup(_Section):
    # Dump from the standby to keep load off the primary (when its connection allows it).
    dump_from: Literal["primary", "standby"] = "primary"
    # pg_dump compression, chosen by measurement (README, benchmark table): gzip level 1.
    compression: str = "gzip:1"
    restore_jobs: int = Field(2, ge=1)
    # Extra pg_dump/pg_restore time budget; a dump that runs longer is killed and aborted.
    command_timeout: Duration = timedelta(hours=6)
    # postgresql_backup_cleanup runs daily after the backups (in `timezone`).
    cleanup_schedule: Cron = "30 4 * * *"
    # Airflow retries of a failed backup task (transient errors only: a failed check never retries).
    task_retries: int = Field(2, ge=0)
    retry_delay: Duration = timedelta(minutes=5)
    # Cleanup removes backup objects that have no manifest (a run died between upload and
    # manifest) and aborts multipart uploads (a killed worker cannot abort its own) once they are
    # this old; a live backup saves its manifest within seconds of its object.
    leftover_grace: Duration = timedelta(days=1)


class Pitr(_Section):
    """Point-in-time recovery: the WAL archiver and the physical chain (issue 4)."""

    # PostgreSQL's archive_timeout on the primary: a partly filled segment is archived after
    # this long, which bounds the data a lost primary can take with it (keep it far below the RPO).
    archive_timeout: Duration = timedelta(seconds=60)
    # Base backups: kept while younger than max_age or among the newest keep_last; the newest
    # one that ends before the WAL window (tiers.postgresql_wal max_age) is kept too, so every
    # point in that window stays restorable.
    base_retention: Retention = Retention(max_age=timedelta(days=7), keep_last=7)
    # Budget of one point-in-time restore (download, combine, WAL replay).
    restore_timeout: Duration = timedelta(hours=2)
    # archive_command also pushes up to this many other finished WAL files, in parallel, so a
    # burst of writes drains faster than one upload per call (0: only the file asked for).
    push_ahead: int = Field(DEFAULT_PUSH_AHEAD, ge=0, le=32)
    # async: archive_command answers from the confirmations of a long-lived uploader (one per
    # data directory, started by the first call) that pushes every .ready file in order with
    # several uploads in flight; sync: each call uploads its own file (and push_ahead others).
    archive_mode: Literal["async", "sync"] = DEFAULT_ARCHIVE_MODE
    # async: archive_command refuses once this many files wait to be archived (.ready), so a
    # stalled upload is a loud failure and a WALArchiveBacklog alert, not a silent lag.
    async_max_backlog: int = Field(DEFAULT_ASYNC_MAX_BACKLOG, ge=1)
    async_uploads: int = Field(DEFAULT_ASYNC_UPLOADS, ge=1, le=32)
    # restore_command fetches this many following segments in parallel into a spool in the
    # restored data directory (0: one segment per call).
    prefetch: int = Field(DEFAULT_PREFETCH, ge=0, le=32)
    # The OS user a restored instance (PITR, drills) runs as when this process is root:
    # PostgreSQL refuses to run as root.
    restore_os_user: str = ""
    # One writer at a time on the physical chain: its lock is renewed every third of this while
    # a backup runs, so a run that crashed (stopped renewing) holds it at most this long.
    chain_lock_lease: Duration = timedelta(minutes=5)
    # Base and incremental backups are compressed on the way to S3 with this codec:level
    # (none, gzip:1-9, zstd:1-19); chosen by measurement (README, Benchmarks).
    compression: str = "zstd:1"
    # WAL segments are compressed with this codec:level before upload (history and backup
    # files stay plain); each object's metadata names its codec and the segment's own SHA-256,
    # so restore_command reads archives written under any setting.
    wal_compression: str = DEFAULT_WAL_COMPRESSION

    @field_validator("compression", "wal_compression")
    @classmethod
    def _known_codec(cls, value: str, info: ValidationInfo) -> str:
        try:
            return str(Codec.parse(value, f"pitr.{info.field_name}"))
        except ConfigError as exc:
            raise ValueError(str(exc)) from None


class Environment(_Section):
    """Production is the default: a deployment that starts from the shipped file is protected
    as one. Development copies (the sandbox) say ``production: false`` themselves."""

    name: str = "production"
    production: bool = True
    # The explicit opt-out: drills may change this production topology (fail it over, lose its
    # primary region) without a person's approval, when drills.auto_approve is true too.
    allow_drills_on_production: bool = False


class NodeControlConfig(_Section):
    """How the failover drives one PostgreSQL node beyond SQL: stop, start, fence, rewind, clone.

    ``local``: a data directory on this machine (the sandbox, :class:`LocalInstance`).
    ``command``: argument-list templates per action (SSH, Patroni, pg_ctl on the host), with
    ``{source_conninfo}``, ``{primary_conninfo}``, ``{slot}`` filled in; the source's password
    goes through ``PGPASSWORD``, never the command line. ``none``: SQL only (no rewind, no fence
    of an unreachable node).
    """

    control: Literal["local", "command", "none"] = "none"
    # The node's replication identity: its application_name and slot on the other node.
    replication_name: str = ""
    data_dir: str = ""
    port: int = Field(default=5432, ge=1, le=65535)
    cluster_name: str = ""
    socket_dir: str = ""
    log_file: str = ""
    # The OS user the node's server runs as (control local, when this process is root).
    os_user: str = ""
    commands: dict[str, list[str]] = {}

    @field_validator("commands")
    @classmethod
    def _known_actions(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        unknown = set(value) - {
            "start",
            "stop",
            "fence",
            "unfence",
            "rewind",
            "clone",
            "configure_standby",
            "is_running",
        }
        if unknown:
            raise ValueError(f"unknown node control action(s): {', '.join(sorted(unknown))}")
        return value


class FailoverConfig(_Section):
    # Per region: how to drive its database node (see NodeControlConfig).
    nodes: dict[str, NodeControlConfig] = {}
    # DECIDE: how long a person has to answer; no answer aborts (never proceeds).
    approval_timeout: Duration = timedelta(minutes=30)
    # SYNC: how long to wait for the standby to replay the old primary's final LSN.
    sync_timeout: Duration = timedelta(seconds=60)
    # Failback: how long a rebuilt node may take to stream and catch up.
    rebuild_timeout: Duration = timedelta(minutes=30)
    # After promotion / rebuild, make the surviving pair synchronous again.
    synchronous_replication: bool = True
    # dr_health_check triggers dr_failover after thresholds.health_failures_before_failover.
    auto_trigger: bool = True
    # Database (in every node) where VALIDATE writes its probe row.
    probe_database: str = "litper"


class RegionServices(_Section):
    """One region's application: health URLs, a read-only switch, how to start and stop it."""

    health_urls: list[str] = []
    # POST {"read_only": true|false} here makes the application stop / resume writing.
    read_only_url: str = ""
    activate: dict[str, Any] = {}
    deactivate: dict[str, Any] = {}
    timeout: Duration = timedelta(seconds=60)

    @field_validator("activate", "deactivate")
    @classmethod
    def _known_kind(cls, value: dict[str, Any]) -> dict[str, Any]:
        kind = value.get("kind", "none") if value else "none"
        needs = {
            "none": (),
            "command": ("command",),
            "http": ("url",),
            "ecs": ("cluster", "service"),
        }
        if kind not in needs:
            raise ValueError(f"unknown kind {kind!r} (use none, command, http or ecs)")
        missing = [key for key in needs[kind] if not value.get(key)]
        if missing:
            raise ValueError(f"kind {kind!r} needs {', '.join(missing)}")
        return value


class DnsConfig(_Section):
    zone: str = "litper.internal."
    # Record names in the zone (db, redis, app): each a CNAME to the active region's target.
    records: list[str] = ["db", "redis", "app"]
    # A record's target in a region; {name}, {region}, {zone}. Override per record in targets.
    target_template: str = "{name}.{region}.{zone}"
    targets: dict[str, dict[str, str]] = {}
    ttl: int = Field(default=30, ge=0)
    insync_timeout: Duration = timedelta(minutes=5)

    @field_validator("zone")
    @classmethod
    def _absolute_zone(cls, value: str) -> str:
        return value if value.endswith(".") else value + "."

    def fqdn(self, name: str) -> str:
        return name if name.endswith(".") else f"{name}.{self.zone}"

    def target(self, name: str, region: str) -> str:
        explicit = self.targets.get(name, {}).get(region)
        value = explicit or self.target_template.format(name=name, region=region, zone=self.zone)
        return value if value.endswith(".") else value + "."


class Drills(_Section):
    """DR drills. Schedules avoid the 03:00 backups; the target is the environment this file
    describes (its own Connections), refused when marked production unless allowed."""

    monthly_schedule: Cron = "0 5 15 * *"
    quarterly_schedule: Cron = "0 5 20 1,4,7,10 *"
    # DECIDE during a drill. Unset: a person approves on production (the drill DAG's Required
    # Action, before the drill changes anything), the drill's policy approves elsewhere. true:
    # the policy approves (on production only with environment.allow_drills_on_production).
    # false: the policy rejects (the drill stops before its failover).
    auto_approve: bool | None = None
    # The point-in-time check restores to a random moment within this window.
    pitr_window: Duration = timedelta(hours=24)
    # The quarterly drill's detection checks health this often (dr_health_check: every minute).
    health_check_interval: Duration = timedelta(seconds=2)
    # How the quarterly drill loses the primary region and later brings its machines back
    # (argument lists, e.g. stopping instances). Without a loss command the drill crashes
    # PostgreSQL through failover.nodes, shuts Redis down without saving and stops services.
    region_loss_command: list[str] = []
    region_revive_command: list[str] = []
    # With the primary region lost, SYNC cannot confirm the final LSN: the drill accepts the
    # possible loss as an operator would (acknowledged commits are on the synchronous standby,
    # and the drill checks that none is missing).
    accept_data_loss_on_region_loss: bool = True


class HealthHistory(_Section):
    """How long the cleanup keeps the health checks' history (monitoring.history)."""

    # The per-day records availability is measured from (30 days and the month need 31 days;
    # a year's report needs the rest).
    availability_records: Duration = timedelta(days=400)
    # Each check's full record (every fact and error), for investigations.
    check_records: Duration = timedelta(days=30)
    # Rows of dr.heartbeat on the primary: data loss is measured against the newest ones.
    heartbeats: Duration = timedelta(days=7)


class Settings(_Section):
    """Everything policy-like the library needs, validated once."""

    timezone: str = "America/Bogota"
    environment: Environment = Environment()
    regions: Regions = Regions()
    objectives: Objectives = Objectives()
    tiers: Tiers = Tiers()
    thresholds: Thresholds = Thresholds()
    alerts: Alerts = Alerts()
    storage: Storage = Storage()
    connections: Connections = Connections()
    backup: Backup = Backup()
    pitr: Pitr = Pitr()
    failover: FailoverConfig = FailoverConfig()
    # Per region: the application's endpoints and controls.
    services: dict[str, RegionServices] = {}
    dns: DnsConfig = DnsConfig()
    drills: Drills = Drills()
    health_history: HealthHistory = HealthHistory()

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone: {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _no_contradiction(self) -> Settings:
        environment, drills = self.environment, self.drills
        if (
            environment.production
            and drills.auto_approve
            and not environment.allow_drills_on_production
        ):
            raise ValueError(
                "drills.auto_approve: true contradicts environment.production: true (a drill "
                "would fail production over with nobody's approval); opt out explicitly with "
                "environment.allow_drills_on_production: true, or leave drills.auto_approve unset"
            )
        if environment.allow_drills_on_production and not environment.production:
            raise ValueError(
                "environment.allow_drills_on_production: true contradicts "
                "environment.production: false (it opts a production deployment out of drill "
                "approvals); remove it or set environment.production: true"
            )
        return self

    @property
    def drills_need_a_person(self) -> bool:
        """A drill changes this topology only after a person approved it (in the drill DAG)."""
        environment = self.environment
        return environment.production and not (
            self.drills.auto_approve and environment.allow_drills_on_production
        )

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def wal_stale_after(self) -> timedelta:
        return self.thresholds.wal_stale or self.objectives.rpo

    def bucket(self, region: str) -> str:
        try:
            return self.storage.buckets[region]
        except KeyError:
            raise ConfigError(f"storage.buckets has no bucket for region {region!r}") from None


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: {exc.error_count()} problem(s):"]
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"  {key}: {message}")
    return "\n".join(lines)


def settings_from_dict(data: dict[str, Any], source: str = "<dict>") -> Settings:
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None


def config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_PATH)


def load_settings(path: str | Path | None = None) -> Settings:
    """Read and validate the policy file (``$DR_CONFIG`` or ``include/dr_config.yaml``)."""
    file = Path(path) if path else config_path()
    text = read_policy_text(file)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from None
    if data is None:
        # Only comments: as likely a truncated copy as a wish for every default; say so.
        raise ConfigError(
            f"{file}: the configuration holds no settings (only comments or blank lines); "
            "write at least one section, e.g. 'regions:'"
        )
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: the top level must be a mapping of sections")
    return settings_from_dict(data, str(file))
