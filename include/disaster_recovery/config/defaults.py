"""Defaults every layer may need, with no imports (the WAL archiver reads them without loading the settings model)."""

from __future__ import annotations

from typing import Final

WAL_TYPE = "postgresql_wal"
DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024
# Finished files pushed along with the one archive_command is called for (Pitr.push_ahead).
DEFAULT_PUSH_AHEAD = 4
# Asynchronous archiving (Pitr.archive_mode): "async" runs a long-lived uploader per data
# directory; "sync" uploads inside each archive_command call.
DEFAULT_ARCHIVE_MODE: Final = "async"
# .ready files waiting beyond which archive_command refuses (Pitr.async_max_backlog).
DEFAULT_ASYNC_MAX_BACKLOG = 256
# Uploads the async uploader keeps in flight (Pitr.async_uploads).
DEFAULT_ASYNC_UPLOADS = 4
# WAL segments are compressed on the way to S3 with this codec:level (Pitr.wal_compression).
DEFAULT_WAL_COMPRESSION: Final = "zstd:1"
# Segments restore_command fetches ahead in parallel (Pitr.prefetch; 0: none).
DEFAULT_PREFETCH = 4
# What a lost region still lacks of the WAL archive, beside the archive itself (the archiver
# may write only there): <prefix>/postgresql_wal/_debt/<region>/<file>. Never a WAL file name,
# so listings, the continuity check and retention pass it by.
WAL_DEBT_FOLDER = "postgresql_wal/_debt"


def wal_prefix(storage_prefix: str) -> str:
    """Where the WAL archive lives in each bucket: ``<prefix>/postgresql_wal/``."""
    return f"{storage_prefix}/{WAL_TYPE}/".lstrip("/")
