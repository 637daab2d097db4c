"""Fencing that holds: a deposed primary that comes back writable is fenced when the health check
reaches it.

With node control (``failover.nodes``) STOP WRITES fences the old primary on disk, so it can
only start again as a standby. Without it, an unreachable old primary is only *recorded* as
fenced; when its machine comes back it starts as a primary. Like Patroni, which demotes a node
that finds it does not hold the leader key, every health check compares the topology record
with the nodes: a node the record deposed that accepts writes is fenced at once (read-only, its
sessions ended: see :func:`~disaster_recovery.postgres.nodecontrol.fence_online`) and
``SplitBrain`` is posted, once per incident. Under synchronous replication none of its commits
was acknowledged meanwhile (its synchronous standby is now the primary and does not stream
from it), so ending those sessions loses nothing a client was told was saved.
"""

from __future__ import annotations

import logging
from typing import Any

from disaster_recovery.clients.slack import AlertSink
from disaster_recovery.config.endpoints import Deployment
from disaster_recovery.errors import DisasterRecoveryError
from disaster_recovery.monitoring import topology
from disaster_recovery.postgres.nodecontrol import fence_online

log = logging.getLogger(__name__)


def deposed_writable(record: topology.Topology, nodes: dict[str, topology.NodeState]) -> str | None:
    """The region whose node accepts writes beside the record's writable primary, if any (pure).

    Only while the recorded primary itself accepts writes: during a failover the new primary is
    writable for a moment before PROMOTE writes the record, but the old one is fenced (or gone)
    by then, so it is never mistaken for a deposed node; and a standby promoted by hand while
    the recorded primary is down is left to a person (the SplitBrain check reports it)."""
    if not nodes[record.primary_region].writable:
        return None
    return next(
        (
            region
            for region, node in nodes.items()
            if region != record.primary_region and node.writable
        ),
        None,
    )


def fence_deposed(deployment: Deployment, sink: AlertSink | None = None) -> dict[str, Any] | None:
    """Fence a deposed primary that accepts writes again; post ``SplitBrain`` once per incident.
    Returns what was done, or None when every node is where the record puts it. Never raises for
    an unreadable record or node: the health check must still report."""
    try:
        record = topology.read_record(deployment)
        nodes = topology.node_states(deployment)
    except DisasterRecoveryError as exc:
        log.warning("cannot compare the topology record with the nodes: %s", exc)
        return None
    region = deposed_writable(record, nodes)
    if region is None:
        return None
    node = nodes[region]
    message = (
        f"split brain: {region}'s node ({node.connection}, {node.host}) accepts writes although "
        f"the topology record (generation {record.generation}) names {record.primary_region} "
        "primary; it was fenced (read-only, sessions ended). Rebuild it as a standby "
        "(`dr failback` / pg_rewind) before it serves again"
    )
    try:
        fenced: dict[str, Any] = fence_online(topology.node_endpoint(deployment, region))
    except DisasterRecoveryError as exc:
        fenced = {"fenced": f"failed: {str(exc).splitlines()[0]}"}
        message = message.replace("it was fenced", f"fencing it FAILED ({fenced['fenced']})")
    log.error(message)
    error = topology.SplitBrain(
        message,
        fingerprint=f"deposed-writable:{region}:g{record.generation}",
        details={
            "record": record.to_dict(),
            "nodes": {name: state.to_dict() for name, state in nodes.items()},
        },
    )
    posted = topology.announce_split_brain(deployment, error, sink)
    return {"region": region, **fenced, "split_brain_posted": posted, "message": message}
