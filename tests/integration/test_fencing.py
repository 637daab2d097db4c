"""Fencing that holds without node control, and honest results (issue 16): the old primary is
killed, the failover runs with ``failover.nodes: {}`` (it can only *record* the unreachable node
as fenced) and no read-only switch (so it completes with warnings, said before approval), then the
old primary is restarted and comes back as a writable primary. Under synchronous replication no
write on it is acknowledged; the next dr_health_check fences it (read-only, its waiting sessions
ended) and posts SplitBrain once; no acknowledged write is lost."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import yaml
from failover_support import Writer
from helpers import private_sandbox, run_dag, sandbox_environment, slack_messages

from disaster_recovery.config.model import load_settings
from disaster_recovery.failover.orchestrator import FailoverOrchestrator
from disaster_recovery.postgres import db
from dr_sandbox import Sandbox


@pytest.fixture(scope="module")
def box() -> Iterator[Sandbox]:
    with private_sandbox(scale=0.1, prefix="dr-fencing-") as sandbox:
        config = yaml.safe_load(sandbox.config_file.read_text())
        config["failover"]["nodes"] = {}  # no node control: nothing can fence on disk
        # No read-only switch for the application either (the shipped default, services: {}).
        config["services"]["us-east-1"].pop("read_only_url")
        unmanaged = sandbox.root / "dr_config_no_node_control.yaml"
        unmanaged.write_text(yaml.safe_dump(config))
        with sandbox_environment(sandbox), pytest.MonkeyPatch.context() as patch:
            patch.setenv("DR_CONFIG", str(unmanaged))
            yield sandbox


class PendingWrite(threading.Thread):
    """One INSERT on a node, remembering whether PostgreSQL acknowledged its COMMIT."""

    def __init__(self, conninfo: dict[str, Any]):
        super().__init__(daemon=True)
        self.conninfo = conninfo
        self.acknowledged: int | None = None
        self.error: str | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(**self.conninfo, autocommit=True) as conn:
                row = conn.execute("INSERT INTO acked DEFAULT VALUES RETURNING id").fetchone()
                assert row is not None
                self.acknowledged = int(row[0])
        except psycopg.Error as exc:
            self.error = str(exc).splitlines()[0]


def read_only(conninfo: dict[str, Any]) -> str:
    with psycopg.connect(**conninfo, autocommit=True) as conn:
        row = conn.execute("SHOW default_transaction_read_only").fetchone()
    assert row is not None
    return str(row[0])


def health_check() -> dict[str, Any]:
    run = run_dag("dr_health_check", None)
    check = next(ti for ti in run.get_task_instances() if ti.task_id == "check")
    assert check.state == "success"
    result: dict[str, Any] = check.xcom_pull(task_ids="check")
    return result


def split_brain_alerts(box: Sandbox) -> list[dict[str, Any]]:
    return slack_messages(box, "SplitBrain")


def test_a_returning_old_primary_is_fenced_and_loses_no_acknowledged_write(
    box: Sandbox, airflow_db: None
) -> None:
    old_primary = box.postgres("primary")
    with db.connect(old_primary) as conn:
        conn.execute("CREATE TABLE acked (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())")
    writer = Writer(old_primary.uri())
    writer.start()
    deadline = time.monotonic() + 5
    while len(writer.acknowledged) < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    box.instance("primary").stop(mode="immediate")  # the primary region's node crashes
    writer.stop()
    assert writer.acknowledged

    # The seed's call, with a person reading the DECIDE page first.
    pages: list[str] = []

    def approve(evidence: dict[str, Any], body: str) -> bool:
        pages.append(body)
        return True

    orchestrator = FailoverOrchestrator("us-east-1", "us-west-2", load_settings())
    slack_before = len(slack_messages(box))
    result = asyncio.run(
        orchestrator.execute_failover(
            reason="fencing test", initiated_by="auto", accept_data_loss=True, approve=approve
        )
    )
    assert result["new_primary"] == "us-west-2", result.get("error")
    stop_writes = next(r for r in result["steps"] if r["step"] == "stop_writes")
    assert stop_writes["database"]["fenced"] == "unreachable"  # recorded, not enforced
    # Honest: what STOP WRITES could not do is in the result, in Slack, and was on the DECIDE
    # page before anyone approved.
    assert result["status"] == "completed_with_warnings", result
    assert any(
        w.startswith("stop_writes: application not made read-only: skipped: not configured")
        and "services.us-east-1.read_only_url" in w
        for w in result["warnings"]
    ), result["warnings"]
    assert any("failover.nodes.us-east-1" in w for w in result["warnings"]), result["warnings"]
    assert stop_writes["application"] == {"read_only": "not configured"}
    assert "services.us-east-1.read_only_url" in pages[0] and "Warnings" in pages[0]
    posted = [m["alert"] for m in slack_messages(box)[slack_before:]]
    assert posted == ["FailoverCompletedWithWarnings"], posted
    assert "read_only_url" in json.dumps(slack_messages(box)[-1]["blocks"])

    # Its machine comes back: without standby.signal it starts as a writable primary.
    box.instance("primary").start()
    conninfo = old_primary.connect_kwargs()
    assert read_only(conninfo) == "off"
    assert not db.is_in_recovery(old_primary)
    # A client writes to it: its synchronous standby is now the primary and does not stream
    # from it, so the COMMIT waits and is never acknowledged.
    pending = PendingWrite(conninfo)
    pending.start()
    pending.join(2)
    assert pending.is_alive() and pending.acknowledged is None
    alerts_before = len(split_brain_alerts(box))

    # One health interval: the next dr_health_check run fences it.
    started = time.monotonic()
    checked = health_check()
    fenced = checked["fenced"]
    assert fenced is not None and fenced["region"] == "us-east-1", checked
    assert fenced["fenced"] == "read_only" and fenced["terminated_sessions"] >= 1
    assert time.monotonic() - started < 60
    pending.join(10)
    assert not pending.is_alive()
    assert pending.acknowledged is None and pending.error, (
        "a write on the deposed node was acknowledged"
    )
    assert read_only(conninfo) == "on"
    with (
        pytest.raises(psycopg.errors.ReadOnlySqlTransaction),
        psycopg.connect(**conninfo, autocommit=True) as conn,
    ):
        conn.execute("INSERT INTO acked DEFAULT VALUES")
    # The health check now judges us-west-2 primary (the fenced node is no primary).
    assert checked["health"]["primary"]["region"] == "us-west-2"
    assert checked["trigger_failover"] is False

    # SplitBrain posted once: a second check finds the node fenced and says nothing more.
    assert len(split_brain_alerts(box)) == alerts_before + 1
    again = health_check()
    assert again["fenced"] is None
    assert len(split_brain_alerts(box)) == alerts_before + 1

    # No acknowledged write lost: every id the old primary acknowledged is on the new one.
    new_primary = box.postgres("standby")
    with db.connect(new_primary) as conn:
        row = conn.execute(
            "SELECT count(*) FROM acked WHERE id = ANY(%s)", (writer.acknowledged,)
        ).fetchone()
    assert row is not None and row[0] == len(writer.acknowledged)
