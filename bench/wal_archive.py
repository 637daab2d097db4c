"""Benchmark: the WAL archiver against plain ``cp``, side by side in one run.

1. Seconds per 16 MB segment: ``python -m disaster_recovery.wal push`` (as PostgreSQL runs it:
   the server's OS user, the archive_command's interpreter and env file) vs ``cp`` to a local
   folder, on the same files; plus start-up alone (a fetch of a missing file) for the lean
   entry point and for the full ``dr`` CLI.
2. Sustained WAL rate under pgbench with the archiver in place: WAL produced vs archived per
   second, and the ``.ready`` backlog in ``pg_wal`` sampled every second (it must not grow).
3. A burst (one statement writing ~320 MB of WAL) until the last segment is archived, with
   ``pitr.push_ahead`` 0 (one file per archive_command call) and 4 (upload-ahead).
4. ``pitr.archive_mode`` sync (push_ahead 4) vs async, each with ``pitr.wal_compression``
   none and zstd:1, side by side: a burst (default 1 GB of WAL; rows of md5 text, which
   compress about as well as real table data, unlike a repeated character) until its last
   segment is archived, each archive_command call timed by a wrapper (median, p99), the
   ``.ready`` backlog and ``pg_wal`` size sampled every 0.5 s; then the archiver's own rate
   with the writer out of the way: the same amount written while archiving is off (an empty
   archive_command), timed from turning it on to the last segment archived (the drain).

Usage: PYTHONPATH=include python bench/wal_archive.py [--segments 8] [--pgbench-seconds 30]
       [--burst-mb 320] [--push-ahead 0 4] [--modes-mb 1024] [--only-modes]
       [--modes sync:none sync:zstd:1 async:none async:zstd:1]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers import private_sandbox

from disaster_recovery.postgres import db, pgbin
from disaster_recovery.wal.host import archiver_python, load_env_file
from disaster_recovery.wal.uploader import Spool
from dr_sandbox import server_os_user

SEGMENT = 16 * 1024 * 1024


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, env=env, capture_output=True)
    return time.perf_counter() - started


def as_server_user(argv: list[str]) -> list[str]:
    user = server_os_user()
    return ["runuser", "-u", user, "--", *argv] if user else argv


def segment_costs(box: object, count: int) -> dict[str, float]:
    root = box.root  # type: ignore[attr-defined]
    env_file = root / "wal" / "wal.env"
    python, extra = archiver_python(server_os_user())
    include = str(Path(__file__).resolve().parent.parent / "include")
    pythonpath = ":".join([include, *extra])
    folder = Path(tempfile.mkdtemp(prefix="dr-bench-wal-", dir="/tmp"))
    folder.chmod(0o755)
    copies = folder / "copies"
    copies.mkdir()
    files = []
    for index in range(count):
        # Timeline 0xBB: names no real segment of the sandbox uses.
        path = folder / f"000000BB00000000{index:08X}"
        path.write_bytes(os.urandom(SEGMENT))
        files.append(path)
    user = server_os_user()
    if user:  # the archiver runs as PostgreSQL's OS user: it must read the files
        for path in (folder, copies, *files):
            shutil.chown(path, user)
    base = ["env", f"PYTHONPATH={pythonpath}", python]
    push = [
        timed(
            as_server_user(
                [*base, "-m", "disaster_recovery.wal", "--env-file", str(env_file), "push", str(p)]
            )
        )
        for p in files
    ]
    copy = [timed(as_server_user(["cp", str(p), str(copies / p.name)])) for p in files]
    lean = [_startup(base, env_file, lean=True) for _ in range(5)]
    full = [_startup(base, env_file, lean=False) for _ in range(5)]
    shutil.rmtree(folder)
    return {
        "dr wal push s/segment (median)": statistics.median(push),
        "cp s/segment (median)": statistics.median(copy),
        "push / cp": statistics.median(push) / statistics.median(copy),
        "start-up, python -m disaster_recovery.wal (s)": statistics.median(lean),
        "start-up, python -m disaster_recovery wal (s)": statistics.median(full),
    }


def _startup(base: list[str], env_file: Path, lean: bool) -> float:
    """A fetch of a file that is not archived: interpreter, imports, settings, two HEADs."""
    module = (
        ["-m", "disaster_recovery.wal", "--env-file", str(env_file), "fetch"]
        if lean
        else ["-m", "disaster_recovery", "wal", "fetch", "--env-file", str(env_file)]
    )
    started = time.perf_counter()
    result = subprocess.run(
        as_server_user([*base, *module, "000000BB00000000FFFFFFFF", "/tmp/none"]),
        capture_output=True,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    return time.perf_counter() - started


def sustained_rate(box: object, seconds: int, role: str = "primary") -> dict[str, float]:
    """pgbench for ``seconds`` on the sandbox node ``role`` (the one accepting writes)."""
    primary = box.postgres(role)  # type: ignore[attr-defined]
    env = primary.libpq_env()
    pgbench = pgbin.program("pgbench")
    subprocess.run(
        [pgbench, "-i", "-s", "5", "-q", "--no-vacuum"],
        env={**os.environ, **env},
        check=True,
        capture_output=True,
    )
    ready_dir = box.instance(role).data_dir / "pg_wal" / "archive_status"  # type: ignore[attr-defined]

    def position() -> tuple[int, int]:
        with db.connect(primary, "postgres") as conn:
            row = conn.execute(
                "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn, archived_count FROM pg_stat_archiver"
            ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    lsn0, archived0 = position()
    bench = subprocess.Popen(
        [pgbench, "-c", "4", "-j", "2", "-T", str(seconds), "-n"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    backlog = []
    started = time.perf_counter()
    while bench.poll() is None:
        backlog.append(len(list(ready_dir.glob("*.ready"))))
        time.sleep(1)
    elapsed = time.perf_counter() - started
    output = bench.stdout.read().decode() if bench.stdout else ""
    lsn1, archived1 = position()
    # Let the archiver drain, then measure how long that took.
    drain_started = time.perf_counter()
    while list(ready_dir.glob("*.ready")) and time.perf_counter() - drain_started < 120:
        time.sleep(0.5)
    tps = next(
        (ln.split("=")[1].split()[0] for ln in output.splitlines() if ln.startswith("tps")), "?"
    )
    thirds = max(1, len(backlog) // 3)
    return {
        "pgbench tps": float(tps) if tps != "?" else -1.0,
        "WAL produced MB/s": (lsn1 - lsn0) / elapsed / 1e6,
        "segments archived during run": archived1 - archived0,
        "segments archived /s": (archived1 - archived0) / elapsed,
        ".ready backlog, first third (mean)": statistics.mean(backlog[:thirds]) if backlog else 0,
        ".ready backlog, last third (mean)": statistics.mean(backlog[-thirds:]) if backlog else 0,
        ".ready backlog, max": max(backlog, default=0),
        "drain after run (s)": time.perf_counter() - drain_started,
    }


def set_push_ahead(box: object, files: int) -> None:
    """Rewrite ``pitr.push_ahead`` in the policy file the archiver reads (its env file's
    DR_CONFIG); the next archive_command call uses it."""
    env = load_env_file(box.root / "wal" / "wal.env")  # type: ignore[attr-defined]
    policy = Path(env["DR_CONFIG"])
    document = yaml.safe_load(policy.read_text())
    document.setdefault("pitr", {})["push_ahead"] = files
    policy.write_text(yaml.safe_dump(document))


def burst_throughput(
    box: object, megabytes: int, push_ahead: int, role: str = "primary", label: str = ""
) -> dict[str, float]:
    """Write ~``megabytes`` of WAL in one statement on the node ``role``, then time until every
    segment is archived: the archiver's rate when it, not the workload, is the bottleneck."""
    primary = box.postgres(role)  # type: ignore[attr-defined]
    set_push_ahead(box, push_ahead)
    with db.connect(primary, "postgres") as conn:
        conn.execute("DROP TABLE IF EXISTS burst")
        conn.execute("CHECKPOINT")
        start_lsn = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
        started = time.perf_counter()
        conn.execute(
            "CREATE TABLE burst AS SELECT g, repeat(md5(g::text), 12) AS pad"
            " FROM generate_series(1, %s) AS g",
            (megabytes * 2200,),
        )
        written = time.perf_counter() - started
        row = conn.execute(
            "SELECT pg_current_wal_lsn() - %s::pg_lsn, pg_walfile_name(pg_switch_wal())",
            (start_lsn,),
        ).fetchone()
        assert row is not None
        wal_bytes, last = int(row[0]), row[1]
        wait_archived(conn, last)
        total = time.perf_counter() - started
    label = label or f"burst, push_ahead={push_ahead}"
    return {
        f"{label}: WAL written (MB)": wal_bytes / 1e6,
        f"{label}: WAL written at MB/s": wal_bytes / 1e6 / written,
        f"{label}: archived at MB/s (write start -> all archived)": wal_bytes / 1e6 / total,
        f"{label}: segments archived /s": wal_bytes / SEGMENT / total,
        f"{label}: write start -> all archived (s)": total,
    }


