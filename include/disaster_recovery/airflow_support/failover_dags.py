"""The Airflow side of health checks, failover and failback.

``dr_failover`` and ``dr_failback`` differ only by their steps and direction, so one factory
(:func:`build_switch_dag`) builds both: one TaskGroup per step, the DECIDE group a Slack message
with the approval link plus an ``ApprovalOperator`` (a timeout fails it: never "proceed"), and a
final ``report`` task that runs whatever happened, turns the steps' XComs into the result
document, stores it in S3 with the run history and posts it to Slack. Task bodies call
:func:`run_step`, which calls the library's step functions.

Library imports sit inside task bodies on purpose: DAG files import this module at parse time,
which must stay cheap (no psycopg, boto3 or redis; Airflow's parse-time budget).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from disaster_recovery.airflow_support.alerting import as_task_failure
from disaster_recovery.airflow_support.dag_defaults import dag_defaults
from disaster_recovery.clients.slack import Alert
from disaster_recovery.config.model import load_settings
from disaster_recovery.errors import DisasterRecoveryError
from disaster_recovery.failover.names import FAILBACK_STEPS, FAILOVER_STEPS

log = logging.getLogger(__name__)

HEALTH_STATE_VARIABLE = "dr_health_state"
APPROVAL_TASK = "decide.approval"
StepFunction = Callable[[dict[str, Any]], dict[str, Any]]


def _step_function(kind: str, step: str, plan: Any, params: dict[str, Any]) -> StepFunction:
    """The library's own step (``failover_steps`` / ``failback_steps``), so a DAG task and an
    in-process run (CLI, API, drills) execute the same code. DECIDE is the approval task here."""
    reason, initiated_by = params.get("reason", ""), params.get("initiated_by", "")
    if kind == "failover":
        from disaster_recovery.failover.steps import failover_steps

        failing_since = _failing_since() if step == "detect" else None
        return dict(failover_steps(plan, reason, initiated_by, None, failing_since))[step]
    from disaster_recovery.failover.failback import failback_steps

    return dict(failback_steps(plan, reason, initiated_by, None))[step]


STEP_NAMES = {"failover": FAILOVER_STEPS, "failback": FAILBACK_STEPS}


def _failing_since() -> str | None:
    """When dr_health_check first saw the primary fail in this incident (its Variable)."""
    from airflow.sdk import Variable

    state = Variable.get(HEALTH_STATE_VARIABLE, default=None, deserialize_json=True)
    return (state or {}).get("primary_failing_since")


def _approval(ti: Any) -> dict[str, Any] | None:
    answer = ti.xcom_pull(task_ids=APPROVAL_TASK, key="decision")
    return answer if isinstance(answer, dict) else None


def approver(user: Any) -> dict[str, str]:
    """Who answered, as ``responded_by`` (name) and ``responded_by_id``: Airflow 3.3 hands a
    dict ``{"id": ..., "name": ...}``, older versions a string; never record a dict's repr."""
    if isinstance(user, dict):
        user_id = str(user.get("id") or "")
        return {"responded_by": str(user.get("name") or user_id), "responded_by_id": user_id}
    name = str(getattr(user, "name", None) or user or "")
    return {"responded_by": name, "responded_by_id": str(getattr(user, "id", None) or name)}


def approval_operator(**kwargs: Any) -> Any:
    """An ``ApprovalOperator`` that also records the decision in XCom (key ``decision``): the
    value a resumed HITL task returns is not kept, and later tasks need the answer and the
    form's ``accept_data_loss``."""
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    class FailoverApproval(ApprovalOperator):
        def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
            if "error" not in event:
                context["ti"].xcom_push(
                    key="decision",
                    value={
                        "chosen_options": list(event["chosen_options"]),
                        "params_input": dict(event.get("params_input") or {}),
                        **approver(event.get("responded_by_user")),
                    },
                )
            return super().execute_complete(context, event)

    return FailoverApproval(**kwargs)


def plan_run_id(dag_run_id: str) -> str:
    """A DAG run's id as its Plan's (safe in an S3 key)."""
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in dag_run_id)


