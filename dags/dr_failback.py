"""
### dr_failback — give the primary role back to us-east-1 after a failover

Triggered by hand once the primary region is back. Same approval as `dr_failover` (Slack link,
30-minute timeout that aborts, Reject ends the run as `aborted`).

Task groups:

1. **detect** — the current primary (us-west-2) is a writable primary; notes the old node's state.
2. **decide** — human approval.
3. **rebuild_old_primary** — `pg_rewind` of the old primary onto the current timeline (a fresh
   base backup when rewind is impossible), its own role settings reapplied, started as a
   standby, waits until it streams, has caught up and is the synchronous standby; its Redis
   follows the current master.
4. **stop_writes**, 5. **sync**, 6. **promote** — a planned switchover: writes stopped, LSNs equal
   before the promotion (zero data loss).
7. **rebuild_former_primary** — us-west-2 becomes the synchronous standby again.
8. **activate_services** — us-east-1's application writable again, us-west-2's stopped.
9. **dns** — records back to us-east-1. 10. **validate** — end-to-end checks.

**report** stores and posts the result like `dr_failover` (kind `failback`).

**Safe to re-run**: a rebuilt node that already streams is left alone, a promoted node is not
promoted twice. If `rebuild_*` fails, read the node's server log named in the error.
"""

from __future__ import annotations

from disaster_recovery.airflow_support.failover_dags import build_switch_dag

dag = build_switch_dag("failback", "dr_failback", __doc__, tags=["dr", "failover"])
