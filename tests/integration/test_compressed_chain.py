"""The physical chain compressed (``pitr.compression``) against the sandbox's PostgreSQL and moto
servers: for each codec a base backup and an incremental are stored in it, pass
``pg_verifybackup``, record the codec, reach the other region with their checksum proven, and
round-trip through a point-in-time restore to exactly the rows committed before the target; a
damaged compressed object is refused."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pitr_support import (
    Ticker,
    deployment_for,
    rows_in,
    stop_restored,
    switch_and_wait_archived,
    with_codec,
)

from disaster_recovery.backup import physical
from disaster_recovery.catalog.manifests import ChainManifest
from disaster_recovery.errors import VerificationError
from disaster_recovery.restore.pitr import restore_to_point_in_time
from dr_sandbox import Sandbox

# What the first bytes of a stored object are in each codec (tar: a file name, no magic).
MAGIC = {"gzip:1": b"\x1f\x8b", "zstd:3": b"\x28\xb5\x2f\xfd"}


@pytest.fixture(scope="module", params=["none", "gzip:1", "zstd:3"])
def chain(request: pytest.FixtureRequest, sandbox: Sandbox) -> Iterator[dict[str, Any]]:
    """A base backup and an incremental in one codec, with the ticker writing throughout."""
    deployment = with_codec(deployment_for(sandbox), request.param)
    primary = sandbox.postgres("primary")
    Ticker.prepare(primary)
    ticker = Ticker(primary).start()
    facts: dict[str, Any] = {"codec": request.param, "deployment": deployment, "ticker": ticker}
    try:
        time.sleep(0.3)
        facts["base"] = physical.backup_and_verify(deployment, "base")
        time.sleep(0.3)
        facts["inc"] = physical.backup_and_verify(deployment, "incremental")
        time.sleep(0.4)
    finally:
        ticker.stop()
    time.sleep(1.2)  # S3 LastModified has whole seconds: the last segment must postdate every tick
    switch_and_wait_archived(primary)
    facts["primary"] = primary
    yield facts


def _manifest(chain: dict[str, Any], name: str, region: str = "us-east-1") -> ChainManifest:
    return physical.Chain(chain["deployment"], region).catalog.load_chain(
        chain[name]["backup_file"]
    )


def test_the_chain_is_stored_verified_and_replicated_in_its_codec(chain: dict[str, Any]) -> None:
    codec = chain["codec"]
    for name in ("base", "inc"):
        manifest = _manifest(chain, name)
        store = physical.Chain(chain["deployment"], "us-east-1").store
        assert manifest.compression == codec
        assert manifest.verification is not None
        checks = manifest.verification.checks
        assert checks["pg_verifybackup"] == "backup successfully verified"
        assert checks["compression"] == codec
        first = next(store.iter_bytes(manifest.key, chunk=8))[:4]
        assert manifest.uncompressed_bytes is not None
        if codec == "none":
            assert manifest.uncompressed_bytes == manifest.size_bytes
        else:
            assert first.startswith(MAGIC[codec])
            assert manifest.size_bytes < manifest.uncompressed_bytes
        # us-west-2 is another moto server: the tar streamed there once while it was verified
        # here (copied ahead), then proven by S3's checksum of what it stored (no download).
        assert manifest.replicas["us-west-2"]["proof"] == "s3-checksum"
        west = _manifest(chain, name, "us-west-2")
        assert (west.compression, west.sha256) == (codec, manifest.sha256)


def test_point_in_time_restore_from_the_compressed_chain_is_exact(chain: dict[str, Any]) -> None:
    ticker = chain["ticker"]
    inc_done = datetime.fromisoformat(chain["inc"]["finished_at"])
    index = next(i for i, t in enumerate(ticker.ticks[:-1]) if t.before > inc_done)
    folder = Path(tempfile.mkdtemp(prefix="dr-pitr-codec-", dir="/tmp")) / "data"
    result = restore_to_point_in_time(
        chain["deployment"], target_dir=folder, target_time=ticker.pause_between(index)
    )
    try:
        assert rows_in(result["port"], chain["primary"]) == (index + 1, index + 1), result
    finally:
        stop_restored(result)
    assert result["plan"]["base"] == chain["base"]["backup_file"]
    assert result["plan"]["incrementals"] == [chain["inc"]["backup_file"]]


def test_a_damaged_compressed_object_is_refused(chain: dict[str, Any], tmp_path: Path) -> None:
    """One byte flipped in the middle of the stored (compressed) object: verification and
    extraction refuse it; us-west-2's copy is put back and the manifest restored afterwards."""
    deployment = chain["deployment"]
    east, west = physical.Chain(deployment, "us-east-1"), physical.Chain(deployment, "us-west-2")
    manifest = _manifest(chain, "inc")
    original = east.store.get_bytes(manifest.key)
    middle = len(original) // 2
    east.store.put_bytes(
        manifest.key, original[:middle] + bytes([original[middle] ^ 0xFF]) + original[middle + 1 :]
    )
    try:
        with pytest.raises(VerificationError, match=manifest.key):
            physical.download_and_extract(east.store, manifest, tmp_path / "extract")
        with pytest.raises(VerificationError):
            physical.verify_backup(deployment, manifest.file)
        assert east.catalog.load_chain(manifest.file).status == "failed"
    finally:
        east.store.copy_from(west.store, manifest.key)
        east.catalog.save(manifest)
    # The copy put back is whole again.
    physical.download_and_extract(east.store, manifest, tmp_path / "again")
    assert (tmp_path / "again" / "backup_manifest").exists()
