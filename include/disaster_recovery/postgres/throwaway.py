"""A throwaway PostgreSQL instance: created, used for one check, stopped and removed.

Drills restore production backups into one of these, never into a database on a live server:
the restore reads the backups (read-only) and loads only a machine-local instance that nothing
else uses, and it leaves no database, folder or process behind.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

from disaster_recovery.config.endpoints import PostgresEndpoint
from disaster_recovery.postgres.instance import LocalInstance

log = logging.getLogger(__name__)

THROWAWAY_CONNECTION = "throwaway"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def throwaway_instance(
    folder: Path, *, os_user: str | None, superuser: str = "postgres", dbname: str = "postgres"
) -> Iterator[PostgresEndpoint]:
    """A new, empty cluster in ``folder`` on a free loopback port, as ``superuser`` with a random
    password; stopped (immediately: nothing in it is kept) and deleted on exit, whatever happened.
    ``folder`` must not exist yet: it is the instance's alone."""
    folder.mkdir(parents=True)
    folder.chmod(0o755)  # the server's OS user must reach its data directory inside
    instance = LocalInstance(
        data_dir=folder / "data",
        port=free_port(),
        cluster_name="dr_throwaway",
        socket_dir=folder / "run",
        log_file=folder / "postgres.log",
        os_user=os_user,
    )
    password = secrets.token_urlsafe(18)
    try:
        instance.initdb(superuser, password)
        # A scratch copy: no WAL archive, nothing to wait for, no durability needed.
        instance.append_config(
            {
                "fsync": "off",
                "archive_mode": "off",
                "wal_level": "minimal",
                "max_wal_senders": "0",
                "synchronous_commit": "off",
            }
        )
        instance.start()
        yield PostgresEndpoint(
            THROWAWAY_CONNECTION, instance.host, instance.port, superuser, dbname, password
        )
    finally:
        try:
            instance.stop(mode="immediate")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            log.info("throwaway instance %s removed", instance.describe())
