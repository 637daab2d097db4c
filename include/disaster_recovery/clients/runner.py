"""The one way this package runs an external program.

Argument lists only (never a shell), ``LANG=C`` so messages can be parsed, credentials through
the environment, a timeout, stderr streamed to the log with its tail kept, and on failure a
:class:`~disaster_recovery.errors.CommandFailed` whose text reads like
``pg_dump exited 1 (db=litper host=10.0.0.5:5432): connection to server ... failed``.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from disaster_recovery.errors import CommandFailed, ToolError

log = logging.getLogger(__name__)

STDERR_TAIL_LINES = 20
# Pipes of 1 MiB instead of Linux's 64 KiB: pg_dump keeps compressing while the uploader hands a
# part to its thread, instead of stalling on a full pipe (measured: -0.3 s on a 3 s dump).
PIPE_SIZE = 1024 * 1024


def _environment(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"LANG": "C", "LC_ALL": "C", "LC_MESSAGES": "C"})
    if extra:
        env.update(extra)
    return env


def _failure_text(program: str, target: str, returncode: int | None, tail: str) -> str:
    if returncode is None:
        status = "timed out"
    elif returncode < 0:
        status = f"was killed by signal {-returncode}"
    else:
        status = f"exited {returncode}"
    where = f" ({target})" if target else ""
    last = tail.strip().splitlines()[-1] if tail.strip() else "no output on stderr"
    detail = tail.strip() if len(tail.strip().splitlines()) > 1 else ""
    text = f"{program} {status}{where}: {last}"
    return f"{text}\n--- last lines of stderr ---\n{detail}" if detail else text


@dataclass
class Completed:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def run(
    args: Sequence[str | os.PathLike[str]],
    *,
    target: str = "",
    env: Mapping[str, str] | None = None,
    timeout: float | None = 600,
    check: bool = True,
    input_text: str | None = None,
    cwd: str | Path | None = None,
    user: str | None = None,
) -> Completed:
    """Run a program to completion, capturing its output.

    ``target`` names what the program works on (``db=litper host=h:5432``) for error messages.
    ``user`` runs it as another OS user through ``runuser`` (PostgreSQL refuses to run as root).
    """
    argv = [str(a) for a in args]
    if user:
        argv = ["runuser", "-u", user, "--", *argv]
    program = Path(str(args[0])).name
    log.debug("running %s", " ".join(argv))
    try:
        proc = subprocess.run(
            argv,
            env=_environment(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input_text,
            cwd=cwd,
            check=False,
        )
    except FileNotFoundError:
        raise ToolError(f"{program}: program not found ({args[0]})") from None
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        raise CommandFailed(
            _failure_text(program, target, None, stderr + f"\n(after {timeout} s)"),
            program=program,
            returncode=None,
            stderr_tail=stderr,
        ) from None
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-STDERR_TAIL_LINES:])
        raise CommandFailed(
            _failure_text(program, target, proc.returncode, tail),
            program=program,
            returncode=proc.returncode,
            stderr_tail=tail,
        )
    return Completed(argv, proc.returncode, proc.stdout, proc.stderr)


class StreamingProcess:
    """A running program whose stdout (or stdin) is a pipe the caller streams through.

    stderr is drained by a thread into the log and a bounded tail, so a chatty program never
    blocks on a full pipe. :meth:`finish` waits and raises :class:`CommandFailed` on failure.
    """

    def __init__(
        self, proc: subprocess.Popen[bytes], program: str, target: str, timeout: float | None
    ):
        self.proc = proc
        self.program = program
        self.target = target
        self.deadline = time.monotonic() + timeout if timeout else None
        self._tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._drain = threading.Thread(target=self._read_stderr, daemon=True)
        self._drain.start()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            if line:
                self._tail.append(line)
                log.info("%s: %s", self.program, line)

    @property
    def stdout(self) -> IO[bytes]:
        assert self.proc.stdout is not None
        return self.proc.stdout

    @property
    def stdin(self) -> IO[bytes]:
        assert self.proc.stdin is not None
        return self.proc.stdin

    @property
    def stderr_tail(self) -> str:
        return "\n".join(self._tail)

    def remaining(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def timed_out(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()

    def wait(self) -> int:
        try:
            code = self.proc.wait(timeout=self.remaining())
        except subprocess.TimeoutExpired:
            self.kill()
            code = -signal.SIGKILL
            self._tail.append(f"(killed after the {self.program} timeout)")
        self._drain.join(timeout=5)
        return code

    def failure(self, code: int | None = None) -> CommandFailed:
        code = self.proc.returncode if code is None else code
        return CommandFailed(
            _failure_text(self.program, self.target, code, self.stderr_tail),
            program=self.program,
            returncode=code,
            stderr_tail=self.stderr_tail,
        )

    def finish(self) -> None:
        """Wait for the program; raise :class:`CommandFailed` unless it exited 0."""
        code = self.wait()
        if code != 0:
            raise self.failure(code)


@contextmanager
def streaming(
    args: Sequence[str | os.PathLike[str]],
    *,
    target: str = "",
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    stdin: bool = False,
    stdout: int | IO[bytes] | None = subprocess.PIPE,
) -> Iterator[StreamingProcess]:
    """Start a program with a pipe; on leaving the block the program is reaped (killed if the
    block raised), so no child outlives its caller."""
    argv = [str(a) for a in args]
    program = Path(argv[0]).name
    log.debug("starting %s", " ".join(argv))
    try:
        proc = subprocess.Popen(
            argv,
            env=_environment(env),
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.PIPE,
            start_new_session=True,  # so a kill reaches the whole process group
            pipesize=PIPE_SIZE,
        )
    except FileNotFoundError:
        raise ToolError(f"{program}: program not found ({argv[0]})") from None
    running = StreamingProcess(proc, program, target, timeout)
    try:
        yield running
    except BaseException:
        running.kill()
        raise
    finally:
        # A caller that left without finish() does not get to leave a child behind.
        running.kill()
        for pipe in (proc.stdin, proc.stdout):
            if pipe:
                try:
                    pipe.close()
                except OSError:
                    pass
