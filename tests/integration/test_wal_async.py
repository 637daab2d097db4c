"""Asynchronous archiving and parallel prefetch, with the sandbox's PostgreSQL archiving through
them: the uploader starts on demand and only once, archives in order to both regions, survives
kill -9 without losing a segment, refuses beyond its backlog limit (with the WAL DAG's alert),
and restore_command serves following segments from its spool without S3."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import time
from pathlib import Path

import pytest
import yaml
from helpers import private_sandbox, run_dag, run_dr, slack_messages, task_states
from pitr_support import deployment_for, switch_and_wait_archived

from disaster_recovery.config.endpoints import PostgresEndpoint
from disaster_recovery.postgres import db
from disaster_recovery.wal.archive import WalArchive
from disaster_recovery.wal.continuity import check_archive
from disaster_recovery.wal.host import load_env_file
from disaster_recovery.wal.prefetch import FOLDER, served_from_spool
from disaster_recovery.wal.uploader import Spool, start_uploader
from dr_sandbox import Sandbox


def _switches(endpoint: PostgresEndpoint, count: int) -> list[str]:
    """``count`` finished segments with a little data each, their names in order."""
    names = []
    with db.connect(endpoint, "postgres") as conn:
        for _ in range(count):
            conn.execute("SELECT txid_current()")
            row = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
            assert row is not None
            names.append(str(row[0]))
    return names


def _uploaders(pg_wal: Path) -> list[int]:
    """Pids of uploader processes serving ``pg_wal`` (from /proc: any process, any user)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"upload" in args and str(pg_wal).encode() in args:
            found.append(int(entry.name))
    return found


