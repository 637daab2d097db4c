"""One run, one object: conditional S3 writes that make concurrent runs take turns.

- :func:`claimed_name` — while a run writes a backup under a name, it holds
  ``<key>.claim.json``, created with ``If-None-Match: *``. Of two runs that chose the same name
  (two ``dr backup full`` in the same second) exactly one creates it; the other is refused with
  :class:`BusyError` instead of reusing, or overwriting, an object it did not write. A retry of
  the same run (same run id) finds its own claim and carries on. Once written, the manifest
  records the run id, and a later run of another id is refused too
  (:func:`refuse_foreign_backup`).
- :class:`Lease` — one writer at a time for the physical chain: a lock object holding its owner
  and an expiry, renewed in the background while the owner works. A run that crashed stops
  renewing, so its lease expires and the next run takes it over (``If-Match`` on the expired
  version, so of two runs taking over only one wins); nothing holds the chain for ever.

A claim left by a killed run is a leftover like its half-written backup: cleanup removes it
after ``backup.leftover_grace``.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from disaster_recovery.clients.s3 import ObjectStore
from disaster_recovery.errors import BusyError

log = logging.getLogger(__name__)

CLAIM_SUFFIX = ".claim.json"


def default_who() -> str:
    """``user@host``: who holds a claim or a lease, for the message that refuses another run."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


def new_run_id() -> str:
    """A run id for a run that has no natural one (a command typed by a person)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class Claim:
    """Who writes a backup name: a run id, a person or host, and since when."""

    key: str
    run_id: str
    who: str
    claimed_at: str
    etag: str = ""

    def describe(self) -> str:
        return f"run {self.run_id} by {self.who} since {self.claimed_at}"


@contextmanager
def claimed_name(store: ObjectStore, key: str, *, run_id: str, who: str) -> Iterator[Claim]:
    """This run as the only writer of ``key`` for the block; :class:`BusyError` if another run
    is writing it. The claim is removed when the block ends: by then the manifest (which
    records the run id) or nothing at all stands for the name.
    """
    claim = _claim(store, key, run_id=run_id, who=who)
    try:
        yield claim
    finally:
        if claim.etag:
            store.delete_if(key + CLAIM_SUFFIX, claim.etag)


def _claim(store: ObjectStore, key: str, *, run_id: str, who: str) -> Claim:
    claim = Claim(key, run_id, who, datetime.now(UTC).isoformat())
    record = {"run_id": run_id, "who": who, "claimed_at": claim.claimed_at}
    body = json.dumps(record, indent=2, sort_keys=True).encode()
    if etag := store.put_new(key + CLAIM_SUFFIX, body):
        return replace(claim, etag=etag)
    existing = read_claim(store, key)
    if existing is not None and existing.run_id == run_id:
        log.info("%s: this run's own claim from an earlier attempt", store.url(key))
        return existing
    holder = existing.describe() if existing else "run, which finished meanwhile"
    raise BusyError(
        f"{store.url(key)} is being written by another {holder}; this run wrote nothing. Two "
        "runs chose the same name (the same second): run it again."
    )


def read_claim(store: ObjectStore, key: str) -> Claim | None:
    found = store.get_versioned(key + CLAIM_SUFFIX)
    if found is None:
        return None
    data = json.loads(found[0])
    return Claim(key, str(data["run_id"]), str(data["who"]), str(data["claimed_at"]), found[1])


def refuse_foreign_backup(url: str, recorded_run_id: str | None, run_id: str) -> None:
    """An existing backup under this run's name is reused only if this run wrote it (a retry);
    one written by another run is never reported as this run's."""
    if recorded_run_id is not None and recorded_run_id != run_id:
        raise BusyError(
            f"{url} was already written by another run ({recorded_run_id}) at this second; "
            "this run wrote nothing and does not report that backup as its own: run it again."
        )


# -- the physical chain's writer lease ---------------------------------------------------------

