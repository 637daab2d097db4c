"""
# postgresql_wal_archive — is the WAL archive continuous, intact and fresh? (every 5 minutes)

PostgreSQL archives each WAL segment itself, through `archive_command = 'dr wal push %p'`, to
both regions' buckets (tier `postgresql_wal`, kept 7 days). This DAG watches that archive:

1. **inspect_archive** — lists the archive in both regions from the start segment of the oldest
   kept base backup to the newest archived segment of the primary's timeline (following
   timeline history files), hashes every segment it has not yet seen intact (SHA-256 against
   the one recorded at push time), reads the primary's position and `pg_stat_archiver`.
2. **check_continuity** — fails on a missing segment or a checksum mismatch in either region
   and sends **`WALArchiveGap`** (Critical) naming each segment and region.
3. **check_freshness** — fails when the primary has WAL newer than the archive and the newest
   archived segment is older than the RPO (`thresholds.wal_stale`, default 15 min) and sends
   **`WALArchiveStale`** (Critical) with `pg_stat_archiver`'s failure count and last failed WAL.
4. **check_backlog** — fails when more WAL files wait to be archived on the primary (`.ready`)
   than `pitr.async_max_backlog` allows (archive_command refuses them meanwhile) and sends
   **`WALArchiveBacklog`** (High).

**Safe to re-run?** Yes: it only reads (and remembers which segments it found intact).

**When it fails**: for `WALArchiveStale`, read the primary's server log for
`archive command failed` (S3 unreachable, credentials) — PostgreSQL keeps the WAL and retries,
nothing is lost while `pg_wal` has room. For `WALArchiveGap`, point-in-time recovery cannot cross
the gap: take a base backup now (trigger `postgresql_backup_incremental` with `kind=base`) so
recovery can start after it, then find out who deleted or altered the segment.
Params (manual runs): `deep` — hash every segment again.
"""

from __future__ import annotations

from disaster_recovery.airflow_support.physical_dags import wal_archive_dag

dag = wal_archive_dag(__doc__ or "")
