"""Asynchronous archiving (``pitr.archive_mode: async``), after pgBackRest's archive-push-async.

PostgreSQL runs ``archive_command`` for one file at a time and waits for each, so a sequential
archiver caps the WAL a busy primary may write. Here one long-lived **uploader** per data
directory reads the ``.ready`` files in ``pg_wal/archive_status`` in name order (PostgreSQL's
own), keeps several uploads in flight with persistent S3 clients, and records each file it
stored (per :meth:`WalArchive._push_file`'s rule: both regions, or one region and a debt marker)
in a spool, ``pg_wal/dr_async``:

- ``ok/<name>``: the SHA-256 of the bytes stored and, on a second line, the file's identity
  when they were read (:func:`file_identity`), written atomically (fsync, rename);
- ``error/<name>``: why the last attempt failed (archive_command reports it to PostgreSQL);
- ``uploader.pid``: the running uploader's pid, held under ``flock`` (released by the kernel
  when the process dies, so a stale pid is never mistaken for a live uploader);
- ``uploader.log``: its log.

``archive_command`` answers "archived" only from an ``ok`` marker: first in
``archive_push.sh`` (no interpreter: the file still has the identity the marker recorded, so
its bytes are the ones stored), else in :func:`push_async`, whose SHA-256 must match the
file's bytes now; it starts the uploader when none runs, waits for the
confirmation, and after :data:`CONFIRM_WAIT_SECONDS` pushes the file itself. Nothing is lost to
a crash: PostgreSQL keeps every file until told it is archived, the uploader pushes again what
has no ``ok`` marker (an identical object in S3 is success), and markers of files PostgreSQL
no longer lists as ``.ready`` are dropped. The spool holds no copy of WAL (PostgreSQL keeps the
files in ``pg_wal``), so ``pitr.async_max_backlog`` bounds how far the archive may fall behind
before archive_command refuses and says why.

Lean like the push path: no pydantic, psycopg, redis or Airflow; boto3 only in the uploader.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from disaster_recovery.errors import DisasterRecoveryError, WalBacklogError
from disaster_recovery.postgres.walfiles import is_archivable
from disaster_recovery.wal.archive import WalArchive, _write_atomically

log = logging.getLogger(__name__)

# archive_command waits this long for the uploader's confirmation before pushing the file itself.
CONFIRM_WAIT_SECONDS = 30.0
# A freshly started uploader takes its lock within this long (interpreter start, boto3 import).
START_GRACE_SECONDS = 10.0
# The uploader retries a failed file after this long, and exits after this long with nothing
# to do (the next archive_command starts it again).
RETRY_SECONDS = 3.0
IDLE_EXIT_SECONDS = 30.0
POLL_SECONDS = 0.01
LOG_LIMIT_BYTES = 1 << 20


class Spool:
    """``pg_wal/dr_async``: the uploader's confirmations, errors, lock and log (module doc)."""

    FOLDER = "dr_async"

    def __init__(self, pg_wal: Path):
        self.pg_wal = pg_wal
        self.folder = pg_wal / self.FOLDER
        self.ok = self.folder / "ok"
        self.errors = self.folder / "error"
        self.lock_file = self.folder / "uploader.pid"
        self.log_file = self.folder / "uploader.log"

    def prepare(self) -> None:
        for folder in (self.ok, self.errors):
            folder.mkdir(parents=True, exist_ok=True)

    # -- what PostgreSQL waits for ---------------------------------------------------------

    def ready(self) -> list[str]:
        """Files PostgreSQL has finished and not yet been told are archived, in its order."""
        try:
            entries = os.listdir(self.pg_wal / "archive_status")
        except OSError:
            return []
        names = (e.removesuffix(".ready") for e in entries if e.endswith(".ready"))
        return sorted(n for n in names if is_archivable(n))

    def offered_by_server(self, file: Path) -> bool:
        """Is ``file`` a ``.ready`` file in the pg_wal of a running server? Only then may an
        uploader watch the folder (a file pushed by hand is pushed synchronously)."""
        return (self.pg_wal / "archive_status" / f"{file.name}.ready").exists() and server_running(
            self.pg_wal.parent
        )

    # -- confirmations ---------------------------------------------------------------------

    def confirmed_names(self) -> set[str]:
        try:
            return set(os.listdir(self.ok))
        except OSError:
            return set()

    def confirmed(self, file: Path) -> str | None:
        """The SHA-256 the uploader stored for ``file`` if its bytes still hash to it."""
        try:
            recorded = (self.ok / file.name).read_text().split("\n", 1)[0].strip()
        except OSError:
            return None
        actual = _sha256_of(file)
        if actual == recorded:
            return actual
        # Other bytes under the name (never expected of a finished segment): not confirmed;
        # without the marker the uploader pushes them again and S3 compares.
        (self.ok / file.name).unlink(missing_ok=True)
        return None

    def confirm(self, name: str, sha256: str, identity: str | None = None) -> None:
        """Record ``name`` as stored with ``sha256``; with the ``identity`` it had when its bytes
        were read, archive_push.sh can answer for it without an interpreter."""
        lines = [sha256, identity] if identity else [sha256]
        _write_atomically(self.ok / name, ("\n".join(lines) + "\n").encode())
        (self.errors / name).unlink(missing_ok=True)

    def fail(self, name: str, reason: str) -> None:
        _write_atomically(self.errors / name, reason.encode())

    def error(self, name: str) -> str | None:
        try:
            return (self.errors / name).read_text().strip() or "failed"
        except OSError:
            return None

    def clear_errors(self) -> None:
        with contextlib.suppress(OSError):
            for entry in self.errors.iterdir():
                entry.unlink(missing_ok=True)

    def forget_archived(self) -> None:
        """Drop markers of files PostgreSQL no longer lists as ``.ready`` (archived, or removed
        by crash recovery)."""
        waiting = set(self.ready())
        for folder in (self.ok, self.errors):
            with contextlib.suppress(OSError):
                for entry in folder.iterdir():
                    if entry.name not in waiting:
                        entry.unlink(missing_ok=True)

    # -- one uploader per data directory ---------------------------------------------------

    @contextlib.contextmanager
    def uploader_lock(self) -> Iterator[bool]:
        """Hold the uploader's lock if free (yields True), else yield False."""
        self.prepare()
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # releases the lock

    def uploader_pid(self) -> int | None:
        """The running uploader's pid, None when none runs (a stale pid file is ignored)."""
        with self.uploader_lock() as free:
            if free:
                return None
        try:
            return int(self.lock_file.read_text().strip())
        except (OSError, ValueError):
            return None  # starting: the lock is taken, the pid not yet written


