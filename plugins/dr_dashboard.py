"""Airflow plugin: the DR dashboard, a page in the Airflow UI (Browse → DR dashboard).

A FastAPI app mounted at ``/dr`` by the API server: ``/dr/`` is the page, ``/dr/api/status``
the same data as JSON. It reads the S3 catalog with the Connections Airflow has; it shows no
secrets. The data comes from :mod:`disaster_recovery.console.sections` (plus the failover running now
from Airflow's database, :mod:`disaster_recovery.airflow_support.console_runs`, merged with the
progress in S3 and replaced by it when the database does not answer), the page from
:mod:`disaster_recovery.console.page`.

Only people logged in to Airflow see it. Airflow authenticates its own API with a router-level
dependency that a mounted plugin app does not inherit, so this app declares the same one: the
caller's JWT (``Authorization: Bearer`` header, or the UI's ``_token`` cookie, which the page's
frame and its ``fetch`` send) is checked by the configured auth manager, and the user must be
allowed to see the website. No token: 401; an invalid one: 403.

The plugin also makes the policy's time zone the UI's default (a root middleware,
:mod:`disaster_recovery.airflow_support.ui_timezone`): Airflow 3 has no setting for it.
"""

from __future__ import annotations

from typing import Any

from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
from airflow.api_fastapi.core_api.security import requires_access_view
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI
from fastapi.responses import HTMLResponse

from disaster_recovery.airflow_support.ui_timezone import UiTimezoneDefault

app = FastAPI(
    title="Litper DR console",
    dependencies=[Depends(requires_access_view(AccessView.WEBSITE))],
)


def _status(only: list[str] | None = None) -> dict[str, Any]:
    from disaster_recovery.airflow_support.connections import server_deployment
    from disaster_recovery.airflow_support.console_runs import failover_in_progress
    from disaster_recovery.airflow_support.failover_dags import plan_run_id
    from disaster_recovery.console import sections as console

    deployment = server_deployment()
    base_url = deployment.settings.alerts.airflow_base_url

    def in_progress(ctx: console.Context) -> dict[str, Any]:
        # Airflow's database knows the DAG runs' task states; S3 also holds runs started
        # outside Airflow (dr failover), and is all there is when the database does not answer.
        from_s3 = console.failover_in_progress(ctx)
        try:
            found = failover_in_progress(base_url)
        except Exception as exc:
            return {**from_s3, "airflow_error": console.first_line(exc)}
        known = {plan_run_id(run["run_id"]) for run in found["runs"]}
        found["runs"] += [r for r in from_s3["runs"] if r["run_id"] not in known]
        return found

    sections = {**console.SECTIONS, "failover_in_progress": in_progress}
    return console.collect(deployment, sections=sections, only=only)


def _zone() -> Any:
    from disaster_recovery.config.model import load_settings

    return load_settings().tz


@app.get("/api/status")
def status() -> dict[str, Any]:
    return _status()


@app.get("/api/view")
def view(only: str | None = None) -> dict[str, Any]:
    """The sections rendered again (all, or ``only`` those named, comma-separated), for the
    page's own refresh without a reload."""
    from disaster_recovery.console import page as console_page

    names = [name for name in only.split(",") if name] if only else None
    return console_page.view(_status(names), _zone())


@app.get("/", response_class=HTMLResponse)
def page() -> str:
    from disaster_recovery.console import page as console_page

    return console_page.render_page(_status(), _zone())


class DisasterRecoveryPlugin(AirflowPlugin):
    name = "litper_disaster_recovery"
    fastapi_apps = [{"app": app, "url_prefix": "/dr", "name": "DR dashboard"}]
    fastapi_root_middlewares = [
        {"middleware": UiTimezoneDefault, "name": "The policy's time zone as the UI's default"}
    ]
    external_views = [
        {
            "name": "DR console",
            "href": "/dr/",
            "destination": "nav",
            "category": "browse",
            "url_route": "dr-dashboard",
        }
    ]
