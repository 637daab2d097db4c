"""
### dr_drill_quarterly — loss of the whole primary region

Runs on day 20 of January, April, July and October at 05:00 (`drills.quarterly_schedule`)
against the drill target named by the configuration (a production target is refused unless
allowed).

Each step is a task (after `check_overdue` and `preflight`):

1. **kill_primary_region** — while the application writes, PostgreSQL's primary is crashed
   (immediate stop: no checkpoint, no clean shutdown), the Redis master shut down without
   saving, and the primary region's services stopped.
2. **detect** — the health check runs until the primary failed
   `thresholds.health_failures_before_failover` (3) consecutive times.
3. **failover** — the eight-step procedure, approved by the drill's policy.
4. **validate** — every acknowledged heartbeat is on the new primary; the RTO and RPO.
5. **archive_rpo** — a point-in-time restore to the newest moment the WAL archive held when the
   region was lost: the RPO the archive alone would have given.
6. **survivor_protection** — a verified full and base backup and a point-in-time restore in the
   surviving region.
7. **revive_region** (when `drills.region_revive_command` is set) and **failback** — the
   planned switchover back.

The **real RTO** is measured from the kill to a validated secondary; the **real RPO** from the
newest heartbeat the new primary holds (the synchronous standby must hold every acknowledged
one). **restore_topology** (a teardown that always runs) revives the region and fails back after
a failed step; **evidence** writes the record to S3 (`drills/<year>/quarterly_<time>.json`) and
Slack and fails the run when the drill failed.

**When it fails**: the grid and `DRDrillFailed` name the step; `restore_topology` has tried to
fail back. Check `dr health` and `dr drills`. No drill task is retried automatically.
"""

from __future__ import annotations

from disaster_recovery.airflow_support.drill_dags import drill_dag

dag = drill_dag("quarterly", __doc__)
