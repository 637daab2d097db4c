"""dr_failover and dr_failback under dag.test(), against a private sandbox (real PostgreSQL 18
primary + synchronous standby, Redis pair, moto Route 53, webhook receiver), with the approval
answered from a background thread like a person in the UI.

The tests share one private sandbox and run in order: reject and timeout must change nothing,
approve fails over, failback returns to the original topology; last, with the primary dead and
no accept_data_loss, SYNC refuses and the run undoes what STOP WRITES changed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from failover_support import (
    ApprovalAnswerer,
    app_read_only,
    redis_accepts_writes,
    standby_signal,
)
from helpers import load_dag, private_sandbox, slack_messages
from leak_support import LeakSearch, known_secrets_environment

from disaster_recovery.clients import redisnode
from disaster_recovery.clients.route53 import DnsSwitch
from disaster_recovery.clients.services import http_json
from disaster_recovery.config.model import load_settings
from disaster_recovery.failover.names import FAILOVER_STEPS
from disaster_recovery.failover.progress import progress_key
from disaster_recovery.postgres import db
from dr_sandbox import Sandbox


@pytest.fixture(scope="module")
def secret_box() -> Iterator[tuple[Sandbox, list[str]]]:
    """The private sandbox, its variables in os.environ with distinctive secrets, and those
    secrets: what the failover and the failback leave is searched for them (leak_support.py)."""
    with (
        private_sandbox(scale=0.2, prefix="dr-failover-dag-") as sandbox,
        known_secrets_environment(sandbox) as secret_box,
    ):
        yield secret_box


@pytest.fixture(scope="module")
def box(secret_box: tuple[Sandbox, list[str]]) -> Sandbox:
    return secret_box[0]


def _run(
    dag_id: str,
    choice: str | None,
    conf: dict[str, Any] | None = None,
    params_input: dict[str, Any] | None = None,
) -> tuple[Any, dict[str, Any]]:
    dag = load_dag(dag_id)
    answerer = ApprovalAnswerer(dag_id, choice, params_input)
    answerer.start()
    run = dag.test(logical_date=None, run_conf=conf or {"reason": "test", "initiated_by": "pytest"})
    answerer.join(30)
    assert answerer.error is None, answerer.error
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    report = next(ti for ti in run.get_task_instances() if ti.task_id == "report").xcom_pull(
        task_ids="report"
    )
    return run, {"states": states, "result": report}


def _topology(box: Sandbox) -> dict[str, Any]:
    settings = load_settings()
    return {
        "primary_in_recovery": db.is_in_recovery(box.postgres("primary")),
        "standby_in_recovery": db.is_in_recovery(box.postgres("standby")),
        "redis_replica_role": redisnode.state(box.redis("replica")).role,
        "dns_east": DnsSwitch(box.aws("us-west-2"), settings.dns).points_to("us-east-1"),
    }


# Rows written through the demo application in each period, checked after failback.
WRITTEN: dict[str, list[int]] = {"before": [], "during": []}

ORIGINAL = {
    "primary_in_recovery": False,
    "standby_in_recovery": True,
    "redis_replica_role": "slave",
    "dns_east": True,
}


def test_reject_aborts_and_changes_nothing(
    box: Sandbox,
    airflow_db: None,
    leak_search: LeakSearch,
) -> None:
    with leak_search.watching():
        _, outcome = _run("dr_failover", "Reject")
    print("reject:", outcome["states"])
    assert outcome["result"]["status"] == "aborted"
    assert "rejected" in outcome["result"]["error"]
    assert outcome["states"]["stop_writes.run"] == "skipped"
    assert outcome["states"]["promote.run"] == "skipped"
    assert _topology(box) == ORIGINAL
    status, body = http_json(f"{box.app_url('us-east-1')}/health")
    assert status == 200 and body["read_only"] is False
    approval_posts = slack_messages(box, "FailoverApprovalRequired")
    assert approval_posts and "required_actions" in approval_posts[-1]["text"]
    assert leak_search.found(objects_at_least=1) == []


def test_dry_run_rejected_says_dry_run_and_pages_no_one(box: Sandbox, airflow_db: None) -> None:
    """A rejected dry run: every Slack post says DRY RUN and none is Critical; the decision
    records who answered as a name and an id (Airflow 3.3 hands the responder as a dict)."""
    seen = len(slack_messages(box))
    conf = {"reason": "rehearsal", "initiated_by": "pytest", "dry_run": True}
    _, outcome = _run("dr_failover", "Reject", conf=conf)
    result = outcome["result"]
    assert result["status"] == "aborted" and result["dry_run"] is True
    posts = slack_messages(box)[seen:]
    assert [p["alert"] for p in posts] == ["FailoverApprovalRequired", "FailoverFailed"]
    for post in posts:
        assert "DRY RUN" in post["text"] and post["severity"] == "Info", post
    decide = next(r for r in result["steps"] if r["step"] == "decide")
    assert decide["status"] == "rejected"
    assert decide["by"] and "{" not in decide["by"] and decide["by_id"], decide
    assert _topology(box) == ORIGINAL


def test_timeout_aborts_and_never_proceeds(box: Sandbox, airflow_db: None) -> None:
    _, outcome = _run("dr_failover", None)
    print("timeout:", outcome["states"])
    assert outcome["states"]["decide.approval"] == "failed"
    assert outcome["states"]["promote.run"] in ("upstream_failed", "skipped")
    assert outcome["result"]["status"] == "aborted"
    assert _topology(box) == ORIGINAL


def test_approve_fails_over_to_secondary(
    box: Sandbox,
    airflow_db: None,
    leak_search: LeakSearch,
) -> None:
    for _ in range(5):
        status, written = http_json(f"{box.app_url('us-east-1')}/write", {})
        assert status == 200, written
        WRITTEN["before"].append(written["id"])
    with leak_search.watching():
        run, outcome = _run("dr_failover", "Approve")
    result = outcome["result"]
    print("approve:", outcome["states"], result["step_seconds"], result["total_time_seconds"])
    assert run.state == "success"
    assert result["status"] == "completed", result
    assert result["new_primary"] == "us-west-2"
    assert result["steps_completed"] == list(FAILOVER_STEPS)
    assert not db.is_in_recovery(box.postgres("standby"))
    assert redisnode.state(box.redis("replica")).role == "master"
    assert redisnode.state(box.redis("primary")).role == "slave"
    settings = load_settings()
    assert DnsSwitch(box.aws("us-west-2"), settings.dns).points_to("us-west-2")
    # The old primary is fenced: reachable, but read-only.
    with db.connect(box.postgres("primary")) as conn:
        assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("INSERT INTO demo_writes (region) VALUES ('split-brain')")
    # The secondary's demo application writes through DNS to the new primary.
    status, written = http_json(f"{box.app_url('us-west-2')}/write", {})
    assert status == 200, written
    assert written["target"] == "db.us-west-2.litper.internal."
    WRITTEN["during"].append(written["id"])
    assert (
        db.query_one(
            box.postgres("standby"),
            "SELECT region FROM demo_writes WHERE id = %s",
            (written["id"],),
        )
        == "us-west-2"
    )
    # The old region's application obeys its read-only flag.
    status, _ = http_json(f"{box.app_url('us-east-1')}/write", {})
    assert status == 409
    assert slack_messages(box, "FailoverCompleted")
    assert result["published"]["history"].startswith(
        "s3://litper-dr-backups-us-west-2/litper/failovers/"
    )
    # Each task wrote its step to the run's progress in us-west-2 (what `dr status` reads when
    # Airflow is lost), the report the outcome; the approval is there too.
    key = progress_key(settings, "failover", result["run_id"])
    progress = box.store("us-west-2").get_json(key)
    assert progress["status"] == "completed"
    assert [(s["step"], s["state"]) for s in progress["steps"]] == [
        (step, "success") for step in FAILOVER_STEPS
    ]
    decide = next(s for s in result["steps"] if s["step"] == "decide")
    assert decide["by"] and progress["approved_by"] == decide["by"]
    assert leak_search.found() == []


def test_failback_dag_restores_original_topology(
    box: Sandbox,
    airflow_db: None,
    leak_search: LeakSearch,
) -> None:
    with leak_search.watching() as watcher:
        _, outcome = _run(
            "dr_failback", "Approve", {"reason": "region back", "initiated_by": "pytest"}
        )
    result = outcome["result"]
    print("failback:", outcome["states"], result["step_seconds"])
    assert result["status"] == "completed", result
    assert result["new_primary"] == "us-east-1"
    assert _topology(box) == ORIGINAL
    status = box.status()
    assert status["healthy"], status
    sync_state = db.query_one(box.postgres("primary"), "SELECT sync_state FROM pg_stat_replication")
    assert sync_state == "sync"
    status_code, written = http_json(f"{box.app_url('us-east-1')}/write", {})
    assert status_code == 200 and written["target"] == "db.us-east-1.litper.internal."
    # Every row from both periods is on the original primary, and on its standby.
    ids = WRITTEN["before"] + WRITTEN["during"] + [written["id"]]
    assert len(ids) == 7
    for role in ("primary", "standby"):
        with db.connect(box.postgres(role)) as conn:
            found = conn.execute(
                "SELECT count(*) FROM demo_writes WHERE id = ANY(%s)", (ids,)
            ).fetchone()
        assert found == (7,), role
    # The secondary's application was stopped again by the failback.
    assert box.status()["components"]["app_us-east-1"]["healthy"]
    with pytest.raises(Exception, match=r"refused"):
        http_json(f"{box.app_url('us-west-2')}/health")
    # No secret left by the rewind or clone of the old primary, the switchover and the server
    # control (pg_ctl ran under the watch).
    assert "pg_ctl" in watcher.seen, sorted(watcher.seen)
    assert leak_search.found() == []


def test_refused_failover_undoes_stop_writes_and_says_so(box: Sandbox, airflow_db: None) -> None:
    """The primary is dead and nobody accepted data loss: SYNC refuses after STOP WRITES made the
    application read-only, paused Redis and fenced the dead node. The report task undoes what it
    can (nothing was promoted), keeps the dead node's fence, and the result and the Slack message
    say which; the servers are in the state the result describes."""
    seen = len(slack_messages(box))
    box.instance("primary").stop(mode="immediate")
    _, outcome = _run("dr_failover", "Approve")
    result, states = outcome["result"], outcome["states"]
    print("refused:", states)
    assert states["stop_writes.run"] == "success" and states["sync.run"] == "failed", states
    assert states["promote.run"] == "upstream_failed" and states["report"] == "success", states
    assert result["status"] == "aborted" and "accept_data_loss" in result["error"], result
    assert result["steps_completed"] == ["detect", "decide", "stop_writes"]
    stop = next(r for r in result["steps"] if r["step"] == "stop_writes")
    assert stop["application"]["read_only"] is True and stop["redis"]["paused"], stop
    assert stop["database"]["fenced"] == "unreachable", stop
    undo = next(r for r in result["steps"] if r["step"] == "undo_stop_writes")
    assert undo["status"] == "partly_undone", undo
    assert any("application is writable again" in text for text in result["undone"])
    assert any("unpaused" in text for text in result["undone"])
    [left] = result["left_changed"]
    assert "stays fenced" in left["what"] and "standby.signal" in left["undo"], left

    # The servers are in the state the result describes.
    assert app_read_only(box, "us-east-1") is False
    assert redis_accepts_writes(box)
    assert standby_signal(box, "primary")
    assert db.is_in_recovery(box.postgres("standby"))
    assert redisnode.state(box.redis("replica")).role == "slave"
    assert DnsSwitch(box.aws("us-west-2"), load_settings().dns).points_to("us-east-1")

    # Slack says the same: what was undone, what stays and how to undo it.
    [failed] = [post for post in slack_messages(box)[seen:] if post["alert"] == "FailoverFailed"]
    text = str(failed)
    assert "accept_data_loss" in text and "writable again" in text and "unpaused" in text, text
    assert "stays fenced" in text and "standby.signal" in text, text
    assert result["published"]["slack"] == "sent"
