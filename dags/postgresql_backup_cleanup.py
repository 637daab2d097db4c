"""
# postgresql_backup_cleanup — retention of the logical backups

Daily, after the backups (04:30 in the configured time zone by default, `backup.cleanup_schedule`),
this DAG applies the retention policy of `dr_config.yaml` to the full (daily), weekly and monthly
tiers and returns what it deleted per tier: `{"daily": n, "weekly": n, "monthly": n}`.

A backup goes only when it is older than its tier's `max_age` AND not among the newest
`keep_last` verified backups (defaults: 7 days / 4 weeks / 12 months). The newest verified
backup of a tier is never deleted; an unverified or failed backup never counts as a kept one;
order and age come from the recorded start time, never from the file name. Each backup goes in
both regions, its manifest first.

**Safe to re-run?** Yes: a second run finds nothing more to delete.
**Dry run**: trigger with `dry_run = true` to see what would go (nothing is deleted).
**When it fails**: `#alerts-critical` gets `BackupFailed` with the task log link. Nothing is
half-deleted in a way that matters: a backup whose manifest went is no longer a restore
candidate; re-run the DAG to finish.
"""

from __future__ import annotations

from disaster_recovery.airflow_support.backup_dags import cleanup_dag

dag = cleanup_dag(__doc__ or "")
