"""`make demo`: a real `airflow standalone` (scheduler, dag-processor, API server, triggerer)
with the package's DAGs and a sandbox's Connections, driven over its REST API exactly as the
demo does: the UI lists every DAG, the DR console answers logged-in users only, and the main job (a verified
full backup, the day's base backup, the monthly drill) succeeds under a real scheduler, where
tasks cannot reach the metadata database directly; in a real browser elsewhere, the UI shows its
runs in the policy's time zone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from helpers import airflow_sandbox, chromium

from disaster_recovery.airflow_support.dag_defaults import ACTIVE_WHEN_DEPLOYED
from disaster_recovery.drills.names import DRILL_STEPS
from dr_sandbox import PORT_COUNT, Sandbox, processes
from dr_sandbox.demo import (
    ADMIN,
    AirflowApi,
    airflow_home,
    default_airflow_port,
    main_job,
    start_airflow,
    stop_airflow,
    wait_for_dags,
)

MAIN_JOB_DAGS = ("postgresql_backup_full", "postgresql_backup_incremental", "dr_drill_monthly")

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo_box() -> Iterator[Sandbox]:
    """The sandbox as ``make demo BASE_PORT=...`` brings it up."""
    with airflow_sandbox("dr-demo-") as box:
        yield box


@pytest.fixture(scope="module")
def airflow(demo_box: Sandbox) -> Iterator[AirflowApi]:
    port = default_airflow_port(demo_box)
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
    # Each step ran as its own task, the drill's state passed between them through XCom.
    assert drill["steps"] == dict.fromkeys(DRILL_STEPS["monthly"], "passed")
    assert drill["rto_seconds"] < drill["objectives"]["rto_seconds"]
    assert drill["rpo_seconds"] == 0.0
    assert demo_box.status()["healthy"]


def ui_text(browser: Any, url: str, expected: str, timeout: float = 60) -> str:
    """The UI page's text once it shows ``expected`` (the app renders after its API calls);
    the last text seen when it never does."""
    browser.get(url)
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = str(browser.execute_script("return document.body.innerText"))
        if expected in text:
            break
        time.sleep(0.5)
    return text


def test_the_ui_shows_runs_in_the_policy_time_zone(airflow: AirflowApi, demo_box: Sandbox) -> None:
    """A browser in Tokyo opens the UI of the demo: with nothing chosen by its user, the main
    job's backup run is shown at its Bogota time (the policy's zone, as the schedules), not at
    Tokyo's; a zone the user then picks in the UI stays theirs."""
    zone = demo_box.settings().timezone
    runs = airflow.runs("postgresql_backup_full")
    assert runs, "no run of postgresql_backup_full: the main job's test runs first in this module"
    run_after = datetime.fromisoformat(runs[0]["run_after"])

    def shown_in(tz: str) -> str:
        return run_after.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S")

    page = f"{airflow.base_url}/dags/postgresql_backup_full/runs"
    with chromium(time_zone="Asia/Tokyo") as browser:
        browser.get(f"{airflow.base_url}/api/v2/monitor/health")
        own_zone = browser.execute_script("return Intl.DateTimeFormat().resolvedOptions().timeZone")
        assert own_zone == "Asia/Tokyo"
        browser.add_cookie({"name": "_token", "value": airflow.token()})  # as after the login

        text = ui_text(browser, page, shown_in(zone))
        assert shown_in(zone) in text and shown_in("Asia/Tokyo") not in text, text
        offset = run_after.astimezone(ZoneInfo(zone)).strftime("%z")
        assert f"{offset[:3]}:{offset[3:]}" in text, text  # the nav names the zone: -05:00

        # A person's own choice (user menu -> Timezone stores it in the browser) is kept.
        browser.execute_script("localStorage.setItem('timezone', JSON.stringify('Europe/Paris'))")
        text = ui_text(browser, page, shown_in("Europe/Paris"))
        assert shown_in("Europe/Paris") in text and shown_in(zone) not in text, text


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


def demo_sockets(demo_box: Sandbox) -> set[tuple[str, int]]:
    """What Airflow (its whole process group) and the sandbox's servers (PostgreSQL's
    postmasters included) listen on."""
    leader = int((airflow_home(demo_box.root) / "standalone.pid").read_text())
    postmasters = {demo_box.instance(role).postmaster_pid() for role in ("primary", "standby")}
    assert None not in postmasters, postmasters
    servers = set(demo_box.state.pids.values()) | {pid for pid in postmasters if pid}
    return listening_sockets(process_group(leader) | servers)


def test_nothing_listens_beyond_loopback(airflow: AirflowApi, demo_box: Sandbox) -> None:
    """Airflow (API server, log servers) and the sandbox's servers bind loopback only."""
    sockets = demo_sockets(demo_box)
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


def test_one_base_port_moves_everything(airflow: AirflowApi, demo_box: Sandbox) -> None:
    """``make demo BASE_PORT=...``: the sandbox's servers and Airflow's API server listen on the
    ports from the base on (ten for the sandbox, then Airflow's), nowhere else."""
    base = demo_box.ports.pg_primary
    block = set(range(base, base + PORT_COUNT + 3))
    ports = {port for _, port in demo_sockets(demo_box)}
    assert airflow.base_url == f"http://127.0.0.1:{base + PORT_COUNT}"
    assert {base, base + 1, base + 2, base + 3, base + PORT_COUNT} <= ports, sorted(ports)
    assert ports <= block, f"outside {base}..{base + PORT_COUNT + 2}: {sorted(ports - block)}"


def test_the_login_is_printed_first(airflow: AirflowApi, demo_box: Sandbox) -> None:
    """The demo's first line of output is the UI's address and login (the main job takes
    minutes, and a person can watch it), and that login works."""
    done = subprocess.run(
        [sys.executable, "-m", "dr_sandbox.demo", "--root", str(demo_box.root), "--no-job"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout
    first = next(line for line in done.stdout.splitlines() if line.strip())
    expected = f"Airflow UI: {airflow.base_url}  (user {ADMIN}, password {airflow.password})"
    assert first == expected, done.stdout
    assert AirflowApi(airflow.base_url, airflow.password).token()
