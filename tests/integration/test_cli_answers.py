"""Every failure is an answer: bad inputs fed to the real ``dr`` command (a subprocess), each
answered with a JSON result, the documented exit code and a one-line reason, never a traceback.

The first table needs no server (the inputs are refused before any connection); the second runs
against the sandbox (PostgreSQL, moto) and a web server that answers HTML where S3 should be.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from backup_support import BackupEnv
from helpers import REPO

from disaster_recovery.errors import ExitCode
from disaster_recovery.postgres import db
from dr_sandbox import Sandbox
from dr_sandbox.processes import free_port

DEFAULT_CONFIG = REPO / "include" / "dr_config.yaml"
# A password with every character that breaks a URI or a shell, and a quote for SQL.
SPECIAL_PASSWORD = "p@ss:w/rd#?%&+ 'x\"y"


@dataclass
class Case:
    """One bad input: the command line, the environment it runs in, what must come back."""

    args: list[str]
    exit_code: ExitCode
    reason: str
    env: dict[str, str] = field(default_factory=dict)
    secret: str = ""  # text that must appear nowhere in the output


@dataclass
class Inputs:
    """Files and endpoints the cases point at."""

    folder: Path
    refused_port: int
    html_endpoint: str = ""
    sandbox: Sandbox | None = None
    backup_env: BackupEnv | None = None


def aws_connection(endpoint: str) -> str:
    return json.dumps(
        {
            "conn_type": "aws",
            "login": "testing",
            "password": "testing",
            "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        }
    )


def run_dr(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "disaster_recovery", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def assert_answer(case: Case, done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    result = json.loads(done.stdout)
    assert result["status"] == "failed", result
    assert done.returncode == int(case.exit_code) == result["exit_code"], (done.returncode, result)
    assert "\n" not in result["reason"] and case.reason in result["reason"], result
    if case.secret:
        assert case.secret not in output
    return result


# -- refused before any server is asked ---------------------------------------------------------


def offline_env(inputs: Inputs) -> dict[str, str]:
    """Every Connection defined, pointing at a port where nothing listens."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "DR_"))}
    nowhere = f"http://127.0.0.1:{inputs.refused_port}"
    env.update(
        {
            "DR_CONFIG": str(DEFAULT_CONFIG),
            "AIRFLOW_CONN_DR_AWS_PRIMARY": aws_connection(nowhere),
            "AIRFLOW_CONN_DR_AWS_SECONDARY": aws_connection(nowhere),
            "AIRFLOW_CONN_DR_POSTGRES_PRIMARY": f"postgresql://dr:pw@127.0.0.1:{inputs.refused_port}/litper",
            "AIRFLOW_CONN_DR_POSTGRES_STANDBY": f"postgresql://dr:pw@127.0.0.1:{inputs.refused_port}/litper",
        }
    )
    return env


def write(folder: Path, name: str, data: bytes) -> str:
    path = folder / name
    path.write_bytes(data)
    return str(path)


def symlink_loop(folder: Path) -> str:
    (folder / "loop_a.yaml").symlink_to(folder / "loop_b.yaml")
    (folder / "loop_b.yaml").symlink_to(folder / "loop_a.yaml")
    return str(folder / "loop_a.yaml")


