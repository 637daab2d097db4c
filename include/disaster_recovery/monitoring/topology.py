"""Which region is primary now: the topology record, checked against what the nodes say.

us-east-1 and us-west-2 name places; the Connections name their *nodes* (``dr_postgres_primary``
is the configured primary region's node, ``dr_postgres_standby`` the other's, whatever their roles
after a failover). Failover and failback write the record at PROMOTE; everything that protects
data reads it:

- the record is one immutable object per generation, ``<prefix>/topology/generation-N.json``,
  written with S3's ``If-None-Match: *`` in both regions' buckets, so a generation is claimed
  once and only grows. Readers take the highest generation either bucket holds and copy it to a
  bucket that lacks it (a region that was down when the failover wrote it).
- :func:`current_topology` checks the record against the nodes (``pg_is_in_recovery``,
  ``default_transaction_read_only``): two writable nodes, or a record whose primary is a standby
  while the other node writes, is a :class:`SplitBrain`. Nothing is backed up then, and a
  Critical ``SplitBrain`` alert is posted once per incident.
- :func:`following` and :func:`protected` give the backup code a *role view* of the deployment:
  the same settings with regions and Connections swapped when us-west-2 is primary, so
  ``regions.primary`` and ``postgres("primary")`` mean the current primary everywhere.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from disaster_recovery.clients.s3 import ObjectStore, regional_store, s3_client
from disaster_recovery.clients.slack import Alert, AlertSink, slack_sink
from disaster_recovery.config.endpoints import Deployment, PostgresEndpoint
from disaster_recovery.errors import (
    ConfigError,
    DisasterRecoveryError,
    PermanentError,
    UnavailableError,
    VerificationError,
)
from disaster_recovery.postgres import db

log = logging.getLogger(__name__)

RECORD_FOLDER = "topology"
_GENERATION = re.compile(r"generation-(\d+)\.json$")
# Readers of the record must not hang on a region that is gone: short timeouts, few retries.
_S3_OPTIONS: dict[str, Any] = {"max_attempts": 2, "connect_timeout": 3, "read_timeout": 10}


class SplitBrain(PermanentError):
    """The topology record and the nodes disagree, or two nodes accept writes: nothing may be
    backed up from either until a person decides which one is the primary."""

    def __init__(self, message: str, *, fingerprint: str, details: dict[str, Any]):
        super().__init__(message)
        self.fingerprint = fingerprint
        self.details = details


class StaleSource(VerificationError):
    """A backup taken from a node that is no longer where the topology puts it (a failover
    happened in between): it fails its ``topology`` check and is never published."""


@dataclass(frozen=True)
class Topology:
    """One generation of the record: which region is primary, on which timeline."""

    generation: int
    primary_region: str
    standby_region: str
    timeline: int | None = None
    system_identifier: str | None = None
    written_at: str | None = None
    written_by: str | None = None
    reason: str | None = None
    # Where this generation is stored (s3 URLs); empty for the implicit generation 0.
    locations: tuple[str, ...] = ()

    def document(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("locations")
        return data

    def to_dict(self) -> dict[str, Any]:
        return {**self.document(), "locations": list(self.locations)}


@dataclass(frozen=True)
class NodeState:
    """What one region's database node says about itself."""

    region: str
    connection: str
    host: str
    reachable: bool
    in_recovery: bool | None = None
    read_only: bool | None = None
    timeline: int | None = None
    system_identifier: str | None = None
    error: str | None = None

    @property
    def writable(self) -> bool:
        return self.reachable and self.in_recovery is False and self.read_only is False

    @property
    def role(self) -> str:
        if not self.reachable:
            return "unreachable"
        if self.in_recovery:
            return "standby"
        return "fenced" if self.read_only else "primary"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "role": self.role, "writable": self.writable}


