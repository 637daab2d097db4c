"""Streams that compress and decompress on the way to and from S3 (``pitr.compression``).

Both sides are readers over readers, so nothing is staged on disk: ``pg_basebackup``'s pipe
goes through :func:`compressing` into the upload, and the download goes through
:func:`decompressing` into ``tarfile``. zstd runs on worker threads of its own (the
``zstandard`` library releases the GIL), gzip is zlib's, in this thread.
"""

from __future__ import annotations

import os
import zlib
from typing import IO, Any

import zstandard

from disaster_recovery.config.compression import Codec
from disaster_recovery.errors import VerificationError

CHUNK = 1024 * 1024
_GZIP_WBITS = 31  # zlib with a gzip header and trailer (what pg_verifybackup reads as .tar.gz)


class CountingReader:
    """Counts the bytes read through it (the uncompressed size of a backup)."""

    def __init__(self, source: IO[bytes]):
        self._source = source
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        self.size += len(data)
        return data


class _GzipCompressor:
    def __init__(self, source: Any, level: int):
        self._source = source
        self._zlib = zlib.compressobj(level, zlib.DEFLATED, _GZIP_WBITS)
        self._pending = b""
        self._done = False

    def read(self, size: int = -1) -> bytes:
        size = size if size and size > 0 else CHUNK
        while len(self._pending) < size and not self._done:
            data = self._source.read(CHUNK)
            if data:
                self._pending += self._zlib.compress(data)
            else:
                self._pending += self._zlib.flush()
                self._done = True
        out, self._pending = self._pending[:size], self._pending[size:]
        return out


class _Decompressor:
    """Reads ``source`` through a decompression object (``decompress``, ``eof``); the stream
    must end exactly where the compressed one does: a missing end is truncation."""

    def __init__(self, source: Any, codec: Codec, where: str):
        self._source = source
        self._codec = codec
        self._where = where
        self._obj: Any = (
            zlib.decompressobj(_GZIP_WBITS)
            if codec.name == "gzip"
            else zstandard.ZstdDecompressor().decompressobj()
        )
        self._pending = b""

    def read(self, size: int = -1) -> bytes:
        size = size if size and size > 0 else CHUNK
        while len(self._pending) < size and not self._obj.eof:
            data = self._source.read(CHUNK)
            if not data:
                raise _damaged(self._where, f"{self._codec.name} stream ends early (truncated)")
            try:
                self._pending += self._obj.decompress(data)
            except (zlib.error, zstandard.ZstdError) as exc:
                raise _damaged(self._where, f"{self._codec.name}: {exc}") from None
        out, self._pending = self._pending[:size], self._pending[size:]
        return out


def _damaged(where: str, problem: str) -> VerificationError:
    return VerificationError(f"{where}: cannot decompress ({problem})", check="decompress")


def compressing(source: Any, codec: Codec) -> Any:
    """A reader of ``source`` compressed with ``codec`` (``source`` itself for ``none``)."""
    if codec.name == "gzip":
        return _GzipCompressor(source, codec.level)
    if codec.name == "zstd":
        threads = max(1, (os.cpu_count() or 1) - 1)
        compressor = zstandard.ZstdCompressor(
            level=codec.level, threads=threads, write_checksum=True
        )
        return compressor.stream_reader(source, read_size=CHUNK)
    return source


def decompressing(source: Any, codec: Codec, where: str) -> Any:
    """A reader of ``source`` decompressed; a damaged or truncated stream raises
    :class:`VerificationError` naming ``where``."""
    return source if codec.name == "none" else _Decompressor(source, codec, where)