def _plan(kind: str, context: dict[str, Any]) -> Any:
    from disaster_recovery.airflow_support.connections import deployment
    from disaster_recovery.failover.plan import Plan

    params = context["params"]
    answer = _approval(context["ti"]) or {}
    regions = (deployment_settings := deployment()).settings.regions
    source, target = (
        (regions.primary, regions.secondary)
        if kind == "failover"
        else (regions.secondary, regions.primary)
    )
    accept = bool(params.get("accept_data_loss")) or bool(
        (answer.get("params_input") or {}).get("accept_data_loss")
    )
    return Plan(
        deployment_settings,
        source,
        target,
        run_id=plan_run_id(context["dag_run"].run_id),
        dry_run=bool(params.get("dry_run")),
        accept_data_loss=accept,
    )


def run_step(kind: str, step: str) -> dict[str, Any]:
    """One step of ``kind`` (failover/failback) inside its task; the record goes to XCom.
    Errors are noted in XCom (key ``error``) for the report; permanent ones and aborts fail the
    task without retries."""
    from airflow.sdk import get_current_context

    context: Any = get_current_context()
    ti = context["ti"]
    records = {
        name: ti.xcom_pull(task_ids=f"{name}.run") for name in STEP_NAMES[kind] if name != "decide"
    }
    plan = _plan(kind, context)
    function = _step_function(kind, step, plan, context["params"])
    watch = _progress(kind, plan, context)
    watch.step(step, "running")
    began = time.monotonic()
    try:
        outcome = function({k: v for k, v in records.items() if v})
    except Exception as exc:
        ti.xcom_push(key="error", value=f"{type(exc).__name__}: {exc}")
        watch.step(step, "failed", seconds=time.monotonic() - began)
        failure = as_task_failure(exc)
        if failure is exc:
            raise
        raise failure from exc
    outcome["seconds"] = round(time.monotonic() - began, 3)
    watch.step(step, outcome["status"], seconds=outcome["seconds"])
    log.info("%s %s: %s", kind, step, outcome["status"])
    return outcome


def _progress(kind: str, plan: Any, context: dict[str, Any]) -> Any:
    """The run's progress document in S3, continued from the tasks before; the approval (its
    own operator) is written by the first task after it."""
    from disaster_recovery.failover.engine import run_progress

    params = context["params"]
    watch = run_progress(
        plan, kind, STEP_NAMES[kind], params.get("reason", ""), params.get("initiated_by", "")
    ).resume()
    answer = _approval(context["ti"])
    decided = any(s["step"] == "decide" and s.get("state") for s in watch.document["steps"])
    if answer is not None and not decided:
        chosen = (answer.get("chosen_options") or [""])[0]
        watch.document.setdefault("approved_by", answer.get("responded_by"))
        watch.step("decide", "approved" if chosen == "Approve" else "rejected")
    return watch


def approval_url(context: dict[str, Any]) -> str:
    settings = load_settings()
    ti = context["ti"]
    return (
        f"{settings.alerts.airflow_base_url.rstrip('/')}/dags/{ti.dag_id}/runs/{ti.run_id}"
        f"/tasks/{APPROVAL_TASK}/required_actions"
    )


def request_approval(kind: str) -> str:
    """Post the approval request (with the link to the approval page) to Slack; the Markdown body
    for the ApprovalOperator."""
    from airflow.sdk import get_current_context

    from disaster_recovery.airflow_support.alerting import AirflowSlackSink
    from disaster_recovery.failover.steps import approval_body

    context: Any = get_current_context()
    params = context["params"]
    detected = context["ti"].xcom_pull(task_ids="detect.run") or {}
    evidence = detected.get("evidence") or {}
    if not evidence:
        body = f"**{kind}**: {detected.get('note', 'no evidence recorded')}"
    else:
        body = approval_body(evidence, params.get("reason", ""), params.get("initiated_by", ""))
    if params.get("dry_run"):
        body = "**DRY RUN: nothing will change.**\n\n" + body
    link = approval_url(context)
    try:
        AirflowSlackSink().send(
            Alert(
                name="FailoverApprovalRequired",
                summary=(
                    ("DRY RUN, nothing will change: " if params.get("dry_run") else "")
                    + f"{kind} waits for approval: {params.get('reason')} "
                    f"(by {params.get('initiated_by')})"
                ),
                dry_run=bool(params.get("dry_run")),
                details={
                    "estimated data loss": (evidence.get("estimated_data_loss") or {}).get(
                        "summary"
                    ),
                    "timeout": f"{load_settings().failover.approval_timeout} (no answer aborts)",
                },
                link=link,
            )
        )
    except Exception:
        # The approval page works without Slack; a person may already be watching it.
        log.exception("could not post the approval request to Slack")
    return body + f"\n\n[Approval page]({link})"


