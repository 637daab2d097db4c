"""Logical backups (full daily, weekly, monthly): dump -> S3, checksum, verify, replicate, publish.

Each step is a function of (deployment, backup type, file) that an Airflow task, the CLI and the
seed API all call. Between steps only the file name travels; the truth is the manifest in S3.

- :func:`dump_to_s3` takes the per-table row counts and the dump in one exported snapshot and
  streams ``pg_dump -Fc`` through a SHA-256 hasher into a multipart upload; if pg_dump fails,
  is killed or S3 fails, the upload is aborted and nothing is left. Re-running it for a backup
  that exists reuses that backup instead of overwriting it.
- :func:`check_checksum` streams the object back: size and SHA-256 must match the manifest.
- :func:`check_readable` runs ``pg_restore -l`` (every manifest table listed) and a full read
  (``pg_restore -f /dev/null``), which catches what the table of contents does not show.
- :func:`replicate` puts the object in the secondary region's bucket (copy mode) or waits for S3
  replication (native mode), then checks the copy's SHA-256.
- :func:`publish` records the checks in the manifest: only now is the backup a restore candidate.

A failed check marks the manifest ``failed`` (so it never counts) and raises
:class:`VerificationError` naming the check.
"""

from __future__ import annotations

import getpass
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from disaster_recovery.backup.claims import claimed_name, new_run_id, refuse_foreign_backup
from disaster_recovery.backup.replicate import replicate
from disaster_recovery.backup.stores import Stores
from disaster_recovery.backup.verify import (
    CHECKS,
    _failures_recorded,
    check_checksum,
    check_readable,
    load_manifest,
)
from disaster_recovery.catalog.manifests import Manifest, Verification
from disaster_recovery.catalog.names import backup_file_name, check_backup_type
from disaster_recovery.clients.runner import streaming
from disaster_recovery.config.endpoints import Deployment, PostgresEndpoint
from disaster_recovery.errors import (
    ProducerFailed,
    UnavailableError,
    VerificationError,
)
from disaster_recovery.monitoring import topology
from disaster_recovery.monitoring.health import replication_lag, standby_database
from disaster_recovery.postgres import db, pgbin, pgdump

log = logging.getLogger(__name__)

# User tables whose rows pg_dump copies: ordinary tables and partitions (relkind 'r'), outside
# the system schemas. Partitioned parents ('p') hold no rows of their own.
_USER_TABLES = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%%'
  AND n.nspname NOT LIKE 'pg\\_temp%%'
ORDER BY 1, 2
"""


def actor() -> str:
    """Who runs this step, for the manifest: ``user@host``."""
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def source_endpoint(deployment: Deployment) -> tuple[str, PostgresEndpoint]:
    """The node to dump: ``backup.dump_from`` (the standby keeps the load off the primary)."""
    role = deployment.settings.backup.dump_from
    return role, deployment.postgres(role)


def require_caught_up_standby(deployment: Deployment, checked: topology.Checked) -> None:
    """``dump_from: standby`` only from a standby that streams and has replayed the primary's
    WAL to within ``thresholds.replication_lag``: a stale standby's dump would look like a good
    backup while missing the latest commits."""
    standby = checked.nodes[checked.topology.standby_region]
    if standby.role != "standby":
        why = f" ({standby.error})" if standby.error else ""
        raise UnavailableError(
            f"backup.dump_from is standby, but {standby.region}'s node ({standby.connection}) is "
            f"{standby.role}{why}: dump from the primary (--from primary) or bring the standby "
            "back"
        )
    primary, replica = deployment.postgres("primary"), deployment.postgres("standby")
    if (state := standby_database(replica)["status"]) != "streaming":
        raise UnavailableError(
            f"backup.dump_from is standby, but {replica.describe()} is {state}: its data may be "
            "stale; dump from the primary (--from primary) or repair replication"
        )
    lag = replication_lag(primary, replica)
    limit = deployment.settings.thresholds.replication_lag.total_seconds()
    if lag["seconds"] is None or lag["seconds"] > limit:
        raise UnavailableError(
            f"backup.dump_from is standby, but {replica.describe()} is behind the primary "
            f"(replayed {lag['standby_replay_lsn']}, primary at {lag['primary_lsn']}, lag "
            f"{lag['seconds']} s > thresholds.replication_lag {limit:g} s): dump from the "
            "primary (--from primary) or wait for the standby to catch up"
        )


# -- dump ---------------------------------------------------------------------------------------


@contextmanager
def exported_snapshot(endpoint: PostgresEndpoint) -> Iterator[tuple[psycopg.Connection[Any], str]]:
    """A REPEATABLE READ transaction and its exported snapshot id, held open for the caller.

    pg_dump imports the snapshot with ``--snapshot``; the exporting transaction must stay open
    until pg_dump has taken it, so it lives for the whole block. Works on a hot standby too.
    """
    with db.connect(endpoint, autocommit=False) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        row = conn.execute("SELECT pg_export_snapshot()").fetchone()
        assert row is not None
        try:
            yield conn, str(row[0])
        finally:
            # The transaction is read-only: when the server ended the connection (a failover,
            # pg_terminate_backend) there is nothing to roll back, and the rollback's "connection
            # is lost" must not hide the error that says why the dump failed.
            with suppress(psycopg.OperationalError):
                conn.rollback()


def exact_row_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """``{"schema.table": rows}`` for every user table, counted in the connection's snapshot."""
    counts: dict[str, int] = {}
    for schema, table in conn.execute(_USER_TABLES).fetchall():
        query = sql.SQL("SELECT count(*) FROM {}.{}").format(
            sql.Identifier(schema), sql.Identifier(table)
        )
        row = conn.execute(query).fetchone()
        counts[f"{schema}.{table}"] = int(row[0]) if row else 0
    return counts


