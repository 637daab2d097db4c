"""
### dr_failover — fail the platform over to the secondary region (us-west-2)

Triggered by hand (the form asks for the reason, who initiates it, dry run, and whether to accept
possible data loss) or by `dr_health_check` after three consecutive failed primary checks
(`initiated_by = auto`). Run this DAG's Airflow in the **secondary** region: no step needs the
primary region to make progress.

One task group per step:

1. **detect** — re-checks health now and records the evidence.
2. **decide** — posts the request to Slack with a link to the approval page; a person approves or
   rejects (Browse → Required Actions). The page shows how long the primary has been failing,
   the standby's last replayed LSN and commit time, the newest archived WAL, the estimated data
   loss and the Redis offsets. Reject ends the run as `aborted`; **no answer within 30 minutes
   aborts too** (a timeout never proceeds). Ticking *accept_data_loss* in the form counts as
   accepting possible loss.
3. **stop_writes** — application read-only; old primary fenced (`default_transaction_read_only`,
   sessions ended, `standby.signal` on disk) or recorded as fenced when unreachable.
4. **sync** — standby replays the old primary's final LSN, Redis offsets equal; with the primary
   gone it refuses unless data loss was accepted.
5. **promote** — `pg_promote()`, `REPLICAOF NO ONE`, inherited settings reset, new timeline.
6. **activate_services** — starts the secondary region's application.
7. **dns** — Route 53 records UPSERTed to us-west-2, INSYNC, read back.
8. **validate** — write/read on the new primary, Redis writable, services healthy, DNS right.

**report** always runs: the result (`status`, `steps_completed`, `new_primary`,
`total_time_seconds`, per-step seconds) goes to XCom, to S3 (`<prefix>/failovers/<year>/`) and to
Slack. A rejected or timed-out run ends with status `aborted` and changes nothing.

**Safe to re-run**: every step checks whether it already happened. If a step fails, read its log,
fix the cause and clear the failed task: the run continues from there. `dry_run` runs every check
and reports what each step would do.
"""

from __future__ import annotations

from disaster_recovery.airflow_support.failover_dags import build_switch_dag

dag = build_switch_dag("failover", "dr_failover", __doc__, tags=["dr", "failover"])
