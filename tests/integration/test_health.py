"""Health: the shape and the lag measure against real servers (the alert state machine, pure, is
in tests/unit/test_health_rules.py), and dr_health_check under dag.test(): alerts once per incident with recovery, and the automatic
trigger of dr_failover after three consecutive failed primary checks (two are not enough)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from helpers import private_sandbox, run_dag, sandbox_environment, slack_messages
from pitr_support import deployment_for

from disaster_recovery.clients.s3 import regional_store
from disaster_recovery.config.endpoints import Deployment
from disaster_recovery.config.model import load_settings
from disaster_recovery.console import sections as console
from disaster_recovery.monitoring.health import check_health
from disaster_recovery.monitoring.history import load_day
from disaster_recovery.postgres import db
from dr_sandbox import Sandbox


def test_health_shape_and_idle_lag_is_zero(sandbox: Sandbox, sandbox_env: dict[str, str]) -> None:
    deployment = Deployment(load_settings())
    first = check_health(deployment, "us-east-1", "us-west-2")
    time.sleep(1.5)  # idle: now() - last replay time grows, the lag must not
    health = check_health(deployment, "us-east-1", "us-west-2")
    # The seed's shape and words (healthy / degraded / down; a secondary's services standby),
    # with the detail under *_state.
    assert health["primary"] == {
        "region": "us-east-1",
        "database": "healthy",
        "database_state": "healthy",
        "redis": "healthy",
        "redis_state": "healthy",
        "services": "healthy",
    }
    assert health["secondary"] == {
        "region": "us-west-2",
        "database": "healthy",
        "database_state": "streaming",
        "redis": "healthy",
        "redis_state": "replicating",
        "services": "standby",
    }
    assert first["replication_lag_seconds"] == 0.0 and health["replication_lag_seconds"] == 0.0
    assert health["replication"]["primary_lsn"] == health["replication"]["standby_replay_lsn"]
    assert health["replication"]["sync_state"] == "sync"
    assert health["redis_offsets"]["master"] == health["redis_offsets"]["replica"]


# -- dr_health_check under dag.test() ------------------------------------------------------------


@pytest.fixture(scope="module")
def box() -> Iterator[Sandbox]:
    with private_sandbox(scale=0.1, prefix="dr-health-") as sandbox:
        # A 1 s lag threshold, so pausing replay for a moment is an incident.
        config = yaml.safe_load(sandbox.config_file.read_text())
        config["thresholds"]["replication_lag"] = "1s"
        strict = sandbox.root / "dr_config_strict.yaml"
        strict.write_text(yaml.safe_dump(config))
        with sandbox_environment(sandbox), pytest.MonkeyPatch.context() as patch:
            patch.setenv("DR_CONFIG", str(strict))
            yield sandbox


def _check(box: Sandbox) -> dict[str, Any]:
    run = run_dag("dr_health_check", None)
    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    assert tis["check"].state == "success"
    return {
        "result": tis["check"].xcom_pull(task_ids="check"),
        "trigger": tis["trigger_failover"].state,
    }


def assert_alert_links_to_its_log(box: Sandbox, name: str, raised_by: dict[str, Any]) -> None:
    """Slack's message and the console's active alert both link to the log of the check task
    (``raised_by``'s health document) that raised the alert, not to the later check that still
    sees it; the day's availability record keeps which task that was."""
    raised_in = raised_by["run"]
    assert raised_in["dag_id"] == "dr_health_check" and raised_in["task_id"] == "check"
    log_path = (
        f"/dags/dr_health_check/runs/{quote(raised_in['run_id'], safe='')}/tasks/check"
        f"?try_number={raised_in['try_number']}"
    )
    assert log_path in _alerts(box, name)[-1]["text"]
    deployment = deployment_for(box)
    store = regional_store(deployment, "us-east-1")
    checked_at = datetime.fromisoformat(raised_by["checked_at"]).astimezone(UTC)
    day = load_day(store, "litper", checked_at.date())
    assert day.alert_runs[name] == raised_in
    status = console.collect(deployment, only=["alerts"])
    active = next(a for a in status["alerts"]["active"] if a["name"] == name)
    assert active["link"].endswith(log_path), active


def _alerts(box: Sandbox, name: str) -> list[dict[str, Any]]:
    return [m for m in slack_messages(box) if name in m.get("text", "")]


def _auto_failover_runs() -> int:
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        runs = session.query(DagRun).filter(DagRun.dag_id == "dr_failover").all()
        return sum(1 for run in runs if (run.conf or {}).get("initiated_by") == "auto")


def test_health_check_dag_alerts_and_triggers_failover(box: Sandbox, airflow_db: None) -> None:
    # Test code, outside any task: the ORM model is the way to reset the state.
    from airflow.models import Variable

    Variable.delete("dr_health_state")  # noqa: AIR311
    assert _check(box)["result"]["alerts"] == []

    # Replication lag: a commit is replayed, then replay is paused and the primary commits again.
    with db.connect(box.postgres("primary")) as conn:
        conn.execute("CREATE TABLE replayed AS SELECT 1 AS x")
    with db.connect(box.postgres("standby")) as conn:
        while conn.execute("SELECT pg_last_xact_replay_timestamp()").fetchone() == (None,):
            time.sleep(0.05)
        conn.execute("SELECT pg_wal_replay_pause()")
    with db.connect(box.postgres("primary")) as conn:
        conn.execute("CREATE TABLE lag_probe AS SELECT 1 AS x")
    time.sleep(1.2)
    first = _check(box)["result"]
    assert first["health"]["replication_lag_seconds"] > 1, first["health"]
    assert [a["name"] for a in first["alerts"]] == ["ReplicationLagHigh"]
    assert _check(box)["result"]["alerts"] == []  # once per incident
    assert_alert_links_to_its_log(box, "ReplicationLagHigh", first["health"])
    with db.connect(box.postgres("standby")) as conn:
        conn.execute("SELECT pg_wal_replay_resume()")
    time.sleep(0.3)
    cleared = _check(box)["result"]
    assert cleared["health"]["replication_lag_seconds"] == 0.0
    assert [(a["name"], a["resolved"]) for a in cleared["alerts"]] == [("ReplicationLagHigh", True)]
    lag_messages = _alerts(box, "ReplicationLagHigh")
    assert len(lag_messages) == 2 and "RESOLVED" in lag_messages[1]["text"]
    assert lag_messages[0]["severity"] == "High"

    # The secondary region goes away.
    box.instance("standby").stop(mode="immediate")
    down = _check(box)["result"]
    assert [a["name"] for a in down["alerts"]] == ["SecondaryUnreachable"]
    assert down["health"]["secondary"]["database"] == "down"
    box.instance("standby").start()
    deadline = time.monotonic() + 20
    while db.query_one(box.postgres("primary"), "SELECT count(*) FROM pg_stat_replication") == 0:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    back = _check(box)["result"]
    assert ("SecondaryUnreachable", True) in [(a["name"], a["resolved"]) for a in back["alerts"]]

    # The primary fails: two checks do not trigger a failover, the third does (once).
    before = _auto_failover_runs()
    box.instance("primary").stop(mode="immediate")
    for expected_failures in (1, 2):
        outcome = _check(box)
        assert outcome["result"]["primary_failures"] == expected_failures
        assert outcome["trigger"] == "skipped"
    assert _auto_failover_runs() == before
    assert len(_alerts(box, "PrimaryDown")) == 1
    third = _check(box)
    assert third["trigger"] == "success"
    assert third["result"]["reason"].startswith("auto: primary us-east-1 failed 3 consecutive")
    assert _auto_failover_runs() == before + 1
    fourth = _check(box)
    assert fourth["trigger"] == "skipped"
    assert _auto_failover_runs() == before + 1
    # Every check was recorded in the secondary region's bucket.
    from disaster_recovery.clients.s3 import ObjectStore

    store = ObjectStore(box.aws("us-west-2"), "litper-dr-backups-us-west-2")
    assert len(list(store.list_keys("litper/health/"))) >= 10
