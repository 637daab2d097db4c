"""The WAL archive (tier ``postgresql_wal``): PostgreSQL's ``archive_command`` and
``restore_command``, and the continuity check behind the ``postgresql_wal_archive`` DAG.

Layout in each region's bucket: ``<prefix>/postgresql_wal/<file>`` where ``<file>`` is a
segment (``000000010000000000000005``), a timeline history (``00000002.history``), a backup
history (``...05.00000028.backup``) or a promoted standby's last segment (``...05.partial``).
Each object carries its SHA-256 in its metadata.

``push`` runs on the database host once per segment, so it imports nothing of Airflow and keeps
start-up lean (``python -m disaster_recovery.wal push %p``). Rules that PostgreSQL imposes:

- archive_command: exit 0 only when the file is safely stored (in BOTH regions); any other
  exit makes the archiver retry the same file, keeping it in ``pg_wal``. An identical object
  already archived is success: after a failback the rewound node offers segments the archive
  already holds, and refusing them blocks all WAL behind them (NOTES.md). A *different* object
  under the name is refused loudly and never overwritten.
- restore_command: exit 1 means "no such file" (the end of the archive, a timeline that does
  not exist). An exit status above 125 makes PostgreSQL abort recovery. A segment whose SHA-256
  does not match, or an archive no region can serve, exits 126: recovery must stop, never treat
  damage as the end of WAL and promote early.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shlex
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from disaster_recovery.errors import (
    ConflictError,
    DisasterRecoveryError,
    NotFoundError,
    PermanentError,
)

if TYPE_CHECKING:  # the archiver imports boto3 and pydantic only when it needs them
    from disaster_recovery.config import Settings
    from disaster_recovery.endpoints import AwsEndpoint, Deployment
    from disaster_recovery.storage import ObjectStore

log = logging.getLogger(__name__)

WAL_TYPE = "postgresql_wal"
DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024
# restore_command exit statuses above 125 make PostgreSQL abort recovery (see module docstring).
FETCH_FATAL_EXIT = 126
FETCH_NOT_FOUND_EXIT = 1
# Finished files pushed along with the one archive_command is called for (Pitr.push_ahead).
DEFAULT_PUSH_AHEAD = 4

_SEGMENT = re.compile(r"^[0-9A-F]{24}$")
_ARCHIVABLE = re.compile(
    r"^(?:[0-9A-F]{24}(?:\.partial|\.[0-9A-F]{8}\.backup)?|[0-9A-F]{8}\.history)$"
)


class WalGapError(PermanentError):
    """The archive misses a segment, or holds one whose SHA-256 does not match (WALArchiveGap)."""


class WalStaleError(PermanentError):
    """The newest archived WAL is older than allowed while the primary has newer WAL
    (WALArchiveStale)."""


class WalCorruptError(PermanentError):
    """A fetched segment's SHA-256 does not match the one recorded when it was archived."""


# -- names and positions ------------------------------------------------------------------


def is_archivable(name: str) -> bool:
    return bool(_ARCHIVABLE.match(name))


def is_segment(name: str) -> bool:
    return bool(_SEGMENT.match(name))


def segments_per_xlogid(segment_size: int) -> int:
    return 0x1_0000_0000 // segment_size