def wait_archived(conn: object, last: str) -> None:
    """Until PostgreSQL reports ``last`` (or a later file) archived."""
    while True:
        archived = conn.execute(  # type: ignore[attr-defined]
            "SELECT last_archived_wal FROM pg_stat_archiver"
        ).fetchone()
        if archived and archived[0] and archived[0][:24] >= last:
            return
        time.sleep(0.1)


def set_archive_mode(box: object, mode: str, codec: str) -> None:
    env = load_env_file(box.root / "wal" / "wal.env")  # type: ignore[attr-defined]
    policy = Path(env["DR_CONFIG"])
    document = yaml.safe_load(policy.read_text())
    document.setdefault("pitr", {}).update(archive_mode=mode, push_ahead=4, wal_compression=codec)
    policy.write_text(yaml.safe_dump(document))


def timed_archive_command(original: str, times_file: Path) -> str:
    """The sandbox's archive_command wrapped so each call appends its duration (ns)."""
    wrapper = times_file.with_suffix(".sh")
    wrapper.write_text(
        "#!/bin/sh\nstart=$(date +%s%N)\n"
        + original.replace("%p", '"$1"')
        + f"\nrc=$?\necho $(( $(date +%s%N) - start )) >> {times_file}\nexit $rc\n"
    )
    wrapper.chmod(0o755)
    times_file.touch()
    user = server_os_user()
    if user:
        shutil.chown(times_file, user)
    return f"{wrapper} %p"


