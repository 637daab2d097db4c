"""Alerts to Slack ``#alerts-critical``: what failed, how bad, where to look.

The message is built here, once; who delivers it differs. With ``alerts.slack_channel`` empty an
incoming webhook posts it to the channel the webhook was made for; with a channel set, the Web
API (``chat.postMessage``, a bot token) posts it there. Outside Airflow (CLI, drills)
:func:`slack_sink` picks :class:`SlackWebhookSink` or :class:`SlackApiSink` (``slack_sdk``);
inside Airflow :mod:`disaster_recovery.airflow_support.alerting` does the same with the slack
provider's ``SlackWebhookHook`` or ``SlackHook``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from slack_sdk.webhook import WebhookClient

from disaster_recovery.config.endpoints import SlackEndpoint
from disaster_recovery.errors import UnavailableError

log = logging.getLogger(__name__)


class Severity(str, Enum):
    CRITICAL = "Critical"
    HIGH = "High"
    INFO = "Info"


# The alert catalogue: name -> severity (DESIGN.md's table and the issues that extend it).
ALERTS: dict[str, Severity] = {
    "BackupFailed": Severity.CRITICAL,
    "BackupVerificationFailed": Severity.CRITICAL,
    "ReplicationLagHigh": Severity.HIGH,
    "SecondaryUnreachable": Severity.CRITICAL,
    "PrimaryDown": Severity.CRITICAL,
    "WALArchiveStale": Severity.CRITICAL,
    "WALArchiveGap": Severity.CRITICAL,
    "WALArchiveBacklog": Severity.HIGH,
    "DRDrillFailed": Severity.CRITICAL,
    "DRDrillOverdue": Severity.HIGH,
    "FailoverApprovalRequired": Severity.CRITICAL,
    "FailoverCompleted": Severity.INFO,
    "FailoverCompletedWithWarnings": Severity.HIGH,
    "DrillApprovalRequired": Severity.HIGH,
    "DRDrillReport": Severity.INFO,
    "SplitBrain": Severity.CRITICAL,
    "WALReplicaBehind": Severity.HIGH,
}

_ICONS = {
    Severity.CRITICAL: ":red_circle:",
    Severity.HIGH: ":large_orange_circle:",
    Severity.INFO: ":information_source:",
}


@dataclass(frozen=True)
class Alert:
    name: str
    summary: str  # one line: what failed, the error
    details: dict[str, Any] = field(default_factory=dict)  # tier, file, check, dag/run/task...
    link: str | None = None  # the task log, the approval page
    resolved: bool = False
    # A rehearsal (a failover dry run): said in the title, and never pages as Critical/High.
    dry_run: bool = False

    @property
    def severity(self) -> Severity:
        if self.dry_run:
            return Severity.INFO
        return ALERTS.get(self.name, Severity.CRITICAL)

    @property
    def title(self) -> str:
        if self.resolved:
            return f":white_check_mark: RESOLVED {self.name}"
        rehearsal = "DRY RUN " if self.dry_run else ""
        return f"{_ICONS[self.severity]} [{self.severity.value}] {rehearsal}{self.name}"


def one_line(text: str, limit: int = 300) -> str:
    """The first meaningful line of an error, shortened for a chat message."""
    first = next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "")
    return first if len(first) <= limit else first[: limit - 1] + "…"


def slack_message(alert: Alert, channel: str) -> dict[str, Any]:
    """The webhook body: a plain ``text`` fallback plus Block Kit blocks."""
    facts = [f"*{key}:* {value}" for key, value in alert.details.items() if value not in (None, "")]
    text = f"{alert.title}: {alert.summary}"
    blocks: list[dict[str, Any]] = [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"*{alert.title}*\n{alert.summary}"},
        },
    ]
    if facts:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(facts)}})
    if alert.link:
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"<{alert.link}|Open in Airflow>"},
            }
        )
        text += f" — {alert.link}"
    body: dict[str, Any] = {
        "text": text,
        "blocks": blocks,
        "alert": alert.name,
        "severity": alert.severity.value,
        "dry_run": alert.dry_run,
    }
    if channel:
        body["channel"] = channel
    return body


class AlertSink(Protocol):
    def send(self, alert: Alert) -> None: ...


class SlackWebhookSink:
    """Posts alerts to a Slack incoming webhook (outside Airflow)."""

    def __init__(self, endpoint: SlackEndpoint):
        self.endpoint = endpoint

    def send(self, alert: Alert) -> None:

        body = slack_message(alert, self.endpoint.channel)
        try:
            response = WebhookClient(self.endpoint.webhook_url, timeout=10).send_dict(body)
        except Exception as exc:
            raise UnavailableError(
                f"Slack webhook ({self.endpoint.conn_id}) unreachable: {exc}"
            ) from None
        if response.status_code != 200:
            raise UnavailableError(
                f"Slack webhook ({self.endpoint.conn_id}) answered {response.status_code}: {response.body}"
            )
        log.info("alert sent: %s", alert.name)


class SlackApiSink:
    """Posts alerts with Slack's Web API (``chat.postMessage``) and a bot token: the way to
    choose the channel (``alerts.slack_channel``), which an incoming webhook cannot."""

    def __init__(self, endpoint: SlackEndpoint):
        self.endpoint = endpoint

    def send(self, alert: Alert) -> None:
        from slack_sdk import WebClient
        from slack_sdk.errors import SlackApiError

        body = slack_message(alert, self.endpoint.channel)
        client = WebClient(token=self.endpoint.token, base_url=self.endpoint.api_url, timeout=10)
        try:
            client.chat_postMessage(**body)
        except SlackApiError as exc:
            raise UnavailableError(
                f"Slack API ({self.endpoint.conn_id}) refused the message to "
                f"{self.endpoint.channel}: {exc.response.get('error')}"
            ) from None
        except Exception as exc:
            raise UnavailableError(
                f"Slack API ({self.endpoint.conn_id}) at {self.endpoint.api_url} unreachable: {exc}"
            ) from None
        log.info("alert sent to %s: %s", self.endpoint.channel, alert.name)


def slack_sink(endpoint: SlackEndpoint) -> AlertSink:
    """The Web API when the endpoint has a bot token (a channel was chosen), else the webhook."""
    return SlackApiSink(endpoint) if endpoint.token else SlackWebhookSink(endpoint)
