"""The physical chain's codecs (pitr.compression) and the S3 checksum computed while streaming."""

from __future__ import annotations

import base64
import hashlib
import io
import os
from datetime import UTC, datetime

import pytest

from disaster_recovery.catalog.manifests import parse_manifest
from disaster_recovery.clients.compression import compressing, decompressing
from disaster_recovery.clients.s3 import HashingReader, full_object_checksum, same_checksum
from disaster_recovery.config.compression import Codec
from disaster_recovery.config.model import settings_from_dict
from disaster_recovery.errors import ConfigError, VerificationError

DATA = os.urandom(3 << 20) + b"compressible " * 400_000


def _read_all(reader: object, size: int = 300_000) -> bytes:
    out = b""
    while data := reader.read(size):  # type: ignore[attr-defined]
        out += data
    return out


@pytest.mark.parametrize(
    ("spec", "codec"),
    [
        ("none", Codec()),
        ("gzip", Codec("gzip", 1)),
        ("GZIP:6", Codec("gzip", 6)),
        ("zstd:3", Codec("zstd", 3)),
    ],
)
def test_specs_parse_to_a_codec_and_level(spec: str, codec: Codec) -> None:
    assert Codec.parse(spec) == codec
    assert settings_from_dict({"pitr": {"compression": spec}}).pitr.compression == str(codec)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("brotli:3", "not a compression spec"),
        ("gzip:0", "outside 1-9"),
        ("zstd:30", "outside 1-19"),
    ],
)
def test_a_wrong_spec_is_a_config_error_naming_the_setting(spec: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        settings_from_dict({"pitr": {"compression": spec}}, "dr_config.yaml")
    assert "pitr.compression" in str(raised.value) and message in str(raised.value)


@pytest.mark.parametrize("spec", ["none", "gzip:1", "zstd:1", "zstd:3"])
def test_each_codec_round_trips_in_any_read_size(spec: str) -> None:
    codec = Codec.parse(spec)
    stored = _read_all(compressing(io.BytesIO(DATA), codec), 700_001)
    if codec.name != "none":
        assert len(stored) < len(DATA)
    assert _read_all(decompressing(io.BytesIO(stored), codec, "s3://b/k"), 65_537) == DATA


@pytest.mark.parametrize("spec", ["gzip:1", "zstd:1"])
@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_a_damaged_stream_is_refused_by_the_codec_itself(spec: str, damage: str) -> None:
    codec = Codec.parse(spec)
    stored = _read_all(compressing(io.BytesIO(DATA), codec))
    middle = len(stored) // 2
    if damage == "truncated":
        bad = stored[:middle]
    else:
        bad = stored[:middle] + bytes([stored[middle] ^ 0x01]) + stored[middle + 1 :]
    with pytest.raises(VerificationError, match=r"s3://b/k: cannot decompress") as raised:
        _read_all(decompressing(io.BytesIO(bad), codec, "s3://b/k"))
    assert raised.value.check == "decompress"


def test_an_old_chain_manifest_without_a_codec_means_none() -> None:
    document = {
        "backup_type": "postgresql_base",
        "file": "f",
        "bucket": "b",
        "key": "k",
        "started_at": datetime.now(UTC).isoformat(),
        "start_lsn": "0/2000028",
        "end_lsn": "0/2000100",
        "timeline": 1,
        "start_segment": "000000010000000000000002",
        "wal_segment_size": 16 << 20,
        "system_identifier": "1",
        "server_major": 18,
        "parent": None,
        "chain_base": "f",
    }
    manifest = parse_manifest(document, "s3://b/k.manifest.json")
    assert manifest.compression == "none"  # type: ignore[attr-defined]


@pytest.mark.parametrize("size", [0, 1000, 5 << 20, (5 << 20) + 1, (12 << 20) + 7])
def test_the_streamed_s3_checksum_is_s3s_rule(size: int) -> None:
    """Below one part: the object's SHA-256 (a single PUT); from one part on: the SHA-256 of the
    parts' SHA-256s, with the part count (what S3 reports of a multipart upload)."""
    part = 5 << 20
    data = os.urandom(size)
    reader = HashingReader(io.BytesIO(data), part_size=part)
    _read_all(reader, 333_333)
    assert reader.sha256 == hashlib.sha256(data).hexdigest()
    if size < part:
        assert reader.s3_checksum == full_object_checksum(reader.sha256)
    else:
        digests = [hashlib.sha256(data[i : i + part]).digest() for i in range(0, size, part)]
        combined = base64.b64encode(hashlib.sha256(b"".join(digests)).digest()).decode()
        assert reader.s3_checksum == f"{combined}-{len(digests)}"
        assert same_checksum(reader.s3_checksum, combined)
    assert not same_checksum(reader.s3_checksum, None)


class _Trickle:
    """A source that never returns more than 1000 bytes a read (as codecs and pipes may)."""

    def __init__(self, data: bytes):
        self._data = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._data.read(min(size, 1000) if size >= 0 else 1000)


def test_the_hashing_reader_gives_full_reads_and_all_that_is_left() -> None:
    """boto3 takes a short read for the end of the stream: a short-reading source must not
    end an upload early (a truncated object, the producer's exit never checked)."""
    ended: list[bool] = []
    reader = HashingReader(_Trickle(DATA), lambda: ended.append(True))
    assert len(reader.read(50_000)) == 50_000
    assert len(reader.read()) == len(DATA) - 50_000
    assert (reader.read(10), ended) == (b"", [True])
    assert reader.sha256 == hashlib.sha256(DATA).hexdigest()
