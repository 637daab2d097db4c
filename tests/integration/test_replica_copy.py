"""Replication at the store's speed, against the sandbox's moto servers (one per region): one
CopyObject on one endpoint, UploadPartCopy above the copy limit, a stream copy across endpoints
hashed once on the way; the replica's SHA-256 proven from S3's own checksum without a download,
and a tampered replica detected."""

from __future__ import annotations

import hashlib
import io
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pitr_support import deployment_for

from disaster_recovery.backup.replicate import copied_ahead, copy_to_region
from disaster_recovery.backup.stores import Stores
from disaster_recovery.catalog.manifests import Manifest
from disaster_recovery.clients.compression import compressing, decompressing
from disaster_recovery.clients.s3 import MIB, ObjectStore, full_object_checksum, same_checksum
from disaster_recovery.config.compression import Codec
from disaster_recovery.errors import VerificationError
from dr_sandbox import Sandbox

SIZE = 40 * MIB + 123  # three 16 MiB parts, the last one short


@pytest.fixture(scope="module")
def stores(sandbox: Sandbox) -> Stores:
    return Stores.of(deployment_for(sandbox))


@pytest.fixture(scope="module")
def same_endpoint(stores: Stores) -> ObjectStore:
    """A second bucket behind us-east-1's endpoint: server-side copies are possible."""
    store = ObjectStore(
        stores.primary.endpoint,
        f"dr-replica-{uuid.uuid4().hex[:8]}",
        encryption=stores.primary.encryption,
    )
    store.ensure_bucket()
    return store


@pytest.fixture(scope="module")
def original(stores: Stores) -> Manifest:
    """A 40 MiB object streamed into us-east-1 the way backups are, and its manifest."""
    data = os.urandom(SIZE)
    key = f"test-replica/{uuid.uuid4().hex}.bin"
    stored = stores.primary.upload_stream(key, io.BytesIO(data))
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    return Manifest.model_validate(
        {
            "backup_type": "replica_test",
            "file": key.rsplit("/", 1)[1],
            "bucket": stores.primary.bucket,
            "key": key,
            "size_bytes": stored.size,
            "sha256": stored.sha256,
            "s3_checksum": stored.s3_checksum,
            "started_at": datetime.now(UTC),
        }
    )


@pytest.fixture
def calls(stores: Stores, same_endpoint: ObjectStore) -> Iterator[dict[str, list[str]]]:
    """The S3 operations each client sends (region or bucket -> names), during one test."""
    seen: dict[str, list[str]] = {}
    hooks = []
    for name, store in (
        ("source", stores.primary),
        ("same_endpoint", same_endpoint),
        ("other_region", stores.secondary),
    ):
        seen[name] = []

        def record(model: Any, _name: str = name, **_: Any) -> None:
            seen[_name].append(model.name)

        store.client.meta.events.register("before-call.s3", record)
        hooks.append((store, record))
    yield seen
    for store, record in hooks:
        store.client.meta.events.unregister("before-call.s3", record)


def test_the_upload_records_s3s_composite_checksum(stores: Stores, original: Manifest) -> None:
    """What the manifest records is what S3 says it holds (three parts)."""
    stored = stores.primary.stored_checksum(original.key)
    assert stored is not None and original.s3_checksum is not None
    assert original.s3_checksum.endswith("-3")
    assert stored == (SIZE, original.s3_checksum.split("-")[0])


def test_one_copy_object_on_one_endpoint_proven_without_a_download(
    stores: Stores, same_endpoint: ObjectStore, original: Manifest, calls: dict[str, list[str]]
) -> None:
    result = copy_to_region(stores.primary, same_endpoint, original, stores.settings)
    assert (result["copied"], result["proof"]) == (True, "s3-checksum")
    assert calls["same_endpoint"].count("CopyObject") == 1
    assert "UploadPartCopy" not in calls["same_endpoint"]
    assert "GetObject" not in calls["same_endpoint"] + calls["source"]
    # CopyObject asked for a SHA-256 of the whole copy: it is the manifest's.
    assert same_endpoint.stored_checksum(original.key) == (
        SIZE,
        full_object_checksum(original.sha256),
    )


def test_above_the_copy_limit_parts_are_copied_in_parallel(
    stores: Stores, original: Manifest, calls: dict[str, list[str]]
) -> None:
    target = ObjectStore(
        stores.primary.endpoint,
        f"dr-replica-parts-{uuid.uuid4().hex[:8]}",
        encryption=stores.primary.encryption,
    )
    target.ensure_bucket()
    target.copy_object_limit = 20 * MIB  # 5 GB in S3; the same path at a testable size
    ops: list[str] = []
    target.client.meta.events.register("before-call.s3", lambda model, **_: ops.append(model.name))
    result = copy_to_region(stores.primary, target, original, stores.settings)
    assert (result["copied"], result["proof"]) == (True, "s3-checksum")
    assert ops.count("UploadPartCopy") == 3 and "CompleteMultipartUpload" in ops
    assert "CopyObject" not in ops and "GetObject" not in ops + calls["source"]
    assert target.open_multipart_uploads() == []


