"""`make demo`: a real `airflow standalone` (scheduler, dag-processor, API server, triggerer)
with the package's DAGs and a sandbox's Connections, driven over its REST API exactly as the
demo does: the UI lists every DAG, the DR console answers logged-in users only, and the main job (a verified
full backup, the day's base backup, the monthly drill) succeeds under a real scheduler, where
tasks cannot reach the metadata database directly."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import private_sandbox

from disaster_recovery.airflow_support.dag_defaults import ACTIVE_WHEN_DEPLOYED
from dr_sandbox import Sandbox, processes
from dr_sandbox.demo import (
    AirflowApi,
    airflow_home,
    main_job,
    start_airflow,
    stop_airflow,
    wait_for_dags,
)

MAIN_JOB_DAGS = ("postgresql_backup_full", "postgresql_backup_incremental", "dr_drill_monthly")

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


def process_group(leader: int) -> set[int]:
    """Every live process in ``leader``'s process group (airflow standalone and its children)."""
    members = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == leader:
                members.add(int(entry.name))
    return members


def listening_sockets(pids: set[int]) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state that one of ``pids`` holds."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            if parts[3] == "0A" and parts[9] in inodes:  # 0A: LISTEN
                address, port = parts[1].split(":")
                found.add((_address(address, width), int(port, 16)))
    return found


def _address(hex_address: str, width: int) -> str:
    if width == 8:
        return ".".join(str(int(hex_address[i : i + 2], 16)) for i in (6, 4, 2, 0))
    return "::1" if hex_address == "0" * 24 + "01000000" else hex_address


def test_nothing_listens_beyond_loopback(airflow: AirflowApi, demo_box: Sandbox) -> None:
    """Airflow (API server, log servers) and the sandbox's servers bind loopback only."""
    leader = int((airflow_home(demo_box.root) / "standalone.pid").read_text())
    pids = process_group(leader) | set(demo_box.state.pids.values())
    sockets = listening_sockets(pids)
    assert (("127.0.0.1", int(airflow.base_url.rsplit(":", 1)[1]))) in sockets, sockets
    beyond = {(a, p) for a, p in sockets if a not in ("127.0.0.1", "::1")}
    assert not beyond, f"listening beyond loopback: {sorted(beyond)}"


def test_protection_runs_without_unpausing(airflow: AirflowApi) -> None:
    """After `make demo` the DAGs protection depends on are active, as on a real deployment: the
    every-minute health check has run, and dr_failover would run an automatic trigger."""
    for dag_id in sorted(ACTIVE_WHEN_DEPLOYED):
        assert airflow._request("GET", f"/api/v2/dags/{dag_id}")["is_paused"] is False, dag_id
    assert airflow._request("GET", "/api/v2/dags/dr_drill_quarterly")["is_paused"] is True
    assert airflow.run_ids("dr_health_check", "scheduled"), "dr_health_check never ran"


def test_each_main_job_ran_once(airflow: AirflowApi) -> None:
    """After the main job (the test above), each of its DAGs ran once as the demo asked: the
    scheduled run of a slot already past (the DAGs are active once deployed), never a manual run
    on top of it. The hourly incremental may also have ticked at an hour boundary meanwhile."""
    for dag_id in MAIN_JOB_DAGS:
        manual = airflow.run_ids(dag_id, "manual")
        scheduled = airflow.run_ids(dag_id, "scheduled")
        assert len(manual) + (1 if scheduled else 0) == 1, (dag_id, manual, scheduled)
        if dag_id != "postgresql_backup_incremental":
            assert len(manual) + len(scheduled) == 1, (dag_id, manual, scheduled)


def test_the_demo_keeps_its_own_metadata_database(airflow: AirflowApi, demo_box: Sandbox) -> None:
    """Started from a shell (or this test session) that has Airflow settings of its own, the demo
    still uses the database in its home: the runs above are the demo's only runs."""
    assert os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("airflow.db")
    home = airflow_home(demo_box.root)
    assert str(home) not in os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert (home / "airflow.db").stat().st_size > 0
