"""A change of the primary role (:class:`Plan`), the record every step returns, and the node facts steps share."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from disaster_recovery.clients.route53 import DnsSwitch
from disaster_recovery.clients.services import Services
from disaster_recovery.config.endpoints import Deployment, PostgresEndpoint, RedisEndpoint
from disaster_recovery.config.model import Settings
from disaster_recovery.errors import DisasterRecoveryError
from disaster_recovery.monitoring.health import (
    region_postgres,
    region_redis,
    utcnow,
)
from disaster_recovery.postgres import db
from disaster_recovery.postgres.nodecontrol import NodeControl, node_control

# Settings a promoted node inherits from the node it was cloned or rewound from (NOTES.md):
# a promoted clone with synchronous_standby_names hangs on its first commit.
INHERITED_SETTINGS = (
    "synchronous_standby_names",
    "primary_conninfo",
    "primary_slot_name",
    "default_transaction_read_only",
)
PROBE_TABLE = "dr_failover_probe"

Progress = Callable[[str], None]


@dataclass
class Plan:
    """One change of the primary role: ``source`` loses it, ``target`` gains it."""

    deployment: Deployment
    source: str
    target: str
    run_id: str = field(
        default_factory=lambda: utcnow().strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
    )
    dry_run: bool = False
    accept_data_loss: bool = False

    @property
    def settings(self) -> Settings:
        return self.deployment.settings

    def pg(self, region: str) -> PostgresEndpoint:
        return region_postgres(self.deployment, region)

    def redis(self, region: str) -> RedisEndpoint:
        return region_redis(self.deployment, region)

    def node(self, region: str) -> NodeControl:
        return node_control(region, self.settings.failover.nodes.get(region))

    def replication_name(self, region: str) -> str:
        config = self.settings.failover.nodes.get(region)
        return (
            config.replication_name
            if config and config.replication_name
            else region.replace("-", "_")
        )

    @property
    def services(self) -> Services:
        return Services(self.deployment)

    @property
    def dns(self) -> DnsSwitch:
        # Route 53 is global; reach it through the target region's endpoint (the failover must
        # not need anything in the region it leaves).
        return DnsSwitch(self.deployment.aws(self.target), self.settings.dns)


def record(step: str, status: str, **details: Any) -> dict[str, Any]:
    return {"step": step, "status": status, **details}


# A run whose every step ran: "completed" only when each did all of its work; otherwise
# "completed_with_warnings", with each part that was skipped (not configured) or failed listed.
COMPLETED = ("completed", "completed_with_warnings")


def settled_status(status: str, records: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """(the run's status, its warnings as "step: what"): a completed run with any step warning
    becomes ``completed_with_warnings``."""
    warnings = [f"{r['step']}: {w}" for r in records for w in r.get("warnings") or []]
    if status == "completed" and warnings:
        status = "completed_with_warnings"
    return status, warnings


def first_line(exc: BaseException) -> str:
    return next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)


def in_recovery(endpoint: PostgresEndpoint) -> bool | None:
    """True/False, or None when the node does not answer."""
    try:
        return db.is_in_recovery(endpoint)
    except DisasterRecoveryError:
        return None


def target_promoted(plan: Plan) -> bool:
    return in_recovery(plan.pg(plan.target)) is False


# -- the whole run ------------------------------------------------------------------------------

Approver = Callable[[dict[str, Any], str], bool]
