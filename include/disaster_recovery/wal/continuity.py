"""Is the WAL archive continuous, intact and fresh in both regions? (the ``postgresql_wal_archive`` DAG, ``dr wal check``)"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from disaster_recovery.catalog.listing import Catalog
from disaster_recovery.clients.s3 import regional_store
from disaster_recovery.postgres import db

if TYPE_CHECKING:  # the archiver imports boto3 and pydantic only when it needs them
    from disaster_recovery.config.endpoints import Deployment

from disaster_recovery.config.defaults import WAL_TYPE
from disaster_recovery.errors import (
    UnavailableError,
    VerificationError,
    WalBacklogError,
    WalCorruptError,
    WalGapError,
    WalStaleError,
)
from disaster_recovery.postgres.walfiles import (
    expected_segments,
    parse_lsn,
    parse_segment,
    segments_on_path,
)
from disaster_recovery.wal.archive import WalArchive

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
    # pitr.async_max_backlog: archive_command refuses beyond it (WALArchiveBacklog).
    backlog_limit: int = 0
    notes: list[str] = field(default_factory=list)
    # Segments stored without their region's configured encryption (storage.encryption).
    unencrypted: dict[str, list[str]] = field(default_factory=dict)
    # Files a region lacks because it was down when they were pushed (filled when it returns).
    owed: dict[str, int] = field(default_factory=dict)
    unreachable: dict[str, str] = field(default_factory=dict)

    @property
    def gap(self) -> bool:
        return any(self.missing.values()) or any(self.corrupt.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "healthy": not self.gap and not self.stale and not any(self.unencrypted.values()),
            "gap": self.gap,
            "stale": self.stale,
            "unencrypted": self.unencrypted,
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
            "backlog_limit": self.backlog_limit,
            "notes": self.notes,
            "owed": self.owed,
            "unreachable": self.unreachable,
        }


def _primary_position(deployment: Deployment) -> dict[str, Any]:

    with db.connect(deployment.postgres("primary"), "postgres") as conn:
        row = conn.execute(
            "SELECT pg_walfile_name(pg_current_wal_lsn()), pg_current_wal_lsn()::text,"
            " (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')"
        ).fetchone()
        stats = conn.execute(
            "SELECT archived_count, last_archived_wal, last_archived_time, failed_count,"
            " last_failed_wal, last_failed_time, stats_reset,"
            " (SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready')"
            " FROM pg_stat_archiver"
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
        "ready_backlog",  # files PostgreSQL has finished and not yet been told are archived
    )
    return {
        "segment": row[0],
        "lsn": row[1],
        "segment_size": int(row[2]),
        "archiver": dict(zip(keys, stats, strict=True)),
    }


def oldest_kept_base_start(deployment: Deployment) -> str | None:
    """Start segment of the oldest verified base backup in the primary region's catalog."""

    settings = deployment.settings
    region = settings.regions.primary
    catalog = Catalog(regional_store(deployment, region), settings.storage.prefix)
    bases = [m for m in catalog.chain_manifests(["postgresql_base"]) if m.verified]
    return bases[0].start_segment if bases else None


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
    from disaster_recovery.monitoring import topology

    # The current primary's position, its region's catalog first (the topology record).
    deployment = topology.following(deployment)
    settings = deployment.settings
    now = now or datetime.now(UTC)
    archive = WalArchive.for_deployment(deployment)
    position = _primary_position(deployment)
    seg_size = position["segment_size"]
    timeline, current_segno = parse_segment(position["segment"], seg_size)
    history = archive.history(timeline)
    listings, unreachable = _reachable_listings(archive)
    owed = _owed_files(archive)
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

    # A file a region lacks because it was down when pushed is owed, not a gap: the WAL DAG
    # copies it when the region answers (WALReplicaBehind meanwhile).
    missing = {
        region: [s for s in expected if s not in listing and s not in owed.get(region, set())]
        for region, listing in listings.items()
    }
    damaged = {
        region: _corrupt_segments(archive, region, listings[region], expected, deep)
        for region in listings
    }
    corrupt = {region: found[0] for region, found in damaged.items()}
    newest = {}
    for region, listing in listings.items():
        present = [s for s in expected if s in listing]
        if present:
            archived_at = listing[present[-1]]["last_modified"]
            # The exposure is the WAL written since the newest archived segment was: its upload
            # may be later when archiving lags the writes.
            written_at = archive.written_at(present[-1], [region]) or archived_at
            newest[region] = {
                "segment": present[-1],
                "archived_at": archived_at.isoformat(),
                "written_at": written_at.isoformat(),
                "age_seconds": round((now - written_at).total_seconds(), 1),
            }
    pending = max(0, current_segno - newest_segno - 1)
    # Stale: WAL exists on the primary beyond the newest archived segment (the current segment
    # has data, or whole segments wait), and the newest archived one is older than allowed.
    unarchived = parse_lsn(position["lsn"]) > (newest_segno + 1) * seg_size
    stale_after = settings.wal_stale_after.total_seconds()
    ages = [entry["age_seconds"] for entry in newest.values()]
    stale = unarchived and (not ages or max(ages) > stale_after or len(ages) < len(listings))
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
        backlog_limit=settings.pitr.async_max_backlog,
        notes=notes,
        unencrypted={region: found[1] for region, found in damaged.items()},
        owed={region: len(names) for region, names in owed.items() if names},
        unreachable=unreachable,
    )