def server_running(data_dir: Path) -> bool:
    """Is a postmaster alive for ``data_dir`` (its ``postmaster.pid``'s first line)?"""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        os.kill(pid, 0)
    except PermissionError:
        return True  # alive, another OS user's
    except (OSError, ValueError):
        return False
    return True


def file_identity(file: Path) -> str | None:
    """Inode, size, mtime and ctime as ``stat -c '%i %s %.9Y %.9Z'`` prints them (what
    archive_push.sh compares), None when the file is gone."""
    try:
        stat = file.stat()
    except OSError:
        return None
    return f"{stat.st_ino} {stat.st_size} {_seconds(stat.st_mtime_ns)} {_seconds(stat.st_ctime_ns)}"


def _seconds(nanoseconds: int) -> str:
    return f"{nanoseconds // 1_000_000_000}.{nanoseconds % 1_000_000_000:09d}"


def _sha256_of(file: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(file, "rb") as source:
            while chunk := source.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


# -- archive_command ------------------------------------------------------------------------


def push_async(archive: WalArchive, path: str | Path, env_file: str | None) -> dict[str, Any]:
    """archive_command in async mode: success once the uploader confirmed the file (module doc).
    Raises :class:`WalBacklogError` when more than ``pitr.async_max_backlog`` files wait, and
    the uploader's own error when its last attempt at this file failed."""
    file = Path(path).absolute()
    spool = Spool(file.parent)
    if not spool.offered_by_server(file):
        return archive.push(file)
    started_at: float | None = None
    deadline = time.monotonic() + CONFIRM_WAIT_SECONDS
    while time.monotonic() < deadline:
        if (sha256 := spool.confirmed(file)) is not None:
            return {"file": file.name, "sha256": sha256, "confirmed_by": "uploader"}
        if spool.uploader_pid() is None and not _uploader_starting(spool, started_at):
            if started_at is not None:
                log.warning("the WAL uploader did not start; pushing %s here", file.name)
                break
            started_at = start_uploader(spool, env_file)  # also clears a dead one's errors
            continue
        # Errors are the running uploader's verdicts (it retries; PostgreSQL retries us).
        reason = spool.error(file.name)
        backlog = len(spool.ready())
        if backlog > archive.tuning.async_max_backlog:
            raise WalBacklogError(
                f"{file.name}: {backlog} WAL files wait to be archived in {spool.pg_wal} "
                f"(pitr.async_max_backlog {archive.tuning.async_max_backlog}): the uploader is not "
                f"keeping up or S3 is failing (last upload error: {reason or 'none'}); see "
                f"{spool.log_file}"
            )
        if reason is not None:
            raise DisasterRecoveryError(
                f"{file.name}: the WAL uploader could not archive it: {reason}"
            )
        time.sleep(POLL_SECONDS)
    return archive.push(file)  # not confirmed in time: push it here (identical is success)


def _uploader_starting(spool: Spool, started_at: float | None) -> bool:
    if started_at is None:
        return False
    return (
        time.monotonic() - started_at < START_GRACE_SECONDS and not spool.lock_file.stat().st_size
    )


def start_uploader(spool: Spool, env_file: str | None) -> float:
    """Start a detached uploader for ``spool``'s pg_wal (it exits at once if one runs)."""
    spool.prepare()
    with spool.uploader_lock() as free:
        if free:  # none runs: errors of an earlier one are stale
            spool.clear_errors()
            spool.lock_file.write_text("")
    command = [sys.executable, "-m", "disaster_recovery.wal"]
    if env_file:
        command += ["--env-file", str(Path(env_file).absolute())]
    command += ["upload", str(spool.pg_wal)]
    with open(spool.log_file, "ab") as log_out:
        # Not the runner (postgres.runner): a detached process nobody waits for.
        subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_out,
            stderr=log_out,
            cwd="/",  # not pg_wal: `python -m` puts its working folder on sys.path
            start_new_session=True,  # outlives this call; PostgreSQL's shutdown leaves it be
            close_fds=True,
        )
    return time.monotonic()


