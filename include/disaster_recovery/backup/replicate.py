"""The copy of a backup in the other region: copied (``copy`` mode) or waited for (``native`` S3
replication), then checked by SHA-256 -- S3's own where it proves the copy, else a download."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from disaster_recovery.backup.stores import Stores
from disaster_recovery.backup.verify import _failures_recorded, load_manifest
from disaster_recovery.catalog.manifests import Manifest
from disaster_recovery.clients.s3 import (
    ObjectStore,
    StoredObject,
    full_object_checksum,
    region_lost,
    same_checksum,
)
from disaster_recovery.config.endpoints import Deployment
from disaster_recovery.config.model import Settings
from disaster_recovery.errors import DisasterRecoveryError, VerificationError

log = logging.getLogger(__name__)


def copy_to_region(
    source: ObjectStore,
    target: ObjectStore,
    manifest: Manifest,
    settings: Settings,
    *,
    companions: Sequence[str] = (),
    check_only: bool = False,
) -> dict[str, Any]:
    """The one replication rule, for every kind of backup: check, copy or wait; never overwrite.

    A copy already in ``target`` is only checked. Otherwise ``copy`` mode copies it server-side
    (with its ``companions``, keys such as PostgreSQL's backup_manifest), and ``native`` mode waits
    at most ``storage.replication_wait`` for S3 replication to deliver it. ``check_only``
    (re-checking an existing backup) neither copies nor waits: a missing replica is a failed
    check. Either way the replica's size and SHA-256 must match the manifest.
    """
    mode = settings.storage.replication
    url = target.url(manifest.key)
    started = time.monotonic()
    if not check_only and (lost := region_lost(target, manifest.key)):
        # The other region is gone: the backup still counts where it is, and its copy is owed
        # (backup.replica_debt fills it when the region answers).
        log.warning("replica of %s owed: %s", manifest.file, lost)
        return {
            "ok": True,
            "owed": True,
            "mode": mode,
            "region": target.endpoint.region,
            "bucket": target.bucket,
            "copied": False,
            "error": lost,
            "seconds": round(time.monotonic() - started, 3),
        }
    present = target.head(manifest.key) is not None
    copied = False
    streamed: StoredObject | None = None
    if not present and check_only:
        raise VerificationError(f"replica {url} is missing", check="replica", key=manifest.key)
    if mode == "copy" and not check_only:
        for key in companions:  # small files that travel with the backup
            if target.head(key) is None:
                target.copy_from(source, key)
        if not present:
            streamed = target.copy_from(source, manifest.key)
            copied = True
    elif not present:
        _wait_for_replica(target, manifest, settings.storage.replication_wait.total_seconds())
    detail = "just copied" if copied else "already there: not overwritten"
    replica, proof = prove_replica(target, manifest, streamed)
    manifest.check_digest(
        replica.size,
        replica.sha256,
        where=f"replica {url} ({mode} mode, {detail})",
        check="replica",
    )
    # A copy is encrypted with the target region's key; native replication must be configured
    # to do the same (the rule's replica KMS key).
    encryption = target.check_encrypted(manifest.key)
    return {
        "ok": True,
        "encryption": encryption,
        "mode": mode,
        "region": target.endpoint.region,
        "bucket": target.bucket,
        "copied": copied,
        "sha256": replica.sha256,
        "proof": proof,
        "seconds": round(time.monotonic() - started, 3),
    }


@contextmanager
def copied_ahead(source: ObjectStore, target: ObjectStore, key: str, mode: str) -> Iterator[None]:
    """Stream ``key`` to ``target`` while the body of the ``with`` runs (the backup's
    verification), so that :func:`copy_to_region` later finds the copy and only proves it. If
    the body fails, the copy is withdrawn: a backup that failed verification leaves nothing in
    the other region (a copy Object Lock keeps is a leftover there, as its original is here).
    ``native`` replication copies by itself: nothing to do."""
    if mode != "copy":
        yield
        return
    # Both clients built here, not in the thread: an assumed role's boto3 session is shared,
    # and building clients from one session is not thread-safe.
    _ = (source.client, target.client)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="copy-ahead") as pool:
        early = pool.submit(_copy_if_absent, source, target, key)
        try:
            yield
        except BaseException:
            if early.result():
                _withdraw(target, key)
            raise
        early.result()


def _copy_if_absent(source: ObjectStore, target: ObjectStore, key: str) -> bool:
    """Copy ``key`` unless ``target`` has it; False (and logged) on any failure, which the
    replication step then meets and reports itself."""
    try:
        if target.head(key) is not None:
            return False
        target.copy_from(source, key)
    except DisasterRecoveryError as exc:
        log.warning("copy of %s ahead of its verification failed: %s", key, exc)
        return False
    return True


def _withdraw(target: ObjectStore, key: str) -> None:
    try:
        target.delete([key])
    except DisasterRecoveryError as exc:
        log.warning("could not withdraw %s from %s: %s", key, target.bucket, exc)


def prove_replica(
    target: ObjectStore, manifest: Manifest, streamed: StoredObject | None = None
) -> tuple[StoredObject, str]:
    """The replica's size and SHA-256, and how they were proven.

    Without a download when S3 keeps a SHA-256 of the replica that is the manifest's (a
    full-object checksum, as CopyObject writes), the original upload's composite (recorded in the
    manifest), or the one of a stream copy whose bytes were hashed on the way. Otherwise (an
    object written without a checksum, a store that keeps none, a tampered replica) the replica
    is streamed back once and hashed.
    """
    stored = target.stored_checksum(manifest.key)
    if stored is None:
        raise VerificationError(
            f"replica {target.url(manifest.key)} is missing", check="replica", key=manifest.key
        )
    size, checksum = stored
    known = [full_object_checksum(manifest.sha256)] if manifest.sha256 else []
    known += [manifest.s3_checksum] if manifest.s3_checksum else []
    if streamed is not None and (streamed.size, streamed.sha256) == (
        manifest.size_bytes,
        manifest.sha256,
    ):
        known += [streamed.s3_checksum] if streamed.s3_checksum else []
    if size == manifest.size_bytes and any(same_checksum(checksum, k) for k in known):
        proof = "s3-checksum" if streamed is None else "hashed-in-stream+s3-checksum"
        return StoredObject(target.bucket, manifest.key, size, manifest.sha256, checksum), proof
    return target.digest(manifest.key), "downloaded"


def replicate(
    deployment: Deployment, backup_type: str, file: str, *, check_only: bool = False
) -> dict[str, Any]:
    """A logical backup's copy in the secondary region (:func:`copy_to_region`); a failure
    marks the manifest failed."""
    stores = Stores.of(deployment)
    manifest = load_manifest(stores, backup_type, file)
    with _failures_recorded(stores, manifest):
        return copy_to_region(
            stores.primary,
            stores.secondary,
            manifest,
            deployment.settings,
            check_only=check_only,
        )


def _wait_for_replica(
    store: ObjectStore, manifest: Manifest, budget: float, poll: float = 2.0
) -> None:
    deadline = time.monotonic() + budget
    while True:
        head = store.head(manifest.key)
        if head is not None and int(head.get("ContentLength", -1)) == manifest.size_bytes:
            return
        if time.monotonic() >= deadline:
            state = "absent" if head is None else f"{head.get('ContentLength')} bytes so far"
            raise VerificationError(
                f"S3 replication did not deliver {store.url(manifest.key)} within {budget:g} s "
                f"({state}); check the bucket's replication rule",
                check="replica",
                key=manifest.key,
            )
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())) or 0.05)