@dataclass(frozen=True)
class Checked:
    """The record and the nodes, found to agree: ``primary`` is writable, nothing else is."""

    topology: Topology
    nodes: dict[str, NodeState]
    deployment: Deployment = field(repr=False)

    @property
    def primary(self) -> NodeState:
        return self.nodes[self.topology.primary_region]

    def source(self, role: str = "primary") -> dict[str, Any]:
        """What a manifest records about where its backup came from."""
        region = self.topology.primary_region if role == "primary" else self.topology.standby_region
        node = self.nodes[region]
        return {
            "region": region,
            "node": node.connection,
            "timeline": node.timeline,
            "system_identifier": node.system_identifier,
            "topology_generation": self.topology.generation,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "topology": self.topology.to_dict(),
            "nodes": {region: state.to_dict() for region, state in self.nodes.items()},
        }


# -- regions, nodes, buckets ----------------------------------------------------------------------


def regions_of(deployment: Deployment) -> tuple[str, str]:
    regions = deployment.settings.regions
    return regions.primary, regions.secondary


def node_endpoint(deployment: Deployment, region: str) -> PostgresEndpoint:
    """The database node that lives in ``region`` (Connections are named by node, not role)."""
    return deployment.postgres(
        "primary" if region == deployment.settings.regions.primary else "standby"
    )


def record_store(deployment: Deployment, region: str) -> ObjectStore:
    return regional_store(
        deployment, region, client=s3_client(deployment.aws(region), **_S3_OPTIONS)
    )


def record_prefix(deployment: Deployment) -> str:
    return f"{deployment.settings.storage.prefix}/{RECORD_FOLDER}/".lstrip("/")


def generation_key(deployment: Deployment, generation: int) -> str:
    return f"{record_prefix(deployment)}generation-{generation:09d}.json"


def implicit_topology(deployment: Deployment) -> Topology:
    """Before any failover wrote a record: the configured primary region, generation 0."""
    primary, secondary = regions_of(deployment)
    return Topology(generation=0, primary_region=primary, standby_region=secondary)


# -- reading and writing the record ---------------------------------------------------------------


def _generations(store: ObjectStore, prefix: str) -> dict[int, str]:
    found: dict[int, str] = {}
    for item in store.list_keys(prefix):
        match = _GENERATION.search(item["Key"])
        if match:
            found[int(match.group(1))] = item["Key"]
    return found


def read_record(deployment: Deployment) -> Topology:
    """The newest generation in either region's bucket (the implicit generation 0 when none
    was written). A reachable bucket that lacks the newest generation gets a copy of it.
    Raises :class:`UnavailableError` only when no bucket answers."""
    prefix = record_prefix(deployment)
    held: dict[str, dict[int, str]] = {}
    stores: dict[str, ObjectStore] = {}
    errors: dict[str, str] = {}
    permanent: list[DisasterRecoveryError] = []
    for region in regions_of(deployment):
        store = record_store(deployment, region)
        try:
            held[region] = _generations(store, prefix)
            stores[region] = store
        except DisasterRecoveryError as exc:
            errors[region] = str(exc).splitlines()[0]
            if isinstance(exc, PermanentError):
                permanent.append(exc)
    if not held and len(permanent) == len(errors):
        # Every bucket refused for a reason a retry cannot fix (a wrong endpoint or key): say
        # that, not "unreachable".
        raise permanent[0]
    if not held:
        raise UnavailableError(
            "cannot read the topology record: no region's bucket answers ("
            + "; ".join(f"{region}: {error}" for region, error in errors.items())
            + ")"
        )
    newest = max((gen for gens in held.values() for gen in gens), default=0)
    if newest == 0:
        return implicit_topology(deployment)
    holder = next(region for region, gens in held.items() if newest in gens)
    key = held[holder][newest]
    body = stores[holder].get_bytes(key)
    locations = [stores[holder].url(key)]
    for region, gens in held.items():
        if region != holder and newest not in gens:
            stores[region].put_new(key, body)
            log.info("copied topology generation %d to %s", newest, stores[region].url(key))
        if region != holder:
            locations.append(stores[region].url(key))
    return _parse_record(json.loads(body), tuple(locations))


def _parse_record(document: dict[str, Any], locations: tuple[str, ...]) -> Topology:
    known = {name for name in Topology.__dataclass_fields__ if name != "locations"}
    return Topology(**{k: v for k, v in document.items() if k in known}, locations=locations)


