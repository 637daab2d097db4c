"""Airflow for the demo, as ``airflow standalone`` runs it but listening on loopback only.

``airflow standalone`` starts the scheduler and the triggerer with their log servers, which
bind every interface (``airflow.utils.serve_logs`` hard-codes the host) and cannot be moved to
loopback. On one machine the API server reads task logs from the shared ``$AIRFLOW_HOME/logs``
folder, so the log servers are not needed: this supervisor migrates the metadata database,
then runs the four components itself, the scheduler and triggerer with ``--skip-serve-logs`` and
the API server on ``[api] host`` (127.0.0.1). It leads their process group, so the demo stops
all of them with one signal, as it stopped ``airflow standalone``.

With ``--celery-workers N`` (the demo's environment then names the CeleryExecutor) it also runs a
redis-server on ``--broker-port`` as Celery's broker and N ``airflow celery worker`` processes,
one task at a time each, named worker-1..N: several machines' workers on one machine. Each
worker reports its name as the hostname of the task instances it runs, so a run shows which
worker ran which task.

Run as ``python -m dr_sandbox.airflow_services [--celery-workers N --broker-port P]`` with the
demo's environment.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from dr_sandbox import processes, redis_server_command

COMPONENTS = (
    ("scheduler", "--skip-serve-logs"),
    ("triggerer", "--skip-serve-logs"),
    ("dag-processor",),
    ("api-server",),
)


WORKER_NAME = "DR_CELERY_WORKER_NAME"


def airflow_program() -> str:
    return str(Path(sys.executable).parent / "airflow")


def worker_hostname() -> str:
    """``[core] hostname_callable`` of the Celery workers: the worker's own name (they share
    this machine's), recorded as the hostname of each task instance it runs."""
    return os.environ.get(WORKER_NAME) or socket.getfqdn()


def celery_worker(number: int) -> tuple[list[str], dict[str, str]]:
    """One ``airflow celery worker``'s command line and environment."""
    name = f"worker-{number}"
    command = [
        *("celery", "worker", "--celery-hostname", f"{name}@%h", "--concurrency", "1"),
        *("--skip-serve-logs", "--without-mingle", "--without-gossip"),
    ]
    hostname = "dr_sandbox.airflow_services.worker_hostname"  # this module, even as __main__
    return command, {**os.environ, WORKER_NAME: name, "AIRFLOW__CORE__HOSTNAME_CALLABLE": hostname}


def start_broker(port: int) -> subprocess.Popen[bytes]:
    server = shutil.which("redis-server")
    if not server:
        raise SystemExit("redis-server not found: install Debian's redis-server package")
    folder = Path(os.environ["AIRFLOW_HOME"]) / "celery-broker"
    broker = subprocess.Popen(redis_server_command(server, port, folder))
    processes.wait_for_port(port, "Celery broker (redis-server)")
    return broker


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--celery-workers", type=int, default=0, help="Celery workers to run")
    parser.add_argument("--broker-port", type=int, help="the Celery broker's port (redis-server)")
    args = parser.parse_args()
    if args.celery_workers and not args.broker_port:
        parser.error("--celery-workers needs --broker-port (the broker's redis-server)")
    children = [start_broker(args.broker_port)] if args.celery_workers else []
    subprocess.run([airflow_program(), "db", "migrate"], check=True)
    runs: list[tuple[list[str], dict[str, str] | None]] = [([*c], None) for c in COMPONENTS]
    runs += [celery_worker(n) for n in range(1, args.celery_workers + 1)]
    children += [subprocess.Popen([airflow_program(), *c], env=env) for c, env in runs]
    stopping = False

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # One component dying ends the others: a half-running Airflow would only mislead.
    while all(child.poll() is None for child in children) and not stopping:
        time.sleep(0.5)
    stop(signal.SIGTERM, None)
    for child in children:
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
    return 0 if stopping else 1


if __name__ == "__main__":
    sys.exit(main())
