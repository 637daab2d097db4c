"""The DR console in a real browser: headless Chromium (Debian's, driven by chromium-driver)
opens ``/dr/`` served by Airflow's own API app (plugins loaded, logins required) against the
session sandbox, and the test asserts on the rendered page:

- before a failover: the topology, the overdue quarterly drill, the late tier;
- while a (dry-run) ``dr_failover`` runs under ``dag.test()``: its steps, the approval waiting,
  then advancing — on the same page, never reloaded;
- after it: the run in the last failovers;
- with us-east-1's S3 lost: the page still loads, from us-west-2, and says so.

Screenshots of these states go to ``docs/console/`` (linked from README.md).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from failover_support import _awaiting_run as awaiting_run
from failover_support import answer
from helpers import chromium

from disaster_recovery.config.endpoints import Deployment

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "docs" / "console"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def console_url(recorded: Deployment, console_config: Path, airflow_db: None) -> Iterator[str]:
    """Airflow's core API app (with this checkout's plugins) under uvicorn on a free port, reading
    the console's recorded history; logins required (user ``operator``, viewer)."""
    import uvicorn
    from airflow.api_fastapi.app import create_app, purge_cached_app
    from airflow.configuration import conf

    saved_config = os.environ.get("DR_CONFIG")
    os.environ["DR_CONFIG"] = str(console_config)
    conf.set("core", "simple_auth_manager_all_admins", "False")
    conf.set("core", "simple_auth_manager_users", "operator:viewer")
    purge_cached_app()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(apps="core"), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.started, "the API server did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        purge_cached_app()
        if saved_config is None:
            os.environ.pop("DR_CONFIG", None)
        else:
            os.environ["DR_CONFIG"] = saved_config


