"""The WAL archive (tier ``postgresql_wal``): PostgreSQL's ``archive_command`` and
``restore_command``, and the continuity check behind the ``postgresql_wal_archive`` DAG.

Layout in each region's bucket: ``<prefix>/postgresql_wal/<file>`` where ``<file>`` is a
segment (``000000010000000000000005``), a timeline history (``00000002.history``), a backup
history (``...05.00000028.backup``) or a promoted standby's last segment (``...05.partial``).
Each object carries the SHA-256 of the file itself in its metadata, the moment the file was
last written on the database host (``written-at``) and, for a segment stored compressed
(``pitr.wal_compression``), its codec (``compression``).

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
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from disaster_recovery.clients.object_lock import LockPolicy, lean_lock_policy, lock_policy
from disaster_recovery.config.compression import Codec
from disaster_recovery.config.encryption import Encryption, encryption_by_region
from disaster_recovery.config.endpoints import aws_endpoint, connection_from_env
from disaster_recovery.config.policy_file import read_policy_text
from disaster_recovery.errors import (
    ConfigError,
    ConflictError,
    DisasterRecoveryError,
    NotFoundError,
    PermanentError,
    UnavailableError,
)

if TYPE_CHECKING:  # the archiver imports boto3 and pydantic only when it needs them
    from disaster_recovery.clients.s3 import ObjectStore
    from disaster_recovery.config.endpoints import AwsEndpoint, Deployment

from disaster_recovery.config.defaults import (
    DEFAULT_ARCHIVE_MODE,
    DEFAULT_ASYNC_MAX_BACKLOG,
    DEFAULT_ASYNC_UPLOADS,
    DEFAULT_PREFETCH,
    DEFAULT_PUSH_AHEAD,
    DEFAULT_WAL_COMPRESSION,
    WAL_DEBT_FOLDER,
    wal_prefix,
)
from disaster_recovery.errors import WalCorruptError
from disaster_recovery.postgres.walfiles import (
    TimelineSwitch,
    is_archivable,
    is_segment,
    parse_history,
)

log = logging.getLogger(__name__)

# restore_command exit statuses above 125 make PostgreSQL abort recovery (see module docstring).
FETCH_FATAL_EXIT = 126
FETCH_NOT_FOUND_EXIT = 1
# The object metadata naming a stored file's codec (absent: stored as it is).
COMPRESSION_METADATA = "compression"
# The object metadata holding when the file was last written (its mtime, UTC ISO): where its WAL
# ends in time. S3's LastModified is the upload, later than that whenever archiving runs behind
# the writes (a burst, an outage, the asynchronous uploader's queue).
WRITTEN_METADATA = "written-at"
# PostgreSQL's largest wal_segment_size: a body that inflates beyond it is not a WAL file.
MAX_WAL_FILE_BYTES = 1 << 30
# After a region's S3 failed, pushes skip it this long (what it lacks is recorded and filled).
REGION_RETRY_SECONDS = 60


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


class RegionsDown:
    """``pg_wal/dr_region_down/<region>``: when a region's S3 last failed. For
    :data:`REGION_RETRY_SECONDS` after that, pushes skip the region and record what it lacks
    instead of paying its timeouts again for every segment."""

    FOLDER = "dr_region_down"

    def __init__(self, pg_wal: Path):
        self.folder = pg_wal / self.FOLDER

    def recently(self, region: str) -> str | None:
        try:
            marked = (self.folder / region).stat().st_mtime
        except OSError:
            return None
        if time.time() - marked > REGION_RETRY_SECONDS:
            return None
        return datetime.fromtimestamp(marked, UTC).isoformat(timespec="seconds")

    def mark(self, region: str) -> None:
        try:
            self.folder.mkdir(exist_ok=True)
            (self.folder / region).touch()
        except OSError as exc:  # a memo only: never fail the push for it
            log.warning("cannot record %s as down: %s", region, exc)

    def clear(self, region: str) -> None:
        (self.folder / region).unlink(missing_ok=True)


@dataclass(frozen=True)
class ArchiveLocation:
    """One region's bucket, the Connection that reaches it, and the encryption it writes."""

    region: str
    bucket: str
    endpoint: AwsEndpoint
    encryption: Encryption = field(default_factory=Encryption)
    lock: LockPolicy | None = None


