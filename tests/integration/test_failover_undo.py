"""A stopped failover says what it left changed, and undoes what it can (private sandboxes).

After each stopped run the state of every component is read back and compared with what the
result document says: what it undid is undone, what it left changed is still changed.
"""

from __future__ import annotations

from typing import Any

import pytest
from failover_support import app_read_only, redis_accepts_writes, standby_signal
from helpers import sandbox_environment

from disaster_recovery.config.endpoints import Deployment
from disaster_recovery.config.model import load_settings
from disaster_recovery.failover.engine import publish_result
from disaster_recovery.failover.plan import Plan
from disaster_recovery.failover.steps import run_failover
from disaster_recovery.postgres import db
from dr_sandbox import Sandbox, processes
from dr_sandbox.webhook import read_messages

pytestmark = pytest.mark.integration


def slack_text(box: Sandbox, seen: int) -> str:
    return " ".join(str(message) for message in read_messages(box.slack_log)[seen:])


def test_refused_failover_with_the_primary_gone(make_sandbox: Any) -> None:
    """The issue's case: primary dead, no accept_data_loss. SYNC refuses; the application is
    writable again and Redis unpaused; the dead node's fence stays (it is really lost), listed
    with how to undo it; Slack says the same."""
    box: Sandbox = make_sandbox(scale=0.1)
    box.up()
    with sandbox_environment(box):
        deployment = Deployment(load_settings())
        box.instance("primary").stop(mode="immediate")
        plan = Plan(deployment, "us-east-1", "us-west-2")
        result = run_failover(plan, "primary gone", "pytest")

        assert result["status"] == "aborted" and "accept_data_loss" in result["error"]
        undo = next(r for r in result["steps"] if r["step"] == "undo_stop_writes")
        assert undo["status"] == "partly_undone"
        assert any("application is writable again" in text for text in result["undone"])
        assert any("unpaused" in text for text in result["undone"])
        [left] = result["left_changed"]
        assert "stays fenced" in left["what"] and "standby.signal" in left["undo"]
        assert "left changed:" in result["error"] and "undone:" in result["error"]

        # The state is the one the result describes.
        assert app_read_only(box, "us-east-1") is False
        assert redis_accepts_writes(box)
        assert standby_signal(box, "primary")
        assert db.is_in_recovery(box.postgres("standby"))

        seen = len(read_messages(box.slack_log))
        published = publish_result(deployment, "us-west-2", result)
        assert published["slack"] == "sent"
        text = slack_text(box, seen)
        assert "Left changed" in text or "left_changed" in text, text
        assert "standby.signal" in text and "unpaused" in text


def test_failed_sync_with_the_primary_alive_undoes_everything(make_sandbox: Any) -> None:
    """SYNC fails (the standby dies mid-run) while the old primary is alive: nothing promoted,
    so every change of STOP WRITES is undone, the fence included; nothing is left changed."""
    box: Sandbox = make_sandbox(scale=0.1)
    box.up()
    with sandbox_environment(box):
        deployment = Deployment(load_settings())

        def approve_as_the_standby_dies(_evidence: Any, _body: str) -> bool:
            # DETECT found both nodes healthy; the standby is lost between DECIDE and SYNC.
            box.instance("standby").stop(mode="immediate")
            return True

        plan = Plan(deployment, "us-east-1", "us-west-2")
        result = run_failover(
            plan, "standby lost during the run", "pytest", approve=approve_as_the_standby_dies
        )

        assert result["status"] == "failed", result
        assert result["steps_completed"] == ["detect", "decide", "stop_writes"]
        stop = next(r for r in result["steps"] if r["step"] == "stop_writes")
        assert stop["database"]["fenced"] == "read_only"
        undo = next(r for r in result["steps"] if r["step"] == "undo_stop_writes")
        assert undo["status"] == "done" and result["left_changed"] == []
        assert len(result["undone"]) == 4, result["undone"]

        # The state is the one the result describes: the old primary is a writable primary
        # again, now and after a restart; the application and Redis accept writes.
        assert app_read_only(box, "us-east-1") is False
        assert redis_accepts_writes(box)
        assert not standby_signal(box, "primary")
        # The primary replicates synchronously: its commits wait for the standby, so bring the
        # standby back before writing (as the operator would after this run).
        box.instance("standby").start()
        with db.connect(box.postgres("primary")) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS undo_probe (x int)")
            conn.execute("INSERT INTO undo_probe VALUES (1)")
        box.instance("primary").stop(mode="fast")
        box.instance("primary").start()
        assert db.is_in_recovery(box.postgres("primary")) is False


def test_a_run_stopped_after_promote_undoes_nothing_and_names_the_failback(
    make_sandbox: Any,
) -> None:
    """Route 53 is lost after DECIDE: PROMOTE made us-west-2 the primary, then the run fails.
    Nothing is undone (two writable primaries must never exist): the old primary stays fenced
    and read-only, and the result and Slack name the command that undoes it, `dr failback`."""
    box: Sandbox = make_sandbox(scale=0.1)
    box.up()
    with sandbox_environment(box):
        deployment = Deployment(load_settings())

        def approve_as_route53_is_lost(_evidence: Any, _body: str) -> bool:
            processes.stop_pid(box.state.pids["moto_global"], "moto")
            return True

        plan = Plan(deployment, "us-east-1", "us-west-2")
        result = run_failover(
            plan, "Route 53 lost during the run", "pytest", approve=approve_as_route53_is_lost
        )

        assert result["status"] == "failed", result
        assert "promote" in result["steps_completed"], result["steps_completed"]
        assert "dns" not in result["steps_completed"]
        undo = next(r for r in result["steps"] if r["step"] == "undo_stop_writes")
        assert undo["status"] == "not_undone" and result["undone"] == []
        [left] = result["left_changed"]
        assert "stays fenced" in left["what"] and "dr failback" in left["undo"], left

        # The state is the one the result describes: one writable primary, the new one.
        assert db.is_in_recovery(box.postgres("standby")) is False
        assert standby_signal(box, "primary")
        assert db.query_one(box.postgres("primary"), "SHOW default_transaction_read_only") == "on"
        assert app_read_only(box, "us-east-1") is True

        seen = len(read_messages(box.slack_log))
        assert publish_result(deployment, "us-west-2", result)["slack"] == "sent"
        assert "dr failback" in slack_text(box, seen)
