"""archive_push.sh, archive_command's fast path in async mode, with the real sh and stat: a file
the uploader confirmed is answered without an interpreter while it keeps the identity its
marker recorded; anything else runs the full command (here ``false``, so exit 0 can only come
from the fast path)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from disaster_recovery.wal.host import FAST_PUSH_SCRIPT, archiver_command
from disaster_recovery.wal.uploader import Spool, file_identity

NAME = "000000010000000000000007"


def push(segment: Path, *fallback: str) -> int:
    command = ["/bin/sh", str(FAST_PUSH_SCRIPT), str(segment), *(fallback or ("false",))]
    return subprocess.run(command, capture_output=True, check=False, timeout=30).returncode


@pytest.fixture
def segment(tmp_path: Path) -> Path:
    path = tmp_path / "pg_wal" / NAME
    path.parent.mkdir()
    path.write_bytes(os.urandom(1 << 20))
    return path


def confirm(segment: Path, identity: str | None) -> None:
    spool = Spool(segment.parent)
    spool.prepare()
    spool.confirm(segment.name, hashlib.sha256(segment.read_bytes()).hexdigest(), identity)


def test_the_identity_is_what_gnu_stat_prints(segment: Path) -> None:
    printed = subprocess.run(
        ["stat", "-c", "%i %s %.9Y %.9Z", str(segment)], capture_output=True, text=True, check=True
    )
    assert file_identity(segment) == printed.stdout.strip()
    assert file_identity(segment.parent / "gone") is None


def test_a_confirmed_file_is_answered_without_the_command(segment: Path) -> None:
    confirm(segment, file_identity(segment))
    assert push(segment) == 0
    # The Python side still reads the SHA-256 from the marker's first line.
    assert (
        Spool(segment.parent).confirmed(segment) == hashlib.sha256(segment.read_bytes()).hexdigest()
    )


def test_anything_else_runs_the_command(segment: Path) -> None:
    assert push(segment) == 1  # no marker
    confirm(segment, None)
    assert push(segment) == 1  # a marker without identity (the file changed while read)
    confirm(segment, file_identity(segment))
    with segment.open("r+b") as out:  # other bytes under the name since the marker
        out.write(b"rewound")
    assert push(segment) == 1
    # The command gets the file as its last argument, and its exit status is the answer.
    assert push(segment, "test", "-f") == 0


def test_archive_command_puts_the_fast_path_first(tmp_path: Path) -> None:
    command = archiver_command("push", tmp_path / "wal.env", None, "/opt/dr/bin/python")
    assert command.startswith(f"/bin/sh {FAST_PUSH_SCRIPT} %p env PYTHONPATH=")
    assert command.endswith(
        f"/opt/dr/bin/python -m disaster_recovery.wal --env-file {tmp_path}/wal.env push"
    )
    fetch = archiver_command("fetch", tmp_path / "wal.env", None, "/opt/dr/bin/python")
    assert fetch.startswith("env PYTHONPATH=") and fetch.endswith(" fetch %f %p")
