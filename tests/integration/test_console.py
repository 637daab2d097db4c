"""The DR console's data, page and ``dr status`` against the session sandbox, with the recorded
history of :mod:`console_support`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from console_support import NOW, record_first_run
from helpers import REPO

from disaster_recovery.clients.s3 import regional_store
from disaster_recovery.config.endpoints import (
    ConnectionFields,
    Deployment,
    connection_from_env,
)
from disaster_recovery.console import page
from disaster_recovery.console import sections as console
from disaster_recovery.failover.names import FAILOVER_STEPS
from disaster_recovery.failover.plan import Plan
from disaster_recovery.failover.steps import run_failover
from disaster_recovery.monitoring.history import raw_key


@pytest.fixture(scope="module")
def status(recorded: Deployment) -> dict[str, Any]:
    return console.collect(recorded, now=NOW)


def test_topology_now_from_the_nodes(status: dict[str, Any]) -> None:
    topology = status["topology"]
    source = dict(status["source"])
    assert set(source.pop("section_seconds")) == set(console.SECTIONS)
    assert source == {
        "region": "us-east-1",
        "bucket": source["bucket"],
        "primary_region": "us-east-1",
        "fallback": False,
        "problems": [],
        "notes": [],
    }
    assert topology["primary_region"] == "us-east-1"
    assert [(n["region"], n["role"], n["healthy"]) for n in topology["nodes"]] == [
        ("us-east-1", "primary", True),
        ("us-west-2", "standby", True),
    ]
    assert topology["replication_lag_ok"] is True
    assert isinstance(topology["timeline"], int) and topology["timeline"] >= 1
    assert isinstance(topology["generation"], int) and topology["generation"] >= 0
    assert topology["replication_lag_threshold_seconds"] == 60


def test_backups_per_tier_late_in_red(status: dict[str, Any]) -> None:
    tiers = {row["tier"]: row for row in status["backups"]["tiers"]}
    weekly, full = tiers["postgresql_weekly"], tiers["postgresql_full"]
    assert weekly["age_seconds"] == 7200 and weekly["late"] is False
    assert weekly["size_bytes"] == 1_732_792 and weekly["replicas"] == ["us-west-2"]
    assert weekly["duration_seconds"] == 42 and len(weekly["history"]) == 2
    assert full["late"] is True and full["expected_every_seconds"] == 86400
    assert tiers["postgresql_monthly"]["late"] is True  # none ever verified
    assert tiers["postgresql_base"]["late"] is None  # no schedule of its own
    assert "pitr_window" in status["backups"]


def test_availability_from_the_recorded_checks(status: dict[str, Any]) -> None:
    last30 = status["availability"]["windows"][0]
    assert last30["label"] == "Last 30 days"
    assert last30["down_minutes"] == 5.0
    assert [(i["minutes"], i["closed_by"], i["failed_checks"]) for i in last30["incidents"]] == [
        (5.0, "recovery", 5)
    ]
    # Measured: the last hour of checks, and the 3 minutes the completed failover two days ago
    # vouches for (its VALIDATE step proved the platform healthy); 5 of those 63 minutes down.
    assert last30["unmeasured_minutes"] == pytest.approx(30 * 24 * 60 - 63, abs=0.1)
    assert last30["availability_percent"] == pytest.approx(100 * 58 / 63, abs=1e-3)
    assert last30["met"] is True and last30["budget_minutes"] == 43.2  # 5 of 43.2 min
    month = status["availability"]["windows"][1]
    assert month["label"] == "This month" and month["budget_minutes"] in (40.3, 43.2, 44.6)
    strip = status["availability"]["strip"]
    assert {c["state"] for c in strip} >= {"down", "unknown"}


def test_failovers_drills_and_alerts(status: dict[str, Any]) -> None:
    last = status["failovers"]["recent"][0]
    assert (last["kind"], last["status"], last["rto_seconds"], last["approved_by"]) == (
        "failover",
        "completed",
        847.2,
        "ana",
    )
    assert last["data_loss"].startswith("none")
    drills = {d["drill"]: d for d in status["drills"]["drills"]}
    assert drills["monthly"]["passed"] is True and drills["monthly"]["overdue"] is False
    assert (
        drills["monthly"]["evidence"].startswith("s3://")
        and "/drills/" in drills["monthly"]["evidence"]
    )
    assert drills["quarterly"]["overdue"] is True and drills["quarterly"]["passed"] is None
    names = [a["name"] for a in status["alerts"]["active"]]
    assert names.count("DRDrillOverdue") == 1 and "ReplicationLagHigh" in names
    late = next(a for a in status["alerts"]["active"] if a["name"] == "BackupLate")
    # The daily full is 3 days old: late since a day and 6 hours (its slack) after it started.
    assert late["since"] == (NOW - timedelta(days=3) + timedelta(hours=30)).isoformat()
    assert late["link"].endswith("/dags/postgresql_backup_full")
    lag = next(a for a in status["alerts"]["active"] if a["name"] == "ReplicationLagHigh")
    assert lag["since"] == (NOW - timedelta(minutes=3)).isoformat()
    # The log of the very task that raised it (its run id quoted as in the Airflow UI's URLs).
    assert lag["link"].endswith(
        "/dags/dr_health_check/runs/scheduled__2026-12-01T10%3A57%3A00%2B00%3A00/tasks/check"
        "?try_number=2"
    )
    overdue = next(a for a in status["alerts"]["active"] if a["name"] == "DRDrillOverdue")
    assert overdue["link"].endswith("/dags/dr_drill_quarterly")  # no quarterly drill ever ran
    assert drills["monthly"]["link"].endswith("/dags/dr_drill_monthly/runs/manual__monthly%2B1")
    assert lag["evidence"].endswith(raw_key("console-test", NOW - timedelta(minutes=3)))


def test_a_new_deployment_has_no_overdue_drill(recorded: Deployment) -> None:
    """Deployed an hour ago, no drill can have been due yet: the quarterly drill that never ran
    is not overdue and raises no alert, as the scheduled check posts none."""
    store = regional_store(recorded, "us-east-1")
    record_first_run(store, NOW - timedelta(hours=1))
    try:
        fresh = console.collect(recorded, now=NOW, only=["drills", "alerts"])
    finally:
        record_first_run(store, NOW - timedelta(days=100))
    drills = {d["drill"]: d for d in fresh["drills"]["drills"]}
    assert drills["quarterly"]["passed"] is None and drills["quarterly"]["overdue"] is False
    assert "DRDrillOverdue" not in [a["name"] for a in fresh["alerts"]["active"]]


def test_page_is_readable_at_a_glance(status: dict[str, Any], recorded: Deployment) -> None:
    html = page.render_page(status, recorded.settings.tz)
    assert 'Primary region: <b id="primary-region">us-east-1</b>' in html
    generation, timeline = status["topology"]["generation"], status["topology"]["timeline"]
    assert f"generation {generation} · timeline {timeline}" in html
    assert "1.7 MB" in html and "OVERDUE" in html and "Daily full (logical)" in html
    assert "<svg" in html and "cell-down" in html
    for raw in ("size_bytes", "availability_percent", "age_seconds", "postgresql_weekly_"):
        assert raw not in re.sub(r"<script>.*?</script>", "", html, flags=re.S).replace(
            "postgresql_weekly_2", ""
        ), raw
    assert not re.search(r"\d\d:\d\d:\d\d\.\d", html), "no microseconds on the page"
    assert "api/view" in html  # refreshes itself without a reload
    view = page.view(status, recorded.settings.tz)
    assert set(view["sections"]) >= {"topology", "backups", "availability", "alerts"}


def test_an_unreadable_section_shows_its_error_and_the_rest_renders(recorded: Deployment) -> None:
    def broken(_ctx: console.Context) -> Any:
        raise OSError("cannot reach the drill evidence")

    status = console.collect(recorded, now=NOW, sections={**console.SECTIONS, "drills": broken})
    assert status["drills"] == {"error": "cannot reach the drill evidence"}
    assert status["topology"]["primary_region"] == "us-east-1"
    html = page.render_page(status, recorded.settings.tz)
    assert "Cannot read this section: cannot reach the drill evidence" in html
    assert "Topology now" in html


def test_a_lost_primary_bucket_reads_from_the_other_region(recorded: Deployment) -> None:
    dead_s3 = "http://127.0.0.1:9"

    def lookup(conn_id: str) -> ConnectionFields:
        fields = connection_from_env(conn_id)
        if conn_id == recorded.settings.connections.aws_primary:
            return ConnectionFields(
                conn_id,
                fields.conn_type,
                login=fields.login,
                password=fields.password,
                extra={
                    **fields.extra,
                    "endpoint_url": dead_s3,
                    "service_config": {
                        **(fields.extra.get("service_config") or {}),
                        "s3": {"endpoint_url": dead_s3},
                    },
                },
            )
        return fields

    lost = Deployment(recorded.settings, lookup=lookup)
    status = console.collect(lost, now=NOW, roles=("us-east-1", "us-west-2"))
    assert status["source"]["region"] == "us-west-2" and status["source"]["fallback"] is True
    assert "us-east-1" in status["source"]["problems"][0]
    html = page.render_page(status, recorded.settings.tz)
    assert "Read from the bucket of us-west-2" in html and "did not answer" in html
    assert "error" not in status["drills"]  # every section still rendered from us-west-2


def test_no_secret_of_any_connection_appears(
    recorded: Deployment, sandbox_env: dict[str, str]
) -> None:
    secrets = set()
    for name, value in sandbox_env.items():
        if name.startswith("AIRFLOW_CONN_"):
            fields = json.loads(value)
            secrets.update(s for s in (fields.get("password"),) if s)
    webhook = connection_from_env(recorded.settings.connections.slack_alerts).password
    assert webhook.startswith("http") and webhook in secrets

    def leaky(_ctx: console.Context) -> Any:
        raise RuntimeError(f"POST {webhook} failed")

    status = console.collect(recorded, now=NOW, sections={**console.SECTIONS, "extra": leaky})
    assert status["extra"] == {"error": "POST [hidden] failed"}
    html = page.render_page(status, recorded.settings.tz)
    document = json.dumps(status)
    for secret in secrets:
        assert secret not in document and secret not in html, "a Connection secret leaked"


def test_dr_status_prints_the_same_data(console_config: Path, recorded: Deployment) -> None:
    env = {**os.environ, "DR_CONFIG": str(console_config)}
    done = subprocess.run(
        [sys.executable, "-m", "disaster_recovery", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["topology"]["primary_region"] == "us-east-1"
    assert document["availability"]["windows"][0]["down_minutes"] == 5.0
    assert "read from us-east-1's bucket" in done.stderr
    assert "drills: overdue: quarterly" in done.stderr


def dr_status(console_config: Path) -> subprocess.CompletedProcess[str]:
    """``dr status`` in its own process: S3 and the nodes only, no Airflow database."""
    return subprocess.run(
        [sys.executable, "-m", "disaster_recovery", "status"],
        env={**os.environ, "DR_CONFIG": str(console_config)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def plugin_view_without_airflow_db(
    console_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """The console plugin's failover section with Airflow's metadata database unreachable (a
    SQLite file in a folder that does not exist)."""
    import importlib.util

    from airflow import settings
    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker

    missing = tmp_path / "no-such-folder" / "airflow.db"
    monkeypatch.setattr(settings, "Session", sessionmaker(create_engine(f"sqlite:///{missing}")))
    monkeypatch.setenv("DR_CONFIG", str(console_config))
    spec = importlib.util.spec_from_file_location("dr_dashboard", REPO / "plugins/dr_dashboard.py")
    assert spec is not None and spec.loader is not None
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    section: dict[str, Any] = plugin._status(["failover_in_progress"])["failover_in_progress"]
    return section


def test_dr_status_shows_a_running_failover_from_s3(
    console_config: Path, recorded: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real failover (the library's, as `dr failover` runs it) held at DECIDE: `dr status`
    shows it and its steps from the progress the engine writes to S3, and so does the console
    plugin when Airflow's database does not answer; then no longer once it ended (rejected
    there, so nothing changed)."""
    asked, answer = threading.Event(), threading.Event()

    def approve(_evidence: dict[str, Any], _body: str) -> bool:
        asked.set()
        answer.wait(120)
        return False

    plan = Plan(recorded, "us-east-1", "us-west-2")
    results: list[dict[str, Any]] = []
    runner = threading.Thread(
        target=lambda: results.append(run_failover(plan, "console test", "pytest", approve=approve))
    )
    runner.start()
    try:
        assert asked.wait(60), "the failover never reached DECIDE"
        during = dr_status(console_config)
        plugin = plugin_view_without_airflow_db(console_config, tmp_path, monkeypatch)
    finally:
        answer.set()
        runner.join(120)
    assert during.returncode == 0, during.stderr
    runs = json.loads(during.stdout)["failover_in_progress"]["runs"]
    assert [(r["kind"], r["run_id"]) for r in runs] == [("failover", plan.run_id)]
    states = {s["step"]: s["state"] for s in runs[0]["steps"]}
    assert list(states) == list(FAILOVER_STEPS)
    assert (states["detect"], states["decide"]) == ("success", "running")
    assert all(states[step] is None for step in FAILOVER_STEPS[2:])
    assert runs[0]["steps"][0]["started_at"] and runs[0]["source"] == "s3 (us-west-2)"
    assert f"failover in progress: run {plan.run_id}, at decide (running)" in during.stderr
    assert [r["run_id"] for r in plugin["runs"]] == [plan.run_id]
    assert "unable to open database file" in plugin["airflow_error"]

    assert results and results[0]["status"] == "aborted"
    after = dr_status(console_config)
    assert json.loads(after.stdout)["failover_in_progress"] == {"runs": []}
    assert "in progress" not in after.stderr
