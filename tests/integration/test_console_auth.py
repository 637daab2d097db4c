"""Only people logged in to Airflow see the DR console: the plugin app inside Airflow's API server,
with the simple auth manager, a real login and the metadata DB (revoked tokens live there)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

# The console's own data is tested elsewhere; these tests only need an answer to come back, so
# the S3 endpoint may be unreachable (the page then shows each section's error).
ROUTES = ("/dr/", "/dr/api/status")


@pytest.fixture(scope="module")
def api_client(airflow_db: None) -> Iterator[TestClient]:
    """Airflow's core API app (with the plugins folder of this checkout), logins required: a
    user ``operator`` with the viewer role; the all-admins shortcut other tests use is off."""
    from airflow.api_fastapi.app import create_app, purge_cached_app
    from airflow.configuration import conf

    saved = {
        key: conf.get("core", key, fallback=None)
        for key in ("simple_auth_manager_all_admins", "simple_auth_manager_users")
    }
    conf.set("core", "simple_auth_manager_all_admins", "False")
    conf.set("core", "simple_auth_manager_users", "operator:viewer")
    purge_cached_app()
    try:
        yield TestClient(create_app(apps="core"))
    finally:
        for key, value in saved.items():
            if value is None:
                conf.remove_option("core", key)
            else:
                conf.set("core", key, value)
        purge_cached_app()


def login(client: TestClient, username: str) -> str:
    """A JWT from Airflow's own login route, with the generated password."""
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

    passwords: dict[str, Any] = json.loads(
        Path(SimpleAuthManager.get_generated_password_file()).read_text()
    )
    response = client.post(
        "/auth/token", json={"username": username, "password": passwords[username]}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["access_token"])


@pytest.mark.parametrize("route", ROUTES)
def test_a_request_without_a_token_is_refused(api_client: TestClient, route: str) -> None:
    response = api_client.get(route)
    assert response.status_code == 401
    assert "Litper" not in response.text


@pytest.mark.parametrize("route", ROUTES)
def test_a_forged_token_is_refused(api_client: TestClient, route: str) -> None:
    response = api_client.get(route, headers={"Authorization": "Bearer not.a.jwt"})
    assert response.status_code == 403


def test_a_logged_in_user_sees_the_page_and_the_json(
    api_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No Connections in this process (a session sandbox's may be exported by earlier tests).
    for name in [n for n in os.environ if n.startswith("AIRFLOW_CONN_")]:
        monkeypatch.delenv(name)
    token = login(api_client, "operator")
    page = api_client.get("/dr/", headers={"Authorization": f"Bearer {token}"})
    assert page.status_code == 200, page.text
    assert "Litper disaster recovery" in page.text
    status = api_client.get("/dr/api/status", headers={"Authorization": f"Bearer {token}"})
    assert status.status_code == 200, status.text
    # No Connections in this process: the console says what it cannot read, and still answers.
    assert "dr_aws_primary" in status.json()["source"]["error"]


def test_the_ui_session_cookie_is_enough(api_client: TestClient) -> None:
    """The page opens in a frame of the Airflow UI, and its fetch() sends the UI's cookie."""
    token = login(api_client, "operator")
    cookie_client = TestClient(api_client.app, cookies={"_token": token})
    assert cookie_client.get("/dr/api/status").status_code == 200
    assert TestClient(api_client.app, cookies={"_token": "stale"}).get("/dr/").status_code == 403