OFFLINE_CASES: dict[str, Callable[[Path], Case]] = {
    "config with non-UTF-8 bytes": lambda d: Case(
        ["--config", write(d, "latin1.yaml", b"timezone: Bogot\xe1\n"), "list"],
        ExitCode.CONFIG,
        "not UTF-8 text (byte 0xe1 on line 1)",
    ),
    "empty config": lambda d: Case(
        ["--config", write(d, "empty.yaml", b""), "list"], ExitCode.CONFIG, "is empty"
    ),
    "config of blank lines and comments": lambda d: Case(
        ["--config", write(d, "comments.yaml", b"\n# all commented out\n\n"), "list"],
        ExitCode.CONFIG,
        "holds no settings",
    ),
    "config is a directory": lambda d: Case(
        ["--config", str(d), "list"], ExitCode.CONFIG, "is a directory"
    ),
    "config is a symlink loop": lambda d: Case(
        ["--config", symlink_loop(d), "list"], ExitCode.CONFIG, "symbolic links"
    ),
    "config missing": lambda d: Case(
        ["--config", str(d / "absent.yaml"), "list"], ExitCode.CONFIG, "not found"
    ),
    "config not YAML": lambda d: Case(
        ["--config", write(d, "broken.yaml", b"regions: [unclosed\n"), "list"],
        ExitCode.CONFIG,
        "not valid YAML",
    ),
    "config with two wrong keys": lambda d: Case(
        ["--config", write(d, "keys.yaml", b"regions:\n  primary: 1\nnonsense: 2\n"), "list"],
        ExitCode.CONFIG,
        "nonsense: unknown key",
    ),
    "--jobs 0": lambda d: Case(
        ["restore", "--target-db", "x", "--jobs", "0"], ExitCode.USAGE, "must be 1 or more, got 0"
    ),
    "--jobs -3": lambda d: Case(
        ["restore", "--target-db", "x", "--jobs", "-3"], ExitCode.USAGE, "must be 1 or more"
    ),
    "--jobs not a number": lambda d: Case(
        ["restore", "--target-db", "x", "--jobs", "two"], ExitCode.USAGE, "'two' is not a whole"
    ),
    "--target-port out of range": lambda d: Case(
        ["pitr", "--target-lsn", "0/1", "--target-dir", str(d / "new"), "--target-port", "70000"],
        ExitCode.USAGE,
        "70000 is not a port number",
    ),
    "--target-dir is a file": lambda d: Case(
        [
            "restore",
            "--point-in-time",
            "2024-01-15T14:30:00-05:00",
            "--target-dir",
            write(d, "a_file", b"x"),
        ],
        ExitCode.USAGE,
        "is a file, not a folder",
    ),
    "--target-dir under a file": lambda d: Case(
        ["pitr", "--target-lsn", "0/1", "--target-dir", write(d, "f2", b"x") + "/data"],
        ExitCode.USAGE,
        "is a file, not a folder",
    ),
    "--point-in-time not a time": lambda d: Case(
        ["pitr", "--point-in-time", "yesterday", "--target-dir", str(d / "new")],
        ExitCode.USAGE,
        "--point-in-time",
    ),
    "unknown command": lambda d: Case(["backupp"], ExitCode.USAGE, "invalid choice: 'backupp'"),
    "missing argument": lambda d: Case(["verify"], ExitCode.USAGE, "required"),
    "restore point with a bad name": lambda d: Case(
        ["restore-point", "create", "no spaces please"], ExitCode.CONFIG, "restore point name"
    ),
    "Connection URI with a non-numeric port": lambda d: Case(
        ["backup", "full"],
        ExitCode.CONFIG,
        "the port in AIRFLOW_CONN_DR_POSTGRES_PRIMARY is not a port number",
        env={"AIRFLOW_CONN_DR_POSTGRES_PRIMARY": "postgresql://dr:pw@127.0.0.1:54x2/litper"},
    ),
    "Connection URI with an unencoded password": lambda d: Case(
        ["backup", "full"],
        ExitCode.CONFIG,
        "must be percent-encoded",
        env={"AIRFLOW_CONN_DR_POSTGRES_PRIMARY": "postgresql://dr:s3cr#tpw@127.0.0.1:5432/x"},
        secret="s3cr",
    ),
    "Connection JSON with a non-numeric port": lambda d: Case(
        ["backup", "full"],
        ExitCode.CONFIG,
        "port 'five' is not a port number",
        env={"AIRFLOW_CONN_DR_POSTGRES_PRIMARY": json.dumps({"host": "h", "port": "five"})},
    ),
    "Connection JSON that is not JSON": lambda d: Case(
        ["list"],
        ExitCode.CONFIG,
        "is not valid JSON",
        env={"AIRFLOW_CONN_DR_AWS_PRIMARY": '{"conn_type": "aws",'},
    ),
    "Connection extra that is not JSON": lambda d: Case(
        ["list"],
        ExitCode.CONFIG,
        "its extra is not valid JSON",
        env={"AIRFLOW_CONN_DR_AWS_PRIMARY": json.dumps({"extra": "{endpoint_url: x"})},
    ),
    "Connection missing": lambda d: Case(
        ["list"],
        ExitCode.CONFIG,
        "set AIRFLOW_CONN_DR_AWS_PRIMARY",
        env={"AIRFLOW_CONN_DR_AWS_PRIMARY": ""},
    ),
    "S3 refuses the connection": lambda d: Case(["list"], ExitCode.UNAVAILABLE, "cannot reach S3"),
}


