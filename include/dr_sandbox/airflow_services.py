"""Airflow for the demo, as ``airflow standalone`` runs it but listening on loopback only.

``airflow standalone`` starts the scheduler and the triggerer with their log servers, which
bind every interface (``airflow.utils.serve_logs`` hard-codes the host) and cannot be moved to
loopback. On one machine the API server reads task logs from the shared ``$AIRFLOW_HOME/logs``
folder, so the log servers are not needed: this supervisor migrates the metadata database,
then runs the four components itself, the scheduler and triggerer with ``--skip-serve-logs`` and
the API server on ``[api] host`` (127.0.0.1). It leads their process group, so the demo stops
all of them with one signal, as it stopped ``airflow standalone``.

Run as ``python -m dr_sandbox.airflow_services`` with the demo's environment.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

COMPONENTS = (
    ("scheduler", "--skip-serve-logs"),
    ("triggerer", "--skip-serve-logs"),
    ("dag-processor",),
    ("api-server",),
)


def airflow_program() -> str:
    return str(Path(sys.executable).parent / "airflow")


def main() -> int:
    subprocess.run([airflow_program(), "db", "migrate"], check=True)
    children = [subprocess.Popen([airflow_program(), *args]) for args in COMPONENTS]
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
