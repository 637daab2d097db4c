"""``dr health``, ``dr failover``, ``dr failback``: the runbook commands.

Library imports sit inside the handlers on purpose: every ``dr`` command builds all parsers, so
a module-level import would slow ``dr wal push`` (see :mod:`disaster_recovery.cli`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING, Any

from disaster_recovery.cli.common import deployment

if TYPE_CHECKING:
    from disaster_recovery.config.endpoints import Deployment


def register(commands: Any) -> None:
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
    from disaster_recovery.failover.plan import COMPLETED

    if result["status"] in (*COMPLETED, "dry_run"):
        return result
    emit(result)
    return int(ExitCode.ABORTED if result["status"] == "aborted" else ExitCode.FAILED)


def run_failover(args: argparse.Namespace) -> dict[str, Any] | int:
    return _exit_status(cli_run(args, deployment(args)))


def run_failback(args: argparse.Namespace) -> dict[str, Any] | int:
    return _exit_status(cli_run(args, deployment(args), kind="failback"))


def ask_person(evidence: dict[str, Any], body: str) -> bool:
    """The CLI's DECIDE: show the evidence, read yes/no from the terminal."""
    print("\n" + body + "\n", file=sys.stderr)
    print(
        "Type 'yes' to approve the failover, anything else rejects: ",
        end="",
        file=sys.stderr,
        flush=True,
    )
    try:
        answer = input()
    except EOFError:
        answer = ""
    return answer.strip().lower() == "yes"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reason", required=True, help="why (recorded with the run)")
    parser.add_argument("--initiated-by", default="manual", help="who or what (default: manual)")
    parser.add_argument("--dry-run", action="store_true", help="run every check, change nothing")
    parser.add_argument("--yes", action="store_true", help="approve at DECIDE without asking")
    parser.add_argument(
        "--accept-data-loss",
        action="store_true",
        help="promote even when the old primary is unreachable",
    )
    parser.add_argument(
        "--no-publish", action="store_true", help="do not store in S3 or post to Slack"
    )


def cli_run(
    args: argparse.Namespace, deployment: Deployment, kind: str = "failover"
) -> dict[str, Any]:
    # Here, not at the top: every `dr` command builds this module's parser (cli/__init__).
    from disaster_recovery.failover.orchestrator import FailoverOrchestrator

    regions = deployment.settings.regions
    orchestrator = FailoverOrchestrator(regions.primary, regions.secondary, deployment=deployment)
    approve = None if args.yes else ask_person

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    if kind == "failback":
        return asyncio.run(
            orchestrator.execute_failback(
                args.reason,
                args.initiated_by,
                approve=approve,
                progress=progress,
                publish=not args.no_publish,
            )
        )
    return asyncio.run(
        orchestrator.execute_failover(
            args.reason,
            args.initiated_by,
            dry_run=args.dry_run,
            accept_data_loss=args.accept_data_loss,
            approve=approve,
            progress=progress,
            publish=not args.no_publish,
        )
    )
