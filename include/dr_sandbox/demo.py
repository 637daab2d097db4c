"""``make demo``: Airflow (``airflow standalone``'s components, on loopback) on top of the running
sandbox.

Starts Airflow with this package's DAGs and plugins and the sandbox's Connections, waits until
the API answers, prints where the UI is and how to log in, then runs the main job through
Airflow's REST API and prints its result. Leaves everything running; ``--stop`` stops Airflow.
This module does not import Airflow: it drives the ``airflow`` program and its REST API.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from disaster_recovery.drills.evidence import DrillRecord
from disaster_recovery.errors import DisasterRecoveryError, UnavailableError
from disaster_recovery.postgres import db
from dr_sandbox import PORT_COUNT, Sandbox, SandboxPorts, processes

REPO = Path(__file__).resolve().parents[2]
ADMIN = "admin"


class AirflowApi:
    """The few REST calls the demo needs (Airflow 3 public API, simple auth manager)."""

    def __init__(self, base_url: str, password: str):
        self.base_url = base_url.rstrip("/")
        self.password = password
        self._token: str | None = None

    def _request(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base_url + path, data=data, headers=headers, method=method
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            payload = response.read()
        return json.loads(payload) if payload else None

    def token(self) -> str:
        if self._token is None:
            answer = self._request(
                "POST", "/auth/token", {"username": ADMIN, "password": self.password}, auth=False
            )
            self._token = answer["access_token"]
        return self._token

    def healthy(self) -> bool:
        try:
            health = self._request("GET", "/api/v2/monitor/health", auth=False)
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
            return False
        return bool(health) and health.get("metadatabase", {}).get("status") == "healthy"

    def dag_ids(self) -> list[str]:
        return sorted(d["dag_id"] for d in self._request("GET", "/api/v2/dags?limit=100")["dags"])

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        self._request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        run = self._request(
            "POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}}
        )
        return str(run["dag_run_id"])

    def runs(self, dag_id: str, run_type: str | None = None) -> list[dict[str, Any]]:
        query = f"?run_type={run_type}" if run_type else ""
        return list(self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns{query}")["dag_runs"])

    def run_ids(self, dag_id: str, run_type: str | None = None) -> list[str]:
        return [str(run["dag_run_id"]) for run in self.runs(dag_id, run_type)]

    def start_once(self, dag_id: str, timeout: float = 90) -> str:
        """One run of ``dag_id``, as production would have it. A DAG whose latest scheduled slot
        is already past (catchup=False runs that slot when unpaused) gets its scheduled run,
        waited for; a manual run on top of it would run the job twice. Otherwise: a manual run.
        """
        # The DAGs protection depends on are active once deployed: the scheduler may already
        # have started the latest slot's run.
        if scheduled := self.run_ids(dag_id, "scheduled"):
            return scheduled[0]
        dag = self._request("GET", f"/api/v2/dags/{dag_id}")
        due = dag.get("next_dagrun_run_after")
        if not due or datetime.fromisoformat(due) > datetime.now(UTC):
            return self.trigger(dag_id)
        self._request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if scheduled := self.run_ids(dag_id, "scheduled"):
                return scheduled[0]
            time.sleep(1)
        raise UnavailableError(
            f"{dag_id}: the scheduled run due at {due} did not appear within {timeout:g} s"
        )

    def wait(self, dag_id: str, run_id: str, timeout: float = 900) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self._request(
                "GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}"
            )
            if run["state"] in ("success", "failed"):
                return dict(run)
            time.sleep(2)
        raise UnavailableError(f"{dag_id} run {run_id} did not finish within {timeout:g} s")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """The run's task instances: state, hostname (the worker that ran each), times..."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances"
        return list(self._request("GET", path)["task_instances"])

    def downstream(self, dag_id: str) -> dict[str, list[str]]:
        """Each task's direct downstream tasks."""
        tasks = self._request("GET", f"/api/v2/dags/{dag_id}/tasks")["tasks"]
        return {t["task_id"]: list(t["downstream_task_ids"]) for t in tasks}

    def answer(self, dag_id: str, run_id: str, task_id: str, choice: str) -> Any:
        """Answer a human-in-the-loop task (Approve/Reject) as a person in the UI does."""
        path = (
            f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances/"
            f"{task_id}/-1/hitlDetails"
        )
        return self._request("PATCH", path, {"chosen_options": [choice], "params_input": {}})

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        path = (
            f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances/"
            f"{task_id}/xcomEntries/{key}"
        )
        return self._request("GET", path)["value"]


def airflow_home(root: Path) -> Path:
    return root.resolve() / "airflow"


