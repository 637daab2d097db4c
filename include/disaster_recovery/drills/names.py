"""The steps of each drill, in order: the library runs them and the drill DAG factory makes a task
of each. Kept free of imports so DAG parsing stays cheap."""

from __future__ import annotations

DRILL_STEPS: dict[str, tuple[str, ...]] = {
    "monthly": ("preflight", "restore_full", "point_in_time", "failover", "failback"),
    "quarterly": (
        "preflight",
        "kill_primary_region",
        "detect",
        "failover",
        "validate",
        "archive_rpo",
        "survivor_protection",
        "revive_region",
        "failback",
    ),
}
# After a failed or interrupted step: the teardown that returns the original topology.
RESTORE_TOPOLOGY = "restore_topology"
