"""Alerts mean what they say: a dry run says DRY RUN and pages no one as Critical; a drill is
overdue only once the first one was due; the approver is recorded as a name and an id."""

from __future__ import annotations

import json
import secrets
import threading
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from disaster_recovery.airflow_support.failover_dags import approver
from disaster_recovery.clients.s3 import ObjectStore
from disaster_recovery.clients.slack import Alert, Severity, slack_message, slack_sink
from disaster_recovery.config.endpoints import Deployment
from disaster_recovery.drills.evidence import FIRST_RUN_KEY, DrillRecord, first_run, overdue_alerts
from disaster_recovery.errors import UnavailableError
from disaster_recovery.failover.engine import publish_result
from dr_sandbox import Sandbox
from dr_sandbox.webhook import read_messages

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


# -- dry runs -------------------------------------------------------------------------------------


def test_a_dry_run_alert_says_so_and_is_never_critical() -> None:
    for name in ("FailoverFailed", "FailoverApprovalRequired", "FailoverCompleted"):
        alert = Alert(name, "failover aborted: rejected at decide", dry_run=True)
        body = slack_message(alert, "#alerts-critical")
        assert alert.severity is Severity.INFO
        assert "DRY RUN" in body["text"] and "[Info]" in body["text"]
        assert body["severity"] == "Info" and body["dry_run"] is True
    real = Alert("FailoverFailed", "failover failed at sync")
    assert real.severity is Severity.CRITICAL and "DRY RUN" not in real.title


def dry_run_result(status: str, error: str) -> dict[str, Any]:
    return {
        "status": status,
        "kind": "failover",
        "steps_completed": ["detect"],
        "new_primary": "us-east-1",
        "total_time_seconds": 1.5,
        "reason": "rehearsal",
        "initiated_by": "pytest",
        "run_id": f"dry-{secrets.token_hex(3)}",
        "dry_run": True,
        "finished_at": datetime.now(UTC).isoformat(),
        "steps": [],
        "error": error,
    }


def test_a_rejected_dry_run_posts_dry_run_not_critical(
    sandbox: Sandbox, sandbox_env: dict[str, str]
) -> None:
    """The issue's case: a dry run rejected at DECIDE posted [Critical] FailoverFailed."""
    seen = len(read_messages(sandbox.slack_log))
    deployment = Deployment(sandbox.settings())
    result = dry_run_result("aborted", "rejected at decide")
    published = publish_result(deployment, "us-west-2", result)
    assert published["slack"] == "sent"
    [message] = read_messages(sandbox.slack_log)[seen:]
    assert message["severity"] == "Info" and message["dry_run"] is True
    assert "DRY RUN" in message["text"] and "nothing was changed" in message["text"]
    assert "Critical" not in message["text"]
    store = ObjectStore(deployment.aws("us-west-2"), sandbox.settings().bucket("us-west-2"))
    store.delete([published["history"].split("/", 3)[3]])


# -- drills overdue -------------------------------------------------------------------------------


def passed(kind: str, days_ago: float) -> DrillRecord:
    return DrillRecord(
        drill=kind, environment="sandbox", started_at=NOW - timedelta(days=days_ago), passed=True
    )  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("deployed_days_ago", "records", "overdue"),
    [
        (0, [], set()),  # the first run after deployment: nothing is due yet
        (34, [], set()),
        (36, [], {"monthly"}),  # the first monthly drill was due; quarterly not yet
        (96, [], {"monthly", "quarterly"}),
        (96, [passed("monthly", 3)], {"quarterly"}),
        (400, [passed("monthly", 40), passed("quarterly", 10)], {"monthly"}),
        (1, [passed("monthly", 40)], {"monthly"}),  # a drill that passed long ago still counts
    ],
)
def test_overdue_counts_from_the_deployments_first_run(
    deployed_days_ago: int, records: list[DrillRecord], overdue: set[str]
) -> None:
    deployed = NOW - timedelta(days=deployed_days_ago)
    alerts = overdue_alerts(records, NOW, deployed=deployed)
    assert {a.details["drill"] for a in alerts} == overdue
    for alert in alerts:
        if alert.details["last_passed"] is None:
            assert f"first run on {deployed:%Y-%m-%d}" in alert.summary


@pytest.fixture
def fresh_bucket(sandbox: Sandbox, sandbox_env: dict[str, str]) -> Iterator[ObjectStore]:
    store = ObjectStore(sandbox.aws("us-east-1"), f"dr-first-run-{secrets.token_hex(4)}")
    store.ensure_bucket()
    try:
        yield store
    finally:
        store.delete([e["Key"] for e in store.list_keys("")])
        store.client.delete_bucket(Bucket=store.bucket)


