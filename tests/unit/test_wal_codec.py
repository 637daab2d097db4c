"""WAL compression (``pitr.wal_compression``) without servers: the codecs round trip, damage and
oversized bodies are refused, and the setting reaches the database host's policy file (the
archiver reads only that file)."""

from __future__ import annotations

import os

import pytest

from disaster_recovery.clients.compression import compress_bytes, decompress_bytes
from disaster_recovery.config.compression import Codec
from disaster_recovery.config.model import settings_from_dict
from disaster_recovery.errors import ConfigError, VerificationError
from disaster_recovery.wal.archive import ArchiverTuning
from disaster_recovery.wal.host import archiver_config

SEGMENT = (os.urandom(256) + bytes(768)) * (16 * 1024)  # 16 MB, compressible like real WAL


@pytest.mark.parametrize("spec", ["zstd:1", "zstd:9", "gzip:1", "none"])
def test_each_codec_round_trips_a_segment(spec: str) -> None:
    codec = Codec.parse(spec)
    stored = compress_bytes(SEGMENT, codec)
    assert (len(stored) < len(SEGMENT) / 2) is (codec.name != "none")
    assert decompress_bytes(stored, codec.name, "s3://b/k", 1 << 30) == SEGMENT


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_damaged_truncated_or_oversized_bodies_are_refused(codec: str) -> None:
    stored = bytearray(compress_bytes(SEGMENT, Codec.parse(codec)))
    truncated = bytes(stored[: len(stored) // 2])
    stored[len(stored) // 2] ^= 0xFF
    for body in (bytes(stored), truncated):
        with pytest.raises(VerificationError, match=r"s3://b/k: cannot decompress"):
            decompress_bytes(body, codec, "s3://b/k", 1 << 30)
    with pytest.raises(VerificationError, match="cannot decompress"):
        decompress_bytes(compress_bytes(SEGMENT, Codec.parse(codec)), codec, "s3://b/k", 1 << 20)


def test_an_unknown_codec_in_metadata_is_refused() -> None:
    with pytest.raises(VerificationError, match="unknown codec 'lz5'"):
        decompress_bytes(b"x", "lz5", "s3://b/k", 1 << 20)


def test_the_setting_reaches_the_archivers_policy_file() -> None:
    settings = settings_from_dict({"pitr": {"wal_compression": "gzip:3", "prefetch": 2}})
    pitr = archiver_config(settings)["pitr"]
    assert set(pitr) == set(ArchiverTuning.__dataclass_fields__)
    tuning = ArchiverTuning.from_policy(pitr, "wal_config.yaml")
    assert (tuning.wal_compression, tuning.prefetch) == ("gzip:3", 2)
    assert ArchiverTuning().wal_compression == "zstd:1"  # the default, as the settings model's
    assert settings_from_dict({}).pitr.wal_compression == "zstd:1"


def test_a_wrong_codec_is_a_clear_error_in_both_readers() -> None:
    with pytest.raises(
        ConfigError, match=r"wal_config.yaml: pitr.wal_compression: zstd level 42 is outside 1-19"
    ):
        ArchiverTuning.from_policy({"wal_compression": "zstd:42"}, "wal_config.yaml")
    with pytest.raises(ConfigError, match=r"pitr.wal_compression"):
        settings_from_dict({"pitr": {"wal_compression": "brotli"}})
