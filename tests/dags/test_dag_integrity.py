"""DAG integrity: every DAG parses, carries the required attributes, and parsing the folder does
no network or database I/O and stays within a stated time budget."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
CONTRACT_DAG_IDS = {
    "postgresql_backup_full",
    "postgresql_backup_incremental",
    "postgresql_wal_archive",
    "postgresql_backup_weekly",
    "postgresql_backup_monthly",
    "postgresql_backup_cleanup",
    "dr_health_check",
    "dr_failover",
    "dr_failback",
    "dr_drill_monthly",
    "dr_drill_quarterly",
}
ALLOWED_TAGS = {"dr", "backup", "restore", "wal", "failover", "health", "drill", "maintenance"}
PARSE_BUDGET_SECONDS = 10.0
# Tasks that must not retry, and why: a health check runs again next minute anyway; a drill
# retry would repeat a failover; DETECT records the evidence of its moment; a person's approval
# (and the message asking for it) is not a thing to repeat.
NEVER_RETRIED = {
    ("dr_health_check", "check"),
    ("dr_health_check", "primary_failed_repeatedly"),
    ("dr_health_check", "trigger_failover"),
    ("dr_drill_monthly", "drill"),
    ("dr_drill_quarterly", "drill"),
    *(
        (dag, task)
        for dag in ("dr_failover", "dr_failback")
        for task in ("detect.run", "decide.notify", "decide.approval")
    ),
}

# Runs in a fresh interpreter: sockets and the metadata database are made to explode, so any
# I/O at parse time is an import error; then the folder is parsed and timed.
PARSE_SCRIPT = r"""
import json, socket, sys, time
def refuse(*args, **kwargs):
    raise RuntimeError("network access at DAG parse time")
socket.socket.connect = refuse
socket.create_connection = refuse
import sqlalchemy
def no_engine(*args, **kwargs):
    raise RuntimeError("database access at DAG parse time")
from airflow.models import DagBag
import airflow.settings
airflow.settings.engine = None
sqlalchemy.create_engine = no_engine
start = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
elapsed = time.perf_counter() - start
dags = {}
for dag_id, dag in bag.dags.items():
    dags[dag_id] = {
        "fileloc": dag.fileloc, "doc_md": dag.doc_md, "tags": sorted(dag.tags or []),
        "catchup": dag.catchup, "max_active_runs": dag.max_active_runs,
        "start_date": str(dag.start_date) if dag.start_date else None,
        "no_retries": [t.task_id for t in dag.tasks if t.retries < 1],
        "schedule": getattr(dag.timetable, "summary", type(dag.timetable).__name__),
    }
print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": dags,
                  "seconds": elapsed}))
"""


@pytest.fixture(scope="module")
def parsed() -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", PARSE_SCRIPT, str(DAGS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_no_import_errors_and_no_io_at_parse_time(parsed: dict[str, Any]) -> None:
    assert parsed["errors"] == {}


def test_parse_time_budget(parsed: dict[str, Any]) -> None:
    assert parsed["seconds"] < PARSE_BUDGET_SECONDS, f"parsing dags/ took {parsed['seconds']:.1f} s"


def test_every_dag_file_holds_its_dag(parsed: dict[str, Any]) -> None:
    files = {p.stem for p in DAGS.glob("*.py") if not p.name.startswith("_")}
    assert set(parsed["dags"]) == files
    assert files <= CONTRACT_DAG_IDS


def test_required_attributes(parsed: dict[str, Any]) -> None:
    for dag_id, dag in parsed["dags"].items():
        assert dag["doc_md"] and len(dag["doc_md"]) > 80, f"{dag_id}: doc_md missing"
        assert dag["tags"] and set(dag["tags"]) <= ALLOWED_TAGS, f"{dag_id}: tags {dag['tags']}"
        assert dag["catchup"] is False, dag_id
        assert dag["max_active_runs"] == 1, dag_id
        assert dag["start_date"], dag_id
        unexpected = {(dag_id, t) for t in dag["no_retries"]} - NEVER_RETRIED
        assert not unexpected, f"{dag_id}: tasks without retries: {unexpected}"


def test_the_guard_catches_io_at_parse_time(tmp_path: Path) -> None:
    (tmp_path / "bad_dag.py").write_text(
        "import socket\nfrom airflow.sdk import DAG\n"
        "socket.create_connection(('127.0.0.1', 9))\n"
        "dag = DAG('bad_dag', schedule=None)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", PARSE_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    errors = json.loads(result.stdout.strip().splitlines()[-1])["errors"]
    assert any("network access at DAG parse time" in e for e in errors.values())