def test_the_first_run_is_recorded_once(fresh_bucket: ObjectStore) -> None:
    """Two checks at once record one first run; later checks and a listing read it back; a
    listing alone records nothing."""
    listing = first_run(fresh_bucket, NOW, record=False)
    assert listing == NOW and fresh_bucket.get_versioned(FIRST_RUN_KEY) is None
    barrier = threading.Barrier(2)
    seen: list[datetime] = []

    def check(at: datetime) -> None:
        barrier.wait()
        seen.append(first_run(fresh_bucket, at))

    threads = [threading.Thread(target=check, args=(NOW + timedelta(seconds=s),)) for s in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(seen) == 2 and seen[0] == seen[1]
    later = NOW + timedelta(days=50)
    assert first_run(fresh_bucket, later) == seen[0]
    assert first_run(fresh_bucket, later, record=False) == seen[0]


# -- who decided ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        # Airflow 3.3 hands the HITL responder as a dict.
        ({"id": "7", "name": "Ana Gómez"}, {"responded_by": "Ana Gómez", "responded_by_id": "7"}),
        ({"id": "admin"}, {"responded_by": "admin", "responded_by_id": "admin"}),
        ("admin", {"responded_by": "admin", "responded_by_id": "admin"}),
        (None, {"responded_by": "", "responded_by_id": ""}),
    ],
)
def test_the_approver_is_a_name_and_an_id(user: Any, expected: dict[str, str]) -> None:
    recorded = approver(user)
    assert recorded == expected
    assert "{" not in recorded["responded_by"]


# -- Slack: the webhook for the simple case, the Web API to choose the channel ----------------------


def received(box: Sandbox, seen: int) -> list[dict[str, Any]]:
    """What the receiver got since ``seen`` lines: path (webhook or API) and payload."""
    lines = box.slack_log.read_text().splitlines()[seen:]
    return [json.loads(line) for line in lines if line.strip()]


def with_channel(box: Sandbox, channel: str) -> Deployment:
    settings = box.settings()
    alerts = settings.alerts.model_copy(update={"slack_channel": channel})
    return Deployment(settings.model_copy(update={"alerts": alerts}))


@pytest.mark.parametrize(
    ("channel", "path"), [("", "/services/"), ("#dr-oncall", "/api/chat.postMessage")]
)
def test_slack_route_follows_the_channel_setting(
    sandbox: Sandbox, sandbox_env: dict[str, str], channel: str, path: str
) -> None:
    """No channel: the incoming webhook, with no channel in the body (it could not honour one).
    A channel: the Web API with the bot token, which posts there."""
    seen = len(sandbox.slack_log.read_text().splitlines())
    slack_sink(with_channel(sandbox, channel).slack()).send(Alert("BackupFailed", "boom"))
    [got] = received(sandbox, seen)
    assert got["path"].startswith(path), got
    assert got["payload"].get("channel", "") == channel
    assert "[Critical] BackupFailed" in got["payload"]["text"]


def test_slack_api_refusal_is_an_error(
    sandbox: Sandbox, sandbox_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    api = json.loads(sandbox_env["AIRFLOW_CONN_DR_SLACK_API"])
    monkeypatch.setenv("AIRFLOW_CONN_DR_SLACK_API", json.dumps({**api, "password": "not-a-bot"}))
    sink = slack_sink(with_channel(sandbox, "#dr-oncall").slack())
    with pytest.raises(UnavailableError, match="refused the message to #dr-oncall: not_authed"):
        sink.send(Alert("BackupFailed", "boom"))


@pytest.mark.parametrize(
    ("channel", "path"), [("", "/services/"), ("#dr-oncall", "/api/chat.postMessage")]
)
def test_airflow_sink_uses_the_providers_hooks(
    sandbox: Sandbox,
    sandbox_env: dict[str, str],
    channel: str,
    path: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Inside Airflow the slack provider delivers: SlackHook (bot token) when a channel is set,
    SlackWebhookHook otherwise, and no warning that a webhook cannot choose its channel."""
    from disaster_recovery.airflow_support.alerting import AirflowSlackSink

    seen = len(sandbox.slack_log.read_text().splitlines())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        AirflowSlackSink(with_channel(sandbox, channel).settings).send(
            Alert("ReplicationLagHigh", "lag 75 s")
        )
    [got] = received(sandbox, seen)
    assert got["path"].startswith(path) and got["payload"].get("channel", "") == channel
    noise = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    assert not [text for text in noise if "channel" in text.lower()], noise
