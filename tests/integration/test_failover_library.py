"""Library-level failover (the same step functions the DAG runs, without Airflow) against a
private sandbox: acknowledged commits survive a crash of the primary, a crashed old primary
never comes back writable, the runbook CLI and the orchestrator API."""

from __future__ import annotations

import asyncio
import json
import os
import time

import psycopg
import pytest
from failover_support import Writer
from helpers import run_dr, sandbox_environment

from disaster_recovery.config.endpoints import Deployment
from disaster_recovery.config.model import load_settings
from disaster_recovery.failover.failback import rebuild_as_standby, run_failback
from disaster_recovery.failover.orchestrator import FailoverOrchestrator
from disaster_recovery.failover.plan import Plan
from disaster_recovery.failover.steps import run_failover
from disaster_recovery.postgres import db
from dr_sandbox import Sandbox

ITERATIONS = int(os.environ.get("DR_CRASH_ITERATIONS", "20"))


def _node_of(box: Sandbox, region: str) -> str:
    return "primary" if region == "us-east-1" else "standby"


def test_no_acknowledged_commit_lost_when_primary_crashes(make_sandbox, capsys) -> None:  # type: ignore[no-untyped-def]
    """Kill the primary (pg_ctl stop -m immediate) while a writer commits; fail over; every id the
    writer saw acknowledged is on the new primary. Alternates direction, 20 times."""
    box: Sandbox = make_sandbox(scale=0.1)
    box.up()
    with sandbox_environment(box):
        deployment = Deployment(load_settings())
        with db.connect(box.postgres("primary")) as conn:
            conn.execute(
                "CREATE TABLE acked (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())"
            )
        source, target = "us-east-1", "us-west-2"
        totals = {"acknowledged": 0, "lost": 0}
        for iteration in range(1, ITERATIONS + 1):
            writer = Writer(box.postgres(_node_of(box, source)).uri())
            phase = time.monotonic()
            writer.start()
            deadline = time.monotonic() + 5
            while len(writer.acknowledged) < 20 and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.05 * (iteration % 4))  # vary where in a commit the crash lands
            box.instance(_node_of(box, source)).stop(mode="immediate")
            writer.stop()
            killed = time.monotonic()
            plan = Plan(deployment, source, target, accept_data_loss=True)
            result = run_failover(plan, f"crash test {iteration}", "pytest")
            assert result["status"] == "completed", result.get("error")
            acknowledged = writer.acknowledged
            with db.connect(box.postgres(_node_of(box, target))) as conn:
                present = conn.execute(
                    "SELECT count(*) FROM acked WHERE id = ANY(%s)", (acknowledged,)
                ).fetchone()
            assert present is not None
            lost = len(acknowledged) - present[0]
            totals["acknowledged"] += len(acknowledged)
            totals["lost"] += lost
            with capsys.disabled():  # the counts show in every test run, not only with -s
                print(
                    f"iteration {iteration:2d}: {source} -> {target}: "
                    f"acknowledged {len(acknowledged)}, "
                    f"on new primary {present[0]}, lost {lost}, writer errors {writer.failures}, "
                    f"failover {result['total_time_seconds']:.2f} s"
                )
            assert lost == 0
            if iteration == 1:
                _old_primary_comes_back_read_only(box, _node_of(box, source))
            # The crashed node becomes the standby of the new primary (pg_rewind), ready for the
            # next round in the other direction.
            before_rebuild = time.monotonic()
            rebuilt = rebuild_as_standby(plan, source, target, "rebuild")
            print(
                f"   write+kill {killed - phase:.2f} s, "
                f"rebuild {time.monotonic() - before_rebuild:.2f} s {rebuilt['phase_seconds']} "
                f"{result['step_seconds']}, iteration {time.monotonic() - phase:.2f} s"
            )
            source, target = target, source
        with capsys.disabled():
            print(
                f"total: acknowledged {totals['acknowledged']}, lost {totals['lost']} "
                f"in {ITERATIONS} crashes"
            )
        assert totals["lost"] == 0
        # An even number of rounds ends in the original topology.
        assert box.status()["healthy"], box.status()


def _old_primary_comes_back_read_only(box: Sandbox, role: str) -> None:
    """No two writable primaries: the crashed old primary restarts as a standby."""
    node = box.instance(role)
    node.start()
    with db.connect(box.postgres(role)) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("INSERT INTO acked DEFAULT VALUES")
        # Even a session that turns the read-only default off cannot write on it.
        conn.execute("SET default_transaction_read_only = off")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("INSERT INTO acked DEFAULT VALUES")