def report(kind: str) -> dict[str, Any]:
    """The run's result from the steps' XComs: completed, aborted (rejected, timed out, refused)
    or failed; stored with the run history and posted to Slack. Fails the task when failed."""
    from airflow.sdk import get_current_context
    from airflow.sdk.exceptions import AirflowFailException

    from disaster_recovery.airflow_support.alerting import AirflowSlackSink
    from disaster_recovery.failover.engine import publish_result
    from disaster_recovery.failover.plan import COMPLETED, record, settled_status

    context: Any = get_current_context()
    ti, params = context["ti"], context["params"]
    plan = _plan(kind, context)
    records: list[dict[str, Any]] = []
    status, error = "completed", None
    for step in STEP_NAMES[kind]:
        if step == "decide":
            answer = _approval(ti)
            if answer is None:
                status, error = (
                    "aborted",
                    "no approval (timed out or failed): aborted, nothing changed",
                )
                records.append(record("decide", "timed_out"))
                break
            chosen = (answer.get("chosen_options") or [""])[0]
            records.append(
                record(
                    "decide",
                    "approved" if chosen == "Approve" else "rejected",
                    by=answer.get("responded_by"),
                    by_id=answer.get("responded_by_id"),
                )
            )
            if chosen != "Approve":
                status, error = "aborted", "rejected at decide: nothing changed"
                break
            continue
        outcome = ti.xcom_pull(task_ids=f"{step}.run")
        if not outcome:
            failure = ti.xcom_pull(task_ids=f"{step}.run", key="error") or "did not complete"
            status = "aborted" if str(failure).startswith("AbortedError") else "failed"
            error = f"{step}: {failure}"
            records.append(record(step, status, error=str(failure)))
            break
        records.append(outcome)
    if status == "completed" and plan.dry_run:
        status = "dry_run"
    status, warnings = settled_status(status, records)
    started = context["dag_run"].start_date or datetime.now(timezone.utc)
    result = {
        "status": status,
        "kind": kind,
        "steps_completed": [
            r["step"] for r in records if r["status"] in ("done", "already_done", "approved")
        ],
        "new_primary": plan.target if status in COMPLETED else plan.source,
        "total_time_seconds": round((datetime.now(timezone.utc) - started).total_seconds(), 3),
        "step_seconds": {
            r["step"]: r.get("seconds") for r in records if r.get("seconds") is not None
        },
        "reason": params.get("reason"),
        "initiated_by": params.get("initiated_by"),
        "run_id": plan.run_id,
        "dry_run": plan.dry_run,
        "started_at": started.isoformat(),
        "finished_at": datetime.now(timezone.utc).isoformat(),
        "steps": records,
        "warnings": warnings,
    }
    if error:
        result["error"] = error
    from disaster_recovery.failover.undo import settle_result

    settle_result(plan, result)
    _progress(kind, plan, context).finish(result["status"])
    result["published"] = publish_result(
        plan.deployment, plan.target, result, sink=AirflowSlackSink()
    )
    if status == "failed":
        raise AirflowFailException(f"{kind} failed: {error}")
    return result


def build_switch_dag(kind: str, dag_id: str, doc_md: str | None, tags: list[str]) -> Any:
    """``dr_failover`` / ``dr_failback``: manual trigger form, one TaskGroup per step, approval."""
    from airflow.sdk import DAG, Param, TaskGroup, task

    default_reason = "manual failover" if kind == "failover" else "primary region recovered"
    settings = load_settings()
    with DAG(
        doc_md=doc_md,
        schedule=None,
        tags=tags,
        **dag_defaults(settings, dag_id=dag_id, retries=1, retry_delay=timedelta(seconds=10)),
        params={
            "reason": Param(
                default_reason, type="string", minLength=1, description="Why (recorded)"
            ),
            "initiated_by": Param(
                "manual", type="string", description="Who or what: a name, or auto"
            ),
            "dry_run": Param(False, type="boolean", description="Run every check, change nothing"),
            "accept_data_loss": Param(
                False,
                type="boolean",
                description="Promote even when the old primary is unreachable",
            ),
        },
    ) as dag:
        previous: Any = None
        for step in STEP_NAMES[kind]:
            with TaskGroup(group_id=step) as group:
                if step == "decide":
                    body = task(task_id="notify", retries=0, multiple_outputs=False)(
                        request_approval
                    )(kind)
                    approval = approval_operator(
                        task_id="approval",
                        subject=(
                            "{{ 'DRY RUN (nothing will change): ' if params.dry_run else '' }}"
                            f"Approve the {kind} ({{{{ params.reason }}}})?"
                        ),
                        body="{{ ti.xcom_pull(task_ids='decide.notify') }}",
                        # failover.approval_timeout, read from the local policy file when the
                        # DAG is built (no network at parse time), like every schedule.
                        response_timeout=settings.failover.approval_timeout,
                        params={
                            "accept_data_loss": Param(
                                False, type="boolean", description="Accept possible data loss"
                            )
                        },
                        retries=0,
                    )
                    body >> approval
                else:
                    task(
                        task_id="run", retries=0 if step == "detect" else 1, multiple_outputs=False
                    )(run_step)(kind, step)
            if previous is not None:
                previous >> group
            previous = group
        finish = task(task_id="report", trigger_rule="all_done", retries=1, multiple_outputs=False)(
            report
        )(kind)
        previous >> finish
    return dag


