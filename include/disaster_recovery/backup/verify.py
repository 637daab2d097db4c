"""Verification of a logical backup against its manifest: size and SHA-256 streamed back from S3,
``pg_restore -l`` listing every table recorded at dump time, and a full read of the data."""

from __future__ import annotations

import hashlib
import logging
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import IO, Any

from disaster_recovery.backup.stores import Stores
from disaster_recovery.catalog.manifests import Manifest
from disaster_recovery.catalog.names import check_backup_type
from disaster_recovery.clients.runner import streaming
from disaster_recovery.clients.s3 import ObjectStore
from disaster_recovery.config.endpoints import Deployment
from disaster_recovery.errors import (
    CommandFailed,
    ConfigError,
    VerificationError,
)
from disaster_recovery.postgres import pgdump

log = logging.getLogger(__name__)

# The checks a published manifest records, in the order they run.
CHECKS = ("checksum", "pg_restore_list", "full_read", "replica")


# -- checks -------------------------------------------------------------------------------------


def load_manifest(stores: Stores, backup_type: str, file: str) -> Manifest:
    """The manifest of ``file``; a missing one is a verification failure, not a lookup miss."""
    check_backup_type(backup_type)
    if not file.startswith(backup_type + "_"):
        raise ConfigError(f"{file!r} is not a {backup_type} backup file")
    key = stores.catalog.key_for(file)
    manifest = stores.catalog.find(file)
    if manifest is None and (other := stores.secondary_catalog.find(file)) is not None:
        if not other.verified:
            # Dumped while the other region was primary: that node was deposed since.
            raise VerificationError(
                f"{file} was written to {stores.secondary.url(key)} while "
                f"{stores.secondary.endpoint.region} was primary; the primary is now "
                f"{stores.primary.endpoint.region}, so it is not checked nor published. Take a "
                "new backup",
                check="topology",
                key=key,
            )
        manifest = other
    if manifest is None:
        raise VerificationError(
            f"no manifest for {file} ({stores.primary.url(key)}.manifest.json): the backup cannot "
            "be checked and is not a restore candidate",
            check="manifest",
            key=key,
        )
    return manifest


def _record_failure(stores: Stores, manifest: Manifest, error: VerificationError) -> None:
    """Mark the manifest failed so the backup never counts; the original error still raises."""
    failed = manifest.model_copy(
        update={
            "status": "failed",
            "verification": None,
            "error": f"{error.check}: {error}",
            "failed_check": error.check,
        }
    )
    try:
        stores.catalog.save(failed)
    except Exception:
        log.exception("could not record the failed check in %s", manifest.manifest_key)


@contextmanager
def _failures_recorded(stores: Stores, manifest: Manifest) -> Iterator[None]:
    try:
        yield
    except VerificationError as exc:
        _record_failure(stores, manifest, exc)
        raise


def check_checksum(deployment: Deployment, backup_type: str, file: str) -> dict[str, Any]:
    """The object exists, and its size and SHA-256 (streamed back) match the manifest."""
    stores = Stores.of(deployment)
    manifest = load_manifest(stores, backup_type, file)
    started = time.monotonic()
    with _failures_recorded(stores, manifest):
        # Exists, and encrypted as configured (an object written around us fails here).
        encryption = stores.primary.check_encrypted(manifest.key)
        stored = stores.primary.digest(manifest.key)
        manifest.check_digest(
            stored.size, stored.sha256, where=stores.primary.url(manifest.key), check="checksum"
        )
    return {
        "ok": True,
        "size_bytes": stored.size,
        "sha256": stored.sha256,
        "encryption": encryption,
        "seconds": round(time.monotonic() - started, 3),
    }


@dataclass
class FedResult:
    stdout: str
    size: int
    sha256: str
    complete: bool  # the whole object went through (the program did not stop reading early)


def feed_object(
    store: ObjectStore,
    key: str,
    args: list[str],
    *,
    env: dict[str, str] | None = None,
    target: str = "",
    timeout: float | None = None,
    capture_stdout: bool = False,
) -> FedResult:
    """Stream an object into a program's stdin (hashing it on the way) and wait for the program.

    A program that stops reading early (``pg_restore -l`` after the table of contents) is not an
    error; a program that exits non-zero raises :class:`CommandFailed`.
    """
    hasher = hashlib.sha256()
    size = 0
    complete = True
    chunks: list[bytes] = []
    with streaming(
        args,
        target=target,
        env=env,
        timeout=timeout,
        stdin=True,
        stdout=subprocess.PIPE if capture_stdout else subprocess.DEVNULL,
    ) as proc:
        reader = None
        if capture_stdout:
            reader = threading.Thread(target=_drain_into, args=(proc.stdout, chunks), daemon=True)
            reader.start()
        try:
            for data in store.iter_bytes(key):
                try:
                    proc.stdin.write(data)
                except BrokenPipeError:
                    complete = False
                    break
                hasher.update(data)
                size += len(data)
        finally:
            with suppress(BrokenPipeError):
                proc.stdin.close()
        proc.finish()
        if reader is not None:
            reader.join(timeout=30)
    return FedResult(b"".join(chunks).decode(errors="replace"), size, hasher.hexdigest(), complete)


def _drain_into(pipe: IO[bytes], chunks: list[bytes]) -> None:
    for data in iter(lambda: pipe.read(65536), b""):
        chunks.append(data)


def check_readable(deployment: Deployment, backup_type: str, file: str) -> dict[str, Any]:
    """``pg_restore -l`` lists every table of the manifest, then a full read of the archive
    (``pg_restore -f /dev/null``) succeeds, with the bytes read matching the manifest's SHA-256."""
    stores = Stores.of(deployment)
    manifest = load_manifest(stores, backup_type, file)
    url = stores.primary.url(manifest.key)
    timeout = deployment.settings.backup.command_timeout.total_seconds()
    expected = sorted((manifest.model_extra or {}).get("table_counts", {}))
    with _failures_recorded(stores, manifest):
        started = time.monotonic()
        try:
            listing = feed_object(
                stores.primary,
                manifest.key,
                pgdump.list_args(),
                target=url,
                timeout=timeout,
                capture_stdout=True,
            )
        except CommandFailed as exc:
            raise VerificationError(
                f"pg_restore -l cannot read {url}: {exc}", check="pg_restore_list", key=manifest.key
            ) from None
        missing = pgdump.missing_tables(listing.stdout, expected)
        if missing:
            raise VerificationError(
                f"pg_restore -l of {url} does not list {len(missing)} table(s) of the manifest: "
                f"{', '.join(missing)} (the object is not this database's dump)",
                check="pg_restore_list",
                key=manifest.key,
            )
        listed = time.monotonic()
        try:
            read = feed_object(
                stores.primary, manifest.key, pgdump.full_read_args(), target=url, timeout=timeout
            )
        except CommandFailed as exc:
            raise VerificationError(
                f"full read of {url} failed: {exc}", check="full_read", key=manifest.key
            ) from None
        if not read.complete:
            raise VerificationError(
                f"full read of {url}: pg_restore stopped before the end of the object",
                check="full_read",
                key=manifest.key,
            )
        # The bytes pg_restore read are the bytes the checksum covered (no swap in between).
        manifest.check_digest(read.size, read.sha256, where=url, check="full_read")
    return {
        "pg_restore_list": {
            "ok": True,
            "tables": len(expected),
            "seconds": round(listed - started, 3),
        },
        "full_read": {
            "ok": True,
            "bytes": read.size,
            "seconds": round(time.monotonic() - listed, 3),
        },
    }
