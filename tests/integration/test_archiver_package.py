"""The WAL archiver as a database host installs it: ``pip install '.[archiver]'`` from this
checkout into a virtualenv of the host's own Python (Debian's /usr/bin/python3: 3.11.2 on these
machines, where redis-py would need ``async_timeout``). It holds exactly the archiver's
dependencies, and a segment pushed through it to the sandbox's two moto regions comes back intact
through its ``dr wal fetch``. The sandbox's PostgreSQL archives through the machine's cached
install of the same extra, not through the test's virtualenv."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from pitr_support import switch_and_wait_archived

from disaster_recovery.postgres import db
from dr_sandbox import Sandbox, archiver_install
from dr_sandbox.archiver_install import host_python

# boto3, PyYAML and zstandard with what they pull in (pinned by constraints.txt), and the
# package itself.
ARCHIVER_DISTRIBUTIONS = {
    "boto3",
    "botocore",
    "jmespath",
    "litper-disaster-recovery",
    "python-dateutil",
    "pyyaml",
    "s3transfer",
    "six",
    "urllib3",
    "zstandard",
}
VENV_TOOLING = {"pip", "setuptools", "wheel"}
INSPECT = (
    "import importlib.metadata as m, json, sys, disaster_recovery\n"
    "print(json.dumps({'version': sys.version.split()[0], 'package': disaster_recovery.__file__,"
    " 'dists': sorted({d.metadata['Name'].lower().replace('_', '-') for d in m.distributions()})}))"
)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv of its own with the archiver installed (pip's wheel cache makes it fast)."""
    target = tmp_path_factory.mktemp("archiver") / "venv"
    archiver_install.install(host_python(), target)
    return target


def host_run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """As PostgreSQL runs the archiver: no PYTHONPATH, outside the checkout."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "LANG": "C.UTF-8"}
    return subprocess.run(
        command, env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def python_version(python: str | Path) -> str:
    done = subprocess.run(
        [str(python), "-c", "import sys; print(sys.version.split()[0])"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def test_the_install_holds_exactly_the_archivers_dependencies(venv: Path, tmp_path: Path) -> None:
    done = host_run([str(venv / "bin" / "python"), "-c", INSPECT], tmp_path)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["version"] == python_version(host_python())  # 3.11.2 on Debian 12
    assert found["package"].startswith(str(venv)), found["package"]
    assert set(found["dists"]) - VENV_TOOLING == ARCHIVER_DISTRIBUTIONS
    # archive_command's sh fast path ships with it (package data).
    assert (Path(found["package"]).parent / "wal" / "archive_push.sh").is_file()


@pytest.fixture
def env_file(sandbox: Sandbox, tmp_path: Path) -> Iterator[Path]:
    """The sandbox archiver's env file, its policy moved under a prefix of this test's own."""
    wal = sandbox.root / "wal"
    policy = yaml.safe_load((wal / "wal_config.yaml").read_text())
    policy["storage"]["prefix"] = f"archiver-package-{os.getpid()}"
    config = tmp_path / "wal_config.yaml"
    config.write_text(yaml.safe_dump(policy))
    lines = (wal / "wal.env").read_text().splitlines()
    env = tmp_path / "wal.env"
    kept = [line for line in lines if not line.startswith("export DR_CONFIG=")]
    env.write_text("\n".join([*kept, f"export DR_CONFIG={config}"]) + "\n")
    yield env
    for region in policy["storage"]["buckets"]:
        bucket = s3(sandbox, region).Bucket(policy["storage"]["buckets"][region])
        bucket.objects.filter(Prefix=policy["storage"]["prefix"]).delete()


def s3(sandbox: Sandbox, region: str) -> Any:
    return boto3.resource(
        "s3",
        endpoint_url=sandbox.s3_endpoint_of(region),
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def archived_keys(sandbox: Sandbox, env_file: Path, name: str) -> dict[str, list[str]]:
    policy = yaml.safe_load(Path(env_file.parent / "wal_config.yaml").read_text())
    prefix, buckets = policy["storage"]["prefix"], policy["storage"]["buckets"]
    return {
        region: [
            o.key
            for o in s3(sandbox, region).Bucket(bucket).objects.filter(Prefix=prefix)
            if o.key.endswith(name)
        ]
        for region, bucket in buckets.items()
    }


def test_a_segment_goes_through_the_installed_archiver(
    venv: Path, sandbox: Sandbox, env_file: Path, tmp_path: Path
) -> None:
    name = "000000010000000000000042"
    segment = tmp_path / "pg_wal" / name
    segment.parent.mkdir()
    segment.write_bytes(os.urandom(16 * 1024 * 1024))
    python, dr = str(venv / "bin" / "python"), str(venv / "bin" / "dr")

    pushed = host_run(
        [python, "-m", "disaster_recovery.wal", "--env-file", str(env_file), "push", str(segment)],
        tmp_path,
    )
    assert pushed.returncode == 0 and pushed.stderr == "", pushed.stderr
    assert all(len(keys) == 1 for keys in archived_keys(sandbox, env_file, name).values())

    # Back through the console script (`dr wal fetch`, its lean path), as restore_command runs.
    restored = tmp_path / "restored"
    fetched = host_run(
        [dr, "wal", "fetch", name, str(restored), "--env-file", str(env_file)], tmp_path
    )
    assert fetched.returncode == 0, fetched.stderr
    assert restored.read_bytes() == segment.read_bytes()

    # A segment never archived: exit 1, "not archived", the normal end of recovery.
    missing = host_run(
        [
            dr,
            "wal",
            "fetch",
            "000000010000000000000043",
            str(tmp_path / "no"),
            "--env-file",
            str(env_file),
        ],
        tmp_path,
    )
    assert missing.returncode == 1 and not (tmp_path / "no").exists(), missing.stderr


def test_the_sandbox_archives_through_the_archiver_install(sandbox: Sandbox) -> None:
    primary = sandbox.postgres("primary")
    with db.connect(primary, "postgres") as conn:
        row = conn.execute("SHOW archive_command").fetchone()
    command = str(row[0]) if row else ""
    installed = archiver_install.archiver_python()
    assert f" {installed} -m disaster_recovery.wal " in command, command
    assert sys.executable not in command
    assert python_version(installed) == python_version(host_python())
    # PostgreSQL's OS user runs it: a segment switched now is archived through it.
    assert switch_and_wait_archived(primary)