def airflow_environment(
    sandbox: Sandbox, port: int, broker_port: int | None = None
) -> dict[str, str]:
    """The demo's Airflow settings: the LocalExecutor, or with ``broker_port`` the
    CeleryExecutor whose broker (and result backend) is the redis-server on that port."""
    venv_bin = str(Path(sys.executable).parent)
    home = airflow_home(sandbox.root)
    # The caller's own Airflow settings stay out (a test session's metadata database would
    # otherwise become the demo's, with every DAG run the tests made in it).
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    return {
        **inherited,
        **sandbox.environment(),
        "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
        # What airflow standalone would force (the demo runs its components itself).
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor" if broker_port else "LocalExecutor",
        **(celery_settings(broker_port) if broker_port else {}),
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__API__PORT": str(port),
        # Loopback only, like every other part of the sandbox (the default is 0.0.0.0).
        "AIRFLOW__API__HOST": "127.0.0.1",
        # The server's zone for naive times: the policy's (the schedules are Bogota time). The
        # UI's own default zone comes from the DR plugin (ui_timezone): Airflow 3 has no setting.
        "AIRFLOW__CORE__DEFAULT_TIMEZONE": sandbox.settings().timezone,
        # Its log servers take the next two ports, so two sandboxes' Airflows can coexist.
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(port + 1),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(port + 2),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "5",
        "XDG_RUNTIME_DIR": str(home),
    }


def celery_settings(broker_port: int) -> dict[str, str]:
    broker = f"redis://127.0.0.1:{broker_port}"
    return {
        "AIRFLOW__CELERY__BROKER_URL": f"{broker}/0",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"{broker}/1",
    }


def default_airflow_port(sandbox: Sandbox) -> int:
    """8080, or right after the sandbox's ten ports when they were moved (``make demo
    BASE_PORT=...``: one base port moves everything, Airflow included)."""
    moved = sandbox.ports != SandboxPorts()
    return sandbox.ports.pg_primary + PORT_COUNT if moved else 8080


def admin_password(root: Path, timeout: float = 120) -> str:
    file = airflow_home(root) / "simple_auth_manager_passwords.json.generated"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if file.exists() and file.read_text().strip():
            return str(json.loads(file.read_text())[ADMIN])
        time.sleep(0.5)
    raise UnavailableError(f"Airflow did not write its admin password to {file}")


def start_airflow(sandbox: Sandbox, port: int, celery_workers: int = 0) -> AirflowApi:
    """Airflow's components on loopback (already running: reused); with ``celery_workers``,
    the CeleryExecutor with that many workers and a broker of its own on a free port."""
    pidfile = airflow_home(sandbox.root) / "standalone.pid"
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    log_file = sandbox.root / "logs" / "airflow-standalone.log"
    running = pidfile.exists() and processes.pid_alive(int(pidfile.read_text()), "airflow")
    if not running:
        if processes.port_open(port):
            raise DisasterRecoveryError(
                f"port {port} is taken by another program; use --airflow-port"
            )
        # airflow standalone's components, minus the log servers that bind every interface.
        command = [sys.executable, "-m", "dr_sandbox.airflow_services"]
        broker_port = processes.free_port() if celery_workers else None
        if broker_port:
            command += ["--celery-workers", str(celery_workers), "--broker-port", str(broker_port)]
        pid = processes.start_detached(
            command, log_file, env=airflow_environment(sandbox, port, broker_port)
        )
        pidfile.write_text(str(pid))
        (pidfile.parent / "api.port").write_text(str(port))
    api = AirflowApi(f"http://127.0.0.1:{port}", admin_password(sandbox.root))
    deadline = time.monotonic() + 240
    while not api.healthy():
        if time.monotonic() > deadline:
            raise UnavailableError(f"Airflow did not become healthy in 240 s; see {log_file}")
        if not processes.pid_alive(int(pidfile.read_text()), "airflow"):
            raise UnavailableError(f"Airflow stopped while starting; see {log_file}")
        time.sleep(1)
    return api


