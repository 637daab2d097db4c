"""DAG integrity, no servers: every DAG of dags/ parses, carries the required attributes, and
parsing the folder does no network or database I/O within a stated time budget; then each DAG
family's shape (backup, WAL/incremental, health/failover/failback).

Two views of the same folder, one style: ``parsed`` parses it in a fresh interpreter with
sockets and the metadata database made to explode (the folder-wide contract); ``dagbag`` is the
in-process DagBag, parsed once with sockets refused, for the families' DAG objects.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from helpers import DAGS

from disaster_recovery.drills.names import DRILL_STEPS, RESTORE_TOPOLOGY
from disaster_recovery.failover.names import FAILBACK_STEPS, FAILOVER_STEPS

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
# Airflow's own limit (core.dagbag_import_timeout, default 30 s): a file that takes longer to
# import is an import error in production. A contract, not a speed benchmark (bench/ has those).
PARSE_LIMIT_SECONDS = 30.0
# Tasks that must not retry, and why: a health check runs again next minute anyway; a drill
# retry would repeat a failover; DETECT records the evidence of its moment; a person's approval
# (and the message asking for it) is not a thing to repeat.
NEVER_RETRIED = {
    ("dr_health_check", "check"),
    ("dr_health_check", "primary_failed_repeatedly"),
    ("dr_health_check", "trigger_failover"),
    *(
        (f"dr_drill_{kind}", task)
        for kind, steps in DRILL_STEPS.items()
        for task in (*steps, RESTORE_TOPOLOGY, "evidence")
    ),
    *(
        (dag, task)
        for dag in ("dr_failover", "dr_failback")
        for task in ("detect.run", "decide.notify", "decide.approval")
    ),
    *(
        (dag, task)
        for dag in ("dr_drill_monthly", "dr_drill_quarterly")
        for task in ("decide.notify", "decide.approval")
    ),
}
# What protection depends on runs as soon as it is deployed (issue 16): the every-minute health
# check, the WAL archive check, every backup tier, and failover/failback so that the automatic
# trigger (and a manual one) runs. Drills and cleanup wait for an operator to turn them on.
ACTIVE_WHEN_DEPLOYED = {
    "dr_health_check",
    "postgresql_wal_archive",
    "postgresql_backup_full",
    "postgresql_backup_incremental",
    "postgresql_backup_weekly",
    "postgresql_backup_monthly",
    "dr_failover",
    "dr_failback",
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
        "task_ids": [t.task_id for t in dag.tasks],
        "schedule": getattr(dag.timetable, "summary", type(dag.timetable).__name__),
    }
print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": dags,
                  "seconds": elapsed}))
"""


# -- the whole folder, in a fresh interpreter ----------------------------------------------------


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


def test_parsing_stays_within_airflows_import_timeout(parsed: dict[str, Any]) -> None:
    assert parsed["seconds"] < PARSE_LIMIT_SECONDS, f"parsing dags/ took {parsed['seconds']:.1f} s"


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


# Deployed the way Airflow deploys a DAG folder: a fresh metadata database, the folder parsed
# and written to it as the DAG processor does (`airflow dags reserialize`), then each DAG's
# paused flag as the UI shows it.
DEPLOY_SCRIPT = r"""
import argparse, json, os, sys
os.environ.update({"AIRFLOW_HOME": sys.argv[2], "AIRFLOW__CORE__DAGS_FOLDER": sys.argv[1],
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "sqlite:///" + sys.argv[2] + "/airflow.db",
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False"})
from airflow.utils import db
db.resetdb()
from airflow.cli.commands.dag_command import dag_reserialize
dag_reserialize(argparse.Namespace(bundle_name=None))
from airflow.models import DagModel
from airflow.utils.session import create_session
with create_session() as session:
    print(json.dumps({d.dag_id: d.is_paused for d in session.query(DagModel)}))
"""


