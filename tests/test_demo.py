"""`make demo`'s Airflow: a real `airflow standalone` (scheduler, dag-processor, API server,
triggerer) with the package's DAGs and the sandbox's Connections, checked over its REST API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from disaster_recovery.sandbox import Sandbox, processes
from disaster_recovery.sandbox.demo import AirflowApi, start_airflow, stop_airflow, wait_for_dags

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def airflow(sandbox: Sandbox) -> Iterator[AirflowApi]:
    port = processes.free_port()
    api = start_airflow(sandbox, port)
    try:
        yield api
    finally:
        stop_airflow(sandbox.root)
        assert not processes.port_open(port)


def test_ui_lists_every_dag_of_the_package(airflow: AirflowApi) -> None:
    files = sorted(p.stem for p in (REPO / "dags").glob("*.py"))
    assert wait_for_dags(airflow, expected=len(files)) == files


def test_dashboard_plugin_is_served(airflow: AirflowApi) -> None:
    import json
    import urllib.request

    with urllib.request.urlopen(f"{airflow.base_url}/dr/api/status", timeout=30) as response:
        status = json.loads(response.read())
    assert status["objectives"]["rpo"] == "15m"
    assert isinstance(status["backups"], list), status["backups"]
