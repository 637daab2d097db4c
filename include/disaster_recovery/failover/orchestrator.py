"""The seed API for failover and failback: :class:`FailoverOrchestrator` with ``async`` methods."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

from disaster_recovery.config.endpoints import Deployment
from disaster_recovery.config.model import Settings, load_settings, settings_from_dict
from disaster_recovery.failover.engine import publish_result
from disaster_recovery.failover.failback import run_failback
from disaster_recovery.failover.plan import Approver, Plan, Progress
from disaster_recovery.failover.steps import run_failover
from disaster_recovery.monitoring.health import (
    check_health,
)


class FailoverOrchestrator:
    """The seed API: ``await FailoverOrchestrator(primary, secondary, config).execute_failover()``.

    ``config`` is a :class:`Settings`, a dict of settings sections, or None (``load_settings()``);
    endpoints come from Connections (``AIRFLOW_CONN_*`` outside Airflow) unless a
    :class:`Deployment` is given.
    """

    def __init__(
        self,
        primary_region: str,
        secondary_region: str,
        config: Settings | dict[str, Any] | None = None,
        deployment: Deployment | None = None,
    ):
        if deployment is not None:
            settings = deployment.settings
        elif isinstance(config, Settings):
            settings = config
        elif isinstance(config, dict):
            settings = settings_from_dict(config, "FailoverOrchestrator config")
        else:
            settings = load_settings()
        self.deployment = deployment or Deployment(settings)
        self.primary_region = primary_region
        self.secondary_region = secondary_region

    async def check_health(self) -> dict[str, Any]:
        return await asyncio.to_thread(
            check_health, self.deployment, self.primary_region, self.secondary_region
        )

    def plan(self, *, dry_run: bool = False, accept_data_loss: bool = False) -> Plan:
        return Plan(
            self.deployment,
            self.primary_region,
            self.secondary_region,
            dry_run=dry_run,
            accept_data_loss=accept_data_loss,
        )

    async def execute_failover(
        self,
        reason: str,
        initiated_by: str,
        *,
        dry_run: bool = False,
        accept_data_loss: bool = False,
        approve: Approver | None = None,
        progress: Progress | None = None,
        publish: bool = True,
    ) -> dict[str, Any]:
        """Fail over to the secondary region; the result document (status completed, aborted,
        failed or dry_run). Calling it is the decision unless ``approve`` is given."""
        plan = self.plan(dry_run=dry_run, accept_data_loss=accept_data_loss)
        return await self._run(
            run_failover,
            plan,
            reason,
            initiated_by,
            approve=approve,
            progress=progress,
            publish=publish,
        )

    async def execute_failback(
        self,
        reason: str,
        initiated_by: str,
        *,
        approve: Approver | None = None,
        progress: Progress | None = None,
        publish: bool = True,
    ) -> dict[str, Any]:
        """Return the primary role to ``primary_region`` (see :mod:`disaster_recovery.failover.failback`)."""

        plan = Plan(self.deployment, self.secondary_region, self.primary_region)
        return await self._run(
            run_failback,
            plan,
            reason,
            initiated_by,
            approve=approve,
            progress=progress,
            publish=publish,
        )

    async def _run(
        self,
        runner: Callable[..., dict[str, Any]],
        plan: Plan,
        reason: str,
        initiated_by: str,
        *,
        approve: Approver | None,
        progress: Progress | None,
        publish: bool,
    ) -> dict[str, Any]:
        """``runner`` (run_failover or run_failback) off the event loop; the result to S3."""
        result = await asyncio.to_thread(
            functools.partial(runner, approve=approve, progress=progress),
            plan,
            reason,
            initiated_by,
        )
        if publish:
            result["published"] = await asyncio.to_thread(
                publish_result, self.deployment, plan.target, result
            )
        return result