@dataclass(frozen=True)
class ArchiverTuning:
    """The ``pitr`` keys the archiver reads (config.model.Pitr documents each)."""

    push_ahead: int = DEFAULT_PUSH_AHEAD
    archive_mode: str = DEFAULT_ARCHIVE_MODE
    async_max_backlog: int = DEFAULT_ASYNC_MAX_BACKLOG
    async_uploads: int = DEFAULT_ASYNC_UPLOADS
    prefetch: int = DEFAULT_PREFETCH
    wal_compression: str = DEFAULT_WAL_COMPRESSION

    @classmethod
    def from_policy(cls, pitr: dict[str, Any], config_file: str) -> ArchiverTuning:
        words = ("archive_mode", "wal_compression")
        try:
            values: dict[str, Any] = {
                key: str(pitr[key]) if key in words else int(pitr[key])
                for key in cls.__dataclass_fields__
                if key in pitr
            }
            tuning = cls(**values)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{config_file}: pitr: {exc}") from None
        if tuning.archive_mode not in ("async", "sync"):
            raise ConfigError(
                f"{config_file}: pitr.archive_mode must be async or sync, not {tuning.archive_mode!r}"
            )
        Codec.parse(tuning.wal_compression, f"{config_file}: pitr.wal_compression")
        return tuning


def _lean_policy(config_file: str) -> tuple[str, list[ArchiveLocation], ArchiverTuning]:
    """Prefix, locations and the archiver's ``pitr`` keys from the policy file, read without the pydantic
    settings model: the archiver runs once per segment and only needs these keys (start-up cost,
    docs/pitr.md). The full model validates the same file wherever Airflow loads it."""
    try:
        data = yaml.safe_load(read_policy_text(Path(config_file))) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{config_file}: cannot read the policy file: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{config_file}: the top level must be a mapping of sections")
    regions = {"primary": "us-east-1", "secondary": "us-west-2", **(data.get("regions") or {})}
    storage = data.get("storage") or {}
    buckets = storage.get("buckets") or {}
    connections = {
        "aws_primary": "dr_aws_primary",
        "aws_secondary": "dr_aws_secondary",
        **(data.get("connections") or {}),
    }
    prefix = str(storage.get("prefix", "litper")).strip("/")
    lock = lean_lock_policy(data, prefix, config_file)
    locations = []
    for role in ("primary", "secondary"):
        region = regions[role]
        if region not in buckets:
            raise ConfigError(f"{config_file}: storage.buckets has no bucket for region {region!r}")
        conn = connection_from_env(connections[f"aws_{role}"])
        encryption = encryption_by_region(
            storage.get("encryption"), list(buckets), f"{config_file}: storage.encryption"
        )[region]
        endpoint = aws_endpoint(conn, region)
        locations.append(ArchiveLocation(region, buckets[region], endpoint, encryption, lock))
    return prefix, locations, ArchiverTuning.from_policy(data.get("pitr") or {}, config_file)


