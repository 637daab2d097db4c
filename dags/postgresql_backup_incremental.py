"""
# postgresql_backup_incremental — hourly incremental backups (and the day's base backup)

Tier `postgresql_incremental` (kept 24 hours), part of the physical chain behind point-in-time
recovery: base backup -> incrementals, plus the WAL archive.

1. **take_backup** — if the chain has no verified base backup for today (configured time
   zone), or the primary changed (failover: another system identifier or timeline), it takes
   the **base backup** (`pg_basebackup -Ft -X fetch` streamed to S3 with SHA-256); otherwise a
   native **incremental** (`pg_basebackup --incremental`, PostgreSQL 17+) on the newest verified
   element of the chain, whose file is recorded as its parent.
2. **verify_backup** — downloads the tar to a temporary folder: SHA-256 and size against the
   manifest, `backup_manifest` against the catalog, `pg_verifybackup -n`. Only now does it count.
3. **replicate_backup** — copies it to the us-west-2 bucket and checks the copy's SHA-256.

Why this DAG takes the base backup (and not `postgresql_backup_full`): the chain then has one
writer, serialized by `max_active_runs=1`, so an incremental never races the base it builds on,
and a failed base is retried by the next hourly run instead of waiting a day.

**Safe to re-run?** Yes: each run takes a new element; a failed element is never a parent.

**When it fails**: `BackupFailed` (backup or copy failed) or `BackupVerificationFailed` (a check
failed; the manifest is marked failed and the next run builds on the last verified element).
On PostgreSQL < 17 the incremental fails with an error saying so: pause this DAG or upgrade.
Params (manual runs): `kind` — auto, base or incremental.
"""

from __future__ import annotations

from disaster_recovery.airflow_support.physical_dags import incremental_backup_dag

dag = incremental_backup_dag(__doc__ or "")
