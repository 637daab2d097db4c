"""Start-up cost of the entry points PostgreSQL and operators run, side by side with an older
commit of this repository (default: the last commit before the library was laid out by concern).

Each command runs N times in a fresh interpreter; the table gives the median wall time and the
number of modules it loaded, for the archiver's paths and for every ``dr`` command's ``--help``
(its parser path; "—" where the older commit has no such command). The archiver's push fails on purpose after building its S3 clients
(the file does not exist, the endpoint is unreachable): that is its whole start-up.

    python bench/startup.py [--ref 6112326] [--runs 15]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MISSING_SEGMENT = "/nonexistent/000000010000000000000001"
COMMANDS = {
    "python -m disaster_recovery.wal push (archive_command)": [
        "-m",
        "disaster_recovery.wal",
        "push",
        MISSING_SEGMENT,
    ],
    "dr wal push": ["-m", "disaster_recovery", "wal", "push", MISSING_SEGMENT],
    "dr --help": ["-m", "disaster_recovery", "--help"],
    "python -m disaster_recovery.failover --help": ["-m", "disaster_recovery.failover", "--help"],
}
# Every command's own parser path, as a person meets it first.
sys.path.insert(0, str(REPO / "include"))
from disaster_recovery.cli import COMMANDS as DR_COMMANDS  # noqa: E402

COMMANDS.update(
    {f"dr {name} --help": ["-m", "disaster_recovery", name, "--help"] for name in DR_COMMANDS}
)
# Runs the module as ``-m`` would, then reports how many modules the process had loaded.
COUNT_MODULES = (
    "import runpy, sys\n"
    "try:\n"
    "    runpy.run_module({module!r}, run_name='__main__')\n"
    "except SystemExit:\n"
    "    pass\n"
    "print(len(sys.modules), file=sys.__stderr__)\n"
)


def environment(include: Path, config: Path) -> dict[str, str]:
    unreachable = {"endpoint_url": "http://127.0.0.1:9"}
    aws = {"conn_type": "aws", "login": "bench", "password": "bench"}
    return {
        **os.environ,
        "PYTHONPATH": str(include),
        "DR_CONFIG": str(config),
        "AIRFLOW_CONN_DR_AWS_PRIMARY": json.dumps(
            {**aws, "extra": {**unreachable, "region_name": "us-east-1"}}
        ),
        "AIRFLOW_CONN_DR_AWS_SECONDARY": json.dumps(
            {**aws, "extra": {**unreachable, "region_name": "us-west-2"}}
        ),
    }


def timed(jobs: list[tuple[list[str], dict[str, str]]], runs: int) -> list[float]:
    """Median wall time of each (command, environment), all interleaved run by run so that a
    busy machine weighs on every command and both trees alike."""
    times: list[list[float]] = [[] for _ in jobs]
    for _ in range(runs):
        for index, (args, env) in enumerate(jobs):
            started = time.perf_counter()
            subprocess.run([sys.executable, *args], env=env, capture_output=True, check=False)
            times[index].append(time.perf_counter() - started)
    return [statistics.median(t) for t in times]


def modules_loaded(args: list[str], env: dict[str, str]) -> int:
    module, rest = args[1], args[2:]
    script = COUNT_MODULES.format(module=module)
    done = subprocess.run(
        [sys.executable, "-c", script, *rest], env=env, capture_output=True, text=True, check=False
    )
    return int(done.stderr.strip().splitlines()[-1])


def exists(args: list[str], env: dict[str, str]) -> bool:
    """Does this tree have the command? (``--help`` of a command it lacks is a usage error.)"""
    if "--help" not in args:
        return True
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, check=False)
    return done.returncode == 0


Measured = tuple[float, int] | None


def measure(includes: list[Path], runs: int) -> dict[str, list[Measured]]:
    envs = [environment(include, include / "dr_config.yaml") for include in includes]
    jobs = [
        (name, index, args, env)
        for name, args in COMMANDS.items()
        for index, env in enumerate(envs)
        if exists(args, env)
    ]
    medians = timed([(args, env) for _, _, args, env in jobs], runs)
    results: dict[str, list[Measured]] = {name: [None] * len(envs) for name in COMMANDS}
    for (name, index, args, env), median in zip(jobs, medians, strict=True):
        results[name][index] = (median, modules_loaded(args, env))
    return results


def cell(figure: Measured) -> str:
    return "—" if figure is None else f"{figure[0]:.3f} ({figure[1]})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="6112326", help="the commit to compare with")
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dr-bench-startup-") as scratch:
        before_tree = Path(scratch) / "before"
        subprocess.run(
            [
                "git",
                "-C",
                str(REPO),
                "worktree",
                "add",
                "--detach",
                "-q",
                str(before_tree),
                args.ref,
            ],
            check=True,
        )
        try:
            results = measure([before_tree / "include", REPO / "include"], args.runs)
        finally:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(before_tree)],
                check=False,
            )
    print(f"| command | {args.ref} s (modules) | now s (modules) | ratio |")
    print("|---|---|---|---|")
    for name in COMMANDS:
        before, now = results[name]
        ratio = f"{now[0] / before[0]:.2f}" if before and now else "—"
        print(f"| {name} | {cell(before)} | {cell(now)} | {ratio} |")
    lean, dr = (results[name][1] for name in list(COMMANDS)[:2])
    if lean and dr:
        print(f"\n`dr wal push` / the lean archiver path, now: {dr[0] / lean[0]:.2f}")


if __name__ == "__main__":
    main()