@dataclass
class WalArchive:
    """The WAL archive in both regions' buckets, primary region first."""

    prefix: str
    locations: list[ArchiveLocation]
    push_ahead: int = 0
    tuning: ArchiverTuning = field(default_factory=ArchiverTuning)
    _stores: dict[str, ObjectStore] = field(default_factory=dict, repr=False)
    _session: Any = field(default=None, repr=False)
    # The regions' pushes run on threads of their own and build their stores from one session,
    # which botocore does not let two threads build clients from at once.
    _building: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def for_deployment(cls, deployment: Deployment) -> WalArchive:
        settings = deployment.settings
        return cls(
            settings.storage.prefix,
            [
                ArchiveLocation(
                    region,
                    settings.bucket(region),
                    deployment.aws(region),
                    settings.storage.encryption_for(region),
                    lock_policy(settings),
                )
                for region in (settings.regions.primary, settings.regions.secondary)
            ],
            settings.pitr.push_ahead,
            ArchiverTuning(
                **settings.pitr.model_dump(include=set(ArchiverTuning.__dataclass_fields__))
            ),
        )

    @classmethod
    def from_environment(cls) -> WalArchive:
        """Policy from ``$DR_CONFIG``, S3 Connections from ``AIRFLOW_CONN_*`` variables."""
        # Same lookup as config.config_path(), without importing the pydantic model.
        default = Path(__file__).resolve().parents[2] / "dr_config.yaml"
        prefix, locations, tuning = _lean_policy(os.environ.get("DR_CONFIG") or str(default))
        return cls(prefix, locations, tuning.push_ahead, tuning)

    @property
    def regions(self) -> list[str]:
        return [location.region for location in self.locations]

    def store(self, region: str) -> ObjectStore:
        with self._building:
            if region not in self._stores:
                self._stores[region] = self._new_store(region)
            return self._stores[region]

    def _new_store(self, region: str) -> ObjectStore:
        # Imported here, not at the top: a file pushed ahead is answered from its marker
        # without boto3 (~0.2 s of PostgreSQL's archive_command per segment).
        import boto3

        from disaster_recovery.clients.s3 import ObjectStore, s3_client

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
        return ObjectStore(
            location.endpoint,
            location.bucket,
            client=client,
            encryption=location.encryption,
            lock=location.lock,
        )

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
        different one raises :class:`ConflictError`. Stored in at least one region is success,
        the other region's lack recorded (:mod:`disaster_recovery.wal.replica_debt`); no region
        storing it raises (PostgreSQL retries the file). A file pushed ahead that fails is only logged and gets no marker;
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
            written_at = datetime.fromtimestamp(file.stat().st_mtime, UTC).isoformat()
            data = file.read_bytes()
        except OSError as exc:
            raise PermanentError(f"cannot read {file}: {exc}") from None
        sha256 = hashlib.sha256(data).hexdigest()
        stored, metadata = self._encode(name, data)
        metadata[WRITTEN_METADATA] = written_at
        outcome: dict[str, str] = {}
        errors: list[DisasterRecoveryError] = []
        down = RegionsDown(file.parent)
        recently_down = {r: since for r in self.regions if (since := down.recently(r))}
        if len(recently_down) == len(self.regions):
            recently_down = {}  # all of them: try them all, one may be back

        def to_region(region: str) -> None:
            if (since := recently_down.get(region)) is not None:
                # A region that just failed is not waited for again on every segment (a
                # black-holed endpoint costs its timeouts each time): owed, retried later.
                errors.append(UnavailableError(f"{region} unreachable since {since}"))
                outcome[region] = f"failed: skipped, unreachable since {since}"
                return
            try:
                written = self.store(region).put_if_absent(
                    self.key(name), stored, sha256=sha256, metadata=metadata
                )
                outcome[region] = "archived" if written else "already archived (identical)"
                down.clear(region)
            except UnavailableError as exc:
                down.mark(region)
                errors.append(exc)
                outcome[region] = f"failed: {str(exc).splitlines()[0]}"
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

        with ThreadPoolExecutor(max_workers=len(self.regions)) as pool:
            list(pool.map(to_region, self.regions))
        if errors:
            conflict = next((e for e in errors if isinstance(e, ConflictError)), None)
            held = [r for r in self.regions if r in outcome and "archived" in outcome[r]]
            if conflict or not held:
                raise conflict or errors[0]
            # Stored in at least one region: a lost region must not stop PostgreSQL's archiver.
            # What the others lack is recorded beside the copy and filled when they return.
            lacking = [r for r in self.regions if r not in held]
            record_debt(self, name, sha256, held, lacking)
            for region in lacking:
                outcome[region] += " (owed: copied when the region answers)"
        return {
            "file": name,
            "sha256": sha256,
            "size_bytes": len(data),
            "stored_bytes": len(stored),
            "regions": outcome,
        }

    def _encode(self, name: str, data: bytes) -> tuple[bytes, dict[str, str]]:
        """What is stored for ``data`` and the metadata saying how: segments (and a promoted
        standby's ``.partial``) in ``pitr.wal_compression``; history and backup files, a few
        hundred bytes people read by hand, as they are."""
        codec = Codec.parse(self.tuning.wal_compression)
        if codec.name == "none" or not (is_segment(name) or name.endswith(".partial")):
            return data, {}
        from disaster_recovery.clients.compression import compress_bytes

        return compress_bytes(data, codec), {COMPRESSION_METADATA: codec.name}

    # -- restore_command ---------------------------------------------------------------

    def fetch(self, name: str, destination: str | Path) -> dict[str, Any]:
        """Write an archived file to ``destination`` after checking its SHA-256, trying each
        region in turn. Raises :class:`NotFoundError` when no region has it,
        :class:`WalCorruptError` / :class:`UnavailableError` when none could serve it intact."""
        if not is_archivable(name):
            raise PermanentError(f"{name!r} is not a WAL file name")
        problems: list[DisasterRecoveryError] = []
        answered = []
        for region in self.regions:
            try:
                data = self._read_verified(region, name)
            except NotFoundError:
                answered.append(region)
                continue
            except DisasterRecoveryError as exc:
                problems.append(exc)
                log.warning("%s", exc)
                continue
            _write_atomically(Path(destination), data)
            return {"file": name, "region": region, "size_bytes": len(data)}
        corrupt = next((p for p in problems if isinstance(p, WalCorruptError)), None)
        # A region that answers "not there" is an answer even while the other is lost: recovery
        # probes for files that do not exist (the next timeline's history) and must hear so.
        if corrupt or (problems and not answered):
            raise corrupt or problems[0]
        raise NotFoundError(f"{name} is not in the WAL archive ({', '.join(answered)})")

    def _read_verified(self, region: str, name: str) -> bytes:
        """The file's bytes (decompressed), checked against the SHA-256 of the push."""
        return self._read_stored(region, name)[0]

    def _read_stored(self, region: str, name: str) -> tuple[bytes, bytes, dict[str, str]]:
        """The file's bytes (checked as :meth:`_read_verified`), the object's body as stored and
        its metadata (what a copy to the other region writes)."""
        store = self.store(region)
        key = self.key(name)
        found = store.get_with_metadata(key)
        if found is None:
            raise NotFoundError(f"{store.url(key)} not found")
        stored, metadata = found
        expected = metadata.get("sha256", "")
        data = _decode(store.url(key), stored, metadata)
        actual = hashlib.sha256(data).hexdigest()
        if not expected or actual != expected:
            raise WalCorruptError(
                f"{store.url(key)}: SHA-256 {actual} does not match the archived "
                f"{expected or '(none recorded)'}; refusing to hand it to PostgreSQL",
                check="sha256",
                key=key,
            )
        return data, stored, metadata

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

    def written_at(self, name: str, regions: list[str] | None = None) -> datetime | None:
        """When ``name`` was last written on the database host, from its object's metadata in the
        first of ``regions`` (default: all) that holds it; None for a file archived before the
        archiver recorded it (or that no region can tell of)."""
        for region in self.regions if regions is None else regions:
            try:
                head = self.store(region).head(self.key(name))
            except DisasterRecoveryError as exc:
                log.warning("written time of %s unknown in %s: %s", name, region, exc)
                continue
            if head is not None:
                return _parse_written_at(head.get("Metadata", {}).get(WRITTEN_METADATA))
        return None

    def history(self, timeline: int) -> list[TimelineSwitch]:
        """The switch points leading to ``timeline`` (empty for timeline 1)."""
        if timeline <= 1:
            return []
        name = f"{timeline:08X}.history"
        unreachable = []
        for region in self.regions:
            try:
                return parse_history(self._read_verified(region, name).decode())
            except NotFoundError:
                continue
            except UnavailableError as exc:  # a lost region: the other may hold it
                unreachable.append(f"{region}: {str(exc).splitlines()[0]}")
        if unreachable:
            raise UnavailableError(
                f"timeline history {name} is not in the reachable WAL archive ("
                + "; ".join(unreachable)
                + ")"
            )
        raise NotFoundError(f"timeline history {name} is not in the WAL archive")