# Leases this thread holds, per lock key: nested takes (an incremental that first takes a base,
# a take inside take-and-verify) reuse the lease instead of refusing themselves. Per thread, so
# two threads of one process still take turns like two processes.
_held = threading.local()


def _held_leases() -> dict[str, Lease]:
    if not hasattr(_held, "leases"):
        _held.leases = {}
    return _held.leases


def _expired(record: dict[str, Any]) -> bool:
    return datetime.fromisoformat(record["expires_at"]) <= datetime.now(UTC)


class Lease:
    """An exclusive, expiring, self-renewing lock object in S3.

    ``with Lease(store, key, who=..., duration=...):`` raises :class:`BusyError` naming the
    holder when another live run holds it. While held, a thread renews it every third of its
    duration; a run that crashed stops renewing and its lease lapses after ``duration``.
    """

    def __init__(self, store: ObjectStore, key: str, *, who: str, duration: timedelta):
        self.store = store
        self.key = key
        self.who = who
        self.duration = duration
        self.run_id = new_run_id()
        self._etag = ""
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._nested: Lease | None = None
        self.lost = False

    # -- the record ---------------------------------------------------------------------------

    def _body(self) -> bytes:
        now = datetime.now(UTC)
        record = {
            "run_id": self.run_id,
            "who": self.who,
            "renewed_at": now.isoformat(),
            "expires_at": (now + self.duration).isoformat(),
        }
        return json.dumps(record, indent=2, sort_keys=True).encode()

    def _current(self) -> tuple[dict[str, Any], str] | None:
        found = self.store.get_versioned(self.key)
        return None if found is None else (json.loads(found[0]), found[1])

    # -- acquire, renew, release ----------------------------------------------------------------

    def acquire(self) -> None:
        etag = self.store.put_new(self.key, self._body())
        current = None if etag else self._current()
        if not etag and current is None:  # released between our two requests: once more
            etag = self.store.put_new(self.key, self._body())
            current = None if etag else self._current()
        if current is not None and _expired(current[0]):
            etag = self.store.replace_if(self.key, self._body(), current[1])
            if etag:
                log.warning(
                    "%s: took over the lease of run %s by %s, which expired at %s (that run "
                    "stopped renewing it: it crashed or was killed)",
                    self.store.url(self.key),
                    current[0].get("run_id"),
                    current[0].get("who"),
                    current[0].get("expires_at"),
                )
            else:
                current = self._current()
        if etag:
            self._etag = etag
            return
        holder = (
            f"run {current[0].get('run_id')} by {current[0].get('who')} (lease renewed "
            f"{current[0].get('renewed_at')}, expires {current[0].get('expires_at')} unless "
            "renewed)"
            if current
            else "another run"
        )
        raise BusyError(
            f"{self.store.url(self.key)} is held by {holder}; one writer at a time, so this "
            "run wrote nothing. Run it again when that run has finished."
        )

    def _renew_until_stopped(self) -> None:
        interval = max(self.duration.total_seconds() / 3, 0.05)
        while not self._stop.wait(interval):
            try:
                etag = self.store.replace_if(self.key, self._body(), self._etag)
            except Exception as exc:  # a blip: the next renewal retries, well before expiry
                log.warning("renewing %s failed: %s", self.store.url(self.key), exc)
                continue
            if etag is None:
                self.lost = True
                log.error("%s: the lease was taken over by another run", self.store.url(self.key))
                return
            self._etag = etag

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        if not self.lost and self._etag and not self.store.delete_if(self.key, self._etag):
            log.warning("%s: the lease had changed hands before release", self.store.url(self.key))

    def __enter__(self) -> Lease:
        held = _held_leases().get(self.key)
        if held is not None:
            self._nested = held
            return held
        self.acquire()
        _held_leases()[self.key] = self
        self._renewer = threading.Thread(target=self._renew_until_stopped, daemon=True)
        self._renewer.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._nested is not None:
            return
        _held_leases().pop(self.key, None)
        self.release()