def stop_airflow(root: Path) -> bool:
    pidfile = airflow_home(root) / "standalone.pid"
    if not pidfile.exists():
        return False
    pid = int(pidfile.read_text())
    # Its scheduler, API server and workers live in its process group: stop them all, and give
    # the API server time to release its port before the group is killed outright.
    processes.stop_pid(pid, "airflow", timeout=30)
    port = int((airflow_home(root) / "api.port").read_text())
    deadline = time.monotonic() + 20
    while processes.port_open(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    processes.kill_group(pid)
    pidfile.unlink()
    return True


def wait_for_dags(api: AirflowApi, expected: int = 1, timeout: float = 180) -> list[str]:
    deadline = time.monotonic() + timeout
    dags: list[str] = []
    while time.monotonic() < deadline:
        dags = api.dag_ids()
        if len(dags) >= expected:
            return dags
        time.sleep(2)
    return dags


def run_dag(api: AirflowApi, dag_id: str, task_id: str, say: Callable[[str], None]) -> Any:
    """Trigger a DAG, wait for it, return the XCom of ``task_id``; a clear error if it failed."""
    say(f"running {dag_id} ...")
    run_id = api.start_once(dag_id)
    run = api.wait(dag_id, run_id)
    if run["state"] != "success":
        raise DisasterRecoveryError(
            f"{dag_id} run {run_id} {run['state']}: see its logs in the Airflow UI"
        )
    return api.xcom(dag_id, run_id, task_id)


def archive_now(sandbox: Sandbox, timeout: float = 60) -> str:
    """Switch to a new WAL segment and wait until the archiver stored the old one, so the
    archive reaches past the base backup just taken (otherwise archive_timeout would)."""

    with db.connect(sandbox.postgres("primary")) as conn:
        row = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
        segment = str(row[0]) if row else ""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = conn.execute(
                "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver"
            ).fetchone()
            if last and str(last[0])[:24] >= segment:
                return segment
            time.sleep(0.2)
        stats = conn.execute(
            "SELECT last_archived_wal, last_archived_time, failed_count, last_failed_wal,"
            " last_failed_time FROM pg_stat_archiver"
        ).fetchone()
    raise UnavailableError(
        f"WAL segment {segment} was not archived within {timeout:g} s; "
        + _archiver_state(sandbox, stats)
    )


def _archiver_state(sandbox: Sandbox, stats: Any) -> str:
    """What PostgreSQL's archiver last did, and its last complaints in the server log: the
    sandbox may be gone by the time someone reads the error."""
    archived, archived_at, failures, failed, failed_at = stats or (None,) * 5
    log_file = sandbox.root / "logs" / "postgres-primary.log"
    try:
        lines = log_file.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    complaints = [line for line in lines if "archiv" in line.lower()][-5:]
    return (
        f"pg_stat_archiver: last archived {archived} at {archived_at}, {failures} failure(s), "
        f"last failed {failed} at {failed_at}; {log_file}"
        + (":\n" + "\n".join(complaints) if complaints else "")
    )


def main_job(api: AirflowApi, sandbox: Sandbox, say: Callable[[str], None]) -> dict[str, Any]:
    """A verified full backup, the day's base backup, then the monthly DR drill, all through
    Airflow; returns the evidence a person wants to see."""
    backup = run_dag(api, "postgresql_backup_full", "publish", say)
    run_dag(api, "postgresql_backup_incremental", "replicate_backup", say)
    archive_now(sandbox)
    drill = run_dag(api, "dr_drill_monthly", "evidence", say)
    steps = {step["name"]: step for step in drill["steps"]}
    return {
        "backup": {
            key: backup.get(key)
            for key in (
                "backup_file",
                "location",
                "size_bytes",
                "sha256",
                "status",
                "checks",
                "replicated_to",
            )
        },
        "drill": {
            "passed": drill["passed"],
            # One task each in the grid; the evidence task returns the record they built.
            "steps": {name: step["result"] for name, step in steps.items()},
            "restore_seconds": steps["restore_full"]["details"]["restore_seconds"],
            "restore_throughput_mb_s": drill["restore_throughput_mb_s"],
            "point_in_time": steps["point_in_time"]["details"]["target"],
            "rto_seconds": drill["rto_seconds"],
            "rpo_seconds": drill["rpo_seconds"],
            "objectives": drill["objectives"],
            "evidence": f"s3://{sandbox.settings().bucket('us-east-1')}/{drill_key(drill)}",
        },
    }


def drill_key(record: dict[str, Any]) -> str:

    return DrillRecord.model_validate(record).key


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=Path(".sandbox"))
    parser.add_argument(
        "--airflow-port",
        type=int,
        default=None,
        help="Airflow's API server port; its log servers take the next two "
        "(default: 8080, or right after the sandbox's own ports when they were moved)",
    )
    parser.add_argument(
        "--celery-workers",
        type=int,
        default=0,
        help="run the CeleryExecutor with this many workers (default: the LocalExecutor)",
    )
    parser.add_argument("--stop", action="store_true", help="stop Airflow started by the demo")
    parser.add_argument(
        "--no-job", action="store_true", help="only start Airflow; do not run the main job"
    )
    args = parser.parse_args()
    if args.stop:
        print(json.dumps({"airflow_stopped": stop_airflow(args.root)}))
        return 0
    sandbox = Sandbox(args.root)
    if args.airflow_port is None:
        args.airflow_port = default_airflow_port(sandbox)
    api = start_airflow(sandbox, args.airflow_port, args.celery_workers)
    # The address and login first: the main job takes minutes, and a person can watch it run.
    print(
        f"\nAirflow UI: http://127.0.0.1:{args.airflow_port}  (user {ADMIN}, password "
        f"{api.password})\nTimes in the UI and the schedules are {sandbox.settings().timezone} "
        "(user menu -> Timezone picks another).\n",
        file=sys.stderr,
        flush=True,
    )
    dags = wait_for_dags(api, expected=len(list((REPO / "dags").glob("*.py"))))
    result: dict[str, Any] = {
        "airflow_ui": f"http://127.0.0.1:{args.airflow_port}",
        "login": {"username": ADMIN, "password": api.password},
        "dags": dags,
        "sandbox_env": str(sandbox.env_file),
    }
    if not args.no_job:
        result["main_job"] = main_job(api, sandbox, lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(result, indent=2, default=str))
    print(
        f"\nAirflow UI: http://localhost:{args.airflow_port}  (user {ADMIN}, password {api.password})\n"
        f"Use the sandbox from a shell: . {sandbox.env_file}\nStop everything: make down",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
