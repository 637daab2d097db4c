"""The WAL archiver: segment arithmetic, ``dr wal push``/``fetch`` exactly as PostgreSQL runs
them, and the faults the archive must survive (S3 down, a different object under the name, a
corrupted or deleted segment, the failback case of an identical segment offered again)."""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from helpers import private_sandbox, run_dag, run_dr, slack_messages, task_states
from pitr_support import archive_store_lost, deployment_for, switch_and_wait_archived

from disaster_recovery.errors import ConflictError, UnavailableError, WalStaleError
from disaster_recovery.postgres import db
from disaster_recovery.postgres.walfiles import (
    TimelineSwitch,
    expected_segments,
    is_archivable,
    parse_history,
    parse_lsn,
    parse_segment,
    segment_name,
    timeline_of_segment,
)
from disaster_recovery.wal.archive import FETCH_FATAL_EXIT, WalArchive
from disaster_recovery.wal.continuity import check_archive, raise_for_staleness
from disaster_recovery.wal.host import archiver_command, load_env_file
from dr_sandbox import Sandbox, server_os_user
from dr_sandbox.demo import archive_now

MB16 = 16 * 1024 * 1024
FAKE_TIMELINE = 0xAA  # names no real timeline of the sandbox uses


# -- pure logic -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timeline", "segno", "name"),
    [
        (1, 1, "000000010000000000000001"),
        (1, 255, "0000000100000000000000FF"),
        (2, 256, "000000020000000100000000"),
        (0xA, 0x1234, "0000000A0000001200000034"),
    ],
)
def test_segment_names_round_trip(timeline: int, segno: int, name: str) -> None:
    assert segment_name(timeline, segno) == name
    assert parse_segment(name) == (timeline, segno)
    assert parse_segment(name + ".partial") == (timeline, segno)


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("000000010000000000000001", True),
        ("00000002.history", True),
        ("000000010000000000000003.00000028.backup", True),
        ("000000010000000000000003.partial", True),
        ("RECOVERYXLOG", False),
        ("../etc/passwd", False),
        ("00000001000000000000000g", False),
    ],
)
def test_only_wal_file_names_are_archivable(name: str, ok: bool) -> None:
    assert is_archivable(name) is ok


def test_lsn_parsing() -> None:
    assert parse_lsn("0/16B3748") == 0x16B3748
    assert parse_lsn("1/0") == 1 << 32
    with pytest.raises(ValueError, match="not an LSN"):
        parse_lsn("nonsense")


def test_recovery_reads_each_segment_from_the_newest_timeline_begun_by_then() -> None:
    history = parse_history(
        "1\t0/5000028\tno recovery target specified\n\n"
        "2\t0/9000000\tbefore 2024-01-15 14:30:00-05\n"
    )
    assert history == [TimelineSwitch(1, 0x5000028), TimelineSwitch(2, 0x9000000)]
    assert [timeline_of_segment(s, 3, history, MB16) for s in (3, 4, 5, 8, 9, 12)] == [
        1,
        1,
        2,
        2,
        3,
        3,
    ]
    assert expected_segments(4, 6, 3, history, MB16) == [
        "000000010000000000000004",
        "000000020000000000000005",
        "000000020000000000000006",
    ]


def test_env_file_accepts_the_sandbox_env_format(tmp_path: Path) -> None:
    env = tmp_path / "wal.env"
    env.write_text(
        "# comment\nexport DR_CONFIG=/etc/dr.yaml\n"
        'export AIRFLOW_CONN_DR_AWS_PRIMARY=\'{"conn_type": "aws", "login": "it\'"\'"\'s"}\'\n'
        "PLAIN=value\n"
    )
    assert load_env_file(env) == {
        "DR_CONFIG": "/etc/dr.yaml",
        "AIRFLOW_CONN_DR_AWS_PRIMARY": '{"conn_type": "aws", "login": "it\'s"}',
        "PLAIN": "value",
    }


def test_archiver_command_needs_no_shell_environment(tmp_path: Path) -> None:
    command = archiver_command("push", tmp_path / "wal.env", server_os_user())
    # The sh fast path (absolute), then the file, then the command it runs for anything else.
    assert command.startswith("/bin/sh /") and command.split()[2:4] == ["%p", "env"]
    assert command.split()[4].startswith("PYTHONPATH=/")
    python = command.split()[5]
    assert Path(python).is_absolute() and Path(command.split()[1]).is_file()
    assert command.endswith(f"-m disaster_recovery.wal --env-file {tmp_path / 'wal.env'} push")
    fetch = archiver_command("fetch", tmp_path / "wal.env", server_os_user())
    assert fetch.startswith("env PYTHONPATH=/") and fetch.endswith("fetch %f %p")


