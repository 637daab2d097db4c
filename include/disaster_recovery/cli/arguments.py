"""Argument types that check numbers and paths where they enter, so ``--jobs 0`` or a
``--target-dir`` that is a file is refused with a usage error naming the option, before any work."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path


def _whole_number(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None


def positive_int(text: str) -> int:
    """A whole number >= 1 (``--jobs``)."""
    value = _whole_number(text, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """A whole number >= 0 (``--seed``)."""
    value = _whole_number(text, "a whole number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def port_number(text: str) -> int:
    """A TCP port, 1-65535."""
    value = _whole_number(text, "a port number")
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (1-65535)")
    return value


def positive_float(text: str) -> float:
    """A number > 0 (``--scale``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text}")
    return value


def folder(text: str) -> Path:
    """A folder that may not exist yet, but is not a file (``--target-dir``, ``--root``)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path")
    path = Path(text)
    try:
        if path.exists() and not path.is_dir():
            raise argparse.ArgumentTypeError(f"{path} is a file, not a folder")
        for parent in path.absolute().parents:
            if parent.exists() and not parent.is_dir():
                raise argparse.ArgumentTypeError(f"{parent} (in {path}) is a file, not a folder")
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"{path}: {exc.strerror or exc}") from None
    return path


def parse_timestamp(text: str) -> datetime:
    """An ISO 8601 time (``--point-in-time``)."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO time: {text!r} (like 2024-01-15T14:30:00-05:00)"
        ) from None