def write_record(
    deployment: Deployment,
    primary_region: str,
    *,
    timeline: int | None,
    system_identifier: str | None,
    reason: str,
    written_by: str,
) -> dict[str, Any]:
    """Record ``primary_region`` as the primary under the next generation, in every bucket that
    answers (at least one must). A record that already says so, on the same timeline, is left
    as it is (a re-run of PROMOTE). Returns the record and where it is missing."""
    primary, secondary = regions_of(deployment)
    standby = secondary if primary_region == primary else primary
    current = read_record(deployment)
    if (
        current.generation > 0
        and current.primary_region == primary_region
        and current.timeline == timeline
    ):
        return {"topology": current.to_dict(), "written": False, "missing_in": []}
    record = Topology(
        generation=current.generation + 1,
        primary_region=primary_region,
        standby_region=standby,
        timeline=timeline,
        system_identifier=system_identifier,
        written_at=datetime.now(UTC).isoformat(),
        written_by=written_by,
        reason=reason,
    )
    key = generation_key(deployment, record.generation)
    body = json.dumps(record.document(), indent=2, sort_keys=True).encode()
    stored, missing = [], []
    for region in (primary_region, standby):
        store = record_store(deployment, region)
        try:
            if store.put_new(key, body) is None:
                raise SplitBrain(
                    f"topology generation {record.generation} was written by someone else at "
                    f"the same time ({store.url(key)}): two failovers ran at once; check which "
                    "node is the primary before anything else",
                    fingerprint=f"generation-race-{record.generation}",
                    details={"key": store.url(key)},
                )
            stored.append(store.url(key))
        except UnavailableError as exc:
            missing.append(region)
            log.warning("topology record not written in %s: %s", region, exc)
    if not stored:
        raise UnavailableError(
            f"the topology record (generation {record.generation}, primary {primary_region}) "
            "could not be written in any region's bucket; re-run the step once S3 answers"
        )
    written = Topology(**{**asdict(record), "locations": tuple(stored)})
    return {"topology": written.to_dict(), "written": True, "missing_in": missing}


# -- the nodes ------------------------------------------------------------------------------------

_NODE_QUERY = """
SELECT pg_is_in_recovery(),
       current_setting('default_transaction_read_only') = 'on',
       CASE WHEN pg_is_in_recovery()
            THEN coalesce((SELECT received_tli FROM pg_stat_wal_receiver),
                          (SELECT timeline_id FROM pg_control_checkpoint()))::text
            ELSE pg_walfile_name(pg_current_wal_lsn()) END,
       (SELECT system_identifier::text FROM pg_control_system())
"""


def node_state(deployment: Deployment, region: str) -> NodeState:
    endpoint = node_endpoint(deployment, region)
    base: dict[str, Any] = {
        "region": region,
        "connection": endpoint.conn_id,
        "host": f"{endpoint.host}:{endpoint.port}",
    }
    try:
        with db.connect(endpoint, "postgres", timeout=5) as conn:
            row = conn.execute(_NODE_QUERY).fetchone()
    except ConfigError:
        raise  # wrong credentials: a retry cannot help, and the node may well be writable
    except Exception as exc:  # unreachable, refused, timed out: all mean "not answering"
        return NodeState(**base, reachable=False, error=str(exc).strip().splitlines()[0])
    assert row is not None
    in_recovery, read_only, position, system_identifier = row
    # On a primary the timeline is the first 8 hex digits of its current WAL file's name.
    timeline = int(position) if in_recovery else int(str(position)[:8], 16)
    return NodeState(
        **base,
        reachable=True,
        in_recovery=bool(in_recovery),
        read_only=bool(read_only),
        timeline=timeline,
        system_identifier=system_identifier,
    )


def node_states(deployment: Deployment) -> dict[str, NodeState]:
    return {region: node_state(deployment, region) for region in regions_of(deployment)}


# -- the check ------------------------------------------------------------------------------------


