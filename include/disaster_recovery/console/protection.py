"""Where protection stands now (``dr status`` and the dashboard): which region is primary by the
topology record and by the nodes, the generation and timeline, where backups and WAL go, and
what each region is still owed after an outage."""

from __future__ import annotations

from typing import Any

from disaster_recovery.config.endpoints import Deployment
from disaster_recovery.errors import DisasterRecoveryError
from disaster_recovery.monitoring import topology


def first_line(exc: BaseException) -> str:
    return next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)


def protection_status(deployment: Deployment) -> dict[str, Any]:
    """A read-only report; never raises for a server that does not answer (it says so).
    ``healthy`` is False when the record and the nodes disagree or no primary answers."""
    from disaster_recovery.backup.replica_debt import replication_debt
    from disaster_recovery.wal.archive import WalArchive, wal_prefix
    from disaster_recovery.wal.replica_debt import replica_debt

    settings = deployment.settings
    status: dict[str, Any] = {"healthy": True, "problems": []}
    try:
        record = topology.read_record(deployment)
    except DisasterRecoveryError as exc:
        return {**status, "healthy": False, "problems": [first_line(exc)]}
    nodes = topology.node_states(deployment)
    status["topology"] = record.to_dict()
    status["nodes"] = {region: state.to_dict() for region, state in nodes.items()}
    try:
        topology.judge(deployment, record, nodes)  # read-only: the alert is the backups' job
    except DisasterRecoveryError as exc:
        status["healthy"] = False
        status["problems"].append(f"{type(exc).__name__}: {first_line(exc)}")
    primary, other = record.primary_region, record.standby_region
    status["generation"] = record.generation
    status["timeline"] = nodes[primary].timeline if nodes[primary].reachable else record.timeline
    status["backups_go_to"] = {
        "bucket": f"s3://{settings.bucket(primary)}/{settings.storage.prefix}/",
        "region": primary,
        "replicated_to": f"s3://{settings.bucket(other)}/",
    }
    prefix = wal_prefix(settings.storage.prefix)
    status["wal_goes_to"] = [f"s3://{settings.bucket(r)}/{prefix}" for r in (primary, other)]
    debt: dict[str, Any] = {}
    try:
        wal = replica_debt(WalArchive.for_deployment(deployment))
        for region, facts in wal["behind"].items():
            debt.setdefault(region, {})["wal_files"] = facts
        for region, reason in wal["unreadable"].items():
            debt.setdefault(region, {})["unreachable"] = reason
    except DisasterRecoveryError as exc:
        status["problems"].append(f"WAL debt unknown: {first_line(exc)}")
    try:
        for region, facts in replication_debt(deployment).items():
            debt.setdefault(region, {})["backups"] = facts
    except DisasterRecoveryError as exc:
        status["problems"].append(f"backup debt unknown: {first_line(exc)}")
    status["replication_debt"] = debt
    return status
