"""The two-region sandbox: up, status, a killed component, down."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
from pathlib import Path

import psycopg
import redis
from helpers import run_dr, slack_messages

from disaster_recovery.postgres import db
from dr_sandbox import Sandbox, processes

CONTRACT_VARIABLES = {
    "AIRFLOW_CONN_DR_POSTGRES_PRIMARY",
    "AIRFLOW_CONN_DR_POSTGRES_STANDBY",
    "AIRFLOW_CONN_DR_REDIS_PRIMARY",
    "AIRFLOW_CONN_DR_REDIS_REPLICA",
    "AIRFLOW_CONN_DR_AWS_PRIMARY",
    "AIRFLOW_CONN_DR_AWS_SECONDARY",
    "AIRFLOW_CONN_DR_SLACK_ALERTS",
    "AIRFLOW_CONN_DR_SLACK_API",
    "DR_CONFIG",
    "DR_S3_ENDPOINT",
    "DR_S3_ENDPOINT_US_EAST_1",
    "DR_S3_ENDPOINT_US_WEST_2",
    "DR_PRIMARY_DSN",
    "DR_STANDBY_DSN",
    "DR_REDIS_PRIMARY_URL",
    "DR_REDIS_REPLICA_URL",
    "DR_SLACK_LOG",
}


def sourced_env(env_file: Path) -> dict[str, str]:
    """What a shell has after `. sandbox.env` (proves the file is valid shell)."""
    out = subprocess.run(
        ["bash", "-c", f"set -a; . {shlex.quote(str(env_file))}; env -0"],
        capture_output=True,
        check=True,
        env={"PATH": os.environ["PATH"]},
    ).stdout
    pairs = (item.split("=", 1) for item in out.decode().split("\0") if "=" in item)
    return dict(pairs)


def test_env_file_has_exactly_the_contract_variables(sandbox: Sandbox) -> None:
    lines = [ln for ln in sandbox.env_file.read_text().splitlines() if ln.startswith("export ")]
    names = {ln.split()[1].split("=", 1)[0] for ln in lines}
    assert names == CONTRACT_VARIABLES
    env = sourced_env(sandbox.env_file)
    # The DSNs are libpq URIs of database litper, as a superuser, on each node.
    with psycopg.connect(env["DR_PRIMARY_DSN"]) as conn:
        row = conn.execute(
            "SELECT current_database(), rolsuper, pg_is_in_recovery() FROM pg_roles "
            "WHERE rolname = current_user"
        ).fetchone()
        assert row == ("litper", True, False)
    with psycopg.connect(env["DR_STANDBY_DSN"]) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
    assert redis.Redis.from_url(env["DR_REDIS_PRIMARY_URL"]).ping()
    assert redis.Redis.from_url(env["DR_REDIS_REPLICA_URL"]).info("replication")["role"] == "slave"
    assert Path(env["DR_SLACK_LOG"]) == sandbox.slack_log
    assert json.loads(env["AIRFLOW_CONN_DR_AWS_SECONDARY"])["extra"]["region_name"] == "us-west-2"


def test_standby_is_synchronous_and_streaming(sandbox: Sandbox) -> None:
    with db.connect(sandbox.postgres("primary")) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS sandbox_probe (id int)")
        conn.execute("INSERT INTO sandbox_probe VALUES (1)")
        state = conn.execute("SELECT sync_state, state FROM pg_stat_replication").fetchall()
    assert state == [("sync", "streaming")]
    # A synchronous commit is on the standby once acknowledged (remote_flush at least; the
    # replay may trail by milliseconds, so poll briefly).
    settings = db.query_one(
        sandbox.postgres("primary"),
        "SELECT string_agg(name || '=' || setting, ',') "
        "FROM pg_settings WHERE name IN ('wal_level','summarize_wal','wal_log_hints')",
    )
    assert settings == "summarize_wal=on,wal_level=replica,wal_log_hints=on"


def test_sample_data_has_foreign_keys_and_rows(sandbox: Sandbox) -> None:
    with db.connect(sandbox.postgres("primary")) as conn:
        fks = conn.execute("SELECT count(*) FROM pg_constraint WHERE contype = 'f'").fetchone()
        counts = {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore[index]
            for t in ("customers", "orders", "shipments", "payments")
        }
    assert fks == (3,)
    assert all(n > 1000 for n in counts.values()), counts


def test_webhook_receiver_logs_json_lines(sandbox: Sandbox) -> None:
    from disaster_recovery.clients.slack import Alert, SlackWebhookSink
    from disaster_recovery.config.endpoints import SlackEndpoint

    before = len(slack_messages(sandbox))
    SlackWebhookSink(
        SlackEndpoint("dr_slack_alerts", sandbox.webhook_url, "#alerts-critical")
    ).send(Alert("BackupFailed", "pg_dump exited 1 (db=litper host=127.0.0.1:1): boom"))
    messages = slack_messages(sandbox)
    assert len(messages) == before + 1
    assert messages[-1]["channel"] == "#alerts-critical"
    assert "[Critical] BackupFailed" in str(messages[-1]["text"])


def test_up_is_idempotent_and_status_healthy(sandbox: Sandbox) -> None:
    pids = dict(sandbox.state.pids)
    summary = Sandbox(sandbox.root).up()
    assert summary["root"] == str(sandbox.root)
    assert Sandbox(sandbox.root).state.pids == pids
    result = run_dr("sandbox", "status", "--root", str(sandbox.root))
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["healthy"] is True
    assert set(status["components"]) == {
        "postgres_primary",
        "postgres_standby",
        "redis_primary",
        "redis_replica",
        "s3",
        "route53",
        "slack_webhook",
        "app_us-east-1",
    }


def _listening(port: int) -> bool:
    return processes.port_open(port)


def test_killed_component_is_named_and_down_leaves_nothing(make_sandbox) -> None:  # type: ignore[no-untyped-def]
    box: Sandbox = make_sandbox(scale=0.05)
    box.state.save(box.state_file)  # free ports chosen by the fixture; `up` reuses saved state
    up = run_dr("sandbox", "up", "--root", str(box.root))
    assert up.returncode == 0, up.stderr
    box = Sandbox(box.root)
    os.kill(box.state.pids["redis_replica"], signal.SIGKILL)

    result = run_dr("sandbox", "status", "--root", str(box.root))
    assert result.returncode == 1
    status = json.loads(result.stdout)
    unhealthy = [name for name, c in status["components"].items() if not c["healthy"]]
    assert unhealthy == ["redis_replica"]

    ports = list(vars(box.ports).values())
    pids = list(box.state.pids.values()) + [
        box.instance(r).postmaster_pid() for r in ("primary", "standby")
    ]
    down = run_dr("sandbox", "down", "--root", str(box.root))
    assert down.returncode == 0, down.stderr
    assert not any(_listening(port) for port in ports)
    assert not any(processes.pid_alive(pid) for pid in pids if pid)
