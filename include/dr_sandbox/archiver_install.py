"""The WAL archiver installed as a database host installs it: ``pip install '.[archiver]'`` into a
virtualenv of the host's own Python (Debian's ``/usr/bin/python3``, 3.11.2 on Debian 12), not the
Airflow virtualenv's site-packages borrowed by another interpreter.

The sandbox's PostgreSQL runs ``archive_command`` with this virtualenv's interpreter (and this
checkout's code first on ``PYTHONPATH``, so an edit needs no reinstall). Building it takes
seconds, so it is built once per machine and dependency set: under ``/var/cache/litper-dr`` when
root (root's home is closed to PostgreSQL's OS user), ``~/.cache/litper-dr`` otherwise, or
``$DR_ARCHIVER_CACHE``; the folder's name carries a hash of the interpreter, the ``archiver``
extra and constraints.txt, so a change of any of them builds a new one.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import tomllib

from disaster_recovery.errors import ToolError

REPO = Path(__file__).resolve().parents[2]
HOST_PYTHON = Path("/usr/bin/python3")


def host_python() -> Path:
    """The database host's own Python: ``$DR_ARCHIVER_PYTHON``, else Debian's."""
    python = Path(os.environ.get("DR_ARCHIVER_PYTHON") or HOST_PYTHON)
    if not python.exists():
        raise ToolError(
            f"{python}: no such Python for the WAL archiver; install Debian's python3 and "
            "python3-venv or set DR_ARCHIVER_PYTHON"
        )
    return python


def cache_root() -> Path:
    if configured := os.environ.get("DR_ARCHIVER_CACHE"):
        return Path(configured)
    if os.geteuid() == 0:
        return Path("/var/cache/litper-dr")
    return Path.home() / ".cache" / "litper-dr"


def archiver_extra() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return list(project["optional-dependencies"]["archiver"])


def dependency_key(python: Path) -> str:
    """What the virtualenv's contents depend on, hashed: interpreter, extra, pins."""
    version = _run([str(python), "-c", "import sys; print(sys.version)"], "python").strip()
    pins = (REPO / "constraints.txt").read_text()
    text = json.dumps([str(python), version, archiver_extra(), pins])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def install(python: Path, target: Path) -> Path:
    """A new virtualenv at ``target`` with this checkout installed as ``[archiver]``, pinned by
    constraints.txt; returns its interpreter."""
    _run([str(python), "-m", "venv", str(target)], "python -m venv")
    interpreter = target / "bin" / "python"
    with tempfile.TemporaryDirectory(prefix="dr-archiver-src-") as scratch:
        # From a copy: building in the checkout would leave build/ and egg-info behind, and two
        # builds at once would share them.
        source = Path(scratch)
        shutil.copy(REPO / "pyproject.toml", source)
        shutil.copytree(
            REPO / "include" / "disaster_recovery",
            source / "include" / "disaster_recovery",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        _run(
            [
                *(str(interpreter), "-m", "pip", "install", "-q", "--disable-pip-version-check"),
                *(f"{source}[archiver]", "-c", str(REPO / "constraints.txt")),
            ],
            "pip install .[archiver]",
        )
    return interpreter


def archiver_python() -> Path:
    """The machine's archiver virtualenv for this dependency set, built on first use (one
    builder at a time: sandboxes started together wait for it)."""
    python = host_python()
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"archiver-venv-{dependency_key(python)}"
    built = target / ".built"
    if not built.exists():
        with (root / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not built.exists():
                shutil.rmtree(target, ignore_errors=True)
                install(python, target)
                built.touch()
    return target / "bin" / "python"


def _run(command: list[str], what: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise ToolError(f"{what} failed (exit {done.returncode}): {' | '.join(detail)}")
    return done.stdout
