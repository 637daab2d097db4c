"""What every command needs: settings and the deployment they describe."""

from __future__ import annotations

import argparse
import sys

from disaster_recovery.config.endpoints import Deployment
from disaster_recovery.config.model import Settings, load_settings


def settings(args: argparse.Namespace) -> Settings:
    return load_settings(getattr(args, "config", None))


def deployment(args: argparse.Namespace) -> Deployment:
    return Deployment(settings(args))


def progress(message: str) -> None:
    """A progress line for a person, on stderr (stdout is reserved for the JSON result)."""
    print(message, file=sys.stderr, flush=True)
