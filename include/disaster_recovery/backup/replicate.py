"""The copy of a backup in the other region: copied (``copy`` mode) or waited for (``native`` S3
replication), then checked by SHA-256."""

from __future__ import annotations

import time
from typing import Any

from disaster_recovery.backup.stores import Stores
from disaster_recovery.backup.verify import _failures_recorded, load_manifest
from disaster_recovery.catalog.manifests import Manifest
from disaster_recovery.clients.s3 import ObjectStore
from disaster_recovery.config.endpoints import Deployment
from disaster_recovery.errors import (
    VerificationError,
)

# -- replicate ----------------------------------------------------------------------------------


def replicate(
    deployment: Deployment, backup_type: str, file: str, *, check_only: bool = False
) -> dict[str, Any]:
    """The object in the secondary region's bucket with the manifest's SHA-256.

    ``copy`` mode copies it (server-side) unless an identical copy is there; a different object
    there is an error, never overwritten. ``native`` mode waits, at most
    ``storage.replication_wait``, for S3 replication to deliver it. ``check_only`` (re-checking
    an existing backup) neither copies nor waits: a missing replica is a failed check.
    """
    stores = Stores.of(deployment)
    manifest = load_manifest(stores, backup_type, file)
    mode = deployment.settings.storage.replication
    url = stores.secondary.url(manifest.key)
    started = time.monotonic()
    with _failures_recorded(stores, manifest):
        copied = False
        if check_only:
            if stores.secondary.head(manifest.key) is None:
                raise VerificationError(
                    f"replica {url} is missing", check="replica", key=manifest.key
                )
        elif mode == "copy":
            if stores.secondary.head(manifest.key) is None:
                stores.secondary.copy_from(stores.primary, manifest.key)
                copied = True
        else:
            _wait_for_replica(
                stores.secondary,
                manifest,
                deployment.settings.storage.replication_wait.total_seconds(),
            )
        replica = stores.secondary.digest(manifest.key)
        if (replica.size, replica.sha256) != (manifest.size_bytes, manifest.sha256):
            detail = "was just copied" if copied else "was already there: not overwritten"
            raise VerificationError(
                f"replica {url} ({mode} mode) differs from the manifest and {detail}: "
                f"{replica.size} bytes, SHA-256 {replica.sha256}; the manifest says "
                f"{manifest.size_bytes} bytes, {manifest.sha256}",
                check="replica",
                key=manifest.key,
            )
    return {
        "ok": True,
        "mode": mode,
        "region": stores.secondary.endpoint.region,
        "bucket": stores.secondary.bucket,
        "copied": copied,
        "sha256": replica.sha256,
        "seconds": round(time.monotonic() - started, 3),
    }


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