def run_file(backup_type: str, run_time: datetime) -> str:
    """The backup file a run makes: named after the run's time, so a re-run finds its backup."""
    return backup_file_name(check_backup_type(backup_type), run_time)


def dump_to_s3(
    deployment: Deployment,
    backup_type: str,
    run_time: datetime,
    *,
    who: str | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Dump the database straight into the primary bucket and write an ``uploaded`` manifest.

    The run first claims the file name (:func:`disaster_recovery.backup.claims.claimed_name`): another
    run that chose the same name is refused with :class:`BusyError`, never handed this run's
    backup. ``run_id`` names the run; by default it is the file name, so every attempt of the
    run for this time (a DAG task's retries) is the same run.
    Idempotent: when this run's backup already exists (object and manifest), it is reused and
    the later steps check it; an object without its manifest is never overwritten.
    Returns ``{"file", "key", "bucket", "reused"}`` (small enough for an XCom).
    """
    stores = Stores.of(deployment)
    file = run_file(backup_type, run_time)
    catalog = stores.catalog
    key = catalog.key_for(file)
    run = run_id or file
    with claimed_name(stores.primary, key, run_id=run, who=who or actor()):
        return _dump_or_reuse(deployment, stores, backup_type, file, who=who or actor(), run_id=run)


def _dump_or_reuse(
    deployment: Deployment, stores: Stores, backup_type: str, file: str, *, who: str, run_id: str
) -> dict[str, Any]:
    catalog = stores.catalog
    key = catalog.key_for(file)
    # One HEAD in the usual case (no object yet); the manifest is read only when there is one.
    if stores.primary.head(key) is None:
        manifest = _dump(deployment, stores, backup_type, file, who=who, run_id=run_id)
        return {
            "file": manifest.file,
            "key": manifest.key,
            "bucket": manifest.bucket,
            "reused": False,
        }
    if (existing := catalog.find(file)) is not None:
        refuse_foreign_backup(stores.primary.url(key), getattr(existing, "run_id", None), run_id)
        log.info(
            "backup %s already exists; reusing it (the next steps check it)",
            stores.primary.url(key),
        )
        return {"file": file, "key": key, "bucket": stores.primary.bucket, "reused": True}
    raise VerificationError(
        f"{stores.primary.url(key)} exists but its manifest is missing (an earlier run died "
        "after the upload, or the manifest was deleted); refusing to overwrite it. Inspect it, "
        "delete it if it is garbage (postgresql_backup_cleanup removes it once older than "
        "backup.leftover_grace), then re-run.",
        check="manifest",
        key=key,
    )


def _dump(
    deployment: Deployment, stores: Stores, backup_type: str, file: str, *, who: str, run_id: str
) -> Manifest:
    settings = deployment.settings
    # Only from the node the checked topology names (SplitBrain / unavailable raise here).
    deployment, checked = topology.protected(deployment)
    if checked.topology.primary_region != stores.primary.endpoint.region:
        raise UnavailableError(
            f"the topology changed while the run started (primary now "
            f"{checked.topology.primary_region}); retry the run"
        )
    role, endpoint = source_endpoint(deployment)
    if role == "standby":
        require_caught_up_standby(deployment, checked)
    compression = pgdump.Compression.parse(settings.backup.compression)
    key = stores.catalog.key_for(file)
    started_at = datetime.now(UTC)
    with exported_snapshot(endpoint) as (conn, snapshot):
        server_version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        server_major = int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000  # type: ignore[index]
        pgbin.require_at_least("pg_dump", server_major)
        env = {**endpoint.libpq_env(), "PGAPPNAME": pgdump.PG_DUMP_APPLICATION}
        timeout = settings.backup.command_timeout.total_seconds()
        with streaming(
            pgdump.dump_args(compression=compression, snapshot=snapshot),
            target=endpoint.describe(),
            env=env,
            timeout=timeout,
        ) as dump:
            # The exact counts scan every table: they run in the exporting transaction (the
            # same snapshot) while pg_dump streams, instead of before it.
            counting = _InBackground(lambda: exact_row_counts(conn))

            def dump_must_succeed() -> None:
                # Called at the end of pg_dump's output, before the upload completes: a pg_dump
                # that died mid-stream (or counts that failed) abort the multipart upload instead
                # of completing a truncated object (boto3 would complete it otherwise).
                code = dump.wait()
                if code != 0:
                    raise ProducerFailed(_dump_failure_text(dump, code))
                counting.result()

            try:
                stored = stores.primary.upload_stream(key, dump.stdout, at_eof=dump_must_succeed)
                dump.finish()
            finally:
                counting.stop(conn)
            counts = counting.result()
        log.info("row counts in snapshot %s: %s", snapshot, counts)
    manifest = Manifest.model_validate(
        {
            "backup_type": backup_type,
            "file": file,
            "bucket": stores.primary.bucket,
            "key": key,
            "size_bytes": stored.size,
            "sha256": stored.sha256,
            "s3_checksum": stored.s3_checksum,
            "started_at": started_at,
            "finished_at": datetime.now(UTC),
            "server_version": server_version,
            "database": endpoint.dbname,
            "format": "custom",
            "status": "uploaded",
            "encryption": stores.primary.encryption.to_dict(),
            "compression": compression.flag(),
            "snapshot": snapshot,
            "table_counts": counts,
            "source": {
                "role": role,
                "connection": endpoint.conn_id,
                "host": f"{endpoint.host}:{endpoint.port}",
                **checked.source(role),
            },
            "pg_dump_version": pgbin.program_major("pg_dump"),
            "dumped_by": who,
            "run_id": run_id,
        }
    )
    stores.catalog.save(manifest)
    log.info(
        "uploaded %s (%d bytes, sha256 %s)", stores.primary.url(key), stored.size, stored.sha256
    )
    return manifest


class _InBackground:
    """A function running in a thread; :meth:`result` re-raises its error as ProducerFailed."""

    def __init__(self, function: Callable[[], Any]):
        self._function = function
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._function()
        except BaseException as exc:
            self._error = exc

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise ProducerFailed(f"row counts in the dump's snapshot failed: {self._error}")
        return self._value

    def stop(self, conn: psycopg.Connection[Any]) -> None:
        """Cancel the counting query if it still runs (the dump failed) and wait for the thread,
        so the connection is idle before the transaction ends."""
        if self._thread.is_alive():
            with suppress(Exception):
                conn.cancel_safe(timeout=5)
        self._thread.join()


def _dump_failure_text(dump: Any, code: int) -> str:
    """pg_dump's failure with the line that explains it first: its stderr ends with the SQL
    command ("Command was: COPY ..."), while the cause is in its error and server-message lines."""
    text = str(dump.failure(code))
    tail = dump.stderr_tail.splitlines()
    causes = [
        line.removeprefix("pg_dump: ").removeprefix("detail: ").strip()
        for line in tail
        if "error:" in line or "FATAL" in line or "ERROR" in line
    ]
    if not causes:
        return text
    head, _, rest = text.partition(": ")
    return f"{head}: {' / '.join(causes[-2:])}\n{rest}"


# -- publish ------------------------------------------------------------------------------------


def publish(
    deployment: Deployment,
    backup_type: str,
    file: str,
    checks: dict[str, Any],
    *,
    who: str | None = None,
) -> Manifest:
    """Record the passed checks in the manifest (both regions): the backup becomes a restore
    candidate. Every check of :data:`CHECKS` must be present and ok; a published backup is left
    as it is (re-running a finished run changes nothing)."""
    stores = Stores.of(deployment)
    manifest = load_manifest(stores, backup_type, file)
    if manifest.verified:
        log.info("%s is already published (verified %s)", file, manifest.verification.verified_at)  # type: ignore[union-attr]
        return manifest
    missing = [name for name in CHECKS if not (checks.get(name) or {}).get("ok")]
    if missing:
        raise VerificationError(
            f"{file}: cannot publish, checks not passed: {', '.join(missing)}",
            check=missing[0],
            key=manifest.key,
        )
    with _failures_recorded(stores, manifest):
        # A failover since the dump makes its node a deposed one: never published.
        topology.require_current_source(
            deployment, _manifest_source(manifest), file, key=manifest.key
        )
    replica = checks["replica"]
    owed = bool(replica.get("owed"))
    verified = manifest.model_copy(
        update={
            "status": "verified",
            "error": None,
            "verification": Verification(
                checks=checks, verified_at=datetime.now(UTC), verified_by=who or actor()
            ),
            "replicas": {}
            if owed
            else {
                replica["region"]: {
                    "bucket": replica["bucket"],
                    "key": manifest.key,
                    "sha256": replica["sha256"],
                    "mode": replica["mode"],
                    "encryption": stores.secondary.encryption.to_dict(),
                }
            },
            "replica_owed": {replica["region"]: datetime.now(UTC).isoformat()} if owed else None,
        }
    )
    if deployment.settings.storage.replication == "copy" and not owed:
        # The replica's manifest first: the primary's published manifest is the commit point.
        stores.secondary_catalog.save(verified)
    stores.catalog.save(verified)
    return verified


def _manifest_source(manifest: Manifest) -> dict[str, Any]:
    source = (manifest.model_extra or {}).get("source") or {}
    return dict(source) if isinstance(source, dict) else {}


# -- the whole pipeline ---------------------------------------------------------------------------


def run_backup(
    deployment: Deployment,
    backup_type: str,
    run_time: datetime | None = None,
    *,
    who: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> Manifest:
    """Every step in order, as the DAG runs them: dump, checksum, verify, replicate, publish."""
    say = progress or (lambda message: log.info("%s", message))
    when = run_time or datetime.now(UTC)
    # A run "now" (a person's command, the seed API) is its own run: a second one started in
    # the same second is refused instead of being handed the first one's backup.
    run_id = None if run_time else new_run_id()
    say(f"dumping {backup_type} to S3")
    dumped = dump_to_s3(deployment, backup_type, when, who=who, run_id=run_id)
    file = dumped["file"]
    say(f"checking the SHA-256 of {file}")
    checks: dict[str, Any] = {"checksum": check_checksum(deployment, backup_type, file)}
    say(f"reading {file} with pg_restore")
    checks.update(check_readable(deployment, backup_type, file))
    say(f"replicating {file} to {Stores.of(deployment).secondary.endpoint.region}")
    checks["replica"] = replicate(deployment, backup_type, file)
    return publish(deployment, backup_type, file, checks, who=who)


def verify_existing(deployment: Deployment, backup_type: str, file: str) -> dict[str, Any]:
    """Re-run every check on an existing backup; each check's result, failures included.

    A failed check marks the backup failed (it stops counting); an unreachable server raises.
    ``file`` may also be one of the seed's spellings (a date-only or local-time name): the
    result names the backup it resolved to.
    """
    resolved = Stores.of(deployment).catalog.resolve(file, deployment.settings.tz)
    file = resolved.file
    results: dict[str, Any] = {"backup_type": backup_type, "file": file}
    if resolved.note:
        results["resolved"] = resolved.note
    steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("checksum", lambda: {"checksum": check_checksum(deployment, backup_type, file)}),
        ("readable", lambda: check_readable(deployment, backup_type, file)),
        ("replica", lambda: {"replica": replicate(deployment, backup_type, file, check_only=True)}),
    ]
    valid = True
    for name, step in steps:
        try:
            results.update(step())
        except VerificationError as exc:
            valid = False
            results[exc.check or name] = {"ok": False, "error": str(exc)}
            break
    results["valid"] = valid
    return results
