"""Helpers for the failover tests: a person answering the
approval from a background thread (through Airflow's REST route, in process), a timeout, a
writer that commits continuously and remembers what PostgreSQL acknowledged, and the state a
stopped failover leaves in the source region, read back from the servers."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import redis

from disaster_recovery.clients.services import http_json
from dr_sandbox import Sandbox


def _awaiting_run(dag_id: str, task_id: str, timeout: float) -> tuple[str, Any]:
    """(run_id, ti) once ``task_id`` of the newest run of ``dag_id`` waits for input."""
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with create_session() as session:
            ti = (
                session.query(TaskInstance)
                .filter(
                    TaskInstance.dag_id == dag_id,
                    TaskInstance.task_id == task_id,
                    TaskInstance.state == TaskInstanceState.AWAITING_INPUT,
                )
                .order_by(TaskInstance.queued_dttm.desc())
                .first()
            )
            if ti is not None:
                return ti.run_id, ti.id
        time.sleep(0.2)
    raise TimeoutError(f"{dag_id}.{task_id} never waited for input")


class ApprovalAnswerer(threading.Thread):
    """Answers ``decide.approval`` like a person in the UI (REST PATCH), or lets it time out."""

    def __init__(
        self,
        dag_id: str,
        choice: str | None,
        params_input: dict[str, Any] | None = None,
        timeout: float = 120,
    ):
        super().__init__(daemon=True)
        self.dag_id, self.choice, self.params_input, self.timeout = (
            dag_id,
            choice,
            params_input or {},
            timeout,
        )
        self.error: BaseException | None = None
        self.response: Any = None

    def run(self) -> None:
        try:
            run_id, ti_id = _awaiting_run(self.dag_id, "decide.approval", self.timeout)
            if self.choice is None:
                expire(ti_id)
            else:
                self.response = answer(self.dag_id, run_id, self.choice, self.params_input)
        except BaseException as exc:
            self.error = exc


def answer(dag_id: str, run_id: str, choice: str, params_input: dict[str, Any]) -> Any:
    from airflow.api_fastapi.app import create_app
    from airflow.configuration import conf
    from fastapi.testclient import TestClient

    conf.set("core", "simple_auth_manager_all_admins", "True")
    client = TestClient(create_app(apps="core"))
    response = client.patch(
        f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/decide.approval/-1/hitlDetails",
        json={"chosen_options": [choice], "params_input": params_input},
    )
    assert response.status_code == 200, response.text
    return response.json()


def expire(ti_id: Any) -> None:
    """Move the approval's deadline into the past and let the scheduler's check time it out."""
    from datetime import datetime, timedelta, timezone

    from airflow.jobs.job import Job
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        ti = session.get(TaskInstance, ti_id)
        ti.trigger_timeout = datetime.now(timezone.utc) - timedelta(seconds=1)
    SchedulerJobRunner(job=Job()).check_awaiting_input_timeouts()


class Writer(threading.Thread):
    """Commits a row at a time into ``acked`` until stopped; remembers every acknowledged id."""

    def __init__(self, dsn: str):
        super().__init__(daemon=True)
        self.dsn = dsn
        self.acknowledged: list[int] = []
        self.failures = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        conn = None
        while not self.stopping.is_set():
            try:
                if conn is None:
                    conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=2)
                row = conn.execute("INSERT INTO acked DEFAULT VALUES RETURNING id").fetchone()
                assert row is not None
                # execute() returned after COMMIT: the primary acknowledged this row.
                self.acknowledged.append(int(row[0]))
            except psycopg.Error:
                self.failures += 1
                conn = None
                time.sleep(0.01)

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)


# -- the source region after a stopped failover --------------------------------------------------


def app_read_only(box: Sandbox, region: str) -> bool:
    # 503 while its database is down; the body still says whether it is read-only.
    status, body = http_json(f"{box.app_url(region)}/health", timeout=3)
    assert status in (200, 503) and isinstance(body, dict), (status, body)
    return bool(body["read_only"])


def redis_accepts_writes(box: Sandbox) -> bool:
    """A write on the primary Redis returns at once (a paused master holds it until timeout)."""
    endpoint = box.redis("primary")
    client = redis.Redis(host=endpoint.host, port=endpoint.port, socket_timeout=2)
    try:
        return bool(client.set("dr:undo-test", "1"))
    except redis.TimeoutError:
        return False
    finally:
        client.close()


def standby_signal(box: Sandbox, role: str) -> bool:
    return (box.instance(role).data_dir / "standby.signal").exists()
