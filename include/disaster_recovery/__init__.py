"""Litper disaster recovery: verified PostgreSQL backups, point-in-time recovery, failover of
PostgreSQL, Redis and DNS to the secondary region, and drills that measure RPO and RTO.

The seed API is importable from here (``from disaster_recovery import BackupManager``); it is
loaded on first use so that light commands (``dr wal push``) do not pay for it.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "BackupManager": "disaster_recovery.manager",
    "FailoverOrchestrator": "disaster_recovery.failover.orchestrator",
}

__all__ = ["BackupManager", "FailoverOrchestrator", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'disaster_recovery' has no attribute {name!r}")