def segment_name(timeline: int, segno: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
    per = segments_per_xlogid(segment_size)
    return f"{timeline:08X}{segno // per:08X}{segno % per:08X}"


def parse_segment(name: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> tuple[int, int]:
    """(timeline, segment number) of a segment name (or of a ``.partial``/``.backup`` file)."""
    base = name[:24]
    if not _SEGMENT.match(base):
        raise ValueError(f"not a WAL segment name: {name!r}")
    per = segments_per_xlogid(segment_size)
    return int(base[:8], 16), int(base[8:16], 16) * per + int(base[16:24], 16)


def parse_lsn(lsn: str) -> int:
    """``"0/16B3748"`` -> an integer byte position."""
    high, _, low = lsn.strip().partition("/")
    try:
        return (int(high, 16) << 32) | int(low, 16)
    except ValueError:
        raise ValueError(f"not an LSN: {lsn!r} (expected like 0/16B3748)") from None


def format_lsn(position: int) -> str:
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"


@dataclass(frozen=True)
class TimelineSwitch:
    """One line of a ``.history`` file: ``timeline`` ended at ``switch_lsn``."""

    timeline: int
    switch_lsn: int


def parse_history(text: str) -> list[TimelineSwitch]:
    """Parse a timeline history file (``parentTLI <tab> switchpoint <tab> reason`` lines)."""
    switches = []
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        switches.append(TimelineSwitch(int(fields[0]), parse_lsn(fields[1])))
    return switches


def timeline_of_segment(
    segno: int, timeline: int, history: list[TimelineSwitch], segment_size: int
) -> int:
    """The timeline from which recovery reads segment ``segno`` when it follows ``timeline``.

    As PostgreSQL does: the newest timeline of the history that had begun by that segment (a
    new timeline's first segment holds a copy of its parent's WAL before the switch point).
    """
    begins = {timeline: history[-1].switch_lsn // segment_size if history else 0}
    for index, switch in enumerate(history):
        begins[switch.timeline] = history[index - 1].switch_lsn // segment_size if index else 0
    for candidate in sorted(begins, reverse=True):
        if begins[candidate] <= segno:
            return candidate
    return min(begins)


def expected_segments(
    start_segno: int,
    end_segno: int,
    timeline: int,
    history: list[TimelineSwitch],
    segment_size: int,
) -> list[str]:
    """Segment names recovery needs from ``start_segno`` to ``end_segno`` (inclusive)."""
    return [
        segment_name(
            timeline_of_segment(segno, timeline, history, segment_size), segno, segment_size
        )
        for segno in range(start_segno, end_segno + 1)
    ]


def segments_on_path(
    names: Iterable[str], timeline: int, history: list[TimelineSwitch], segment_size: int
) -> dict[int, str]:
    """segment number -> name, for the archived segments that recovery following ``timeline``
    would read (segments of abandoned timeline branches are left out)."""
    found = {}
    for name in names:
        if is_segment(name):
            segno = parse_segment(name, segment_size)[1]
            if (
                segment_name(
                    timeline_of_segment(segno, timeline, history, segment_size), segno, segment_size
                )
                == name
            ):
                found[segno] = name
    return found


def newest_timeline(names: Iterable[str], at_least: int = 1) -> int:
    """The newest timeline the archive knows of (its highest ``.history`` file)."""
    return max([at_least, *(int(n[:8], 16) for n in names if n.endswith(".history"))])


# -- settings and credentials on a database host ----------------------------------------


def load_env_file(path: str | Path) -> dict[str, str]:
    """Read ``KEY=value`` / ``export KEY='value'`` lines (the sandbox.env format)."""
    values: dict[str, str] = {}
    try:
        text = Path(path).read_text()
    except OSError as exc:
        from disaster_recovery.errors import ConfigError

        raise ConfigError(f"{path}: cannot read the archiver's env file: {exc}") from None
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ")
        key, sep, raw = line.partition("=")
        if not sep:
            continue
        parts = shlex.split(raw) if raw.strip() else [""]
        values[key.strip()] = parts[0] if parts else ""
    return values


def archiver_env(settings: Settings, deployment: Deployment, config_file: Path) -> dict[str, str]:
    """What ``dr wal push|fetch`` needs on a database host: the two S3 Connections and the
    policy file. Nothing else (no database password) goes into the archiver's env file."""
    import json

    from disaster_recovery.endpoints import env_var_name

    env = {"DR_CONFIG": str(config_file)}
    for region in (settings.regions.primary, settings.regions.secondary):
        aws = deployment.aws(region)
        extra: dict[str, Any] = {"region_name": aws.region}
        if aws.endpoint_url:
            extra["endpoint_url"] = aws.endpoint_url
        env[env_var_name(aws.conn_id)] = json.dumps(
            {
                "conn_type": "aws",
                "login": aws.access_key,
                "password": aws.secret_key,
                "extra": extra,
            }
        )
    return env


def archiver_config(settings: Settings) -> dict[str, Any]:
    """The part of the policy the archiver reads, as a stand-alone dr_config.yaml document."""
    return {
        "timezone": settings.timezone,
        "regions": settings.regions.model_dump(),
        "storage": {"prefix": settings.storage.prefix, "buckets": dict(settings.storage.buckets)},
        "connections": settings.connections.model_dump(),
        "pitr": {"push_ahead": settings.pitr.push_ahead},
    }


def write_archiver_files(
    folder: Path, settings: Settings, deployment: Deployment, owner: str | None
) -> Path:
    """Write ``wal.env`` and ``wal_config.yaml`` into ``folder`` (readable only by ``owner``,
    the OS user PostgreSQL runs as) and return the env file's path."""
    import pwd

    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    config_file = folder / "wal_config.yaml"
    config_file.write_text(yaml.safe_dump(archiver_config(settings), sort_keys=False))
    env_file = folder / "wal.env"
    env = archiver_env(settings, deployment, config_file)
    env_file.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()))
    for path in (config_file, env_file):
        path.chmod(0o600)
        if owner:
            entry = pwd.getpwnam(owner)
            os.chown(path, entry.pw_uid, entry.pw_gid)
    return env_file


def _reachable_by_others(path: Path) -> bool:
    """Can a user other than the owner (PostgreSQL's OS user) execute ``path``?"""
    target = path.resolve()
    return all(p.stat().st_mode & 0o001 for p in (target, *target.parents))


def archiver_python() -> tuple[str, list[str]]:
    """The interpreter PostgreSQL's OS user can run, and extra import paths it needs.

    Normally ``sys.executable``. When we are root and that interpreter sits where the server
    user cannot reach it (a pyenv under ``/root``), the system Python of the same version runs
    the archiver with our environment's site-packages on its path.
    """
    import sysconfig

    from disaster_recovery.localpg import server_os_user

    current = Path(sys.executable)
    if server_os_user() is None or _reachable_by_others(current):
        return sys.executable, []
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (Path(f"/usr/bin/python{version}"), Path(f"/usr/local/bin/python{version}")):
        if candidate.exists() and _reachable_by_others(candidate):
            return str(candidate), [
                sysconfig.get_paths()["purelib"],
                sysconfig.get_paths()["platlib"],
            ]
    from disaster_recovery.errors import ToolError

    raise ToolError(
        f"{current}: PostgreSQL's OS user cannot run this Python, and no system "
        f"python{version} was found; install the package where that user can run it"
    )


def archiver_command(action: str, env_file: Path) -> str:
    """``archive_command``/``restore_command`` text: absolute paths only, since PostgreSQL runs
    it without our shell's environment (and as another OS user when we are root)."""
    python, extra_paths = archiver_python()
    path = ":".join(dict.fromkeys([str(Path(__file__).resolve().parent.parent), *extra_paths]))
    args = "%p" if action == "push" else "%f %p"
    return (
        f"env PYTHONPATH={shlex.quote(path)} {shlex.quote(python)} "
        f"-m disaster_recovery.wal --env-file {shlex.quote(str(env_file))} {action} {args}"
    )


# -- the archive ----------------------------------------------------------------------------


def ready_to_archive(file: Path, limit: int) -> list[Path]:
    """Up to ``limit`` other files PostgreSQL has finished and not yet archived (``.ready`` in
    ``pg_wal/archive_status``), oldest first: the ones it will offer next. PostgreSQL recycles
    a segment only once it is ``.done``, so these stay readable while they are pushed."""
    if limit <= 0:
        return []
    try:
        names = sorted(
            entry.name.removesuffix(".ready")
            for entry in (file.parent / "archive_status").iterdir()
            if entry.name.endswith(".ready")
        )
    except OSError:  # not a pg_wal folder (a file pushed by hand): nothing to take along
        return []
    return [file.parent / n for n in names if n != file.name and is_archivable(n)][:limit]


class PushedAhead:
    """Markers of files pushed ahead, in ``pg_wal/dr_archive_status/<name>`` holding the file's
    SHA-256 (WAL-G keeps its own in ``pg_wal/walg_data``). A marker is taken only for a file
    whose bytes still hash to it, and is dropped once PostgreSQL no longer lists the file as
    ``.ready`` (archived, or removed by a crash recovery)."""

    FOLDER = "dr_archive_status"

    def __init__(self, pg_wal: Path):
        self.pg_wal = pg_wal
        self.folder = pg_wal / self.FOLDER

    def has(self, file: Path) -> bool:
        return (self.folder / file.name).is_file()

    def put(self, file: Path, sha256: str) -> None:
        self.folder.mkdir(exist_ok=True)
        _write_atomically(self.folder / file.name, sha256.encode())

    def take(self, file: Path) -> str | None:
        """The file's SHA-256 if it was pushed ahead with these very bytes (the marker is then
        removed); None when there is no marker or the bytes differ (push it normally)."""
        marker = self.folder / file.name
        try:
            recorded = marker.read_text().strip()
            actual = hashlib.sha256(file.read_bytes()).hexdigest()
        except OSError:
            return None
        marker.unlink(missing_ok=True)
        return actual if actual == recorded else None

    def forget_archived(self) -> None:
        status = self.pg_wal / "archive_status"
        try:
            for marker in self.folder.iterdir():
                if not (status / f"{marker.name}.ready").exists():
                    marker.unlink(missing_ok=True)
        except OSError:
            pass  # no markers yet


def wal_prefix(storage_prefix: str) -> str:
    return f"{storage_prefix}/{WAL_TYPE}/".lstrip("/")


@dataclass(frozen=True)
class ArchiveLocation:
    """One region's bucket and the Connection that reaches it."""

    region: str
    bucket: str
    endpoint: AwsEndpoint


def _lean_policy(config_file: str) -> tuple[str, list[ArchiveLocation], int]:
    """Prefix, locations and ``pitr.push_ahead`` from the policy file, read without the pydantic
    settings model: the archiver runs once per segment and only needs these keys (start-up cost,
    docs/pitr.md). The full model validates the same file wherever Airflow loads it."""
    import yaml

    from disaster_recovery.endpoints import aws_endpoint, connection_from_env
    from disaster_recovery.errors import ConfigError

    try:
        data = yaml.safe_load(Path(config_file).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{config_file}: cannot read the policy file: {exc}") from None
    regions = {"primary": "us-east-1", "secondary": "us-west-2", **(data.get("regions") or {})}
    storage = data.get("storage") or {}
    buckets = storage.get("buckets") or {}
    connections = {
        "aws_primary": "dr_aws_primary",
        "aws_secondary": "dr_aws_secondary",
        **(data.get("connections") or {}),
    }
    locations = []
    for role in ("primary", "secondary"):
        region = regions[role]
        if region not in buckets:
            raise ConfigError(f"{config_file}: storage.buckets has no bucket for region {region!r}")
        conn = connection_from_env(connections[f"aws_{role}"])
        locations.append(ArchiveLocation(region, buckets[region], aws_endpoint(conn, region)))
    push_ahead = int((data.get("pitr") or {}).get("push_ahead", DEFAULT_PUSH_AHEAD))
    return str(storage.get("prefix", "litper")).strip("/"), locations, push_ahead


@dataclass
class WalArchive:
    """The WAL archive in both regions' buckets, primary region first."""

    prefix: str
    locations: list[ArchiveLocation]
    push_ahead: int = 0
    _stores: dict[str, ObjectStore] = field(default_factory=dict, repr=False)
    _session: Any = field(default=None, repr=False)

    @classmethod
    def for_deployment(cls, deployment: Deployment) -> WalArchive:
        settings = deployment.settings
        return cls(
            settings.storage.prefix,
            [
                ArchiveLocation(region, settings.bucket(region), deployment.aws(region))
                for region in (settings.regions.primary, settings.regions.secondary)
            ],
            settings.pitr.push_ahead,
        )

    @classmethod
    def from_environment(cls) -> WalArchive:
        """Policy from ``$DR_CONFIG``, S3 Connections from ``AIRFLOW_CONN_*`` variables."""
        # Same lookup as config.config_path(), without importing the pydantic model.
        default = Path(__file__).resolve().parent.parent / "dr_config.yaml"
        prefix, locations, push_ahead = _lean_policy(os.environ.get("DR_CONFIG") or str(default))
        return cls(prefix, locations, push_ahead)

    @property
    def regions(self) -> list[str]:
        return [location.region for location in self.locations]

    def store(self, region: str) -> ObjectStore:
        if region not in self._stores:
            import boto3

            from disaster_recovery.storage import ObjectStore, s3_client

            location = next(loc for loc in self.locations if loc.region == region)
            # One session for both regions (a boto3 session costs ~0.25 s to build), short
            # timeouts and few retries: PostgreSQL retries a failed archive_command itself.
            if self._session is None:
                self._session = boto3.session.Session()
            client = s3_client(
                location.endpoint,
                session=self._session,
                max_attempts=2,
                connect_timeout=5,
                read_timeout=60,
            )
            self._stores[region] = ObjectStore(location.endpoint, location.bucket, client=client)
        return self._stores[region]

    def key(self, name: str) -> str:
        return wal_prefix(self.prefix) + name

    # -- archive_command ---------------------------------------------------------------

    def push(self, path: str | Path) -> dict[str, Any]:
        """Archive one file to every region, and with it up to ``push_ahead`` other finished
        files waiting in ``pg_wal`` (WAL-G's upload-ahead): PostgreSQL runs archive_command one
        file at a time, so a burst of WAL otherwise drains at one upload per call. A file pushed
        ahead gets a marker (:class:`PushedAhead`) holding its SHA-256; when PostgreSQL offers
        it, the marker answers without building an S3 client.

        Only the requested file decides the outcome: identical existing objects are success, a
        different one raises :class:`ConflictError`, any region failing raises (PostgreSQL
        retries the file). A file pushed ahead that fails is only logged and gets no marker;
        PostgreSQL offers it again in its turn and gets the error then."""
        file = Path(path)
        if not is_archivable(file.name):
            raise PermanentError(f"{file}: not a WAL segment, history or backup file name")
        markers = PushedAhead(file.parent)
        sha256 = markers.take(file)
        if sha256 is not None:
            return {
                "file": file.name,
                "sha256": sha256,
                "size_bytes": file.stat().st_size,
                "regions": dict.fromkeys(self.regions, "archived ahead by an earlier call"),
                "pushed_ahead": [],
            }
        # Clients are built first (boto3 sessions are not thread-safe while creating clients).
        for region in self.regions:
            self.store(region)
        from concurrent.futures import ThreadPoolExecutor

        ahead = [f for f in ready_to_archive(file, self.push_ahead) if not markers.has(f)]
        with ThreadPoolExecutor(max_workers=1 + len(ahead)) as pool:
            requested = pool.submit(self._push_file, file)
            others = {other: pool.submit(self._push_file, other) for other in ahead}
        result = requested.result()
        result["pushed_ahead"], failed = [], {}
        for other, future in others.items():
            try:
                markers.put(other, future.result()["sha256"])
                result["pushed_ahead"].append(other.name)
            except Exception as exc:  # the file's own turn reports it
                failed[other.name] = str(exc).splitlines()[0]
                log.warning("pushing %s ahead failed (retried in its turn): %s", other.name, exc)
        if failed:
            result["ahead_failed"] = failed
        markers.forget_archived()
        return result

    def _push_file(self, file: Path) -> dict[str, Any]:
        """One file to every region at once (module docstring: the rules PostgreSQL imposes)."""
        name = file.name
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise PermanentError(f"cannot read {file}: {exc}") from None
        sha256 = hashlib.sha256(data).hexdigest()
        outcome: dict[str, str] = {}
        errors: list[DisasterRecoveryError] = []

        def to_region(region: str) -> None:
            try:
                written = self.store(region).put_if_absent(self.key(name), data)
                outcome[region] = "archived" if written else "already archived (identical)"
            except ConflictError as exc:
                errors.append(
                    ConflictError(
                        f"WAL archive conflict for {name} in {region}: {exc}. Another cluster "
                        "may be archiving into the same prefix (or the object was altered): "
                        "find out before removing anything"
                    )
                )
                outcome[region] = "conflict"
            except DisasterRecoveryError as exc:
                errors.append(exc)
                outcome[region] = f"failed: {str(exc).splitlines()[0]}"

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=len(self.regions)) as pool:
            list(pool.map(to_region, self.regions))
        if errors:
            conflict = next((e for e in errors if isinstance(e, ConflictError)), None)
            raise conflict or errors[0]
        return {"file": name, "sha256": sha256, "size_bytes": len(data), "regions": outcome}

    # -- restore_command ---------------------------------------------------------------

    def fetch(self, name: str, destination: str | Path) -> dict[str, Any]:
        """Write an archived file to ``destination`` after checking its SHA-256, trying each
        region in turn. Raises :class:`NotFoundError` when no region has it,
        :class:`WalCorruptError` / :class:`UnavailableError` when none could serve it intact."""
        if not is_archivable(name):
            raise PermanentError(f"{name!r} is not a WAL file name")
        problems: list[DisasterRecoveryError] = []
        for region in self.regions:
            try:
                data = self._read_verified(region, name)
            except NotFoundError:
                continue
            except DisasterRecoveryError as exc:
                problems.append(exc)
                log.warning("%s", exc)
                continue
            _write_atomically(Path(destination), data)
            return {"file": name, "region": region, "size_bytes": len(data)}
        if problems:
            raise next((p for p in problems if isinstance(p, WalCorruptError)), problems[0])
        raise NotFoundError(f"{name} is not in the WAL archive ({', '.join(self.regions)})")

    def _read_verified(self, region: str, name: str) -> bytes:
        store = self.store(region)
        key = self.key(name)
        head = store.head(key)
        if head is None:
            raise NotFoundError(f"{store.url(key)} not found")
        expected = head.get("Metadata", {}).get("sha256", "")
        data = store.get_bytes(key)
        actual = hashlib.sha256(data).hexdigest()
        if not expected or actual != expected:
            raise WalCorruptError(
                f"{store.url(key)}: SHA-256 {actual} does not match the archived "
                f"{expected or '(none recorded)'}; refusing to hand it to PostgreSQL"
            )
        return data

    # -- listing -------------------------------------------------------------------------

    def listing(self, region: str) -> dict[str, dict[str, Any]]:
        """name -> {size, etag, last_modified} of every archived file in a region."""
        prefix = wal_prefix(self.prefix)
        found = {}
        for entry in self.store(region).list_keys(prefix):
            name = entry["Key"][len(prefix) :]
            if is_archivable(name):
                found[name] = {
                    "size": entry["Size"],
                    "etag": entry.get("ETag", ""),
                    "last_modified": entry["LastModified"],
                }
        return found

    def history(self, timeline: int) -> list[TimelineSwitch]:
        """The switch points leading to ``timeline`` (empty for timeline 1)."""
        if timeline <= 1:
            return []
        name = f"{timeline:08X}.history"
        for region in self.regions:
            try:
                return parse_history(self._read_verified(region, name).decode())
            except NotFoundError:
                continue
        raise NotFoundError(f"timeline history {name} is not in the WAL archive")


def _write_atomically(destination: Path, data: bytes) -> None:
    """Write to a temporary name and rename: PostgreSQL never sees a half-written segment."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(f".{destination.name}.dr-fetch")
    with open(temporary, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, destination)


# -- continuity ------------------------------------------------------------------------------


@dataclass
class ArchiveReport:
    checked_from: str | None
    checked_to: str | None
    timeline: int
    current_segment: str
    expected: int
    pending: int
    missing: dict[str, list[str]]
    corrupt: dict[str, list[str]]
    newest: dict[str, dict[str, Any]]
    archiver: dict[str, Any]
    stale: bool
    stale_after_seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def gap(self) -> bool:
        return any(self.missing.values()) or any(self.corrupt.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "healthy": not self.gap and not self.stale,
            "gap": self.gap,
            "stale": self.stale,
            "checked_from": self.checked_from,
            "checked_to": self.checked_to,
            "timeline": self.timeline,
            "current_segment": self.current_segment,
            "expected_segments": self.expected,
            "pending_segments": self.pending,
            "missing": self.missing,
            "corrupt": self.corrupt,
            "newest": self.newest,
            "archiver": self.archiver,
            "stale_after_seconds": self.stale_after_seconds,
            "notes": self.notes,
        }


def _primary_position(deployment: Deployment) -> dict[str, Any]:
    from disaster_recovery import db

    with db.connect(deployment.postgres("primary"), "postgres") as conn:
        row = conn.execute(
            "SELECT pg_walfile_name(pg_current_wal_lsn()), pg_current_wal_lsn()::text,"
            " (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')"
        ).fetchone()
        stats = conn.execute(
            "SELECT archived_count, last_archived_wal, last_archived_time, failed_count,"
            " last_failed_wal, last_failed_time, stats_reset FROM pg_stat_archiver"
        ).fetchone()
    assert row is not None and stats is not None
    keys = (
        "archived_count",
        "last_archived_wal",
        "last_archived_time",
        "failed_count",
        "last_failed_wal",
        "last_failed_time",
        "stats_reset",
    )
    return {
        "segment": row[0],
        "lsn": row[1],
        "segment_size": int(row[2]),
        "archiver": dict(zip(keys, stats, strict=True)),
    }


def oldest_kept_base_start(deployment: Deployment) -> str | None:
    """Start segment of the oldest verified base backup in the primary region's catalog."""
    from disaster_recovery.catalog import Catalog
    from disaster_recovery.storage import ObjectStore

    settings = deployment.settings
    region = settings.regions.primary
    catalog = Catalog(
        ObjectStore(deployment.aws(region), settings.bucket(region)), settings.storage.prefix
    )
    bases = [m for m in catalog.manifests(["postgresql_base"]) if m.verified]
    starts = [getattr(m, "start_segment", None) for m in bases]
    return next((s for s in starts if s), None)


def _verified_state_key(prefix: str, region: str) -> str:
    return f"{prefix}/{WAL_TYPE}_state/verified-{region}.json".lstrip("/")


def check_archive(
    deployment: Deployment,
    *,
    now: datetime | None = None,
    deep: bool = False,
    start_segment: str | None = None,
) -> ArchiveReport:
    """Is the archive continuous, intact and fresh in both regions?

    Checked range: from ``start_segment`` (default: the oldest kept base backup's start
    segment) to the newest archived segment of the primary's timeline. Segments after that
    and before the primary's current segment are *pending* (still in ``pg_wal``); they are
    what staleness measures. The content of each segment is hashed once per S3 ETag
    (remembered in ``<prefix>/postgresql_wal_state/``), or every time with ``deep``.
    """
    settings = deployment.settings
    now = now or datetime.now(UTC)
    archive = WalArchive.for_deployment(deployment)
    position = _primary_position(deployment)
    seg_size = position["segment_size"]
    timeline, current_segno = parse_segment(position["segment"], seg_size)
    history = archive.history(timeline)
    listings = {region: archive.listing(region) for region in archive.regions}
    notes: list[str] = []

    names = {name for listing in listings.values() for name in listing}
    on_lineage = sorted(segments_on_path(names, timeline, history, seg_size))
    start = start_segment or oldest_kept_base_start(deployment)
    if start is None:
        notes.append("no verified base backup: checked from the oldest archived segment")
        start_segno = on_lineage[0] if on_lineage else current_segno
    else:
        start_segno = parse_segment(start, seg_size)[1]
    newest_segno = on_lineage[-1] if on_lineage else start_segno - 1
    expected = expected_segments(start_segno, newest_segno, timeline, history, seg_size)

    missing = {
        region: [s for s in expected if s not in listing] for region, listing in listings.items()
    }
    corrupt = {
        region: _corrupt_segments(archive, region, listings[region], expected, deep)
        for region in archive.regions
    }
    newest = {}
    for region, listing in listings.items():
        present = [s for s in expected if s in listing]
        if present:
            archived_at = listing[present[-1]]["last_modified"]
            newest[region] = {
                "segment": present[-1],
                "archived_at": archived_at.isoformat(),
                "age_seconds": round((now - archived_at).total_seconds(), 1),
            }
    pending = max(0, current_segno - newest_segno - 1)
    # Stale: WAL exists on the primary beyond the newest archived segment (the current segment
    # has data, or whole segments wait), and the newest archived one is older than allowed.
    unarchived = parse_lsn(position["lsn"]) > (newest_segno + 1) * seg_size
    stale_after = settings.wal_stale_after.total_seconds()
    ages = [entry["age_seconds"] for entry in newest.values()]
    stale = unarchived and (not ages or max(ages) > stale_after or len(ages) < len(archive.regions))
    return ArchiveReport(
        checked_from=expected[0] if expected else None,
        checked_to=expected[-1] if expected else None,
        timeline=timeline,
        current_segment=position["segment"],
        expected=len(expected),
        pending=pending,
        missing=missing,
        corrupt=corrupt,
        newest=newest,
        archiver={
            k: (v.isoformat() if isinstance(v, datetime) else v)
            for k, v in position["archiver"].items()
        },
        stale=stale,
        stale_after_seconds=stale_after,
        notes=notes,
    )


def _corrupt_segments(
    archive: WalArchive,
    region: str,
    listing: Mapping[str, dict[str, Any]],
    names: Iterable[str],
    deep: bool,
) -> list[str]:
    """Segments whose bytes do not hash to their recorded SHA-256, hashing only objects whose
    ETag changed since they were last found intact."""
    store = archive.store(region)
    state_key = _verified_state_key(archive.prefix, region)
    verified: dict[str, str] = {}
    if not deep and store.exists(state_key):
        verified = {k: str(v) for k, v in store.get_json(state_key).items()}
    corrupt = []
    intact: dict[str, str] = {}
    for name in names:
        if name not in listing:
            continue
        etag = listing[name]["etag"]
        if verified.get(name) == etag:
            intact[name] = etag
            continue
        try:
            archive._read_verified(region, name)
        except WalCorruptError:
            corrupt.append(name)
            continue
        intact[name] = etag
    store.put_json(state_key, intact)
    return corrupt


def raise_for_gap(report: ArchiveReport | dict[str, Any]) -> None:
    """:class:`WalGapError` naming each missing or corrupt segment and its region (takes the
    report or its ``to_dict()`` form, as the DAG passes it through XCom)."""
    facts = report.to_dict() if isinstance(report, ArchiveReport) else report
    if not facts["gap"]:
        return
    parts = [
        f"missing {', '.join(names)} in {region}"
        for region, names in facts["missing"].items()
        if names
    ]
    parts += [
        f"corrupt (SHA-256 mismatch) {', '.join(names)} in {region}"
        for region, names in facts["corrupt"].items()
        if names
    ]
    raise WalGapError(
        f"WAL archive gap between {facts['checked_from']} and {facts['checked_to']}: "
        + "; ".join(parts)
        + ". Point-in-time recovery cannot cross it: take a new base backup now "
        "(`dr backup-physical base`) so recovery can start after the gap, and find out why."
    )


def raise_for_staleness(report: ArchiveReport | dict[str, Any]) -> None:
    """:class:`WalStaleError` when the newest archived WAL is older than the threshold."""
    facts = report.to_dict() if isinstance(report, ArchiveReport) else report
    if not facts["stale"]:
        return
    ages = {region: entry["age_seconds"] for region, entry in facts["newest"].items()}
    archiver = facts["archiver"]
    raise WalStaleError(
        f"WAL archive is stale: newest archived segment ages {ages or 'none archived'} s "
        f"(limit {facts['stale_after_seconds']:g} s) while the primary is at "
        f"{facts['current_segment']} with {facts['pending_segments']} whole segment(s) waiting; "
        f"pg_stat_archiver failed_count={archiver.get('failed_count')}, last_failed_wal="
        f"{archiver.get('last_failed_wal')}. Check the archive_command in the server log."
    )


# -- the lean entry point: python -m disaster_recovery.wal [--env-file F] push|fetch ...


def main(argv: list[str] | None = None) -> int:
    """``archive_command`` / ``restore_command`` entry point: quiet on success, one line on
    stderr on failure, exit status as PostgreSQL expects (module docstring)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m disaster_recovery.wal")
    parser.add_argument("--env-file", help="KEY=value file with DR_CONFIG and AIRFLOW_CONN_* (S3)")
    actions = parser.add_subparsers(dest="action", required=True)
    push = actions.add_parser("push", help="archive_command: push %%p")
    push.add_argument("path")
    fetch = actions.add_parser("fetch", help="restore_command: fetch %%f %%p")
    fetch.add_argument("name")
    fetch.add_argument("destination")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="dr wal: %(levelname)s %(message)s"
    )
    return run_action(
        args.action,
        args.env_file,
        [args.path] if args.action == "push" else [args.name, args.destination],
    )


def run_action(action: str, env_file: str | None, operands: list[str]) -> int:
    """Run push or fetch and map the outcome to the exit status PostgreSQL needs: for fetch,
    1 only for "not archived"; any other failure (corrupt, unreachable, misconfigured) is
    FETCH_FATAL_EXIT so recovery stops instead of taking it for the end of WAL."""
    failure = FETCH_FATAL_EXIT if action == "fetch" else 1
    try:
        if env_file:
            os.environ.update(load_env_file(env_file))
        archive = WalArchive.from_environment()
        if action == "push":
            archive.push(operands[0])
        else:
            archive.fetch(operands[0], operands[1])
    except NotFoundError as exc:
        if action == "fetch":
            return FETCH_NOT_FOUND_EXIT  # the normal end of the archive: say nothing
        print(f"dr wal {action}: {exc}", file=sys.stderr)
        return failure
    except Exception as exc:  # any failure, never a traceback's status PostgreSQL could misread
        kind = "" if isinstance(exc, DisasterRecoveryError) else "unexpected error: "
        print(f"dr wal {action}: {kind}{exc}", file=sys.stderr)
        return failure
    return 0


if __name__ == "__main__":
    sys.exit(main())
