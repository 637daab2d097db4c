"""Every ``dr`` command's parser path, from a fresh interpreter: ``dr <command> [action] --help``
prints its usage, builds only the parsers of the module that owns the command, and loads no heavy
package (Airflow, boto3, psycopg, redis, pydantic, ...): those come with a handler's work, never
with parsing. Module sets, not timings (bench/startup.py times them).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from disaster_recovery.cli import COMMAND_MODULES, COMMANDS, build_parser, command_named

HEAVY = ("airflow", "boto3", "botocore", "psycopg", "redis", "pydantic", "croniter", "slack_sdk")
# archive_command / restore_command: `dr` hands these to the archiver's own lean parser.
LEAN = {
    "wal push": "python -m disaster_recovery.wal push",
    "wal fetch": "python -m disaster_recovery.wal fetch",
}

# One interpreter that has loaded nothing of ours forks a child per command line; the child runs
# ``dr <words> --help`` and reports its exit status, its help text and every module it loaded.
FORK_PER_COMMAND = r"""
import contextlib, io, json, os, sys
assert not any(m.startswith("disaster_recovery") for m in sys.modules), "preloaded ours"
reports = {}
for words in json.loads(sys.argv[1]):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        out = io.StringIO()
        try:
            from disaster_recovery.cli import main
            with contextlib.redirect_stdout(out):
                code = main([*words, "--help"])
        except SystemExit as exc:
            code = exc.code
        except BaseException as exc:
            code = repr(exc)
        with os.fdopen(write, "w") as pipe:
            json.dump({"code": code, "help": out.getvalue(), "modules": sorted(sys.modules)}, pipe)
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        reports[" ".join(words)] = json.loads(pipe.read() or "{}")
    os.waitpid(pid, 0)
print(json.dumps(reports))
"""


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def command_lines() -> list[list[str]]:
    """Every command and every action under it (``backup``, ``backup full``, ``wal push``...)."""
    lines: list[list[str]] = []
    for command, parser in subcommands(build_parser()).items():
        lines.append([command])
        lines.extend([command, action] for action in subcommands(parser))
    return lines


@pytest.fixture(scope="module")
def reports() -> dict[str, dict]:
    result = subprocess.run(
        [sys.executable, "-c", FORK_PER_COMMAND, json.dumps([[], *command_lines()])],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def test_the_command_table_matches_what_the_modules_register() -> None:
    registered: dict[str, str] = {}
    for module in COMMAND_MODULES:
        one_command = next(c for c, m in COMMANDS.items() if m == module)
        registered.update(dict.fromkeys(subcommands(build_parser(one_command)), module))
    assert registered == COMMANDS


def test_the_command_word_is_found_after_the_global_options() -> None:
    assert command_named(["--config", "wal.yaml", "-v", "wal", "push", "x"]) == "wal"
    assert command_named(["-v", "backup", "full"]) == "backup"
    assert command_named(["--help"]) is None
    assert command_named([]) is None


def test_every_command_line_is_covered(reports: dict[str, dict]) -> None:
    assert set(COMMANDS) <= set(reports)
    assert {"backup full", "wal push", "wal fetch", "sandbox up", "chain list"} <= set(reports)


def test_each_command_help_prints_its_own_usage(reports: dict[str, dict]) -> None:
    for line, report in reports.items():
        assert report["code"] == 0, f"dr {line} --help: {report['code']}"
        usage = f"usage: {LEAN.get(line, f'dr {line}'.rstrip())}"
        assert report["help"].startswith(usage), report["help"][:200]


def test_dr_help_lists_every_command(reports: dict[str, dict]) -> None:
    assert all(command in reports[""]["help"] for command in COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_command_builds_only_its_own_parsers(reports: dict[str, dict], command: str) -> None:
    for line, report in reports.items():
        if line.split(" ")[0] != command:
            continue
        loaded = {
            m.split(".")[2]
            for m in report["modules"]
            if m.startswith("disaster_recovery.cli.") and m.split(".")[2] in COMMAND_MODULES
        }
        own = set() if line in LEAN else {COMMANDS[command]}
        assert loaded == own, f"dr {line} --help loads the parsers of {loaded}"


@pytest.mark.parametrize("line", ["", *sorted(" ".join(words) for words in command_lines())])
def test_no_parser_path_loads_a_heavy_package(reports: dict[str, dict], line: str) -> None:
    tops = {m.split(".")[0] for m in reports[line]["modules"]}
    heavy = sorted(tops & set(HEAVY))
    assert heavy == [], f"dr {line} --help imports {heavy}"