def _parse_written_at(value: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:  # not ours: as if not recorded
        return None


def _decode(url: str, stored: bytes, metadata: dict[str, str]) -> bytes:
    """The archived file from its stored body, per the codec its metadata names (none when it
    names none: archives written before compression, history files). Undecodable is corrupt."""
    codec = metadata.get(COMPRESSION_METADATA, "none")
    if codec == "none":
        return stored
    from disaster_recovery.clients.compression import decompress_bytes

    try:
        return decompress_bytes(stored, codec, url, MAX_WAL_FILE_BYTES)
    except DisasterRecoveryError as exc:
        raise WalCorruptError(
            f"{exc}; refusing to hand it to PostgreSQL", check="decompress", key=url
        ) from None


def _write_atomically(destination: Path, data: bytes) -> None:
    """Write to a temporary name and rename: PostgreSQL never sees a half-written segment."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(f".{destination.name}.dr-fetch")
    with open(temporary, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, destination)


# -- what a lost region still lacks (filled by wal.replica_debt when it returns) -------------


def debt_prefix(storage_prefix: str) -> str:
    return f"{storage_prefix}/{WAL_DEBT_FOLDER}/".lstrip("/")


def debt_key(storage_prefix: str, lacking_region: str, name: str) -> str:
    return f"{debt_prefix(storage_prefix)}{lacking_region}/{name}"


def record_debt(
    archive: WalArchive, name: str, sha256: str, held_in: list[str], lacking: list[str]
) -> None:
    """Write, in every region that holds ``name``, that each ``lacking`` region still needs it.
    Raises when no marker could be written (the push then fails and PostgreSQL retries it)."""
    since = datetime.now(UTC).isoformat()
    written = 0
    for region in held_in:
        store = archive.store(region)
        for missing in lacking:
            body = {"file": name, "sha256": sha256, "since": since, "lacking": missing}
            store.put_bytes(
                debt_key(archive.prefix, missing, name),
                json.dumps(body).encode(),
                content_type="application/json",
            )
            written += 1
    if not written:
        raise DisasterRecoveryError(f"{name}: the debt of {', '.join(lacking)} was not recorded")
