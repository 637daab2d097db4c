"""Alerts from Airflow tasks, through the slack provider, and the no-retry rule for errors that
retrying cannot fix.

Library imports sit inside task bodies on purpose: DAG files import this module at parse time,
which must stay cheap (no psycopg, boto3 or redis; Airflow's parse-time budget).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from disaster_recovery.clients.slack import Alert, one_line, slack_message
from disaster_recovery.config.model import Settings, load_settings
from disaster_recovery.errors import AbortedError, PermanentError, VerificationError

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


class AirflowSlackSink:
    """Delivers alerts through the slack provider: with ``alerts.slack_channel`` set, the Web
    API's ``SlackHook`` (Connection ``connections.slack_api``, a bot token) posts to that
    channel; otherwise ``SlackWebhookHook`` (``connections.slack_alerts``) posts to the
    webhook's own channel, with no channel in the body (a webhook cannot choose one)."""

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or load_settings()

    def send(self, alert: Alert) -> None:
        channel = self.settings.alerts.slack_channel
        if channel:
            from airflow.providers.slack.hooks.slack import SlackHook

            api = SlackHook(slack_conn_id=self.settings.connections.slack_api, timeout=10)
            api.client.chat_postMessage(**slack_message(alert, channel))
            return
        from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

        hook = SlackWebhookHook(
            slack_webhook_conn_id=self.settings.connections.slack_alerts, timeout=10
        )
        hook.send_dict(slack_message(alert, ""))


def fail_fast(function: F) -> F:
    """Turn a :class:`PermanentError` into ``AirflowFailException`` so the task fails without
    retries (bad config, checksum mismatch); other errors propagate and retries apply."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except Exception as exc:
            failure = as_task_failure(exc)
            if failure is exc:
                raise
            raise failure from exc

    return wrapper  # type: ignore[return-value]


def as_task_failure(exc: Exception) -> Exception:
    """The task outcome for ``exc``: ``AirflowFailException`` (fail now, no retry) for errors a
    retry cannot fix (:class:`PermanentError`) and for deliberate stops (:class:`AbortedError`:
    a rejected approval, refused data loss); ``exc`` itself otherwise, so retries apply."""
    from airflow.sdk.exceptions import AirflowFailException

    if isinstance(exc, PermanentError | AbortedError):
        return AirflowFailException(f"{type(exc).__name__}: {exc}")
    return exc


def root_error(exc: BaseException | None) -> BaseException | None:
    """The library error behind Airflow's wrapping, if any."""
    seen = exc
    visited: set[int] = set()
    # The chain can loop (storage re-raises a reader's error "from" boto3's wrapper of it).
    while seen is not None and id(seen) not in visited:
        visited.add(id(seen))
        if isinstance(seen, PermanentError | VerificationError):
            return seen
        seen = seen.__cause__
    return exc


def already_announced(exc: BaseException | None) -> bool:
    """A split brain posts its own ``SplitBrain`` alert, once per incident, when it is found
    (disaster_recovery.monitoring.topology): the failed task adds no second alert for it."""
    from disaster_recovery.monitoring.topology import SplitBrain

    return isinstance(root_error(exc), SplitBrain)


Facts = Callable[[dict[str, Any]], tuple[str, dict[str, Any]]]


def task_alert(
    context: dict[str, Any], name: str, details: dict[str, Any] | None = None, subject: str = ""
) -> Alert:
    """An alert about the task in ``context``: what failed (``subject``, default the task), the
    error in one line, its DAG, run, task, try, the failed check and object when a verification
    failed (then named ``BackupVerificationFailed``), and a link to the task log."""
    ti = context["ti"]
    error = root_error(context.get("exception"))
    facts: dict[str, Any] = {
        **(details or {}),
        "dag": ti.dag_id,
        "run": ti.run_id,
        "task": ti.task_id,
        "try": getattr(ti, "try_number", None),
    }
    if isinstance(error, VerificationError):
        name = "BackupVerificationFailed"
        facts["check"] = error.check or facts.get("check")
        facts["object"] = error.key
    message = one_line(str(error) if error else "no error recorded")
    facts.setdefault("error", message)
    return Alert(
        name=name,
        summary=f"{subject or ti.task_id} failed: {message}",
        details=facts,
        link=getattr(ti, "log_url", None),
    )


def alert_on_failure(
    name: str, facts: Facts | None = None, **details: Any
) -> Callable[[dict[str, Any]], None]:
    """A task ``on_failure_callback`` posting :func:`task_alert` (it fires on the final failure,
    not on a retried one). ``facts(context)`` may add a subject and details of its own."""

    def callback(context: dict[str, Any]) -> None:
        if already_announced(context.get("exception")):
            return
        subject, extra = facts(context) if facts else ("", {})
        alert = task_alert(context, name, {**details, **extra}, subject)
        try:
            AirflowSlackSink().send(alert)
        except Exception:
            # An alerting failure must not hide the task's own failure in the log.
            log.exception("could not send alert %s", alert.name)

    return callback
