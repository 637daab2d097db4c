"""``dr iam-policy --role airflow|archiver|cleanup|operator``: the IAM policy JSON a role needs.

stdout is the policy document itself, ready for ``aws iam create-policy --policy-document``.
"""

from __future__ import annotations

import argparse
from typing import Any

from disaster_recovery.config.iam import DNS_ROLES, ROLES


def register(commands: Any) -> None:
    policy = commands.add_parser(
        "iam-policy", help="print the least-privilege IAM policy of a role, from the config"
    )
    policy.add_argument("--role", required=True, choices=ROLES)
    policy.add_argument(
        "--zone-id",
        help=f"Route 53 hosted zone id of dns.zone (needed by {' and '.join(DNS_ROLES)})",
    )
    policy.set_defaults(handler=print_policy)


def print_policy(args: argparse.Namespace) -> dict[str, Any]:
    from disaster_recovery.cli.common import settings
    from disaster_recovery.config.iam import policy_document

    return policy_document(settings(args), args.role, zone_id=args.zone_id)
