"""The step engine shared by failover and failback: runs steps in order, times them, stops at the first failure or
rejection, writes its progress to S3 while it runs (:mod:`disaster_recovery.failover.progress`),
and publishes the result document (S3 history and Slack)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from disaster_recovery.clients.s3 import regional_store
from disaster_recovery.clients.slack import Alert, slack_sink
from disaster_recovery.config.endpoints import Deployment
from disaster_recovery.config.model import Settings
from disaster_recovery.errors import AbortedError, DisasterRecoveryError
from disaster_recovery.failover.plan import (
    COMPLETED,
    Plan,
    Progress,
    first_line,
    record,
    settled_status,
)
from disaster_recovery.failover.progress import RUNNING, RunProgress
from disaster_recovery.monitoring.health import (
    utcnow,
)

log = logging.getLogger(__name__)


def result_document(
    kind: str,
    plan: Plan,
    *,
    reason: str,
    initiated_by: str,
    status: str,
    records: list[dict[str, Any]],
    timings: dict[str, float],
    started: float,
    started_at: str,
    error: str | None = None,
) -> dict[str, Any]:
    """The seed's shape plus per-step timings, records and warnings (what a step could not do)."""
    completed = [r["step"] for r in records if r["status"] in ("done", "already_done", "approved")]
    status, warnings = settled_status(status, records)
    document: dict[str, Any] = {
        "status": status,
        "kind": kind,
        "steps_completed": completed,
        "new_primary": plan.target if status in COMPLETED else plan.source,
        "total_time_seconds": round(time.monotonic() - started, 3),
        "step_seconds": timings,
        "reason": reason,
        "initiated_by": initiated_by,
        "run_id": plan.run_id,
        "dry_run": plan.dry_run,
        "started_at": started_at,
        "finished_at": utcnow().isoformat(),
        "steps": records,
        "warnings": warnings,
    }
    if error:
        document["error"] = error
    return document


def run_steps(
    kind: str,
    plan: Plan,
    steps: list[tuple[str, Callable[[dict[str, Any]], dict[str, Any]]]],
    *,
    reason: str,
    initiated_by: str,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run ``steps`` in order (each gets the records so far by step name), timing each; stop at
    the first failure or abort. Returns the result document (never raises a step's error)."""
    started, started_at = time.monotonic(), utcnow().isoformat()
    say = progress or (lambda _message: None)
    records: list[dict[str, Any]] = []
    by_step: dict[str, dict[str, Any]] = {}
    timings: dict[str, float] = {}
    status, error = "completed", None
    watch = run_progress(plan, kind, tuple(name for name, _ in steps), reason, initiated_by)
    for number, (name, function) in enumerate(steps, 1):
        say(f"[{number}/{len(steps)}] {name.upper()} ...")
        watch.step(name, RUNNING)
        began = time.monotonic()
        try:
            outcome = function(by_step)
        except AbortedError as exc:
            status, error = "aborted", str(exc)
            outcome = record(name, "aborted", error=str(exc))
        except Exception as exc:
            # Any error ends the run with a result that names the step (psycopg, botocore and
            # redis errors included): the operator needs the document more than a traceback.
            log.exception("%s step %s failed", kind, name)
            text = (
                str(exc)
                if isinstance(exc, DisasterRecoveryError)
                else f"{type(exc).__name__}: {exc}"
            )
            status, error = "failed", f"{name}: {text}"
            outcome = record(name, "failed", error=text)
        timings[name] = round(time.monotonic() - began, 3)
        records.append(outcome)
        by_step[name] = outcome
        approved_by = outcome.get("by") if outcome["status"] == "approved" else None
        watch.step(name, outcome["status"], seconds=timings[name], by=approved_by)
        say(f"[{number}/{len(steps)}] {name.upper()}: {outcome['status']} ({timings[name]:.2f} s)")
        if outcome["status"] in ("aborted", "failed", "rejected"):
            if outcome["status"] == "rejected":
                status, error = "aborted", f"rejected at {name}"
            break
    if plan.dry_run and status == "completed":
        status = "dry_run"
    from disaster_recovery.failover.undo import settle_result

    result = settle_result(
        plan,
        result_document(
            kind,
            plan,
            reason=reason,
            initiated_by=initiated_by,
            status=status,
            records=records,
            timings=timings,
            started=started,
            started_at=started_at,
            error=error,
        ),
    )
    watch.finish(result["status"])
    return result


def run_progress(
    plan: Plan, kind: str, steps: tuple[str, ...], reason: str, initiated_by: str
) -> RunProgress:
    """The run's progress document in S3 (see :mod:`disaster_recovery.failover.progress`)."""
    return RunProgress(
        plan.deployment,
        plan.target,
        kind,
        plan.run_id,
        steps,
        source=plan.source,
        target=plan.target,
        reason=reason,
        initiated_by=initiated_by,
        dry_run=plan.dry_run,
    )


def history_key(settings: Settings, result: dict[str, Any]) -> str:
    finished = result.get("finished_at") or utcnow().isoformat()
    return (
        f"{settings.storage.prefix}/failovers/{finished[:4]}/"
        f"{result['run_id']}_{result.get('kind', 'failover')}.json"
    )


def publish_result(
    deployment: Deployment, region: str, result: dict[str, Any], sink: Any = None
) -> dict[str, Any]:
    """Store the result with the run history in ``region``'s bucket and post it to Slack.
    Neither failure hides the result: each is reported in the returned dict."""

    settings = deployment.settings
    published: dict[str, Any] = {}
    try:
        key = history_key(settings, result)
        regional_store(deployment, region).put_json(key, result)
        published["history"] = f"s3://{settings.bucket(region)}/{key}"
    except DisasterRecoveryError as exc:
        published["history_error"] = first_line(exc)
    ok = result["status"] in (*COMPLETED, "dry_run")
    kind = result.get("kind", "failover")
    dry_run = bool(result.get("dry_run"))
    rehearsal = "DRY RUN, nothing was changed: " if dry_run else ""
    warned = result["status"] == "completed_with_warnings"
    alert = Alert(
        # FailoverFailed is not in the catalogue of Info alerts, so it goes out as Critical;
        # a dry run's outcome never does (Alert.dry_run makes it Info).
        name="FailoverCompletedWithWarnings"
        if warned
        else "FailoverCompleted"
        if ok
        else "FailoverFailed",
        summary=(
            f"{rehearsal}{kind} {result['status']}: primary is {result['new_primary']} "
            f"({result['total_time_seconds']:.1f} s)"
        ),
        dry_run=dry_run,
        details={
            "reason": result.get("reason"),
            "initiated_by": result.get("initiated_by"),
            "steps": ", ".join(result["steps_completed"]),
            "error": result.get("error"),
            "warnings": "; ".join(result.get("warnings") or []) or None,
            "undone": "; ".join(result.get("undone") or []) or None,
            "left_changed": "; ".join(
                f"{c['what']} (undo: {c['undo']})" for c in result.get("left_changed") or []
            )
            or None,
            "history": published.get("history"),
        },
    )
    try:
        (sink or slack_sink(deployment.slack())).send(alert)
        published["slack"] = "sent"
    except DisasterRecoveryError as exc:
        published["slack_error"] = first_line(exc)
    return published
