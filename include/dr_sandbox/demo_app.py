"""The sandbox's demo application, one per region: an HTTP service that writes through DNS.

It stands in for Litper's application so failover can be tested end to end. It finds the
primary database the way the real application does, through the ``db`` record, read from the
Route 53 API (moto has no DNS server), and maps the answer to a DSN from its config file.

- ``GET /health``: 200 when it can reach the database the record points at, else 503.
- ``POST /read-only`` ``{"read_only": true}``: stop writing (STOP WRITES); false resumes.
- ``POST /writer`` ``{"enabled": true}``: a background writer commits a row every
  ``write_interval`` seconds and remembers every id PostgreSQL acknowledged.
- ``POST /write``: one write now; ``GET /stats``: acknowledged ids, errors, targets used.

Self-contained (psycopg, boto3, stdlib) so it runs as a plain script:
``python demo_app.py start|stop|serve --config apps/us-east-1.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

TABLE = "demo_writes"


class App:
    def __init__(self, config: dict[str, Any]):
        self.config = config
        self.region = str(config["region"])
        self.read_only = False
        self.writer_enabled = bool(config.get("writer", False))
        self.lock = threading.Lock()
        self.acknowledged: list[int] = []
        self.errors = 0
        self.last_error = ""
        self.targets_used: dict[str, int] = {}
        self.seq = 0
        self._resolved: tuple[float, str | None] = (0.0, None)
        self._conn: Any = None
        self._conn_target: str | None = None
        self._route53: Any = None
        self._zone_id: str | None = None

    # -- DNS through the Route 53 API -----------------------------------------------------

    def resolve(self) -> str | None:
        """The ``db`` record's CNAME target, cached for a fraction of its TTL."""
        at, target = self._resolved
        if time.monotonic() - at < float(self.config.get("resolve_every", 0.2)) and target:
            return target
        import boto3

        if self._route53 is None:
            aws = self.config["aws"]
            self._route53 = boto3.client(
                "route53",
                endpoint_url=aws["endpoint_url"],
                region_name="us-east-1",
                aws_access_key_id=aws["key"],
                aws_secret_access_key=aws["secret"],
            )
            zones = self._route53.list_hosted_zones_by_name(DNSName=self.config["zone"])[
                "HostedZones"
            ]
            self._zone_id = next(z["Id"] for z in zones if z["Name"] == self.config["zone"])
        name = f"{self.config.get('record', 'db')}.{self.config['zone']}"
        records = self._route53.list_resource_record_sets(
            HostedZoneId=self._zone_id, StartRecordName=name, StartRecordType="CNAME", MaxItems="1"
        )
        match = [
            r for r in records["ResourceRecordSets"] if r["Name"] == name and r["Type"] == "CNAME"
        ]
        target = match[0]["ResourceRecords"][0]["Value"] if match else None
        self._resolved = (time.monotonic(), target)
        return target

    def connection(self) -> tuple[Any, str]:
        import psycopg

        target = self.resolve()
        if target is None or target not in self.config["targets"]:
            raise RuntimeError(f"db record answers {target!r}, which is no known database")
        if self._conn is not None and (self._conn_target != target or self._conn.closed):
            self._close()
        if self._conn is None:
            self._conn = psycopg.connect(
                self.config["targets"][target], autocommit=True, connect_timeout=3
            )
            self._conn_target = target
        return self._conn, target

    def _close(self) -> None:
        # Closing a broken connection may fail; it is being dropped anyway.
        with contextlib.suppress(Exception):
            self._conn.close()
        self._conn, self._conn_target = None, None

    # -- writing --------------------------------------------------------------------------

    def write_once(self) -> dict[str, Any]:
        with self.lock:
            if self.read_only:
                raise PermissionError("read-only")
            self.seq += 1
            try:
                conn, target = self.connection()
                conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigserial PRIMARY KEY, "
                    "region text, seq bigint, written_at timestamptz DEFAULT now())"
                )
                row = conn.execute(
                    f"INSERT INTO {TABLE} (region, seq) VALUES (%s, %s) RETURNING id",
                    (self.region, self.seq),
                ).fetchone()
            except Exception as exc:
                self.errors += 1
                self.last_error = (
                    str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                )
                self._close()
                raise
            # The commit returned: PostgreSQL acknowledged this row.
            self.acknowledged.append(int(row[0]))
            self.targets_used[target] = self.targets_used.get(target, 0) + 1
            return {"id": int(row[0]), "target": target}

    def writer_loop(self) -> None:
        interval = float(self.config.get("write_interval", 0.05))
        while True:
            if self.writer_enabled and not self.read_only:
                try:
                    self.write_once()
                except Exception:
                    time.sleep(0.1)
            time.sleep(interval)

    def heartbeat_loop(self) -> None:
        """Commit a row in dr.heartbeat every ``heartbeat_interval`` seconds through the primary
        the DNS names, so restores and failovers can measure the data they lost."""
        interval = float(self.config.get("heartbeat_interval", 0) or 0)
        while interval > 0:
            with self.lock:
                if not self.read_only:
                    try:
                        conn, _ = self.connection()
                        # Not waiting for the synchronous standby: a stopped standby must not
                        # freeze the application (its health answers share this lock).
                        with conn.transaction():
                            conn.execute("SET LOCAL synchronous_commit TO local")
                            conn.execute(
                                "INSERT INTO dr.heartbeat (source) VALUES (%s)",
                                (f"demo-app:{self.region}",),
                            )
                    except Exception:
                        self._close()
            time.sleep(interval)

    def healthy(self) -> tuple[bool, str]:
        try:
            with self.lock:
                conn, target = self.connection()
                conn.execute("SELECT 1")
            return True, target
        except Exception as exc:
            with self.lock:
                self._close()
            return False, str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "region": self.region,
                "read_only": self.read_only,
                "writer": self.writer_enabled,
                "acknowledged": len(self.acknowledged),
                "ids": list(self.acknowledged),
                "errors": self.errors,
                "last_error": self.last_error,
                "targets_used": dict(self.targets_used),
            }


