"""Point-in-time recovery against the real sandbox: a ticker writes rows while a base backup and
two incrementals are taken; restores to six targets must hold exactly the rows committed at or
before each target, and none after."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from helpers import run_dr
from pitr_support import Ticker, deployment_for, rows_in, stop_restored, switch_and_wait_archived

from disaster_recovery import BackupManager
from disaster_recovery.backup import physical
from disaster_recovery.errors import NotFoundError, RestoreRefused, ToolError, VerificationError
from disaster_recovery.restore.pitr import (
    Target,
    create_restore_point,
    describe_chain,
    plan_restore,
    restore_to_point_in_time,
)
from dr_sandbox import Sandbox


@pytest.fixture(scope="module")
def history(sandbox: Sandbox) -> Iterator[dict[str, Any]]:
    """Ticker running through: base backup, WAL switch, incremental, incremental, restore point."""
    deployment = deployment_for(sandbox)
    primary = sandbox.postgres("primary")
    Ticker.prepare(primary)
    ticker = Ticker(primary).start()
    facts: dict[str, Any] = {"deployment": deployment, "ticker": ticker, "primary": primary}
    try:
        time.sleep(0.5)
        facts["base"] = physical.backup_and_verify(deployment, "base")
        time.sleep(0.6)
        facts["switched_at"] = datetime.now(UTC)
        facts["switched_segment"] = switch_and_wait_archived(primary)
        time.sleep(0.6)
        facts["inc1"] = physical.backup_and_verify(deployment, "incremental")
        time.sleep(0.4)
        facts["inc2"] = physical.backup_and_verify(deployment, "incremental")
        time.sleep(0.6)
        ticker.stop()
        facts["restore_point_ticks"] = len(ticker.ticks)
        facts["restore_point"] = create_restore_point(
            deployment, f"before_change_{int(time.time())}"
        )
        ticker.start(first_id=len(ticker.ticks) + 1)
        time.sleep(0.6)
    finally:
        ticker.stop()
    time.sleep(1.2)  # S3 LastModified has whole seconds: the last segment must postdate every tick
    switch_and_wait_archived(primary)
    yield facts


def _restore(history: dict[str, Any], **target: Any) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="dr-pitr-", dir="/tmp")) / "data"
    return restore_to_point_in_time(history["deployment"], target_dir=folder, **target)


def _check_restore(history: dict[str, Any], index: int, **target: Any) -> dict[str, Any]:
    result = _restore(history, **target)
    try:
        # Exactly the ticks 0..index (ids 1..index+1): committed at or before the target.
        assert rows_in(result["port"], history["primary"]) == (index + 1, index + 1), result
    finally:
        stop_restored(result)
    return result


def _ticks_between(history: dict[str, Any], start: datetime, end: datetime) -> list[int]:
    ticks = history["ticker"].ticks
    return [
        i for i in range(len(ticks) - 1) if start < ticks[i].after and ticks[i + 1].before < end
    ]


def _iso(value: Any) -> datetime:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def test_incrementals_record_their_parents_and_reach_both_regions(history: dict[str, Any]) -> None:
    base, inc1, inc2 = history["base"], history["inc1"], history["inc2"]
    assert (base["parent"], inc1["parent"], inc2["parent"]) == (
        None,
        base["backup_file"],
        inc1["backup_file"],
    )
    assert all(
        m["status"] == "verified" and m["replicated_to"] == ["us-west-2"]
        for m in (base, inc1, inc2)
    )
    assert inc1["size_bytes"] < base["size_bytes"]
    listing = describe_chain(history["deployment"])
    for region in ("us-east-1", "us-west-2"):
        chain = next(
            c
            for c in listing["regions"][region]["chains"]
            if c["base"]["backup_file"] == base["backup_file"]
        )
        assert [m["backup_file"] for m in chain["incrementals"]] == [
            inc1["backup_file"],
            inc2["backup_file"],
        ]
        assert listing["regions"][region]["earliest_restorable"] is not None


def test_restore_between_base_and_first_incremental(history: dict[str, Any]) -> None:
    window = _ticks_between(
        history, _iso(history["base"]["finished_at"]), _iso(history["inc1"]["started_at"])
    )
    index = random.choice(window)
    result = _check_restore(history, index, target_time=history["ticker"].pause_between(index))
    assert result["plan"]["base"] == history["base"]["backup_file"]
    assert result["plan"]["incrementals"] == []
    assert result["recovered_to"]["last_replayed_transaction_time"] is not None


def test_restore_after_the_incrementals(history: dict[str, Any]) -> None:
    window = _ticks_between(history, _iso(history["inc2"]["finished_at"]), datetime.now(UTC))
    index = random.choice(window[: len(window) // 2])
    # Through the seed API: BackupManager.restore_postgresql(point_in_time=...) with ISO text in
    # Bogota time and no target folder.
    bogota = history["ticker"].pause_between(index).astimezone(timezone(timedelta(hours=-5)))
    manager = BackupManager(deployment=history["deployment"])
    result = asyncio.run(manager.restore_postgresql(point_in_time=bogota.isoformat()))
    try:
        assert rows_in(result["port"], history["primary"]) == (index + 1, index + 1), result
    finally:
        stop_restored(result)
    assert result["plan"]["incrementals"] == [
        history["inc1"]["backup_file"],
        history["inc2"]["backup_file"],
    ]
    assert result["timings"]["combine_seconds"] >= 0


def test_seed_point_in_time_as_a_naive_local_datetime(history: dict[str, Any]) -> None:
    # The seed writes restore_postgresql(point_in_time=datetime(2024, 1, 15, 14, 30)): a naive
    # datetime, meant in the configured time zone (America/Bogota).
    window = _ticks_between(
        history, _iso(history["base"]["finished_at"]), _iso(history["inc1"]["started_at"])
    )
    index = window[len(window) // 2]
    local = history["ticker"].pause_between(index).astimezone(history["deployment"].settings.tz)
    seed_time = datetime(
        local.year,
        local.month,
        local.day,
        local.hour,
        local.minute,
        local.second,
        local.microsecond,
    )
    manager = BackupManager(deployment=history["deployment"])
    result = asyncio.run(manager.restore_postgresql(point_in_time=seed_time))
    try:
        assert rows_in(result["port"], history["primary"]) == (index + 1, index + 1), result
    finally:
        stop_restored(result)


def test_restore_across_a_wal_segment_switch(history: dict[str, Any]) -> None:
    ticks = history["ticker"].ticks
    first_after_switch = next(i for i, t in enumerate(ticks) if t.before > history["switched_at"])
    index = first_after_switch + 1  # two rows written into the segment after the switch
    result = _check_restore(history, index, target_time=history["ticker"].pause_between(index))
    assert result["plan"]["base"] == history["base"]["backup_file"]


def test_restore_to_an_lsn(history: dict[str, Any]) -> None:
    window = _ticks_between(history, _iso(history["inc1"]["finished_at"]), datetime.now(UTC))
    index = random.choice(window)
    result = _check_restore(history, index, target_lsn=history["ticker"].ticks[index].lsn)
    assert result["recovered_to"]["last_replayed_lsn"]


def test_restore_to_a_named_restore_point(history: dict[str, Any]) -> None:
    _check_restore(
        history, history["restore_point_ticks"] - 1, target_name=history["restore_point"]["name"]
    )


def test_no_backup_before_the_target_is_refused(history: dict[str, Any]) -> None:
    deployment = history["deployment"]
    oldest = min(
        m.finished_at
        for m in physical.Chain(deployment, "us-east-1").verified()
        if m.backup_type == "postgresql_base"
    )
    with pytest.raises(RestoreRefused, match="no base backup precedes"):
        plan_restore(deployment, Target(time=oldest - timedelta(seconds=1)))


def test_target_in_the_future_is_refused(history: dict[str, Any]) -> None:
    with pytest.raises(RestoreRefused, match="in the future"):
        plan_restore(history["deployment"], Target(time=datetime.now(UTC) + timedelta(hours=1)))
    with pytest.raises(RestoreRefused, match="in the future"):
        plan_restore(history["deployment"], Target(lsn="FF/0"))


def test_target_beyond_the_archived_wal_is_refused(history: dict[str, Any]) -> None:
    # archive_timeout may archive a segment at any moment: then the newest WAL is archived after
    # "just now" and the target is legitimately reachable. Try again; it must refuse once idle.
    messages = []
    for _ in range(3):
        time.sleep(1.1)
        try:
            plan_restore(
                history["deployment"], Target(time=datetime.now(UTC) - timedelta(milliseconds=10))
            )
        except RestoreRefused as exc:
            messages.append(str(exc))
            break
    assert messages and "beyond the archived WAL" in messages[0]
    # The newest segment it names was archived before the target (never after: that would
    # contradict "beyond").
    assert "before the target" in messages[0] and "pg_switch_wal()" in messages[0]


def test_unknown_restore_point_and_bad_targets_are_refused(history: dict[str, Any]) -> None:
    with pytest.raises(NotFoundError, match="no restore point named"):
        plan_restore(history["deployment"], Target(name="never_created"))
    with pytest.raises(Exception, match="exactly one recovery target"):
        Target()
    with pytest.raises(Exception, match="no UTC offset"):
        Target(time=datetime(2024, 1, 15, 14, 30))


def test_restore_refuses_a_non_empty_folder(history: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "precious").write_text("keep me")
    index = len(history["ticker"].ticks) // 2
    with pytest.raises(Exception, match="not empty"):
        restore_to_point_in_time(
            history["deployment"],
            target_dir=tmp_path,
            target_time=history["ticker"].pause_between(index),
        )
    assert (tmp_path / "precious").read_text() == "keep me"


@pytest.mark.parametrize("major", [15, 16])
def test_incremental_needs_postgresql_17(major: int) -> None:
    with pytest.raises(ToolError, match=f"PostgreSQL 17 or newer.*PostgreSQL {major}"):
        physical.require_incremental_support(major)


def test_incremental_needs_wal_summaries() -> None:
    with pytest.raises(ToolError, match="summarize_wal = on"):
        physical.require_incremental_support(18, "off")


def _dr(sandbox: Sandbox, *args: str) -> subprocess.CompletedProcess[str]:
    return run_dr(*args, env=sandbox.environment(), timeout=120)


def test_cli_plans_lists_and_checks(history: dict[str, Any], sandbox: Sandbox) -> None:
    index = len(history["ticker"].ticks) // 2
    when = history["ticker"].pause_between(index).astimezone(timezone(timedelta(hours=-5)))
    plan = _dr(
        sandbox,
        "pitr",
        "--plan-only",
        "--point-in-time",
        when.isoformat(),
        "--target-dir",
        "/tmp/never-created",
    )
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["base"] == history["base"]["backup_file"]
    # The same planner through `dr restore`, as the issue spells the command.
    refused = _dr(
        sandbox,
        "restore",
        "--plan-only",
        "--point-in-time",
        "2999-01-01T00:00:00+00:00",
        "--target-dir",
        "/tmp/never-created",
    )
    assert refused.returncode != 0 and "in the future" in json.loads(refused.stdout)["error"]
    listing = _dr(sandbox, "chain", "list")
    assert listing.returncode == 0 and history["inc2"]["backup_file"] in listing.stdout
    # `dr list` shows the chain and the restorable window beside the logical tiers.
    full_listing = _dr(sandbox, "list")
    assert full_listing.returncode == 0 and history["inc2"]["backup_file"] in full_listing.stdout
    assert (
        "latest_restorable"
        in json.loads(full_listing.stdout)["physical_chain"]["regions"]["us-east-1"]
    )
    check = _dr(sandbox, "wal", "check")
    assert check.returncode == 0, check.stdout
    assert json.loads(check.stdout)["healthy"] is True
    point = _dr(sandbox, "restore-point", "create", f"cli_point_{int(time.time())}")
    assert point.returncode == 0 and json.loads(point.stdout)["lsn"]
    again = _dr(sandbox, "restore-point", "create", json.loads(point.stdout)["name"])
    assert again.returncode != 0 and "already exists" in again.stdout


def test_a_damaged_copy_in_the_primary_region_is_restored_from_the_other(
    history: dict[str, Any],
) -> None:
    """us-east-1's base backup corrupted, us-west-2's intact: without a flag the restore takes
    us-west-2's copy and says so; forced to us-east-1 it refuses, naming the damage."""
    deployment = history["deployment"]
    file = history["base"]["backup_file"]
    east, west = physical.Chain(deployment, "us-east-1"), physical.Chain(deployment, "us-west-2")
    key = east.catalog.load_chain(file).key
    east.store.put_bytes(key, b"not the backup any more")
    try:
        window = _ticks_between(
            history, _iso(history["base"]["finished_at"]), _iso(history["inc1"]["started_at"])
        )
        index = window[len(window) // 2]
        result = _check_restore(history, index, target_time=history["ticker"].pause_between(index))
        assert result["plan"]["base"] == file
        assert any(n.startswith(f"{file} from us-east-1:") for n in result["plan"]["notes"])
        with pytest.raises(VerificationError, match=f"no intact copy of {file}"):
            _restore(
                history, target_time=history["ticker"].pause_between(index), region="us-east-1"
            )
    finally:
        east.store.copy_from(west.store, key)
