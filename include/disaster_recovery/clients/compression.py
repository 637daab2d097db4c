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


class _Buffered:
    """Hands out what a codec produced in the sizes asked for, copying each byte once (a
    decompressed chunk can be 20x its input, and tarfile reads 10 KiB at a time)."""

    def __init__(self) -> None:
        self._chunk = b""
        self._offset = 0

    def _fill(self) -> bytes:
        """The next output of the codec, b"" at its end."""
        raise NotImplementedError

    def read(self, size: int = -1) -> bytes:
        size = size if size and size > 0 else CHUNK
        while self._offset >= len(self._chunk):
            self._chunk, self._offset = self._fill(), 0
            if not self._chunk:
                return b""
        out = self._chunk[self._offset : self._offset + size]
        self._offset += len(out)
        return out


class _GzipCompressor(_Buffered):
    def __init__(self, source: Any, level: int):
        super().__init__()
        self._source = source
        self._zlib = zlib.compressobj(level, zlib.DEFLATED, _GZIP_WBITS)
        self._done = False

    def _fill(self) -> bytes:
        while not self._done:
            data = self._source.read(CHUNK)
            out = self._zlib.compress(data) if data else self._zlib.flush()
            self._done = not data
            if out:
                return out
        return b""


class _Decompressor(_Buffered):
    """Reads ``source`` through a decompression object (``decompress``, ``eof``); the stream
    must end exactly where the compressed one does: a missing end is truncation."""

    def __init__(self, source: Any, codec: Codec, where: str):
        super().__init__()
        self._source = source
        self._codec = codec
        self._where = where
        self._obj: Any = (
            zlib.decompressobj(_GZIP_WBITS)
            if codec.name == "gzip"
            else zstandard.ZstdDecompressor().decompressobj()
        )

    def _fill(self) -> bytes:
        while not self._obj.eof:
            data = self._source.read(CHUNK)
            if not data:
                raise _damaged(self._where, f"{self._codec.name} stream ends early (truncated)")
            try:
                out = self._obj.decompress(data)
            except (zlib.error, zstandard.ZstdError) as exc:
                raise _damaged(self._where, f"{self._codec.name}: {exc}") from None
            if out:
                return bytes(out)
        return b""


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


# -- whole objects (WAL segments: 16 MB, held in memory anyway) ----------------------------------


def compress_bytes(data: bytes, codec: Codec) -> bytes:
    """``data`` compressed with ``codec`` in one call (``data`` itself for ``none``)."""
    if codec.name == "gzip":
        compressor = zlib.compressobj(codec.level, zlib.DEFLATED, _GZIP_WBITS)
        return compressor.compress(data) + compressor.flush()
    if codec.name == "zstd":
        # One thread: the WAL uploader already runs several segments at once.
        return zstandard.ZstdCompressor(level=codec.level, write_checksum=True).compress(data)
    return data


def decompress_bytes(data: bytes, codec_name: str, where: str, limit: int) -> bytes:
    """The bytes ``data`` was compressed from; a damaged, truncated or over-``limit`` body raises
    :class:`VerificationError` naming ``where``."""
    if codec_name == "none":
        return data
    try:
        if codec_name == "gzip":
            inflater = zlib.decompressobj(_GZIP_WBITS)
            out = inflater.decompress(data, limit)
            if not inflater.eof or inflater.unconsumed_tail:
                raise _damaged(where, "gzip stream truncated or longer than a WAL file")
            return out
        if codec_name == "zstd":
            # max_output_size only bounds frames that do not declare their size; ours do.
            declared = zstandard.frame_content_size(data)
            if declared > limit:
                raise _damaged(where, f"zstd frame declares {declared} bytes, over {limit}")
            return zstandard.ZstdDecompressor().decompress(data, max_output_size=limit)
    except (zlib.error, zstandard.ZstdError) as exc:
        raise _damaged(where, f"{codec_name}: {exc}") from None
    raise _damaged(where, f"unknown codec {codec_name!r}")