def archive_modes(box: object, megabytes: int, modes: list[str]) -> dict[str, float]:
    """Archiving of the same burst in each ``mode:codec`` of ``modes`` (module docstring, 4)."""
    primary = box.postgres("primary")  # type: ignore[attr-defined]
    pg_wal = box.instance("primary").data_dir / "pg_wal"  # type: ignore[attr-defined]
    results: dict[str, float] = {}
    with db.connect(primary, "postgres") as conn:
        original = str(conn.execute("SHOW archive_command").fetchone()[0])  # type: ignore[index]
    for spec in modes:
        mode, _, codec = spec.partition(":")
        set_archive_mode(box, mode, codec or "none")
        times_file = Path(box.root) / f"archive-{mode}-{codec}.times"  # type: ignore[attr-defined]
        command = timed_archive_command(original, times_file)
        set_archive_command(primary, command)
        samples: list[tuple[int, int]] = []
        done = threading.Event()
        sampler = threading.Thread(target=_sample, args=(pg_wal, samples, done), daemon=True)
        sampler.start()
        label = f"{mode}, wal_compression {codec or 'none'}"
        burst = burst_throughput(box, megabytes, 4, label=label)
        done.set()
        sampler.join()
        calls = sorted(int(x) / 1e9 for x in times_file.read_text().split())
        results.update(burst)
        results[f"{label}: archive_command calls"] = len(calls)
        results[f"{label}: archive_command median (s)"] = statistics.median(calls)
        results[f"{label}: archive_command p99 (s)"] = calls[
            min(len(calls) - 1, int(len(calls) * 0.99))
        ]
        results[f"{label}: .ready backlog max"] = max(r for r, _ in samples)
        results[f"{label}: pg_wal MB max"] = max(s for _, s in samples) / 1e6
        drain_times = times_file.with_suffix(".drain")
        drained = drain(box, megabytes, timed_archive_command(original, drain_times), label)
        results.update(drained)
        calls = sorted(int(x) / 1e9 for x in drain_times.read_text().split())
        results[f"{label}: drain, archive_command median (s)"] = statistics.median(calls)
    with db.connect(primary, "postgres") as conn:
        conn.execute("ALTER SYSTEM RESET archive_command")
        conn.execute("SELECT pg_reload_conf()")
    return results


