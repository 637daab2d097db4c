"""The failover or failback running now, as the DR console shows it: each of the eight steps
with its state and time, and who approved.

Only Airflow knows a run in progress (the result document reaches S3 when the run ends), so
this reads Airflow's metadata database. It runs in the API server, where the plugin lives and
the database is allowed (tasks may not use it).
"""

from __future__ import annotations

from typing import Any

from disaster_recovery.airflow_support.failover_dags import APPROVAL_TASK, STEP_NAMES

SWITCH_DAGS = {"dr_failover": "failover", "dr_failback": "failback"}


def _task_id(step: str) -> str:
    return APPROVAL_TASK if step == "decide" else f"{step}.run"


def _moment(value: Any) -> str | None:
    return value.replace(microsecond=0).isoformat() if value else None


def failover_in_progress(airflow_base_url: str) -> dict[str, Any]:
    """Every running (or queued) dr_failover / dr_failback run with its steps."""
    from airflow.models.dagrun import DagRun
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import select

    base = airflow_base_url.rstrip("/")
    runs: list[dict[str, Any]] = []
    with create_session() as session:
        active = session.scalars(
            select(DagRun).where(
                DagRun.dag_id.in_(list(SWITCH_DAGS)),
                DagRun.state.in_([DagRunState.RUNNING, DagRunState.QUEUED]),
            )
        ).all()
        for run in active:
            kind = SWITCH_DAGS[run.dag_id]
            instances = {
                ti.task_id: ti
                for ti in session.scalars(
                    select(TaskInstance).where(
                        TaskInstance.dag_id == run.dag_id, TaskInstance.run_id == run.run_id
                    )
                ).all()
            }
            steps = []
            for step in STEP_NAMES[kind]:
                ti = instances.get(_task_id(step))
                steps.append(
                    {
                        "step": step,
                        "state": str(ti.state) if ti is not None and ti.state else None,
                        "started_at": _moment(ti.start_date) if ti is not None else None,
                        "seconds": round(ti.duration, 1)
                        if ti is not None and ti.duration
                        else None,
                    }
                )
            approval = instances.get(APPROVAL_TASK)
            approved_by = None
            if approval is not None:
                detail = session.scalar(select(HITLDetail).where(HITLDetail.ti_id == approval.id))
                if detail is not None and detail.responded_by:
                    approved_by = detail.responded_by.get("name") or detail.responded_by.get("id")
            runs.append(
                {
                    "kind": kind,
                    "run_id": run.run_id,
                    "started_at": _moment(run.start_date),
                    "steps": steps,
                    "approved_by": approved_by,
                    "link": f"{base}/dags/{run.dag_id}/runs/{run.run_id}",
                }
            )
    return {"runs": runs}
