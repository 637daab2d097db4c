"""The application in each region: is it healthy, make it read-only, start or stop it.

Activation is pluggable (``services.<region>.activate.kind``): ``command`` (an argument list,
e.g. a deploy script; it must be idempotent), ``http`` (a call to an orchestrator), ``ecs``
(desired count of an ECS service through boto3), ``none``. The read-only flag is an HTTP call
the application obeys (``read_only_url``): the application side of STOP WRITES.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from disaster_recovery.clients.runner import run
from disaster_recovery.config.endpoints import Deployment
from disaster_recovery.config.model import RegionServices, Settings
from disaster_recovery.errors import ConfigError, UnavailableError


def http_json(
    url: str, body: dict[str, Any] | None = None, method: str | None = None, timeout: float = 5
) -> tuple[int, Any]:
    """(status, decoded JSON or text); connection errors raise :class:`UnavailableError`."""
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"not an http(s) URL: {url!r}")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url,
        data=data,
        method=method or ("POST" if data else "GET"),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        raise UnavailableError(f"{url}: {getattr(exc, 'reason', exc)}") from None
    try:
        return status, json.loads(raw) if raw else None
    except json.JSONDecodeError:
        return status, raw.decode(errors="replace")


class Services:
    def __init__(self, deployment: Deployment):
        self.deployment = deployment
        self.settings: Settings = deployment.settings

    def config(self, region: str) -> RegionServices:
        return self.settings.services.get(region, RegionServices())

    def health(self, region: str) -> dict[str, Any]:
        """``status``: healthy (every URL answered 2xx), unhealthy (some answered otherwise),
        down (some did not answer), none (nothing configured); and each URL's answer."""
        urls = self.config(region).health_urls
        if not urls:
            return {"status": "none", "urls": {}}
        answers: dict[str, Any] = {}
        for url in urls:
            try:
                status, _ = http_json(url, timeout=3)
                answers[url] = status
            except UnavailableError as exc:
                answers[url] = str(exc)
        if all(isinstance(a, int) and 200 <= a < 300 for a in answers.values()):
            overall = "healthy"
        elif any(not isinstance(a, int) for a in answers.values()):
            overall = "down"
        else:
            overall = "unhealthy"
        return {"status": overall, "urls": answers}

    def set_read_only(self, region: str, read_only: bool) -> dict[str, Any]:
        """Tell the region's application to stop (or resume) writing; unreachable is reported."""
        url = self.config(region).read_only_url
        if not url:
            return {"read_only": "not configured"}
        try:
            status, body = http_json(url, {"read_only": read_only})
        except UnavailableError as exc:
            return {"read_only": "unreachable", "error": str(exc)}
        if not 200 <= status < 300:
            raise UnavailableError(f"{url} answered {status}: {body}")
        return {"read_only": read_only, "answer": body}

    def activate(self, region: str) -> dict[str, Any]:
        """Start (or scale up) the region's application; wait until every health URL answers."""
        config = self.config(region)
        done = self._perform(region, config.activate, up=True)
        self.wait_live(region)
        return done

    def deactivate(self, region: str) -> dict[str, Any]:
        return self._perform(region, self.config(region).deactivate, up=False)

    def wait_live(self, region: str) -> None:
        """Wait until every health URL answers at all (the process is up; health comes later)."""
        config = self.config(region)
        deadline = time.monotonic() + config.timeout.total_seconds()
        pending = list(config.health_urls)
        while pending:
            try:
                http_json(pending[0], timeout=2)
                pending.pop(0)
                continue
            except UnavailableError as exc:
                if time.monotonic() >= deadline:
                    raise UnavailableError(
                        f"{region} application not answering after "
                        f"{config.timeout.total_seconds():g} s: {exc}"
                    ) from None
            time.sleep(0.1)

    def _perform(self, region: str, action: dict[str, Any], up: bool) -> dict[str, Any]:
        kind = action.get("kind", "none") if action else "none"
        if kind == "none":
            return {"kind": "none"}
        if kind == "command":
            result = run(
                [str(part) for part in action["command"]],
                target=f"{region} services",
                timeout=float(action.get("timeout", 120)),
            )
            return {"kind": "command", "output": result.stdout.strip()[-500:]}
        if kind == "http":
            status, body = http_json(
                str(action["url"]), action.get("body") or {}, method=action.get("method", "POST")
            )
            if not 200 <= status < 300:
                raise UnavailableError(f"{action['url']} answered {status}: {body}")
            return {"kind": "http", "status": status}
        if kind == "ecs":
            return self._scale_ecs(region, action, up)
        raise ConfigError(f"services.{region}: unknown kind {kind!r}")

    def _scale_ecs(self, region: str, action: dict[str, Any], up: bool) -> dict[str, Any]:
        from disaster_recovery.clients.aws_sessions import aws_client

        count = int(action.get("desired_count", 2)) if up else 0
        client = aws_client(self.deployment.aws(region), "ecs")
        answer = client.update_service(
            cluster=action["cluster"], service=action["service"], desiredCount=count
        )
        return {
            "kind": "ecs",
            "service": action["service"],
            "desired_count": answer["service"]["desiredCount"],
        }