@pytest.fixture
def offline(tmp_path: Path) -> Inputs:
    return Inputs(folder=tmp_path, refused_port=free_port())


@pytest.mark.parametrize("name", sorted(OFFLINE_CASES))
def test_bad_input_is_answered(name: str, offline: Inputs) -> None:
    case = OFFLINE_CASES[name](offline.folder)
    env = {**offline_env(offline), **case.env}
    assert_answer(case, run_dr(case.args, env))


def test_verbose_puts_the_traceback_in_the_debug_log(offline: Inputs) -> None:
    """The traceback is not lost: ``dr -v`` logs it at debug level on stderr; stdout stays JSON."""
    env = offline_env(offline)
    done = run_dr(["-v", "--config", str(offline.folder), "list"], env)
    assert done.returncode == ExitCode.CONFIG
    assert json.loads(done.stdout)["error_type"] == "ConfigError"
    assert "DEBUG disaster_recovery.cli.answers: dr list failed" in done.stderr
    assert "Traceback" in done.stderr


# -- against real servers -----------------------------------------------------------------------


class _WebPage(BaseHTTPRequestHandler):
    """A web server where S3 should be: every request gets a 200 and an HTML page."""

    def _page(self) -> None:
        body = b"<!DOCTYPE html><html><body><h1>Welcome to nginx!</h1></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _page

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def html_endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _WebPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def online(
    sandbox: Sandbox, sandbox_env: dict[str, str], tmp_path: Path, html_endpoint: str
) -> Iterator[Inputs]:
    backup_env = BackupEnv(sandbox, tmp_path)
    try:
        yield Inputs(tmp_path, free_port(), html_endpoint, sandbox, backup_env)
    finally:
        backup_env.cleanup()


def online_env(inputs: Inputs) -> dict[str, str]:
    assert inputs.sandbox is not None and inputs.backup_env is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    env.update(inputs.sandbox.environment())
    env["DR_CONFIG"] = str(inputs.backup_env.config_file)
    return env


@pytest.fixture
def special_role(sandbox: Sandbox) -> Iterator[str]:
    """A superuser whose password holds ``@ : / # ? % & + ' "`` and a space."""
    primary = sandbox.postgres("primary")
    with db.connect(primary, "postgres") as conn:
        conn.execute("DROP ROLE IF EXISTS dr_special")
        escaped = SPECIAL_PASSWORD.replace("'", "''")
        conn.execute(f"CREATE ROLE dr_special LOGIN SUPERUSER PASSWORD '{escaped}'")
    try:
        yield "dr_special"
    finally:
        with db.connect(primary, "postgres") as conn:
            conn.execute("DROP ROLE IF EXISTS dr_special")


