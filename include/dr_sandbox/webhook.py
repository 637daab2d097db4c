"""A Slack webhook receiver for the sandbox and the tests.

Accepts POSTs on ``/services/...`` as Slack does (answers ``ok``), and ``/api/chat.postMessage``
as Slack's Web API does for a bot token (answers ``{"ok": true}``), and appends each message as
one JSON line to a file: ``{"received_at", "path", "payload"}``. ``GET /health`` answers ``ok``.
A path under ``/fail/`` answers 500, to test what happens when Slack is down.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_LOCK = threading.Lock()
# The Web API route that SlackApiSink and the provider's SlackHook call (base_url + method).
API_POST_MESSAGE = "/api/chat.postMessage"


def make_handler(log_file: Path) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._answer(200, b"ok")
            else:
                self._answer(404, b"not found")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if self.path.startswith("/fail/"):
                self._answer(500, b"internal_error")
                return
            try:
                payload = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                self._answer(400, b"invalid_payload")
                return
            if self.path == API_POST_MESSAGE:
                self._post_message(payload)
                return
            self._record(payload)
            self._answer(200, b"ok")

        def _record(self, payload: object) -> None:
            record = {
                "received_at": datetime.now(UTC).isoformat(),
                "path": self.path,
                "payload": payload,
            }
            with _LOCK, log_file.open("a") as out:
                out.write(json.dumps(record) + "\n")

        def _post_message(self, payload: dict[str, object]) -> None:
            """Slack's ``chat.postMessage`` as far as alerts use it: a bot token and a channel."""
            auth = self.headers.get("Authorization", "")
            if not auth.startswith("Bearer xoxb-"):
                answer = {"ok": False, "error": "not_authed"}
            elif not payload.get("channel"):
                answer = {"ok": False, "error": "channel_not_found"}
            else:
                self._record(payload)
                answer = {"ok": True, "channel": payload["channel"], "ts": f"{time.time():.6f}"}
            body = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


def serve(port: int, log_file: Path, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.touch()
    return ThreadingHTTPServer((host, port), make_handler(log_file))


def read_messages(log_file: Path) -> list[dict[str, object]]:
    """Every message received so far (the payloads)."""
    if not log_file.exists():
        return []
    return [
        json.loads(line)["payload"] for line in log_file.read_text().splitlines() if line.strip()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    serve(args.port, args.log, args.host).serve_forever()


if __name__ == "__main__":
    main()