def judge(deployment: Deployment, record: Topology, nodes: dict[str, NodeState]) -> Checked:
    """Agreement or the error that says why not (pure: no I/O)."""
    writable = sorted(region for region, state in nodes.items() if state.writable)
    facts = {
        "record": record.to_dict(),
        "nodes": {region: state.to_dict() for region, state in nodes.items()},
    }
    if len(writable) > 1:
        raise SplitBrain(
            f"split brain: the nodes of {' and '.join(writable)} both accept writes; nothing is "
            "backed up from either. Fence the node that must not be primary "
            "(default_transaction_read_only = on, or stop it), then rebuild it as a standby "
            "(`dr failback` / pg_rewind)",
            fingerprint="both-writable:" + ",".join(writable) + f":g{record.generation}",
            details=facts,
        )
    primary = nodes[record.primary_region]
    if primary.writable:
        return Checked(record, nodes, deployment)
    if writable:
        other = writable[0]
        raise SplitBrain(
            f"the topology record (generation {record.generation}) says {record.primary_region} "
            f"is primary, but its node ({primary.connection}, {primary.host}) is "
            f"{primary.role} and {other}'s node ({nodes[other].connection}) accepts writes: "
            "the record and the nodes disagree, nothing is backed up. If the promotion of "
            f"{other} was intended, record it with `dr failover`/`dr failback` (PROMOTE writes "
            "the record); otherwise fence that node",
            fingerprint=f"record-disagrees:{record.primary_region}:{other}:g{record.generation}",
            details=facts,
        )
    if not primary.reachable:
        raise UnavailableError(
            f"the current primary, {record.primary_region}'s node ({primary.connection}, "
            f"{primary.host}), does not answer: {primary.error}. Nothing can be backed up until "
            "it answers or a failover promotes the standby"
        )
    if primary.in_recovery:
        raise SplitBrain(
            f"the topology record (generation {record.generation}) says {record.primary_region} "
            f"is primary, but its node ({primary.connection}) is a standby and no node accepts "
            "writes: the record and the nodes disagree",
            fingerprint=f"primary-in-recovery:{record.primary_region}:g{record.generation}",
            details=facts,
        )
    raise UnavailableError(
        f"the current primary, {record.primary_region}'s node ({primary.connection}), is fenced "
        "(read-only) and no other node accepts writes: a failover is probably in progress; "
        "retry after it"
    )


def current_topology(deployment: Deployment, *, sink: AlertSink | None = None) -> Checked:
    """The record checked against the nodes. On :class:`SplitBrain` the Critical ``SplitBrain``
    alert is posted (once per incident) before the error is raised."""
    record = read_record(deployment)
    nodes = node_states(deployment)
    try:
        checked = judge(deployment, record, nodes)
    except SplitBrain as exc:
        announce_split_brain(deployment, exc, sink)
        raise
    clear_split_brain_markers(deployment)
    return checked


# -- the SplitBrain alert, once per incident ------------------------------------------------------


def _marker_prefix(deployment: Deployment) -> str:
    return f"{record_prefix(deployment)}split-brain/"


