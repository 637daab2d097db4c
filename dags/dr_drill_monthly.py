"""
### dr_drill_monthly — the monthly DR drill

Runs on day 15 at 05:00 (`drills.monthly_schedule`, in the configured time zone; away from the
03:00 backups) against the **drill target**: the environment the configuration names, through
its own Connections. A target marked `environment.production` is refused unless
`environment.allow_drills_on_production` is set.

Each step is a task (after `check_overdue`; `preflight` refuses a production target or one not
in its original topology):

1. **restore_full** — the newest verified full backup is restored into a scratch database;
   every table's row count must equal the count recorded in the dump's snapshot; `pg_amcheck`
   checks heap and indexes; restore time and throughput are measured; the scratch database is
   dropped.
2. **point_in_time** — a point-in-time restore to a random moment of the last 24 hours: the
   heartbeats (`dr.heartbeat`) recovered must be exactly those committed up to that moment.
3. **failover** — the `dr_failover` procedure to the secondary region, approved by the drill's
   policy (`drills.auto_approve`, recorded as such); no acknowledged heartbeat may be lost;
   its time is the drill's RTO.
4. **failback** — the `dr_failback` procedure returns the primary role.

**restore_topology** (a teardown: it runs whatever the steps did) returns the target to its
original topology after a failed step. **evidence** writes the record (each step's start, end,
result; RTO and RPO against the objectives; restore throughput; pass or fail) to S3 as
`drills/<year>/monthly_<time>.json` in both regions, summarises it in Slack, and fails the run
when the drill failed. `check_overdue` raises `DRDrillOverdue` when no monthly drill
passed in 35 days or no quarterly one in 95.

**When it fails**: the grid and `DRDrillFailed` name the failed step. `restore_topology` has
tried to return the target to its original topology; check `dr health`, then read the evidence
(`dr drills`). **Safe to re-run** once the target is healthy; no drill task is retried
automatically (a retry would repeat a failover).
"""

from __future__ import annotations

from disaster_recovery.airflow_support.drill_dags import drill_dag

dag = drill_dag("monthly", __doc__)