ONLINE_CASES: dict[str, Callable[[Inputs], Case]] = {
    "S3 endpoint that answers HTML": lambda i: Case(
        ["list"],
        ExitCode.CONFIG,
        "answered with a web page (HTTP 200, text/html), not S3",
        env={
            "AIRFLOW_CONN_DR_AWS_PRIMARY": aws_connection(i.html_endpoint),
            "AIRFLOW_CONN_DR_AWS_SECONDARY": aws_connection(i.html_endpoint),
        },
    ),
    "PostgreSQL refuses the connection": lambda i: Case(
        ["backup", "full"],
        ExitCode.UNAVAILABLE,
        "Connection refused",
        env={
            "AIRFLOW_CONN_DR_POSTGRES_PRIMARY": (
                f"postgresql://dr:pw@127.0.0.1:{i.refused_port}/litper"
            )
        },
    ),
    "wrong password": lambda i: Case(
        ["backup", "full"],
        ExitCode.CONFIG,
        'password authentication failed for user "dr_special"',
        env={
            "AIRFLOW_CONN_DR_POSTGRES_PRIMARY": json.dumps(
                {
                    "conn_type": "postgres",
                    "host": "127.0.0.1",
                    "port": i.sandbox.ports.pg_primary,  # type: ignore[union-attr]
                    "login": "dr_special",
                    "password": "not-the-password",
                    "schema": "litper",
                }
            )
        },
        secret="not-the-password",
    ),
}


@pytest.mark.parametrize("name", sorted(ONLINE_CASES))
def test_bad_server_is_answered(name: str, online: Inputs, special_role: str) -> None:
    case = ONLINE_CASES[name](online)
    done = run_dr(case.args, {**online_env(online), **case.env})
    assert_answer(case, done)
    assert online.backup_env is not None and online.backup_env.object_keys() == []


def test_password_with_special_characters_works(online: Inputs, special_role: str) -> None:
    """The same password, percent-encoded in a URI, logs in: the backup is taken and verified,
    and the password appears nowhere in the output."""
    assert online.sandbox is not None
    port = online.sandbox.ports.pg_primary
    uri = f"postgresql://{special_role}:{quote(SPECIAL_PASSWORD, safe='')}@127.0.0.1:{port}/litper"
    env = {**online_env(online), "AIRFLOW_CONN_DR_POSTGRES_PRIMARY": uri}
    done = run_dr(["backup", "full", "--from", "primary"], env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["status"] == "verified"
    assert SPECIAL_PASSWORD not in done.stdout + done.stderr


def test_backup_whose_connections_the_server_ends_is_answered(online: Inputs) -> None:
    """A failover (or an administrator) ends the backup's connections mid-run: one JSON answer
    naming the cause, nothing left in S3. pg_dump is held on a table lock so the connections are
    ended while the dump is in progress, not before or after it."""
    assert online.sandbox is not None and online.backup_env is not None
    primary = online.sandbox.postgres("primary")
    dump = None
    with db.connect(primary, autocommit=False) as locker:
        locker.execute("SET application_name = 'test-lock-holder'")
        table = locker.execute(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables"
            " WHERE schemaname = 'public' ORDER BY tablename LIMIT 1"
        ).fetchone()[0]  # type: ignore[index]
        locker.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        dump = subprocess.Popen(
            [sys.executable, "-m", "disaster_recovery", "backup", "full", "--from", "primary"],
            env=online_env(online),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        with db.connect(primary) as admin:
            deadline = time.monotonic() + 60
            while not admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name ="
                " 'litper-dr-pg_dump' AND wait_event_type = 'Lock'"
            ).fetchone()[0]:  # type: ignore[index]
                assert time.monotonic() < deadline and dump.poll() is None, "pg_dump never waited"
                time.sleep(0.05)
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name LIKE 'litper-dr%%' AND pid <> pg_backend_pid()"
            )
        locker.rollback()
    stdout, stderr = dump.communicate(timeout=120)
    case = Case([], ExitCode.FAILED, "terminating connection due to administrator command")
    assert_answer(case, subprocess.CompletedProcess(dump.args, dump.returncode, stdout, stderr))
    assert online.backup_env.object_keys() == [] and online.backup_env.open_uploads() == []
