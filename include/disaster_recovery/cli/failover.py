"""``dr health``, ``dr failover``, ``dr failback``: the runbook commands."""

from __future__ import annotations

import argparse
from typing import Any

from disaster_recovery.cli.common import deployment


def register(commands: Any) -> None:
    from disaster_recovery.failover.__main__ import add_arguments

    health = commands.add_parser("health", help="both regions' health and the replication lag")
    health.set_defaults(handler=run_health)
    failover = commands.add_parser(
        "failover", help="fail over to the secondary region (asks to confirm)"
    )
    add_arguments(failover)
    failover.set_defaults(handler=run_failover)
    failback = commands.add_parser(
        "failback", help="give the primary role back to the primary region"
    )
    failback.add_argument("--reason", default="primary region recovered", help="why (recorded)")
    failback.add_argument("--initiated-by", default="manual", help="who or what (default: manual)")
    failback.add_argument("--yes", action="store_true", help="approve without asking")
    failback.add_argument(
        "--no-publish", action="store_true", help="do not store in S3 or post to Slack"
    )
    failback.set_defaults(handler=run_failback)


def run_health(args: argparse.Namespace) -> dict[str, Any]:
    from disaster_recovery.monitoring.health import check_health, current_roles

    found = deployment(args)
    primary, secondary = current_roles(found)
    result = check_health(found, primary, secondary)
    result["healthy"] = bool(result["primary_healthy"] and result["secondary_healthy"])
    return result


def _exit_status(result: dict[str, Any]) -> dict[str, Any] | int:
    from disaster_recovery.cli import emit
    from disaster_recovery.errors import ExitCode

    if result["status"] in ("completed", "dry_run"):
        return result
    emit(result)
    return int(ExitCode.ABORTED if result["status"] == "aborted" else ExitCode.FAILED)


def run_failover(args: argparse.Namespace) -> dict[str, Any] | int:
    from disaster_recovery.failover.__main__ import cli_run

    return _exit_status(cli_run(args, deployment(args)))


def run_failback(args: argparse.Namespace) -> dict[str, Any] | int:
    from disaster_recovery.failover.__main__ import cli_run

    return _exit_status(cli_run(args, deployment(args), kind="failback"))