def set_archive_command(primary: object, command: str) -> None:
    with db.connect(primary, "postgres") as conn:  # type: ignore[arg-type]
        conn.execute(f"ALTER SYSTEM SET archive_command = {_literal(command)}")
        conn.execute("SELECT pg_reload_conf()")


def drain(box: object, megabytes: int, command: str, label: str) -> dict[str, float]:
    """The archiver's own rate, the writer out of the way: ~``megabytes`` of WAL written while
    archiving is off (an empty archive_command: PostgreSQL keeps the files), then the time from
    turning it on to the last segment archived."""
    primary = box.postgres("primary")  # type: ignore[attr-defined]
    pg_wal = box.instance("primary").data_dir / "pg_wal"  # type: ignore[attr-defined]
    set_archive_command(primary, "")
    stop_uploader(pg_wal)  # else it would drain the backlog while archiving is "off"
    with db.connect(primary, "postgres") as conn:
        conn.execute("DROP TABLE IF EXISTS drained")
        conn.execute(
            "CREATE TABLE drained AS SELECT g, repeat(md5(g::text), 12) AS pad"
            " FROM generate_series(1, %s) AS g",
            (megabytes * 2200,),
        )
        last = str(conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0])  # type: ignore[index]
        conn.execute("CHECKPOINT")
    backlog = sum(1 for _ in (pg_wal / "archive_status").glob("*.ready"))
    started = time.perf_counter()
    set_archive_command(primary, command)
    with db.connect(primary, "postgres") as conn:
        wait_archived(conn, last)
    seconds = time.perf_counter() - started
    return {
        f"{label}: drain, .ready files at the start": backlog,
        f"{label}: drain, seconds": seconds,
        f"{label}: drain, segments archived /s": backlog / seconds,
    }


def stop_uploader(pg_wal: Path) -> None:
    """Stop the async uploader serving ``pg_wal`` (none: nothing to do)."""
    spool = Spool(pg_wal)
    pid = spool.uploader_pid()
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while spool.uploader_pid() is not None and time.monotonic() < deadline:
        time.sleep(0.1)


def _sample(pg_wal: Path, samples: list[tuple[int, int]], done: threading.Event) -> None:
    """(.ready files, pg_wal bytes) every 0.5 s until ``done``."""
    while not done.is_set():
        ready = sum(1 for _ in (pg_wal / "archive_status").glob("*.ready"))
        size = 0
        for entry in os.scandir(pg_wal):
            with contextlib.suppress(OSError):  # PostgreSQL recycles files meanwhile
                size += entry.stat().st_size if entry.is_file() else 0
        samples.append((ready, size))
        time.sleep(0.5)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--segments", type=int, default=8)
    parser.add_argument("--pgbench-seconds", type=int, default=30)
    parser.add_argument("--burst-mb", type=int, default=320)
    parser.add_argument(
        "--push-ahead",
        type=int,
        nargs="+",
        default=[0, 4],
        help="pitr.push_ahead values to compare",
    )
    parser.add_argument("--modes-mb", type=int, default=1024, help="burst for sync vs async")
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["sync:none", "sync:zstd:1", "async:none", "async:zstd:1"],
        help="archive_mode:wal_compression pairs (sync:none is the archiver before issue 15)",
    )
    parser.add_argument("--only-modes", action="store_true", help="only the sync/async comparison")
    args = parser.parse_args()
    with private_sandbox(scale=0.2) as box:
        results: dict[str, float] = {}
        if not args.only_modes:
            results.update(segment_costs(box, args.segments))
            results.update(sustained_rate(box, args.pgbench_seconds))
            for push_ahead in args.push_ahead:
                results.update(burst_throughput(box, args.burst_mb, push_ahead))
        results.update(archive_modes(box, args.modes_mb, args.modes))
    print("load average before/after:", os.getloadavg())
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value:10.3f}")
    print("command:", " ".join(shlex.quote(a) for a in sys.argv))


if __name__ == "__main__":
    main()
