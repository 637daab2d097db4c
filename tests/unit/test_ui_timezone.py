"""The UI's default zone (the DR plugin's root middleware): only the UI's own page gets the
script, with a correct Content-Length; every other response passes untouched. The real browser
showing Bogota times is tests/integration/test_demo.py."""

from __future__ import annotations

import json

import pytest
from starlette.applications import Starlette
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from disaster_recovery.airflow_support.ui_timezone import (
    OWN_KEY,
    UI_KEY,
    UiTimezoneDefault,
    default_zone_script,
)

SPA = '<html><head><title>Airflow</title></head><body><div id="root"></div></body></html>'
CONSOLE = "<html><head><title>Litper DR console</title></head><body>page</body></html>"


def client(zone: str | None = "America/Bogota") -> TestClient:
    app = Starlette(
        routes=[
            Route("/dags/x/runs", lambda _: HTMLResponse(SPA)),
            Route("/dr/", lambda _: HTMLResponse(CONSOLE)),
            Route("/api/v2/version", lambda _: JSONResponse({"html": SPA})),
            Route(
                "/gz",
                lambda _: Response(SPA, media_type="text/html", headers={"content-encoding": "x"}),
            ),
        ]
    )
    return TestClient(UiTimezoneDefault(app, zone=lambda: zone))


def test_the_ui_page_gets_the_policy_zone_before_its_own_scripts() -> None:
    response = client().get("/dags/x/runs")
    page = response.text
    assert default_zone_script("America/Bogota") in page
    assert page.index("<script>") < page.index("</head>")
    assert int(response.headers["content-length"]) == len(response.content)
    # The UI reads its choice as JSON text; the script stores exactly that, under both keys.
    assert json.dumps(json.dumps("America/Bogota")) in page
    assert f'"{UI_KEY}"' in page and f'"{OWN_KEY}"' in page


@pytest.mark.parametrize("path", ["/dr/", "/api/v2/version", "/gz"])
def test_other_responses_pass_untouched(path: str) -> None:
    assert "localStorage" not in client().get(path).text


def test_an_unreadable_policy_leaves_the_browser_zone() -> None:
    assert client(zone=None).get("/dags/x/runs").text == SPA
