"""The backup DAGs parse cleanly, fast, without network, with the schedules of the policy."""

from __future__ import annotations

import itertools
import socket
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

REPO = Path(__file__).resolve().parents[2]
DAG_IDS = {
    "postgresql_backup_full": "0 3 * * *",
    "postgresql_backup_weekly": "0 3 * * 1",
    "postgresql_backup_monthly": "0 3 1 * *",
    "postgresql_backup_cleanup": "30 4 * * *",
}


@pytest.fixture(scope="module")
def dagbag() -> Any:
    from airflow.models import DagBag

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("a DAG file opened a network connection at parse time")

    original = socket.socket.connect
    socket.socket.connect = no_network  # type: ignore[method-assign,assignment]
    try:
        started = time.monotonic()
        bag = DagBag(dag_folder=str(REPO / "dags"))
        bag.parse_seconds = time.monotonic() - started  # type: ignore[attr-defined]
    finally:
        socket.socket.connect = original  # type: ignore[method-assign]
    return bag


def test_no_import_errors_and_fast_parse(dagbag: Any) -> None:
    assert dagbag.import_errors == {}
    assert set(DAG_IDS) <= set(dagbag.dag_ids)
    assert dagbag.parse_seconds < 10


@pytest.mark.parametrize(("dag_id", "cron"), DAG_IDS.items())
def test_dag_attributes(dagbag: Any, dag_id: str, cron: str) -> None:
    dag = dagbag.dags[dag_id]
    assert dag.catchup is False and dag.max_active_runs == 1
    assert dag.doc_md and dag_id in dag.doc_md and "re-run" in dag.doc_md
    assert {"dr", "backup"} <= set(dag.tags)
    assert dag.timetable.expression == cron
    assert str(getattr(dag.timetable.timezone, "name", dag.timetable.timezone)) == "America/Bogota"
    assert dag.default_args["retries"] == 2
    assert all(task.on_failure_callback for task in dag.tasks)


def test_schedules_are_in_the_configured_time_zone(dagbag: Any) -> None:
    from croniter import croniter

    timetable = dagbag.dags["postgresql_backup_full"].timetable
    bogota = ZoneInfo(str(getattr(timetable.timezone, "name", timetable.timezone)))
    after = datetime(2025, 6, 1, 12, 0, tzinfo=bogota)
    next_run = croniter(timetable.expression, after).get_next(datetime)
    assert (next_run.day, next_run.hour) == (2, 3)
    assert next_run.astimezone(ZoneInfo("UTC")).hour == 8  # Bogota is UTC-5, no DST


def test_backup_dag_task_graph(dagbag: Any) -> None:
    dag = dagbag.dags["postgresql_backup_full"]
    order = ["dump", "checksum", "verify", "replicate", "publish"]
    assert {t.task_id for t in dag.tasks} == set(order)
    for upstream, downstream in itertools.pairwise(order):
        assert downstream in dag.get_task(upstream).downstream_task_ids