def token_for(base_url: str, username: str) -> str:
    import urllib.request

    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

    password = json.loads(Path(SimpleAuthManager.get_generated_password_file()).read_text())[
        username
    ]
    request = urllib.request.Request(
        f"{base_url}/auth/token",
        data=json.dumps({"username": username, "password": password}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return str(json.loads(response.read())["access_token"])


@pytest.fixture(scope="module", autouse=True)
def no_leftover_switch_runs(airflow_db: None) -> None:
    """Start from a quiet Airflow: a failover another test left queued (the health check's
    automatic trigger never runs under dag.test()) would be a failover in progress here."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import update

    with create_session() as session:
        session.execute(
            update(DagRun)
            .where(
                DagRun.dag_id.in_(["dr_failover", "dr_failback"]),
                DagRun.state.in_([DagRunState.RUNNING, DagRunState.QUEUED]),
            )
            .values(state=DagRunState.FAILED)
        )


@pytest.fixture(scope="module")
def browser(console_url: str) -> Iterator[Any]:
    """Headless Chromium, logged in: the UI's ``_token`` cookie, as after Airflow's login page."""
    with chromium() as driver:
        driver.get(f"{console_url}/api/v2/monitor/health")
        driver.add_cookie({"name": "_token", "value": token_for(console_url, "operator")})
        yield driver


def text_of(driver: Any, css: str) -> str:
    """The rendered text of the matching elements, read in one script call (sections are
    swapped in place while the test reads them)."""
    return str(
        driver.execute_script(
            "return Array.from(document.querySelectorAll(arguments[0]))"
            ".map(function(e){ return e.innerText; }).join('\\n');",
            css,
        )
    )


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception:  # the DOM changes under us while sections are swapped
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"the page never showed {what}")


def screenshot(driver: Any, name: str) -> None:
    """The whole page (the window grown to its height for the picture, then restored)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    height = int(driver.execute_script("return document.documentElement.scrollHeight;"))
    driver.set_window_size(1400, max(1000, height + 40))
    try:
        driver.save_screenshot(str(SHOTS / f"{name}.png"))
    finally:
        driver.set_window_size(1400, 1000)


def step_states(driver: Any) -> dict[str, str]:
    pairs = driver.execute_script(
        "return Array.from(document.querySelectorAll("
        "'#sec-failover_in_progress .step-state'))"
        ".map(function(e){ return [e.dataset.step, e.innerText]; });"
    )
    return {str(step): str(state) for step, state in pairs}


def test_before_a_failover(browser: Any, console_url: str) -> None:
    browser.get(f"{console_url}/dr/")
    assert browser.title == "Litper DR console"
    assert text_of(browser, "#primary-region") == "us-east-1"
    assert "No failover or failback is running." in text_of(browser, "#sec-failover_in_progress")
    drills = text_of(browser, "#sec-drills")
    assert "Quarterly" in drills and "OVERDUE" in drills and "never run" in drills
    backups = text_of(browser, "#sec-backups")
    assert "Daily full (logical)" in backups and "late" in backups and "1.7 MB" in backups
    assert "size_bytes" not in browser.page_source.split("<script>")[0]
    alerts = text_of(browser, "#sec-alerts")
    assert "DRDrillOverdue" in alerts and "ReplicationLagHigh" in alerts
    assert browser.execute_script(
        "return document.querySelectorAll('#sec-availability svg.strip rect.cell-down').length;"
    )
    screenshot(browser, "before-failover")


def test_a_failover_advances_on_the_page_without_a_reload(
    browser: Any, console_url: str, sandbox_env: dict[str, str]
) -> None:
    """A dry-run dr_failover (every step runs its checks, nothing changes) under dag.test() in
    this thread; the page is watched from another, as an operator would."""
    from airflow.models import DagBag

    browser.get(f"{console_url}/dr/")
    browser.execute_script("window.__notReloaded = true;")
    seen: list[dict[str, str]] = []
    errors: list[BaseException] = []
    awaiting_seen = threading.Event()

    def watch() -> None:
        try:
            seen.append(
                wait_for(
                    lambda: (s := step_states(browser)).get("decide") == "awaiting input" and s,
                    120,
                    "the approval waiting",
                )
            )
            screenshot(browser, "failover-awaiting-approval")
            awaiting_seen.set()
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                states = step_states(browser)
                if states and (not seen or states != seen[-1]):
                    seen.append(states)
                    if states.get("validate") == "running":
                        screenshot(browser, "failover-running")
                if (
                    "No failover or failback is running."
                    in text_of(browser, "#sec-failover_in_progress")
                    and len(seen) > 1
                ):
                    return
                time.sleep(0.2)
        except BaseException as exc:
            errors.append(exc)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()

    def approve_once_seen() -> None:
        # Like a person: approve after the page showed the approval waiting.
        try:
            run_id, _ti = awaiting_run("dr_failover", "decide.approval", 120)
            assert awaiting_seen.wait(150), "the page never showed the approval waiting"
            answer("dr_failover", run_id, "Approve", {})
        except BaseException as exc:
            errors.append(exc)
            awaiting_seen.set()

    dag = DagBag(dag_folder=str(REPO / "dags")).get_dag("dr_failover")
    answerer = threading.Thread(target=approve_once_seen, daemon=True)
    answerer.start()
    run = dag.test(
        logical_date=None,
        run_conf={"reason": "console browser test", "initiated_by": "pytest", "dry_run": True},
    )
    answerer.join(30)
    watcher.join(200)
    assert not errors, errors
    assert str(run.state) == "success"
    assert browser.execute_script("return window.__notReloaded === true;"), "the page reloaded"
    assert seen[0]["detect"] == "success" and seen[0]["decide"] == "awaiting input"
    done = [sum(state == "success" for state in snapshot.values()) for snapshot in seen]
    assert done == sorted(done) and done[-1] > done[0], f"steps did not advance: {seen}"


def test_after_the_failover(browser: Any, console_url: str) -> None:
    browser.get(f"{console_url}/dr/")
    last = text_of(browser, "#sec-failovers")
    assert "dry run" in last and "Failover" in last
    # Who approved, by name (the in-process approval answers as Airflow's all-admins user).
    assert "Anonymous" in last and "{" not in last
    assert text_of(browser, "#primary-region") == "us-east-1"  # a dry run changes nothing
    screenshot(browser, "after-failover")


def test_with_the_primary_region_s3_lost_the_page_reads_us_west_2(
    browser: Any, console_url: str, recorded: Deployment
) -> None:
    name = "AIRFLOW_CONN_" + recorded.settings.connections.aws_primary.upper()
    saved = os.environ[name]
    lost = json.loads(saved)
    # The region's S3 endpoint, wherever the Connection names it (service_config wins).
    lost["extra"]["endpoint_url"] = "http://127.0.0.1:9"
    lost["extra"].setdefault("service_config", {})["s3"] = {"endpoint_url": "http://127.0.0.1:9"}
    os.environ[name] = json.dumps(lost)
    try:
        browser.get(f"{console_url}/dr/")
        source = text_of(browser, "#sec-source")
        assert "Read from the bucket of us-west-2" in source and "did not answer" in source
        assert "Cannot read this section" not in text_of(browser, "#sec-backups")
        assert text_of(browser, "#sec-topology")
        screenshot(browser, "primary-s3-lost")
    finally:
        os.environ[name] = saved