def test_across_endpoints_the_bytes_stream_once_and_s3s_checksum_proves_them(
    stores: Stores, original: Manifest, calls: dict[str, list[str]]
) -> None:
    result = copy_to_region(stores.primary, stores.secondary, original, stores.settings)
    assert (result["copied"], result["proof"]) == (True, "hashed-in-stream+s3-checksum")
    assert calls["source"].count("GetObject") == 1  # the one stream
    assert "GetObject" not in calls["other_region"]  # never read back
    assert stores.secondary.stored_checksum(original.key) is not None


@pytest.mark.parametrize("with_checksum", [False, True])
def test_a_tampered_replica_is_detected(
    stores: Stores, same_endpoint: ObjectStore, original: Manifest, with_checksum: bool
) -> None:
    """The replica replaced by other bytes of the same size, written without a checksum (S3
    can prove nothing: it is downloaded) or with one of its own (it is not the manifest's)."""
    key = original.key
    copy_to_region(stores.primary, same_endpoint, original, stores.settings)
    assert copy_to_region(
        stores.primary, same_endpoint, original, stores.settings, check_only=True
    )["proof"] == ("s3-checksum")
    forged = os.urandom(SIZE)
    extra = {"ChecksumAlgorithm": "SHA256"} if with_checksum else {}
    same_endpoint.client.put_object(
        Bucket=same_endpoint.bucket,
        Key=key,
        Body=forged,
        **same_endpoint.encryption.write_args(),
        **extra,
    )
    try:
        with pytest.raises(VerificationError, match="does not match the manifest") as raised:
            copy_to_region(
                stores.primary, same_endpoint, original, stores.settings, check_only=True
            )
        assert raised.value.check == "replica"
    finally:
        same_endpoint.delete([key])


@pytest.mark.parametrize("size", [3 * MIB, SIZE])
def test_a_short_reading_stream_is_stored_whole(stores: Stores, size: int) -> None:
    """A compressor hands out what it has, often less than asked: one PUT below a part and a
    multipart upload above both store every byte, and the checksum S3 keeps is the one computed
    on the way."""
    data = os.urandom(size)
    source = compressing(io.BytesIO(data), Codec.parse("zstd:1"))
    key = f"test-replica/short-{uuid.uuid4().hex}.zst"
    stored = stores.primary.upload_stream(key, source)
    try:
        back = decompressing(io.BytesIO(stores.primary.get_bytes(key)), Codec("zstd", 1), key)
        restored = b"".join(iter(lambda: back.read(MIB), b""))
        assert restored == data
        assert stores.primary.digest(key).sha256 == stored.sha256
        kept = stores.primary.stored_checksum(key)
        assert kept is not None and same_checksum(kept[1], stored.s3_checksum)
    finally:
        stores.primary.delete([key])


def _until_copied(store: ObjectStore, key: str) -> None:
    """The body of a ``copied_ahead`` block that lasts until the copy has landed (a
    verification slower than the copy)."""
    deadline = time.monotonic() + 60
    while store.head(key) is None:
        assert time.monotonic() < deadline, f"{key} never reached {store.bucket}"
        time.sleep(0.05)


def test_a_copy_made_during_verification_is_only_proven_afterwards(
    stores: Stores, original: Manifest, calls: dict[str, list[str]]
) -> None:
    stores.secondary.delete([original.key])
    with copied_ahead(stores.primary, stores.secondary, original.key, "copy"):
        _until_copied(stores.secondary, original.key)
    result = copy_to_region(stores.primary, stores.secondary, original, stores.settings)
    assert (result["copied"], result["proof"]) == (False, "s3-checksum")
    assert calls["source"].count("GetObject") == 1  # the one stream, during the verification
    assert "GetObject" not in calls["other_region"]  # never read back


def test_a_backup_that_fails_verification_leaves_no_copy_behind(
    stores: Stores, original: Manifest
) -> None:
    stores.secondary.delete([original.key])
    with (
        pytest.raises(VerificationError, match="pg_verifybackup"),
        copied_ahead(stores.primary, stores.secondary, original.key, "copy"),
    ):
        _until_copied(stores.secondary, original.key)
        raise VerificationError("pg_verifybackup rejected it", check="pg_verifybackup")
    assert stores.secondary.head(original.key) is None
    # Native replication copies by itself: nothing is copied ahead.
    with copied_ahead(stores.primary, stores.secondary, original.key, "native"):
        pass
    assert stores.secondary.head(original.key) is None
