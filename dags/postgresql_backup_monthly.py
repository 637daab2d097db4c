"""
# postgresql_backup_monthly — the monthly logical backup (tier `postgresql_monthly`, kept 12 months)

On the first day of every month at 03:00 (in the configured time zone, `America/Bogota` by default) this DAG takes a
`pg_dump -Fc` of the Litper database and makes it a verified restore candidate:

1. **dump** — row counts of every table and the dump are taken in one exported snapshot;
   the dump streams through a SHA-256 hasher straight into an S3 multipart upload (no local
   file). If `pg_dump` or S3 fails, the upload is aborted: nothing is left behind.
2. **checksum** — the object is streamed back: size and SHA-256 must match the manifest.
3. **verify** — `pg_restore -l` must list every table; a full read (`pg_restore -f /dev/null`)
   must succeed.
4. **replicate** — the object reaches the us-west-2 bucket (copied, or S3 replication awaited)
   with the same SHA-256.
5. **publish** — the manifest records the checks: only now does the backup count.

**Safe to re-run?** Yes. A re-run of the same run finds its backup and only re-checks it; an
object whose content differs from its manifest is never overwritten.

**When it fails**: `#alerts-critical` gets `BackupFailed` (dump or upload failed after the
retries) or `BackupVerificationFailed` (a check failed; the manifest is marked `failed`). Read
the task log linked in the alert. A failed check means the stored object is damaged or not
ours: do not delete it before looking at it; `dr verify postgresql_monthly <file>` re-runs the
checks. Then clear the DAG run (or trigger a new one) to take a fresh backup.
Params (manual runs): `dump_from` — dump from the configured node, the primary or the standby.
"""

from __future__ import annotations

from disaster_recovery.airflow_support.backup_dags import backup_dag

dag = backup_dag("postgresql_monthly", __doc__ or "")
