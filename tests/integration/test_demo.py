"""`make demo`: a real `airflow standalone` (scheduler, dag-processor, API server, triggerer)
with the package's DAGs and a sandbox's Connections, driven over its REST API exactly as the
demo does: the UI lists every DAG, the DR console answers logged-in users only, and the main job (a verified
full backup, the day's base backup, the monthly drill) succeeds under a real scheduler, where
tasks cannot reach the metadata database directly."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import private_sandbox

from dr_sandbox import Sandbox, processes
from dr_sandbox.demo import AirflowApi, main_job, start_airflow, stop_airflow, wait_for_dags

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo_box() -> Iterator[Sandbox]:
    with private_sandbox(scale=0.2, prefix="dr-demo-") as box:
        yield box


@pytest.fixture(scope="module")
def airflow(demo_box: Sandbox) -> Iterator[AirflowApi]:
    port = processes.free_port()
    api = start_airflow(demo_box, port)
    try:
        yield api
    finally:
        stop_airflow(demo_box.root)
        assert not processes.port_open(port)


def test_ui_lists_every_dag_of_the_package(airflow: AirflowApi) -> None:
    files = sorted(p.stem for p in (REPO / "dags").glob("*.py"))
    assert wait_for_dags(airflow, expected=len(files)) == files


def test_dr_console_is_served_to_logged_in_users_only(airflow: AirflowApi) -> None:
    url = f"{airflow.base_url}/dr/api/status"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=30)
    assert refused.value.code == 401
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {airflow.token()}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        status = json.loads(response.read())
    assert status["objectives"]["rpo_seconds"] == 900
    assert status["source"]["region"] == "us-east-1"
    assert isinstance(status["backups"]["tiers"], list), status["backups"]


def test_main_job_runs_end_to_end_under_a_real_scheduler(
    airflow: AirflowApi, demo_box: Sandbox
) -> None:
    wait_for_dags(airflow, expected=len(list((REPO / "dags").glob("*.py"))))
    result = main_job(airflow, demo_box, lambda m: print(m, file=sys.stderr))
    backup = result["backup"]
    assert backup["status"] == "verified" and backup["backup_file"].startswith("postgresql_full_")
    assert len(backup["sha256"]) == 64 and backup["size_bytes"] > 0
    assert all(backup["checks"].values()) and backup["replicated_to"] == ["us-west-2"]
    drill = result["drill"]
    assert drill["passed"] is True
    assert drill["rto_seconds"] < drill["objectives"]["rto_seconds"]
    assert drill["rpo_seconds"] == 0.0
    assert demo_box.status()["healthy"]