def test_protection_is_active_once_deployed(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", DEPLOY_SCRIPT, str(DAGS), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "DR_CONFIG"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    paused = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(paused) == CONTRACT_DAG_IDS
    assert {dag_id for dag_id, is_paused in paused.items() if not is_paused} == (
        ACTIVE_WHEN_DEPLOYED
    )


def test_production_drills_wait_for_a_person(parsed: dict[str, Any]) -> None:
    # The shipped configuration is a production one: each drill asks a person (a Slack notice,
    # then the Required Action) before its first step.
    for kind in ("monthly", "quarterly"):
        tasks = parsed["dags"][f"dr_drill_{kind}"]["task_ids"]
        assert {"decide.notify", "decide.approval", "preflight"} <= set(tasks), tasks


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


# -- the DAG objects, in process -----------------------------------------------------------------

BACKUP_SCHEDULES = {
    "postgresql_backup_full": "0 3 * * *",
    "postgresql_backup_weekly": "0 3 * * 1",
    "postgresql_backup_monthly": "0 3 1 * *",
    "postgresql_backup_cleanup": "30 4 * * *",
}
PHYSICAL_DAG_IDS = ("postgresql_wal_archive", "postgresql_backup_incremental")
SWITCH_DAG_IDS = ("dr_health_check", "dr_failover", "dr_failback")


@pytest.fixture(scope="module")
def dagbag() -> Any:
    """dags/ parsed once in this process, any network connection at parse time an error."""
    from airflow.models import DagBag

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("a DAG file opened a network connection at parse time")

    original = socket.socket.connect
    socket.socket.connect = no_network  # type: ignore[method-assign]
    try:
        started = time.monotonic()
        bag = DagBag(dag_folder=str(DAGS))
        bag.parse_seconds = time.monotonic() - started  # type: ignore[attr-defined]
    finally:
        socket.socket.connect = original  # type: ignore[method-assign]
    return bag


def test_in_process_parse_has_no_errors(dagbag: Any) -> None:
    assert dagbag.import_errors == {}
    assert set(BACKUP_SCHEDULES) | set(PHYSICAL_DAG_IDS) | set(SWITCH_DAG_IDS) <= set(
        dagbag.dag_ids
    )
    assert dagbag.parse_seconds < PARSE_LIMIT_SECONDS


# -- backup DAGs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("dag_id", "cron"), BACKUP_SCHEDULES.items())
def test_backup_dag_attributes(dagbag: Any, dag_id: str, cron: str) -> None:
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


# -- WAL archive and incremental backup DAGs --------------------------------------------------------


@pytest.mark.parametrize("dag_id", PHYSICAL_DAG_IDS)
def test_physical_dags_are_thin_and_documented(dagbag: Any, dag_id: str) -> None:
    dag = dagbag.dags[dag_id]
    assert dag.max_active_runs == 1 and not dag.catchup
    assert set(dag.tags) <= ALLOWED_TAGS
    assert dag.doc_md and dag.doc_md.lstrip().startswith("# ")


# -- health, failover and failback DAGs ------------------------------------------------------------


@pytest.mark.parametrize("dag_id", SWITCH_DAG_IDS)
def test_switch_dag_attributes(dagbag: Any, dag_id: str) -> None:
    dag = dagbag.dags[dag_id]
    assert dag is not None
    assert dag.doc_md and dag.max_active_runs == 1 and not dag.catchup
    assert set(dag.tags) <= ALLOWED_TAGS


def test_failover_dag_shape(dagbag: Any) -> None:
    dag = dagbag.dags["dr_failover"]
    assert dag.schedule is None
    assert set(dag.params) == {"reason", "initiated_by", "dry_run", "accept_data_loss"}
    groups = [tid.split(".")[0] for tid in dag.task_ids if "." in tid]
    assert tuple(dict.fromkeys(groups)) == FAILOVER_STEPS
    assert FAILOVER_STEPS == (  # the eight steps of DESIGN.md, in order
        "detect",
        "decide",
        "stop_writes",
        "sync",
        "promote",
        "activate_services",
        "dns",
        "validate",
    )
    approval = dag.get_task("decide.approval")
    assert type(approval).__mro__[1].__name__ == "ApprovalOperator"
    assert (
        approval.response_timeout is not None and approval.defaults is None
    )  # timeout never approves
    assert dag.get_task("report").trigger_rule == "all_done"


def test_health_dag_runs_every_minute(dagbag: Any) -> None:
    dag = dagbag.dags["dr_health_check"]
    assert dag.schedule == "* * * * *"
    assert dag.get_task("trigger_failover").trigger_dag_id == "dr_failover"


def test_failback_dag_runs_the_failback_steps(dagbag: Any) -> None:
    dag = dagbag.dags["dr_failback"]
    groups = [tid.split(".")[0] for tid in dag.task_ids if "." in tid]
    assert tuple(dict.fromkeys(groups)) == FAILBACK_STEPS


def test_library_and_dags_run_the_same_steps() -> None:
    """The in-process runs (CLI, API) and the DAG tasks call the same step functions."""
    from typing import cast

    from disaster_recovery.airflow_support import failover_dags
    from disaster_recovery.failover.failback import failback_steps
    from disaster_recovery.failover.steps import failover_steps

    plan = cast(Any, None)  # the step lists are lambdas: building them runs nothing
    assert tuple(n for n, _ in failover_steps(plan, "r", "me", None)) == FAILOVER_STEPS
    assert tuple(n for n, _ in failback_steps(plan, "r", "me", None)) == FAILBACK_STEPS
    params = {"reason": "r", "initiated_by": "me"}
    for step in FAILBACK_STEPS:  # the DAG's tasks take their functions from those lists
        assert callable(failover_dags._step_function("failback", step, plan, params))
    for step in FAILOVER_STEPS[1:]:  # (failover's detect reads an Airflow Variable first)
        assert callable(failover_dags._step_function("failover", step, plan, params))


# -- drill DAGs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", DRILL_STEPS)
def test_drill_dag_shows_each_step_as_a_task(dagbag: Any, kind: str) -> None:
    """check_overdue, a person's approval (the shipped configuration is production), then the
    drill's steps in order, the teardown that restores the topology (set up by preflight, so it
    runs whatever the steps did), and the evidence last."""
    dag = dagbag.dags[f"dr_drill_{kind}"]
    decide = ["decide.notify", "decide.approval"]
    order = ["check_overdue", *decide, *DRILL_STEPS[kind], RESTORE_TOPOLOGY, "evidence"]
    assert {t.task_id for t in dag.tasks} == set(order)
    for upstream, downstream in itertools.pairwise(order):
        # preflight also leads straight to its teardown
        extra = {RESTORE_TOPOLOGY} if upstream == "preflight" else set()
        assert dag.get_task(upstream).downstream_task_ids == {downstream} | extra, upstream
    preflight, teardown = dag.get_task("preflight"), dag.get_task(RESTORE_TOPOLOGY)
    assert preflight.is_setup and teardown.is_teardown
    assert teardown.trigger_rule == "all_done_setup_success"
    assert preflight.trigger_rule == "all_done"  # an overdue check that failed blocks nothing
    assert dag.get_task("evidence").trigger_rule == "all_done"
    assert all(dag.get_task(t).retries == 0 for t in order[1:])  # a retry repeats a failover


def test_library_and_drill_dags_run_the_same_steps() -> None:
    from disaster_recovery.drills.procedures import STEPS

    for kind, names in DRILL_STEPS.items():
        assert tuple(step.name for step in STEPS[kind]) == names