def _corrupt_segments(
    archive: WalArchive,
    region: str,
    listing: Mapping[str, dict[str, Any]],
    names: Iterable[str],
    deep: bool,
) -> tuple[list[str], list[str]]:
    """Segments whose bytes do not hash to their recorded SHA-256, and segments stored without
    the configured encryption, looking only at objects whose ETag changed since they were last
    found intact and encrypted."""
    store = archive.store(region)
    state_key = _verified_state_key(archive.prefix, region)
    verified: dict[str, str] = {}
    if not deep and store.exists(state_key):
        verified = {k: str(v) for k, v in store.get_json(state_key).items()}
    corrupt = []
    unencrypted = []
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
        if store.encryption.problem(store.head(archive.key(name)) or {}):
            unencrypted.append(name)
            continue
        intact[name] = etag
    store.put_json(state_key, intact)
    return corrupt, unencrypted


def raise_for_gap(report: ArchiveReport | dict[str, Any]) -> None:
    """:class:`WalGapError` naming each missing or corrupt segment and its region (takes the
    report or its ``to_dict()`` form, as the DAG passes it through XCom); without a gap,
    :class:`VerificationError` for segments stored without the configured encryption."""
    facts = report.to_dict() if isinstance(report, ArchiveReport) else report
    if not facts["gap"]:
        raise_for_unencrypted(facts)
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
        "(`dr backup base`) so recovery can start after the gap, and find out why."
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


def raise_for_backlog(report: ArchiveReport | dict[str, Any]) -> None:
    """:class:`WalBacklogError` when more files wait to be archived than ``pitr.async_max_backlog``
    (archive_command refuses them meanwhile; PostgreSQL keeps them in ``pg_wal``)."""
    facts = report.to_dict() if isinstance(report, ArchiveReport) else report
    archiver = facts["archiver"]
    backlog, limit = int(archiver.get("ready_backlog") or 0), int(facts.get("backlog_limit") or 0)
    if not limit or backlog <= limit:
        return
    raise WalBacklogError(
        f"{backlog} WAL files wait to be archived on the primary (pitr.async_max_backlog "
        f"{limit}): archive_command refuses until they drain, and pg_wal grows meanwhile; "
        f"pg_stat_archiver last_failed_wal={archiver.get('last_failed_wal')}. Read the "
        "archive_command errors in the server log and pg_wal/dr_async/uploader.log."
    )


def raise_for_unencrypted(facts: dict[str, Any]) -> None:
    unencrypted = {region: names for region, names in facts.get("unencrypted", {}).items() if names}
    if not unencrypted:
        return
    parts = [f"{', '.join(names)} in {region}" for region, names in unencrypted.items()]
    raise VerificationError(
        "WAL segments stored without the configured encryption (storage.encryption): "
        + "; ".join(parts)
        + ". Whoever wrote them bypassed the archiver's encryption: find out who, and copy "
        "each over itself with the region's encryption.",
        check="encryption",
    )


def _reachable_listings(
    archive: WalArchive,
) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, str]]:
    """Each answering region's listing, and why the others did not answer (a lost region is
    judged when it returns; at least one region must answer)."""
    listings, unreachable = {}, {}
    for region in archive.regions:
        try:
            listings[region] = archive.listing(region)
        except UnavailableError as exc:
            unreachable[region] = str(exc).splitlines()[0]
    if not listings:
        raise UnavailableError(
            "no region's WAL archive answers: " + "; ".join(unreachable.values())
        )
    return listings, unreachable


def _owed_files(archive: WalArchive) -> dict[str, set[str]]:
    from disaster_recovery.wal.replica_debt import owed_files

    return owed_files(archive)