# -- the uploader ---------------------------------------------------------------------------


def _stamps(paths: list[Path]) -> list[tuple[int, int] | None]:
    stamps: list[tuple[int, int] | None] = []
    for path in paths:
        try:
            stat = path.stat()
            stamps.append((stat.st_mtime_ns, stat.st_size))
        except OSError:
            stamps.append(None)
    return stamps


def run_uploader(archive: WalArchive, pg_wal: Path, watched: list[Path]) -> int:
    """Push every ``.ready`` file of ``pg_wal`` in order, ``async_uploads`` at a time, until the
    server stops, the settings files change (the next archive_command starts an uploader with
    the new ones) or there is nothing to do for :data:`IDLE_EXIT_SECONDS`."""
    spool = Spool(pg_wal)
    with spool.uploader_lock() as free:
        if not free:
            return 0  # another uploader serves this data directory
        spool.lock_file.write_text(f"{os.getpid()}\n")
        if spool.log_file.exists() and spool.log_file.stat().st_size > LOG_LIMIT_BYTES:
            spool.log_file.write_text("")
        log.info("uploader %d started for %s", os.getpid(), pg_wal)
        for region in archive.regions:
            archive.store(region)  # persistent clients, built before threads share them
        try:
            _upload_loop(archive, spool, watched)
        finally:
            spool.clear_errors()  # its verdicts; the next uploader gives its own
        log.info("uploader %d stopped", os.getpid())
    return 0


def _upload_loop(archive: WalArchive, spool: Spool, watched: list[Path]) -> None:
    settings_stamp = _stamps(watched)
    in_flight: dict[str, Future[dict[str, Any]]] = {}
    identities: dict[str, str | None] = {}  # each file's identity before its bytes were read
    retry_at: dict[str, float] = {}
    idle_since = time.monotonic()
    limit = archive.tuning.async_uploads
    with ThreadPoolExecutor(max_workers=limit) as pool:
        while server_running(spool.pg_wal.parent) and _stamps(watched) == settings_stamp:
            now = time.monotonic()
            done = spool.confirmed_names()
            for name in spool.ready():
                if len(in_flight) >= limit:
                    break
                if name in done or name in in_flight or retry_at.get(name, 0) > now:
                    continue
                log.info("pushing %s", name)
                identities[name] = file_identity(spool.pg_wal / name)
                in_flight[name] = pool.submit(archive._push_file, spool.pg_wal / name)
            if in_flight:
                idle_since = now
                wait(in_flight.values(), timeout=0.25, return_when=FIRST_COMPLETED)
            elif now - idle_since > IDLE_EXIT_SECONDS:
                return
            else:
                time.sleep(0.05)
            for name in [n for n, f in in_flight.items() if f.done()]:
                _record(spool, name, in_flight.pop(name), retry_at, identities.pop(name, None))
            spool.forget_archived()
        for name, future in in_flight.items():  # stopping: finish what is under way
            _record(spool, name, future, retry_at, identities.pop(name, None))


def _record(
    spool: Spool,
    name: str,
    future: Future[dict[str, Any]],
    retry_at: dict[str, float],
    identity: str | None,
) -> None:
    try:
        result = future.result()
    except Exception as exc:  # recorded for archive_command, retried after a pause
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        log.warning("%s: %s (retried in %g s)", name, reason, RETRY_SECONDS)
        spool.fail(name, reason)
        retry_at[name] = time.monotonic() + RETRY_SECONDS
        return
    # The identity vouches for the bytes only if the file kept it while they were read.
    unchanged = identity is not None and file_identity(spool.pg_wal / name) == identity
    spool.confirm(name, result["sha256"], identity if unchanged else None)
    retry_at.pop(name, None)
    log.info("%s archived: %s", name, result["regions"])
