"""The runbook command: ``python -m disaster_recovery.failover --reason ...`` (the same as ``dr failover``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import Any

from disaster_recovery.config.endpoints import Deployment
from disaster_recovery.config.model import load_settings
from disaster_recovery.errors import DisasterRecoveryError
from disaster_recovery.failover.orchestrator import FailoverOrchestrator

# -- the runbook CLI ----------------------------------------------------------------------------


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


def build_parser(prog: str = "python -m disaster_recovery.failover") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Fail over to the secondary region (runbook)."
    )
    add_arguments(parser)
    return parser


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


def main(argv: list[str] | None = None) -> int:
    from disaster_recovery.errors import ExitCode

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        result = cli_run(args, Deployment(load_settings()))
    except DisasterRecoveryError as exc:
        print(json.dumps({"status": "failed", "error": str(exc)}, indent=2))
        return int(exc.exit_code)
    print(json.dumps(result, indent=2, default=str))
    return {"completed": 0, "dry_run": 0, "aborted": int(ExitCode.ABORTED)}.get(result["status"], 1)


if __name__ == "__main__":
    sys.exit(main())