def _archived_identically(archive: WalArchive, pg_names: list[str]) -> None:
    for name in pg_names:
        digests = set()
        for region in archive.regions:
            store = archive.store(region)
            head = store.head(archive.key(name))
            assert head is not None, f"{name} missing in {region}"
            data = archive._read_verified(region, name)  # decompressed, checked
            assert head["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
            digests.add(head["Metadata"]["sha256"])
        assert len(digests) == 1, name


def _uploads_begun(spool: Spool, log_offset: int) -> bool:
    """Has an uploader logged a push since ``log_offset`` (bytes into its log)?"""
    try:
        with spool.log_file.open("rb") as log:
            log.seek(log_offset)
            return b"pushing " in log.read()
    except OSError:
        return False


def test_the_uploader_starts_on_demand_once_and_archives_in_order(sandbox: Sandbox) -> None:
    primary = sandbox.postgres("primary")
    pg_wal = sandbox.instance("primary").data_dir / "pg_wal"
    spool = Spool(pg_wal)
    names = _switches(primary, 8)
    switch_and_wait_archived(primary, timeout=60)
    pid = spool.uploader_pid()
    assert pid is not None and _uploaders(pg_wal) == [pid]
    # A second start while it runs: the newcomer finds the lock taken and leaves.
    start_uploader(spool, str(sandbox.root / "wal" / "wal.env"))
    time.sleep(3)
    assert _uploaders(pg_wal) == [pid] and spool.uploader_pid() == pid
    _archived_identically(WalArchive.for_deployment(deployment_for(sandbox)), names)
    # Taken up in PostgreSQL's order (several in flight, so confirmations may interleave).
    pushed = re.findall(r"pushing (\S+)", spool.log_file.read_text())
    ours = [n for n in pushed if n in names]
    assert ours[-len(names) :] == names
    # Confirmations of files PostgreSQL has marked done are dropped.
    assert not set(names) & spool.confirmed_names()


def test_kill_9_loses_nothing_and_the_backlog_limit_refuses(
    airflow_db: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with private_sandbox() as box:
        deployment = deployment_for(box)
        primary = box.postgres("primary")
        instance = box.instance("primary")
        pg_wal = instance.data_dir / "pg_wal"
        spool = Spool(pg_wal)
        first = switch_and_wait_archived(primary)
        env_file = box.root / "wal" / "wal.env"
        config_file = Path(load_env_file(env_file)["DR_CONFIG"])
        good_env, good_config = env_file.read_text(), config_file.read_text()

        # -- kill -9 mid-stream ------------------------------------------------------------
        # One upload at a time, uncompressed: the burst outruns the uploader for a while (with
        # the defaults it keeps up with 16 switches a second, and nothing would be in flight).
        policy = yaml.safe_load(good_config)
        policy["pitr"].update(async_uploads=1, wal_compression="none")
        config_file.write_text(yaml.safe_dump(policy))  # the next uploader reads it
        logged = spool.log_file.stat().st_size if spool.log_file.exists() else 0
        burst = _switches(primary, 16)
        deadline = time.monotonic() + 60
        while not (_uploads_begun(spool, logged) and len(spool.ready()) >= 3):
            assert time.monotonic() < deadline, "the uploader never got under way"
            time.sleep(0.01)
        killed = spool.uploader_pid()
        assert killed is not None
        os.kill(killed, signal.SIGKILL)
        config_file.write_text(good_config)
        last = switch_and_wait_archived(primary, timeout=120)
        assert spool.uploader_pid() not in (None, killed)  # a new one took over
        archive = WalArchive.for_deployment(deployment)
        _archived_identically(archive, burst)
        report = check_archive(deployment, start_segment=first)
        assert not report.gap and report.checked_to is not None and report.checked_to >= last

        # -- the backlog limit -------------------------------------------------------------
        lost = good_env
        for region in ("us-east-1", "us-west-2"):
            lost = lost.replace(box.s3_endpoint_of(region), "http://127.0.0.1:9")
        policy = yaml.safe_load(good_config)
        policy["pitr"]["async_max_backlog"] = 2
        config_file.write_text(yaml.safe_dump(policy))
        env_file.write_text(lost)
        held = _switches(primary, 4)
        log_file = instance.log_file
        deadline = time.monotonic() + 60
        while "pitr.async_max_backlog 2" not in log_file.read_text(errors="replace"):
            assert time.monotonic() < deadline, "archive_command never refused the backlog"
            time.sleep(0.2)
        refusal = next(
            line
            for line in log_file.read_text(errors="replace").splitlines()
            if "pitr.async_max_backlog 2" in line
        )
        assert "WAL files wait to be archived" in refusal and "last upload error" in refusal
        assert all((pg_wal / "archive_status" / f"{n}.ready").exists() for n in held)

        # The WAL DAG's backlog check, under the same policy.
        strict = box.root / "strict_config.yaml"
        full = yaml.safe_load(box.config_file.read_text())
        full.setdefault("pitr", {})["async_max_backlog"] = 2
        strict.write_text(yaml.safe_dump(full))
        for key, value in {**box.environment(), "DR_CONFIG": str(strict)}.items():
            monkeypatch.setenv(key, value)
        states = task_states(run_dag("postgresql_wal_archive", None))
        assert states["check_backlog"] == "failed" and states["check_continuity"] == "success"
        alert = slack_messages(box, "WALArchiveBacklog")
        assert alert and "pitr.async_max_backlog 2" in alert[-1]["text"]

        # S3 and the limit are back: everything held is archived, the archive continuous.
        config_file.write_text(good_config)
        env_file.write_text(good_env)
        last = switch_and_wait_archived(primary, timeout=120)
        _archived_identically(archive, held)
        report = check_archive(deployment, start_segment=first)
        assert not report.gap and report.checked_to is not None and report.checked_to >= last


def test_fetch_prefetches_the_following_segments_and_serves_them_without_s3(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    env_file = sandbox.root / "wal" / "wal.env"
    primary = sandbox.postgres("primary")
    names = _switches(primary, 3)
    switch_and_wait_archived(primary, timeout=60)
    pg_wal = tmp_path / "pg_wal"
    pg_wal.mkdir()
    spool = pg_wal / FOLDER
    spool.mkdir()
    (spool / "000000010000000000000001").write_bytes(b"left from an earlier request")

    def fetch(name: str, env: Path = env_file) -> None:
        result = run_dr(
            "--env-file", str(env), "fetch", name, str(pg_wal / "RECOVERYXLOG"),
            module="disaster_recovery.wal", timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr

    fetch(names[0])
    archive = WalArchive.for_deployment(deployment_for(sandbox))
    primary = archive.regions[0]
    assert (pg_wal / "RECOVERYXLOG").read_bytes() == archive._read_verified(primary, names[0])
    # The next ones (up to pitr.prefetch 4) are spooled, checked; the older leftover is gone,
    # and a following segment not archived yet was no error.
    spooled = sorted(p.name for p in spool.iterdir() if p.name != "served")
    assert spooled[:2] == names[1:] and len(spooled) <= 4
    # With S3 unreachable, the spooled segment is still served (by a rename).
    lost = tmp_path / "lost.env"
    text = env_file.read_text()
    for region in ("us-east-1", "us-west-2"):
        text = text.replace(sandbox.s3_endpoint_of(region), "http://127.0.0.1:9")
    lost.write_text(text)
    fetch(names[1], lost)
    assert (pg_wal / "RECOVERYXLOG").read_bytes() == archive._read_verified(primary, names[1])
    assert not (spool / names[1]).exists() and served_from_spool(pg_wal) == 1