# -- dr_health_check ----------------------------------------------------------------------------


def write_heartbeat(found: Any, primary: str, health: dict[str, Any]) -> dict[str, Any] | None:
    """One row in dr.heartbeat on a healthy primary: restores and failovers measure their data
    loss against these rows."""
    from disaster_recovery.monitoring import heartbeat
    from disaster_recovery.monitoring.health import region_postgres

    if health["primary"]["database"] != "healthy":
        return None
    try:
        endpoint = region_postgres(found, primary)
        heartbeat.ensure_schema(endpoint)
        beat_id, at = heartbeat.beat(endpoint, "dr_health_check")
    except DisasterRecoveryError as exc:
        log.warning("could not write a heartbeat: %s", exc)
        return None
    return {"id": beat_id, "committed_at": at.isoformat()}


def health_check() -> dict[str, Any]:
    """One check: measure, record in S3, alert once per incident (state in an Airflow Variable),
    and say whether to trigger dr_failover (N consecutive primary failures)."""
    from airflow.sdk import Variable, get_current_context

    from disaster_recovery.airflow_support.alerting import AirflowSlackSink
    from disaster_recovery.airflow_support.connections import deployment
    from disaster_recovery.monitoring.fencing import fence_deposed
    from disaster_recovery.monitoring.health import check_health, current_roles, evaluate
    from disaster_recovery.monitoring.history import record_check

    found = deployment()
    settings = found.settings
    # First: a deposed primary that came back writable is fenced before anything else looks.
    fenced = fence_deposed(found, AirflowSlackSink(settings))
    primary, secondary = current_roles(found)
    health = check_health(found, primary, secondary)
    health["heartbeat"] = write_heartbeat(found, primary, health)
    ti = get_current_context()["ti"]
    # This task, so that an alert it raises links to its log (Slack and the console).
    health["run"] = {
        "dag_id": ti.dag_id,
        "run_id": ti.run_id,
        "task_id": ti.task_id,
        "try_number": ti.try_number,
    }
    state = Variable.get(HEALTH_STATE_VARIABLE, default=None, deserialize_json=True)
    verdict = evaluate(
        health,
        state,
        settings.thresholds.replication_lag.total_seconds(),
        settings.thresholds.health_failures_before_failover,
        settings.failover.auto_trigger,
    )
    Variable.set(HEALTH_STATE_VARIABLE, verdict["state"], serialize_json=True)
    sink = AirflowSlackSink(settings)
    for alert in verdict["alerts"]:
        try:
            sink.send(
                Alert(
                    alert["name"],
                    alert["summary"],
                    details={
                        "lag_seconds": health["replication_lag_seconds"],
                        "errors": "; ".join(health["errors"].values()),
                    },
                    resolved=alert["resolved"],
                    link=ti.log_url,
                )
            )
        except Exception:
            log.exception("could not send %s", alert["name"])
    # The full record in the secondary's bucket (it survives the primary), the line that
    # availability and the console read in both.
    recorded = record_check(found, health, verdict, (secondary, primary))
    return {
        "recorded": recorded,
        "fenced": fenced,
        "health": health,
        "alerts": verdict["alerts"],
        "primary_failures": verdict["state"]["primary_failures"],
        "trigger_failover": verdict["trigger_failover"],
        "reason": verdict["reason"],
    }