def _marker_key(deployment: Deployment, fingerprint: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", fingerprint)
    return f"{_marker_prefix(deployment)}{safe}.json"


def announce_split_brain(
    deployment: Deployment, error: SplitBrain, sink: AlertSink | None = None
) -> bool:
    """Post ``SplitBrain`` unless this incident was already announced: a marker object, created
    atomically (``If-None-Match``) in the first bucket that answers, is the "already posted".
    Returns True when this call posted. Never raises: the error itself must still surface."""
    key = _marker_key(deployment, error.fingerprint)
    body = json.dumps({"at": datetime.now(UTC).isoformat(), "error": str(error)}, indent=2).encode()
    claimed = None
    for region in regions_of(deployment):
        try:
            claimed = record_store(deployment, region).put_new(key, body) is not None
            break
        except DisasterRecoveryError as exc:
            log.warning("split-brain marker not written in %s: %s", region, exc)
    if claimed is False:
        log.info("SplitBrain already announced (%s)", key)
        return False
    nodes = error.details.get("nodes", {})
    alert = Alert(
        name="SplitBrain",
        summary=str(error).splitlines()[0],
        details={
            "record_generation": error.details.get("record", {}).get("generation"),
            "record_primary": error.details.get("record", {}).get("primary_region"),
            **{f"node {region}": state.get("role") for region, state in nodes.items()},
        },
    )
    try:
        (sink or slack_sink(deployment.slack())).send(alert)
    except Exception:
        log.exception("could not send the SplitBrain alert")
        return False
    return True


def clear_split_brain_markers(deployment: Deployment) -> None:
    """Once the record and the nodes agree again, a later split brain is a new incident."""
    prefix = _marker_prefix(deployment)
    for region in regions_of(deployment):
        try:
            store = record_store(deployment, region)
            keys = [item["Key"] for item in store.list_keys(prefix)]
            if keys:
                store.delete(keys)
        except DisasterRecoveryError as exc:
            log.warning("split-brain markers not cleared in %s: %s", region, exc)


# -- role views -----------------------------------------------------------------------------------


@dataclass
class RoleView(Deployment):
    """A deployment pinned to one topology generation: ``regions.primary`` and
    ``postgres("primary")`` name the primary of ``topology``."""

    topology: Topology | None = None


def role_view(deployment: Deployment, topology: Topology) -> RoleView:
    """``deployment`` seen from ``topology``: when the other region is primary, regions and
    Connections are swapped, so every ``regions.primary`` / ``postgres("primary")`` /
    ``aws(regions.primary)`` in the backup code names the current primary. Region-to-node and
    region-to-bucket pairs never change, only which one is called primary."""
    if isinstance(deployment, RoleView) and deployment.topology == topology:
        return deployment
    settings = deployment.settings
    if topology.primary_region != settings.regions.primary:
        connections = settings.connections
        settings = settings.model_copy(
            update={
                "regions": settings.regions.model_copy(
                    update={
                        "primary": settings.regions.secondary,
                        "secondary": settings.regions.primary,
                    }
                ),
                "connections": connections.model_copy(
                    update={
                        "postgres_primary": connections.postgres_standby,
                        "postgres_standby": connections.postgres_primary,
                        "redis_primary": connections.redis_replica,
                        "redis_replica": connections.redis_primary,
                        "aws_primary": connections.aws_secondary,
                        "aws_secondary": connections.aws_primary,
                    }
                ),
            }
        )
    # The endpoint cache is keyed by Connection id, so the view can share it.
    return RoleView(
        settings,
        lookup=deployment.lookup,
        aws_sessions=deployment.aws_sessions,
        _cache=deployment._cache,
        topology=topology,
    )


def following(deployment: Deployment) -> RoleView:
    """The role view from the record alone (no node is asked): for reading the catalog,
    verifying, replicating and restoring, which must work while a node is down. A view stays
    pinned to its generation: the steps of one backup keep to the bucket it was written in."""
    if isinstance(deployment, RoleView):
        return deployment
    return role_view(deployment, read_record(deployment))


def protected(
    deployment: Deployment, *, sink: AlertSink | None = None
) -> tuple[Deployment, Checked]:
    """The role view after the full check against the nodes: for taking a backup. Raises
    :class:`SplitBrain` (alert posted) or :class:`UnavailableError` when there is no single
    writable primary that the record names."""
    checked = current_topology(deployment, sink=sink)
    return role_view(deployment, checked.topology), checked


def require_current_source(
    deployment: Deployment, source: dict[str, Any], what: str, key: str = ""
) -> Checked:
    """Before publishing: the node a backup came from must still be where the current topology
    says (same generation; the primary when it was taken from the primary). Raises
    :class:`SplitBrain` or :class:`StaleSource`."""
    checked = current_topology(deployment)
    generation = source.get("topology_generation")
    region = source.get("region")
    role = source.get("role", "primary")
    expected = (
        checked.topology.primary_region if role == "primary" else checked.topology.standby_region
    )
    if generation != checked.topology.generation or region != expected:
        raise StaleSource(
            f"{what} was taken from {region}'s node under topology generation {generation}; "
            f"the current topology is generation {checked.topology.generation} with "
            f"{checked.topology.primary_region} primary: it is not published. Take a new backup",
            check="topology",
            key=key,
        )
    return checked
