"""The one subprocess runner: failures read like sentences, pipes are large, children never
outlive the block (real programs, no servers)."""

from __future__ import annotations

import fcntl
import sys

import pytest

from disaster_recovery.clients import runner
from disaster_recovery.errors import CommandFailed, ToolError

WRITE_MIB = "import sys; sys.stdout.buffer.write(b'x' * (1 << 20))"


def test_a_failure_names_the_program_target_and_last_stderr_line() -> None:
    with pytest.raises(CommandFailed) as caught:
        runner.run(
            [sys.executable, "-c", "import sys; print('detail', file=sys.stderr); sys.exit(3)"],
            target="db=litper host=h:5432",
        )
    assert str(caught.value).startswith("python")
    assert "exited 3 (db=litper host=h:5432): detail" in str(caught.value)
    assert caught.value.returncode == 3


def test_a_missing_program_is_a_tool_error() -> None:
    with pytest.raises(ToolError, match="not found"):
        runner.run(["/nonexistent/pg_dump"])


def test_streamed_output_goes_through_a_one_mib_pipe() -> None:
    """pg_dump writes into a 1 MiB pipe, so a short pause of the uploader does not stall it:
    the writer finishes a whole MiB before anything reads."""
    with runner.streaming([sys.executable, "-c", WRITE_MIB]) as program:
        assert fcntl.fcntl(program.stdout.fileno(), fcntl.F_GETPIPE_SZ) >= runner.PIPE_SIZE
        assert program.proc.wait(timeout=10) == 0  # wrote 1 MiB with no reader
        assert len(program.stdout.read()) == 1 << 20
        program.finish()


def test_leaving_the_block_early_kills_the_program() -> None:
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    with pytest.raises(RuntimeError), runner.streaming(sleeper) as program:
        raise RuntimeError("the consumer failed")
    assert program.proc.returncode is not None
