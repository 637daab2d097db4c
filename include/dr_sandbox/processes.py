"""Background processes the sandbox starts and, later, stops: no more and no less."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from disaster_recovery.errors import UnavailableError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_block(count: int, attempts: int = 200) -> int:
    """The first of ``count`` consecutive loopback ports that are all free now. Below Linux's
    ephemeral range (32768 and up): a sandbox port that is not bound yet (an application that
    starts only on failover) is never handed to another program asking for any free port (a
    restored cluster, a client socket)."""
    for _ in range(attempts):
        base = random.randrange(10000, 32768 - count)
        if all(_bindable(base + offset) for offset in range(count)):
            return base
    raise RuntimeError(f"no {count} consecutive free loopback ports below 32768")


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(port: int, what: str, timeout: float = 30, log_file: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return
        time.sleep(0.05)
    tail = ""
    if log_file and log_file.exists():
        tail = "\n" + "\n".join(log_file.read_text(errors="replace").splitlines()[-10:])
    raise UnavailableError(f"{what} did not open port {port} within {timeout:g} s{tail}")


def start_detached(args: Sequence[str], log_file: Path, env: dict[str, str] | None = None) -> int:
    """Start a program in its own session, outliving us; returns its pid."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as out:
        proc = subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    return proc.pid


def pid_alive(pid: int | None, expect_in_cmdline: str = "") -> bool:
    """True if ``pid`` runs and (when given) its command line contains ``expect_in_cmdline``,
    so a recycled pid is never mistaken for ours."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    if "State:\tZ" in status:
        return False
    return expect_in_cmdline in cmdline


def stop_pid(pid: int | None, expect_in_cmdline: str = "", timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; only if the pid is still the process we started.

    The signal goes to the process group that :func:`start_detached` created, so children
    (``airflow standalone``'s scheduler, API server...) stop with their parent.
    """
    if not pid_alive(pid, expect_in_cmdline):
        return
    assert pid is not None
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid, expect_in_cmdline):
            return
        time.sleep(0.05)
    _signal_group(pid, signal.SIGKILL)
    # Reap it if it is our child (tests start the sandbox in-process).
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def kill_group(pid: int) -> None:
    """SIGKILL whatever is left of the process group ``pid`` led."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
