"""What every command needs: settings and the deployment they describe."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from disaster_recovery.config.endpoints import Deployment
    from disaster_recovery.config.model import Settings


def settings(args: argparse.Namespace) -> Settings:
    # Imported here: every command's parser imports this module, and pydantic costs ~0.15 s.
    from disaster_recovery.config.model import load_settings

    return load_settings(getattr(args, "config", None))


def deployment(args: argparse.Namespace) -> Deployment:
    from disaster_recovery.config.endpoints import Deployment, check_env_connections

    policy = settings(args)
    check_env_connections(list(policy.connections.model_dump().values()))
    return Deployment(policy)


def progress(message: str) -> None:
    """A progress line for a person, on stderr (stdout is reserved for the JSON result)."""
    print(message, file=sys.stderr, flush=True)
