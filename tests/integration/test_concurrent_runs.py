"""One run, one object: runs started together either make two distinct verified backups or one
of them refuses clearly; never is one object claimed by two runs. The physical chain has one
writer at a time, and a crashed writer's lock lapses.

The runs are released together by a ``threading.Barrier`` (threads) or started back to back
(``dr`` subprocesses), never spaced by a sleep.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from backup_support import BackupEnv, unique_time

from disaster_recovery.backup import physical
from disaster_recovery.backup.claims import CLAIM_SUFFIX, Lease
from disaster_recovery.backup.logical import dump_to_s3, run_file
from disaster_recovery.errors import BusyError, ExitCode, UnavailableError
from dr_sandbox import Sandbox


@pytest.fixture
def env(backup_env: BackupEnv) -> BackupEnv:
    return backup_env


def together(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls in threads released at the same instant; each one's result or exception."""
    barrier = threading.Barrier(len(calls))
    outcomes: list[Any] = [None] * len(calls)

    def run(index: int, call: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            outcomes[index] = call()
        except Exception as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return outcomes


def assert_object_is_its_manifest(env: BackupEnv, file: str) -> None:
    """The object in S3 is exactly what its manifest says (size and SHA-256 streamed back)."""
    manifest = env.catalog().load(file)
    stored = env.stores().primary.digest(manifest.key)
    assert (stored.size, stored.sha256) == (manifest.size_bytes, manifest.sha256)


# -- logical backups ----------------------------------------------------------------------------


def test_two_runs_on_one_name_one_writes_one_refuses(env: BackupEnv) -> None:
    """Two runs (different run ids) that chose the same second: exactly one dumps; the other is
    refused with BusyError and does not report the winner's backup as its own."""
    deployment = env.deployment()
    when = unique_time()
    outcomes = together(
        lambda: dump_to_s3(deployment, "postgresql_full", when, run_id="run-a"),
        lambda: dump_to_s3(deployment, "postgresql_full", when, run_id="run-b"),
    )
    written = [o for o in outcomes if isinstance(o, dict)]
    refused = [o for o in outcomes if isinstance(o, BusyError)]
    assert len(written) == 1 and len(refused) == 1, outcomes
    assert "this run wrote nothing" in str(refused[0])
    file = written[0]["file"]
    assert written[0]["reused"] is False
    manifest = env.catalog().load(file)
    winner = "run-a" if outcomes[0] is written[0] else "run-b"
    assert manifest.run_id == winner  # type: ignore[attr-defined]
    assert_object_is_its_manifest(env, file)
    # The claim is gone once the manifest stands for the name; only backup and manifest remain.
    assert env.object_keys() == sorted([manifest.key, manifest.key + ".manifest.json"])
    # The loser running again later is still refused: the backup under that name is not its own.
    with pytest.raises(BusyError, match="already written by another run"):
        dump_to_s3(
            deployment, "postgresql_full", when, run_id="run-b" if winner == "run-a" else "run-a"
        )
    # The winner's own retry (same run id) reuses it, as a retried DAG task does.
    again = dump_to_s3(deployment, "postgresql_full", when, run_id=winner)
    assert again == {**written[0], "reused": True}


def test_a_claim_of_a_live_run_refuses_and_a_failed_dump_releases_its_name(
    env: BackupEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While one run holds the name, another is refused naming it; a dump that fails (here:
    PostgreSQL unreachable) leaves neither claim nor object, so the name is free again."""
    deployment = env.deployment()
    when = unique_time()
    file = run_file("postgresql_full", when)
    key = env.catalog().key_for(file)
    store = env.stores().primary
    assert store.put_new(
        key + CLAIM_SUFFIX,
        json.dumps({"run_id": "other", "who": "ops@laptop", "claimed_at": "now"}).encode(),
    )
    with pytest.raises(BusyError, match="run other by ops@laptop"):
        dump_to_s3(deployment, "postgresql_full", when, run_id="mine")
    store.delete([key + CLAIM_SUFFIX])

    broken = env.deployment()
    broken.settings = broken.settings.model_copy(
        update={"backup": broken.settings.backup.model_copy(update={"dump_from": "standby"})}
    )
    monkeypatch.setenv("AIRFLOW_CONN_DR_POSTGRES_STANDBY", "postgresql://x:y@127.0.0.1:1/litper")
    with pytest.raises(UnavailableError, match="Connection refused"):
        dump_to_s3(broken, "postgresql_full", when, run_id="mine")
    assert env.object_keys() == []


def test_two_dr_backup_full_at_once(env: BackupEnv, sandbox: Sandbox) -> None:
    """The issue's case end to end: two ``dr backup full`` started together. Either two distinct
    verified backups, each object exactly what its own manifest says, or one refusal with exit
    code 6 and nothing claimed twice."""
    cli_env = {**os.environ, **sandbox.environment(), "DR_CONFIG": str(env.config_file)}
    command = [sys.executable, "-m", "disaster_recovery", "backup", "full"]
    runs = [
        subprocess.Popen(
            command, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=300) for run in runs]
    results = [json.loads(out) for out, _ in outputs]
    codes = [run.returncode for run in runs]
    for _, err in outputs:
        assert "Traceback" not in err
    verified = [r for r, c in zip(results, codes, strict=True) if c == 0]
    for result in verified:
        assert result["status"] == "verified"
        assert_object_is_its_manifest(env, result["backup_file"])
    print("outcome of two dr backup full at once:", codes)
    if len(verified) == 2:
        assert verified[0]["backup_file"] != verified[1]["backup_file"]
    else:
        assert sorted(codes) == [0, int(ExitCode.ABORTED)], (codes, results)
        refusal = results[codes.index(int(ExitCode.ABORTED))]
        assert refusal["error_type"] == "BusyError" and "wrote nothing" in refusal["reason"]
    listed = [m.file for m in env.catalog().manifests(["postgresql_full"]) if m.verified]
    assert sorted(listed) == sorted(r["backup_file"] for r in verified)


# -- the physical chain ---------------------------------------------------------------------------


def test_one_writer_on_the_chain(env: BackupEnv) -> None:
    """Two base backups started together: one is taken, the other refused naming the holder;
    the lock is gone afterwards, so the next run proceeds."""
    deployment = env.deployment()
    outcomes = together(
        lambda: physical.take_backup(deployment, "base"),
        lambda: physical.take_backup(deployment, "base"),
    )
    taken = [o for o in outcomes if not isinstance(o, Exception)]
    refused = [o for o in outcomes if isinstance(o, BusyError)]
    assert len(taken) == 1 and len(refused) == 1, outcomes
    assert "one writer at a time" in str(refused[0]) and "physical_chain.json" in str(refused[0])
    lock_key = f"{env.prefix}/locks/physical_chain.json"
    assert lock_key not in env.object_keys()
    elements = physical.Chain(deployment, deployment.settings.regions.primary).elements()
    assert [m.file for m in elements] == [taken[0].file]


def lease_record(run_id: str, expires_at: datetime) -> bytes:
    return json.dumps(
        {
            "run_id": run_id,
            "who": "crashed@host",
            "renewed_at": (expires_at - timedelta(minutes=5)).isoformat(),
            "expires_at": expires_at.isoformat(),
        }
    ).encode()


def test_a_crashed_writers_lease_lapses(env: BackupEnv) -> None:
    """A lock left by a run that died: refused while its lease runs, taken over once it lapsed."""
    deployment = env.deployment()
    store = env.stores().primary
    lock_key = f"{env.prefix}/locks/physical_chain.json"
    live = datetime.now(UTC) + timedelta(minutes=5)
    assert store.put_new(lock_key, lease_record("dead-run", live))
    with pytest.raises(BusyError, match="dead-run by crashed@host"):
        physical.take_backup(deployment, "base")
    found = store.get_versioned(lock_key)
    assert found is not None
    lapsed = datetime.now(UTC) - timedelta(seconds=1)
    assert store.replace_if(lock_key, lease_record("dead-run", lapsed), found[1])
    manifest = physical.take_backup(deployment, "base")
    assert manifest.backup_type == "postgresql_base"
    assert store.get_versioned(lock_key) is None


def test_a_live_lease_is_renewed_past_its_duration(env: BackupEnv) -> None:
    """A holder that works longer than the lease keeps it (renewals), so nobody takes over a
    run that is alive; released, it is free at once."""
    store = env.stores().primary
    key = f"{env.prefix}/locks/renewal-test.json"
    duration = timedelta(seconds=0.6)
    held = threading.Event()
    done = threading.Event()
    holder_error: list[BaseException] = []

    def hold() -> None:
        try:
            with Lease(store, key, who="holder", duration=duration):
                held.set()
                done.wait(timeout=30)
        except BaseException as exc:
            holder_error.append(exc)
            held.set()

    thread = threading.Thread(target=hold)
    thread.start()
    assert held.wait(timeout=30) and not holder_error
    # Three lease durations later, the lease is still the holder's, renewed meanwhile.
    threading.Event().wait(3 * duration.total_seconds())
    with (
        pytest.raises(BusyError, match="by holder"),
        Lease(store, key, who="other", duration=duration),
    ):
        pass
    done.set()
    thread.join(timeout=30)
    assert not holder_error
    with Lease(store, key, who="other", duration=duration) as lease:
        assert lease.who == "other"
    assert store.get_versioned(key) is None