def test_sync_refuses_without_accepting_data_loss_when_primary_is_gone(make_sandbox) -> None:  # type: ignore[no-untyped-def]
    box: Sandbox = make_sandbox(scale=0.1)
    box.up()
    with sandbox_environment(box):
        box.instance("primary").stop(mode="immediate")
        plan = Plan(Deployment(load_settings()), "us-east-1", "us-west-2")
        result = run_failover(plan, "primary gone", "pytest")
        assert result["status"] == "aborted"
        assert "accept_data_loss" in result["error"]
        assert result["steps_completed"] == ["detect", "decide", "stop_writes"]
        # Nothing was promoted.
        assert db.is_in_recovery(box.postgres("standby"))
        stop = next(r for r in result["steps"] if r["step"] == "stop_writes")
        assert stop["database"]["fenced"] == "unreachable"
        assert "standby.signal" in stop["database"]["on_disk"]
        # Re-run, accepting the loss: the steps that already happened are not done twice.
        plan.accept_data_loss = True
        result = run_failover(plan, "primary gone, loss accepted", "pytest")
        assert result["status"] == "completed", result.get("error")
        again = run_failover(plan, "re-run", "pytest")
        assert again["status"] == "completed"
        assert {r["step"]: r["status"] for r in again["steps"]}["promote"] in (
            "already_done",
            "done",
        )
        assert not any(r.get("postgres_promoted") for r in again["steps"])
        with db.connect(box.postgres("standby")) as conn:
            conn.execute("CREATE TABLE during_outage AS SELECT 42 AS answer")
        # The old primary lost its WAL: pg_rewind cannot work, failback re-clones it instead.
        wal = box.instance("primary").data_dir / "pg_wal"
        for segment in wal.glob("0000000*"):
            segment.unlink()
        back = run_failback(
            Plan(plan.deployment, "us-west-2", "us-east-1"), "region back", "pytest"
        )
        assert back["status"] == "completed", back.get("error")
        rebuilt = next(r for r in back["steps"] if r["step"] == "rebuild_old_primary")
        assert rebuilt["how"].startswith("base backup"), rebuilt
        assert db.query_one(box.postgres("primary"), "SELECT answer FROM during_outage") == 42
        assert box.status()["healthy"], box.status()


def test_dry_run_and_runbook_cli_change_nothing(make_sandbox) -> None:  # type: ignore[no-untyped-def]
    box: Sandbox = make_sandbox(scale=0.1)
    box.up()
    with sandbox_environment(box) as env:
        orchestrator = FailoverOrchestrator("us-east-1", "us-west-2", load_settings())
        health = asyncio.run(orchestrator.check_health())
        assert health["primary"] == {
            "region": "us-east-1",
            "database": "healthy",
            "database_state": "healthy",
            "redis": "healthy",
            "redis_state": "healthy",
            "services": "healthy",
        }
        assert health["secondary"]["services"] == "standby"
        dry = asyncio.run(
            orchestrator.execute_failover("rehearsal", "pytest", dry_run=True, publish=False)
        )
        assert dry["status"] == "dry_run"
        assert {r["status"] for r in dry["steps"][2:]} == {"would_do"}
        assert db.is_in_recovery(box.postgres("standby"))
        # The runbook: a person answers "no" at DECIDE.
        proc = run_dr(
            "--reason",
            "drill",
            "--no-publish",
            module="disaster_recovery.failover",
            stdin="no\n",
            env=env,
            timeout=120,
        )
        assert proc.returncode == 6, proc.stderr
        assert json.loads(proc.stdout)["status"] == "aborted"
        assert "[2/8] DECIDE: rejected" in proc.stderr
        assert "estimated data loss" in proc.stderr
        assert db.is_in_recovery(box.postgres("standby"))
        # dr health through the CLI.
        proc = run_dr("health", env=env, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["replication_lag_seconds"] == 0.0
        # And "yes": the runbook fails over, printing each step.
        proc = run_dr(
            "--reason", "drill", "--yes", module="disaster_recovery.failover", env=env, timeout=120
        )
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)
        assert result["status"] == "completed" and result["new_primary"] == "us-west-2"
        assert "[8/8] VALIDATE: done" in proc.stderr
        assert not db.is_in_recovery(box.postgres("standby"))
        # And back: `dr failback --yes`.
        proc = run_dr("failback", "--yes", env=env, timeout=180)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["new_primary"] == "us-east-1"
        assert "[3/10] REBUILD_OLD_PRIMARY: done" in proc.stderr
        assert box.status()["healthy"]
