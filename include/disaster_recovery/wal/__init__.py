"""The WAL archive: push and fetch (PostgreSQL's archive_command and restore_command), the database host's files, and the continuity check.

``python -m disaster_recovery.wal`` is the lean entry point archive_command runs."""
