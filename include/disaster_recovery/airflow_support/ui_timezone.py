"""Airflow's UI shows times in the policy's time zone unless its user picked another.

Airflow 3's UI has no server-side default zone: ``[webserver] default_ui_timezone`` was removed
(apache/airflow#49176), and the React UI starts from the browser's zone, keeping a person's
choice (user menu → Timezone) in the browser's local storage under ``timezone``. The schedules
are in the policy's ``timezone`` (America/Bogota by default), so a person whose browser is
elsewhere would read every run at a time that matches no schedule.

:class:`UiTimezoneDefault`, a root middleware of the DR plugin, adds one small script to the UI's
page (the single-page app's ``index.html``, nothing else) that stores the policy's zone as that
choice when the browser holds none, or holds the zone this script stored before (so a changed
policy reaches every browser). A zone a person picked in the UI is theirs and stays.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# The UI's own key (airflow/ui/src/constants/localStorage.ts: TIMEZONE_KEY), and ours: the zone
# this script last stored, so it can tell its own default from a person's choice.
UI_KEY = "timezone"
OWN_KEY = "litper_dr.timezone"
# Only the single-page app's page carries this element.
SPA_MARKER = b'<div id="root"'


def default_zone_script(zone: str) -> str:
    """The inline script: runs before the UI's module script (module scripts are deferred)."""
    value = json.dumps(json.dumps(zone))  # the UI stores JSON text
    return (
        "<script>(function(){try{var s=window.localStorage,v="
        f"{value},c=s.getItem({json.dumps(UI_KEY)});"
        f"if(c===null||c===s.getItem({json.dumps(OWN_KEY)}))"
        f"{{s.setItem({json.dumps(UI_KEY)},v);s.setItem({json.dumps(OWN_KEY)},v);}}"
        "}catch(e){}})();</script>"
    )


def with_default_zone(page: bytes, zone: str) -> bytes:
    """``page`` with the script before ``</head>``; any other page unchanged."""
    if SPA_MARKER not in page or b"</head>" not in page:
        return page
    return page.replace(b"</head>", default_zone_script(zone).encode() + b"</head>", 1)


def policy_zone() -> str | None:
    """The policy's zone, read at each page load (a changed policy needs no restart); None when
    the policy cannot be read: the UI must still load, in the browser's zone."""
    from disaster_recovery.config.model import load_settings
    from disaster_recovery.errors import DisasterRecoveryError

    try:
        return load_settings().timezone
    except DisasterRecoveryError as exc:
        log.warning("the UI keeps the browser's time zone: %s", exc)
        return None


class UiTimezoneDefault:
    """ASGI middleware: the UI page gets the policy's zone as its default (see the module)."""

    def __init__(self, app: AsgiApp, zone: Callable[[], str | None] = policy_zone):
        self.app = app
        self.zone = zone

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "GET":
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        body = bytearray()

        async def buffer_html(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and _plain_html(message):
                start = message
                return
            if start is None:
                await send(message)
                return
            body.extend(message.get("body", b""))
            if message.get("more_body"):
                return
            page = bytes(body)
            zone = self.zone() if SPA_MARKER in page else None
            if zone:
                page = with_default_zone(page, zone)
            headers = [(k, v) for k, v in start.get("headers", []) if k != b"content-length"]
            headers.append((b"content-length", str(len(page)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": page})

        await self.app(scope, receive, buffer_html)


def _plain_html(start: Message) -> bool:
    """An uncompressed HTML response (the UI page is small; anything else passes untouched)."""
    headers = {k.lower(): v for k, v in start.get("headers", [])}
    return headers.get(b"content-type", b"").startswith(b"text/html") and (
        b"content-encoding" not in headers
    )
