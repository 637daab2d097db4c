"""Helpers for the logical backup tests: a private storage prefix per test, alerts,
restores into fresh databases, and a proxy in front of moto that fails uploads mid-way."""

from __future__ import annotations

import http.client
import os
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from helpers import slack_messages

from disaster_recovery.backup.stores import Stores
from disaster_recovery.catalog.listing import Catalog
from disaster_recovery.clients.s3 import ObjectStore
from disaster_recovery.config.endpoints import Deployment
from disaster_recovery.config.model import Settings, load_settings
from disaster_recovery.postgres import db
from dr_sandbox import Sandbox


class BackupEnv:
    """One test's view of the sandbox: its own config file (a unique storage prefix), so tests
    never see each other's backups in the shared moto server."""

    def __init__(self, sandbox: Sandbox, folder: Path, **overrides: Any):
        self.sandbox = sandbox
        self.prefix = f"test-{secrets.token_hex(4)}"
        self.config_file = folder / "dr_config.yaml"
        # DR_CONFIG points at this test's policy until cleanup() puts the previous one back.
        self._previous_config = os.environ.get("DR_CONFIG")
        self.write_config(**overrides)
        self.alerts_seen = len(slack_messages(sandbox))
        self._stores: Stores | None = None

    def write_config(
        self,
        storage: dict[str, Any] | None = None,
        tiers: dict[str, Any] | None = None,
        **backup: Any,
    ) -> None:
        data = yaml.safe_load(self.sandbox.config_file.read_text())
        data["tiers"] = {**data["tiers"], **(tiers or {})}
        data["storage"] = {**data["storage"], **(storage or {}), "prefix": self.prefix}
        data["backup"] = {
            **data.get("backup", {}),
            "task_retries": 0,
            "retry_delay": "1s",
            **backup,
        }
        self.config_file.write_text(yaml.safe_dump(data))
        os.environ["DR_CONFIG"] = str(self.config_file)
        self._stores = None

    @property
    def settings(self) -> Settings:
        return load_settings(self.config_file)

    def deployment(self) -> Deployment:
        return Deployment(self.settings)

    def stores(self) -> Stores:
        if self._stores is None:
            self._stores = Stores.of(self.deployment())
        return self._stores

    def catalog(self) -> Catalog:
        return self.stores().catalog

    def new_alerts(self) -> list[dict[str, Any]]:
        return slack_messages(self.sandbox)[self.alerts_seen :]

    def object_keys(self, secondary: bool = False) -> list[str]:
        stores = self.stores()
        store = stores.secondary if secondary else stores.primary
        return sorted(entry["Key"] for entry in store.list_keys(self.prefix + "/"))

    def open_uploads(self) -> list[str]:
        stores = self.stores()
        return stores.primary.open_multipart_uploads(self.prefix + "/")

    def cleanup(self) -> None:
        if self._previous_config is None:
            os.environ.pop("DR_CONFIG", None)
        else:
            os.environ["DR_CONFIG"] = self._previous_config
        stores = self.stores()
        for store in (stores.primary, stores.secondary):
            keys = [entry["Key"] for entry in store.list_keys(self.prefix + "/")]
            if keys:
                store.delete(keys)
            uploads = store.client.list_multipart_uploads(
                Bucket=store.bucket, Prefix=self.prefix + "/"
            )
            for upload in uploads.get("Uploads", []):
                store.client.abort_multipart_upload(
                    Bucket=store.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )


def unique_time() -> datetime:
    """A run time for a DAG run or a backup (file names are per second)."""
    return datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=secrets.randbelow(10**7))


@contextmanager
def scratch_database(sandbox: Sandbox, name: str | None = None) -> Iterator[str]:
    """A database name on the sandbox primary, dropped afterwards."""
    dbname = name or f"scratch_{secrets.token_hex(4)}"
    try:
        yield dbname
    finally:
        with db.connect(sandbox.postgres("primary", "postgres")) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


# The demo application commits a heartbeat a second: this table's count moves on its own.
LIVE_TABLES = ("dr.heartbeat",)


def settled(counts: dict[str, int]) -> dict[str, int]:
    """Row counts without the tables that grow by themselves while a test runs."""
    return {table: n for table, n in counts.items() if table not in LIVE_TABLES}


def row_counts(sandbox: Sandbox, dbname: str) -> dict[str, int]:
    from disaster_recovery.backup.logical import exact_row_counts

    with db.connect(sandbox.postgres("primary", dbname)) as conn:
        return exact_row_counts(conn)


def restore_plain(sandbox: Sandbox, archive: Path, dbname: str) -> None:
    """Restore a dump file with plain pg_restore (independent of the library's restore)."""
    from disaster_recovery.clients.runner import run
    from disaster_recovery.postgres import pgbin

    primary = sandbox.postgres("primary", "postgres")
    with db.connect(primary) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    run(
        [
            pgbin.program("pg_restore"),
            "--no-password",
            "--exit-on-error",
            f"--dbname={dbname}",
            str(archive),
        ],
        env=primary.libpq_env(dbname),
    )


class PgDumpKiller:
    """Terminates pg_dump's backend once it is copying table data (mid-stream), ``times`` times."""

    def __init__(self, sandbox: Sandbox, dbname: str, times: int = 1):
        self.endpoint = sandbox.postgres("primary", "postgres")
        self.dbname = dbname
        self.times = times
        self.killed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        from disaster_recovery.postgres.pgdump import PG_DUMP_APPLICATION

        with db.connect(self.endpoint) as conn:
            while not self._stop.is_set() and self.killed < self.times:
                row = conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND datname = %s "
                    "AND query LIKE 'COPY %%' AND state = 'active'",
                    (PG_DUMP_APPLICATION, self.dbname),
                ).fetchone()
                if row:
                    conn.execute("SELECT pg_terminate_backend(%s)", (row[0],))
                    self.killed += 1
                time.sleep(0.002)

    def __enter__(self) -> PgDumpKiller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class FailingS3Proxy:
    """An HTTP proxy in front of moto that fails every upload request (PUT) once ``budget``
    bytes of request bodies went through: S3 failing in the middle of a multipart upload.
    Everything else (create/abort multipart upload, GET, LIST, DELETE) passes, so boto3 can
    abort the upload as it should."""

    def __init__(self, upstream_port: int, budget: int):
        self.upstream_port = upstream_port
        self.budget = budget
        self.forwarded = 0
        self.failed_puts = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if self.command == "PUT" and "partNumber=" in self.path:
                    if proxy.forwarded + len(body) > proxy.budget:
                        proxy.failed_puts += 1
                        payload = (
                            b"<?xml version='1.0'?><Error><Code>InternalError</Code>"
                            b"<Message>proxy: upstream failed mid-upload</Message></Error>"
                        )
                        self.send_response(500)
                        self.send_header("Content-Type", "application/xml")
                        self.send_header("Content-Length", str(len(payload)))
                        self.end_headers()
                        self.wfile.write(payload)
                        return
                    proxy.forwarded += len(body)
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = f"127.0.0.1:{proxy.upstream_port}"
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                if self.command == "HEAD":
                    self.send_header("Content-Length", response.getheader("Content-Length") or "0")
                    self.end_headers()
                else:
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FailingS3Proxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def unencrypted_objects(store: ObjectStore, prefix: str = "") -> list[str]:
    """Every object under ``prefix`` without the store's configured encryption, with why."""
    found = []
    for entry in store.list_keys(prefix):
        problem = store.encryption.problem(store.head(entry["Key"]) or {})
        if problem:
            found.append(f"{store.url(entry['Key'])}: {problem}")
    return found