def test_the_archiver_imports_no_airflow_and_no_settings_model(sandbox: Sandbox) -> None:
    probe = (
        "import sys, runpy; sys.argv = ['wal', '--env-file', sys.argv[1], 'fetch', "
        "'000000AA00000000000000FF', '/nonexistent/x']\n"
        "try:\n    runpy.run_module('disaster_recovery.wal', run_name='__main__')\n"
        "except SystemExit as exc:\n    code = exc.code\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules}\n"
        "               & {'airflow', 'pydantic', 'croniter'})\n"
        "print(code, heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(sandbox.root / "wal" / "wal.env")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "1 []"


# -- push and fetch as PostgreSQL runs them ---------------------------------------------------


def _wal(env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_dr("--env-file", str(env_file), *args, module="disaster_recovery.wal", timeout=60)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_sandbox_primary_archives_each_segment_to_both_regions(sandbox: Sandbox) -> None:
    segment = switch_and_wait_archived(sandbox.postgres("primary"))
    archive = WalArchive.for_deployment(deployment_for(sandbox))
    digests = set()
    for region in archive.regions:
        store = archive.store(region)
        head = store.head(archive.key(segment))
        assert head is not None, f"{segment} missing in {region}"
        # Stored in pitr.wal_compression (zstd:1 by default); the metadata holds the digest of
        # the segment itself, which restore_command checks after decompressing.
        assert head["Metadata"]["compression"] == "zstd"
        assert head["ContentLength"] < 16 * 1024 * 1024 // 4  # a switched segment: mostly zeros
        assert head["Metadata"]["sha256"] == _sha(archive._read_verified(region, segment))
        digests.add(head["Metadata"]["sha256"])
    assert len(digests) == 1


def test_identical_segment_offered_again_is_success_and_different_is_refused(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    env_file = sandbox.root / "wal" / "wal.env"
    segment = switch_and_wait_archived(sandbox.postgres("primary"))
    fetched = tmp_path / "pg_wal" / segment
    assert _wal(env_file, "fetch", segment, str(fetched)).returncode == 0
    original = fetched.read_bytes()
    # Failback: the rewound node offers a segment the archive already holds, byte for byte.
    again = _wal(env_file, "push", str(fetched))
    assert again.returncode == 0, again.stderr
    cli = run_dr("wal", "push", "--env-file", str(env_file), str(fetched), timeout=60)
    assert cli.returncode == 0, cli.stderr
    # Another cluster's segment under the same name: refused loudly, never overwritten.
    fetched.write_bytes(original[:100] + b"\x00" * 8 + original[108:])
    refused = _wal(env_file, "push", str(fetched))
    assert refused.returncode == 1
    assert "conflict" in refused.stderr.lower() and segment in refused.stderr
    archive = WalArchive.for_deployment(deployment_for(sandbox))
    for region in archive.regions:
        assert _sha(archive._read_verified(region, segment)) == _sha(original)


def _pg_wal_with_ready_files(folder: Path, timeline: int, count: int) -> list[Path]:
    """A pg_wal folder as PostgreSQL leaves it: ``count`` finished segments marked ``.ready``."""
    status = folder / "pg_wal" / "archive_status"
    status.mkdir(parents=True)
    files = []
    for segno in range(1, count + 1):
        file = folder / "pg_wal" / segment_name(timeline, segno)
        file.write_bytes(os.urandom(64 * 1024))
        (status / f"{file.name}.ready").touch()
        files.append(file)
    (folder / "pg_wal" / "00000001.history").write_bytes(b"not marked ready")
    return files


def test_push_takes_the_next_finished_segments_along(sandbox: Sandbox, tmp_path: Path) -> None:
    """WAL-G's upload-ahead: one call archives the file asked for and the next ``.ready`` ones;
    when PostgreSQL offers those, their markers answer without S3."""
    files = _pg_wal_with_ready_files(tmp_path, FAKE_TIMELINE + 1, 4)
    # Each object records when its file was last written (the end of its WAL in time).
    written = [datetime(2026, 1, 2, 3, 4, 5 + i, 678901, tzinfo=UTC) for i in range(4)]
    for file, when in zip(files, written, strict=True):
        nanoseconds = int(when.timestamp()) * 10**9 + when.microsecond * 1000
        os.utime(file, ns=(nanoseconds, nanoseconds))
    status = tmp_path / "pg_wal" / "archive_status"
    archive = WalArchive.for_deployment(deployment_for(sandbox))
    archive.push_ahead = 2
    first = archive.push(files[0])
    assert first["pushed_ahead"] == [files[1].name, files[2].name]  # oldest first, at most 2
    assert "ahead_failed" not in first
    for region in archive.regions:
        store = archive.store(region)
        for file, when in zip(files[:3], written, strict=False):
            assert archive._read_verified(region, file.name) == file.read_bytes()
            assert archive.written_at(file.name, [region]) == when
        assert store.head(archive.key(files[3].name)) is None
        assert store.head(archive.key("00000001.history")) is None  # not .ready: not taken
    (status / f"{files[0].name}.ready").rename(status / f"{files[0].name}.done")

    # PostgreSQL offers the next file: a new process, no S3 client built, marker consumed.
    fresh = WalArchive.for_deployment(deployment_for(sandbox))
    second = fresh.push(files[1])
    assert set(second["regions"].values()) == {"archived ahead by an earlier call"}
    assert second["sha256"] == _sha(files[1].read_bytes()) and fresh._stores == {}
    assert not (tmp_path / "pg_wal" / "dr_archive_status" / files[1].name).exists()
    (status / f"{files[1].name}.ready").rename(status / f"{files[1].name}.done")

    # A file whose bytes changed since its marker is pushed for real (and compared in S3).
    files[2].write_bytes(b"changed")
    with pytest.raises(ConflictError):
        fresh.push(files[2])
    for region in archive.regions:
        assert archive._read_verified(region, files[2].name) != b"changed"


def test_a_failure_pushing_ahead_does_not_fail_the_file_asked_for(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    files = _pg_wal_with_ready_files(tmp_path, FAKE_TIMELINE + 2, 2)
    archive = WalArchive.for_deployment(deployment_for(sandbox))
    archive.push_ahead = 4
    secondary = archive.store(archive.regions[1])
    # Another cluster's object under the next segment's name in one region.
    secondary.put_bytes(archive.key(files[1].name), b"someone else's segment")
    result = archive.push(files[0])
    assert set(result["regions"].values()) == {"archived"}
    assert result["pushed_ahead"] == []
    assert "conflict" in result["ahead_failed"][files[1].name].lower()
    assert secondary.get_bytes(archive.key(files[1].name)) == b"someone else's segment"
    # Its own turn reports the conflict to PostgreSQL (exit 1), still without overwriting.
    env_file = sandbox.root / "wal" / "wal.env"
    refused = _wal(env_file, "push", str(files[1]))
    assert refused.returncode == 1 and "conflict" in refused.stderr.lower()
    assert secondary.get_bytes(archive.key(files[1].name)) == b"someone else's segment"


def _archiver(endpoint: object) -> tuple[str, int, int]:
    with db.connect(endpoint, "postgres") as conn:  # type: ignore[arg-type]
        row = conn.execute(
            "SELECT coalesce(last_archived_wal, ''), archived_count, failed_count"
            " FROM pg_stat_archiver"
        ).fetchone()
    assert row is not None
    return str(row[0]), int(row[1]), int(row[2])


def test_the_standby_archives_what_the_primary_could_not() -> None:
    """archive_mode=always: the standby archives every segment it receives into the same
    archive. WAL the primary never archived (its archiver broken, or its region lost first) is
    there anyway, and when both archive a segment the copies are identical (no conflict)."""
    with private_sandbox() as box:
        primary, standby = box.postgres("primary"), box.postgres("standby")
        archive = WalArchive.for_deployment(deployment_for(box))
        with db.connect(primary, "postgres") as conn:
            conn.execute("ALTER SYSTEM SET archive_command = 'false'")
            conn.execute("SELECT pg_reload_conf()")
            segments = []
            for _ in range(3):
                conn.execute("SELECT txid_current()")
                row = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
                assert row is not None
                segments.append(str(row[0]))
        deadline = time.monotonic() + 90
        missing = set(segments)
        while missing and time.monotonic() < deadline:
            missing = {
                name
                for name in segments
                for region in archive.regions
                if archive.store(region).head(archive.key(name)) is None
            }
            time.sleep(0.5)
        assert not missing, f"the standby did not archive {sorted(missing)}"
        last_by_primary, _, failed = _archiver(primary)
        assert failed > 0 and last_by_primary[:24] < segments[0]  # the primary archived none

        # The primary's archiver comes back: it offers the same segments, finds them identical.
        with db.connect(primary, "postgres") as conn:
            conn.execute("ALTER SYSTEM RESET archive_command")
            conn.execute("SELECT pg_reload_conf()")
        latest = switch_and_wait_archived(primary, timeout=90)
        deadline = time.monotonic() + 90
        while _archiver(standby)[0][:24] < latest and time.monotonic() < deadline:
            time.sleep(0.5)
        last_by_standby, _, standby_failures = _archiver(standby)
        assert last_by_standby[:24] >= latest
        assert standby_failures == 0  # both archived the same segments: never a conflict


def test_fetch_of_a_segment_never_archived_exits_1(sandbox: Sandbox, tmp_path: Path) -> None:
    result = _wal(
        sandbox.root / "wal" / "wal.env", "fetch", "000000AA00000000000000FE", str(tmp_path / "x")
    )
    assert result.returncode == 1
    assert not (tmp_path / "x").exists()


def test_fetch_refuses_a_corrupted_segment(sandbox: Sandbox, tmp_path: Path) -> None:
    env_file = sandbox.root / "wal" / "wal.env"
    name = segment_name(FAKE_TIMELINE, int(time.time()) % 100000)
    source = tmp_path / name
    source.write_bytes(os.urandom(64 * 1024))
    assert _wal(env_file, "push", str(source)).returncode == 0
    archive = WalArchive.for_deployment(deployment_for(sandbox))
    primary, secondary = (archive.store(r) for r in archive.regions)
    recorded = primary.head(archive.key(name))["Metadata"]["sha256"]
    # Bit rot in the primary region: same name and recorded checksum, other bytes.
    primary.put_bytes(
        archive.key(name), b"rotten" + source.read_bytes()[6:], metadata={"sha256": recorded}
    )
    out = tmp_path / "restore" / "RECOVERYXLOG"
    fallback = _wal(env_file, "fetch", name, str(out))
    assert fallback.returncode == 0, fallback.stderr
    assert out.read_bytes() == source.read_bytes()
    out.unlink()
    secondary.put_bytes(
        archive.key(name), b"rotten" + source.read_bytes()[6:], metadata={"sha256": recorded}
    )
    refused = _wal(env_file, "fetch", name, str(out))
    # > 125: PostgreSQL aborts recovery instead of taking damage for the end of the archive.
    assert refused.returncode == FETCH_FATAL_EXIT
    assert "SHA-256" in refused.stderr
    assert not out.exists() and not list(out.parent.iterdir())
    primary.delete([archive.key(name)])
    secondary.delete([archive.key(name)])


def _compressible_segment(folder: Path, segno: int) -> Path:
    """A 16 MB segment that compresses like real WAL does (repeated records, zero padding)."""
    path = folder / segment_name(FAKE_TIMELINE + 3, segno)
    record = os.urandom(512) + b"\x00" * 512
    path.write_bytes((record * (16 * 1024))[: 16 * 1024 * 1024])
    return path


def test_codecs_mix_in_one_archive_and_a_damaged_frame_stops_recovery(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """Segments pushed under pitr.wal_compression zstd, gzip and none sit side by side (the
    setting changes; an older archive holds plain segments) and each comes back byte for byte;
    a compressed body that no longer decompresses is damage (exit 126), never "not archived"."""
    env_file = sandbox.root / "wal" / "wal.env"
    archive = WalArchive.for_deployment(deployment_for(sandbox))
    stored: dict[str, tuple[Path, str | None, int]] = {}
    for segno, codec in enumerate(("zstd:1", "gzip:1", "none"), start=int(time.time()) % 1000):
        archive.tuning = replace(archive.tuning, wal_compression=codec)
        segment = _compressible_segment(tmp_path, segno)
        result = archive.push(segment)
        head = archive.store(archive.regions[1]).head(archive.key(segment.name)) or {}
        stored[codec] = (segment, head["Metadata"].get("compression"), result["stored_bytes"])
    assert {c: (m, n < 16 << 20) for c, (_, m, n) in stored.items()} == {
        "zstd:1": ("zstd", True),
        "gzip:1": ("gzip", True),
        "none": (None, False),
    }
    for segment, _, _ in stored.values():
        out = tmp_path / "restore" / segment.name
        fetched = _wal(env_file, "fetch", segment.name, str(out))
        assert fetched.returncode == 0, fetched.stderr
        assert out.read_bytes() == segment.read_bytes()

    # The zstd object damaged in both regions, its metadata intact.
    segment = stored["zstd:1"][0]
    key = archive.key(segment.name)
    for region in archive.regions:
        store = archive.store(region)
        metadata = (store.head(key) or {})["Metadata"]
        body = bytearray(store.get_bytes(key))
        body[len(body) // 2] ^= 0xFF
        store.put_bytes(key, bytes(body), metadata=metadata)
    out = tmp_path / "damaged" / "RECOVERYXLOG"
    refused = _wal(env_file, "fetch", segment.name, str(out))
    assert refused.returncode == FETCH_FATAL_EXIT, refused.stderr
    assert "cannot decompress" in refused.stderr and segment.name in refused.stderr
    assert not out.exists()
    for segment, _, _ in stored.values():
        for region in archive.regions:
            archive.store(region).delete([archive.key(segment.name)])


def test_an_unknown_wal_codec_is_a_clear_error(sandbox: Sandbox, tmp_path: Path) -> None:
    env = load_env_file(sandbox.root / "wal" / "wal.env")
    policy = yaml.safe_load(Path(env["DR_CONFIG"]).read_text())
    policy.setdefault("pitr", {})["wal_compression"] = "lz5:1"
    config = tmp_path / "wal_config.yaml"
    config.write_text(yaml.safe_dump(policy))
    env_file = tmp_path / "wal.env"
    env_file.write_text(
        "".join(
            f"export {k}={shlex.quote(v)}\n" for k, v in {**env, "DR_CONFIG": str(config)}.items()
        )
    )
    segment = _compressible_segment(tmp_path, 1)
    refused = _wal(env_file, "push", str(segment))
    assert refused.returncode == 1
    assert "pitr.wal_compression: 'lz5:1' is not a compression spec" in refused.stderr


# -- faults on a private sandbox -------------------------------------------------------------


def _archiver_stats(endpoint: object) -> tuple[int, int]:
    row = db.connect(endpoint, "postgres")  # type: ignore[arg-type]
    with row as conn:
        stats = conn.execute("SELECT archived_count, failed_count FROM pg_stat_archiver").fetchone()
    assert stats is not None
    return int(stats[0]), int(stats[1])


def test_s3_down_archiving_retries_and_loses_nothing(
    airflow_db: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with private_sandbox() as box:
        deployment = deployment_for(box)
        primary = box.postgres("primary")
        first = switch_and_wait_archived(primary)
        # The database host loses S3 in both regions (one region lost is not a failure:
        # test_region_loss covers it).
        with archive_store_lost(box):
            _, failed_before = _archiver_stats(primary)
            with db.connect(primary) as conn:
                conn.execute("CREATE TABLE during_outage AS SELECT generate_series(1, 1000) AS n")
                held = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
            deadline = time.monotonic() + 30
            while _archiver_stats(primary)[1] <= failed_before and time.monotonic() < deadline:
                time.sleep(0.2)
            assert _archiver_stats(primary)[1] > failed_before, "the archiver never failed"
            assert (
                box.instance("primary").data_dir / "pg_wal" / "archive_status" / f"{held}.ready"
            ).exists()
            # The demo's wait for the archive says why it waited in vain: the failing segment and
            # the server log's complaint.
            with pytest.raises(UnavailableError, match="not archived within 2 s") as waited:
                archive_now(box, timeout=2)
            assert f"last failed {held}" in str(waited.value)
            assert "archive command failed" in str(waited.value)

            with db.connect(primary) as conn:
                conn.execute("INSERT INTO during_outage VALUES (1001)")  # unarchived WAL exists now
            time.sleep(1.1)
            strict = deployment.settings.model_copy(
                update={
                    "thresholds": deployment.settings.thresholds.model_copy(
                        update={"wal_stale": timedelta(seconds=1)}
                    )
                }
            )
            deployment.settings = strict
            report = check_archive(deployment)
            assert report.stale and report.archiver["failed_count"] > failed_before
            with pytest.raises(WalStaleError, match="failed_count="):
                raise_for_staleness(report.to_dict())
            # The same through the DAG, with a policy whose staleness limit is one second.
            policy = yaml.safe_load(box.config_file.read_text())
            policy.setdefault("thresholds", {})["wal_stale"] = "1s"
            strict_file = box.root / "strict_config.yaml"
            strict_file.write_text(yaml.safe_dump(policy))
            for key, value in {**box.environment(), "DR_CONFIG": str(strict_file)}.items():
                monkeypatch.setenv(key, value)
            states = task_states(run_dag("postgresql_wal_archive", None))
            assert states["check_freshness"] == "failed" and states["check_continuity"] == "success"
            stale = slack_messages(box, "WALArchiveStale")
            assert stale and "failed_count=" in stale[-1]["text"]

        # S3 is back: PostgreSQL's retry succeeds, nothing is lost
        last = switch_and_wait_archived(primary, timeout=90)
        report = check_archive(deployment, start_segment=first)
        assert not report.gap, report.to_dict()
        assert report.checked_to is not None and report.checked_to >= last >= held
        archive = WalArchive.for_deployment(deployment)
        for region in archive.regions:
            assert archive.store(region).exists(archive.key(held))