def make_handler(app: App) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length) or b"{}") if length else {}

        def do_GET(self) -> None:
            if self.path == "/health":
                ok, detail = app.healthy()
                self._send(
                    200 if ok else 503,
                    {
                        "status": "ok" if ok else "degraded",
                        "region": app.region,
                        "read_only": app.read_only,
                        "database": detail,
                    },
                )
            elif self.path == "/stats":
                self._send(200, app.stats())
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self) -> None:
            body = self._body()
            if self.path == "/read-only":
                app.read_only = bool(body.get("read_only", True))
                self._send(200, {"read_only": app.read_only})
            elif self.path == "/writer":
                app.writer_enabled = bool(body.get("enabled", True))
                self._send(200, {"writer": app.writer_enabled})
            elif self.path == "/write":
                try:
                    self._send(200, app.write_once())
                except PermissionError:
                    self._send(409, {"error": "read-only"})
                except Exception as exc:
                    self._send(503, {"error": str(exc).strip()})
            else:
                self._send(404, {"error": "not found"})

    return Handler


def serve(config: dict[str, Any]) -> None:
    app = App(config)
    threading.Thread(target=app.writer_loop, daemon=True).start()
    threading.Thread(target=app.heartbeat_loop, daemon=True).start()
    server = ThreadingHTTPServer(("127.0.0.1", int(config["port"])), make_handler(app))
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(SystemExit(0)))
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()


def _alive(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        status = Path(f"/proc/{pid}/status").read_text()
    except (OSError, ValueError):
        return None
    return pid if b"demo_app" in cmdline and "State:\tZ" not in status else None


def start(config_path: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Idempotent: start the app detached unless it already runs; wait until it listens."""
    pidfile = Path(config["pidfile"])
    if pid := _alive(pidfile):
        return {"region": config["region"], "started": False, "pid": pid}
    log = Path(config["log"])
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "serve", "--config", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pidfile.write_text(str(proc.pid))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", int(config["port"])), timeout=0.5):
                return {"region": config["region"], "started": True, "pid": proc.pid}
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    raise SystemExit(f"demo app {config['region']} did not start; see {log}")


def stop(config: dict[str, Any]) -> dict[str, Any]:
    pidfile = Path(config["pidfile"])
    pid = _alive(pidfile)
    if pid:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _alive(pidfile) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pidfile):
            os.kill(pid, signal.SIGKILL)
    pidfile.unlink(missing_ok=True)
    return {"region": config["region"], "stopped": bool(pid)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the sandbox's demo application")
    parser.add_argument("action", choices=["serve", "start", "stop"])
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args(argv)
    config = json.loads(args.config.read_text())
    if args.action == "serve":
        serve(config)
        return 0
    print(json.dumps(start(args.config, config) if args.action == "start" else stop(config)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
