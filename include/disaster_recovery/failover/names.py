"""The steps of a failover and of a failback, in order: the library runs them and the DAG
factory makes a task group of each. Kept free of imports so DAG parsing stays cheap."""

from __future__ import annotations

FAILOVER_STEPS = (
    "detect",
    "decide",
    "stop_writes",
    "sync",
    "promote",
    "activate_services",
    "dns",
    "validate",
)

FAILBACK_STEPS = (
    "detect",
    "decide",
    "rebuild_old_primary",
    "stop_writes",
    "sync",
    "promote",
    "rebuild_former_primary",
    "activate_services",
    "dns",
    "validate",
)
