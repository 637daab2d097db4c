"""DR drills against a private sandbox: both drill DAGs with dag.test(), their evidence and
figures, and the ways a drill must fail or wait (corrupted backup, rejected failover, a
production target nobody approved)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from failover_support import ApprovalAnswerer
from helpers import private_sandbox, run_dag, run_dr, slack_messages, task_states
from leak_support import LeakSearch, known_secrets_environment
from pitr_support import prepare_for_drills

from disaster_recovery.backup.logical import run_backup
from disaster_recovery.catalog.listing import Catalog
from disaster_recovery.clients.s3 import ObjectStore
from disaster_recovery.config.endpoints import Deployment
from disaster_recovery.drills.evidence import DrillRecord, EvidenceStore
from disaster_recovery.drills.names import DRILL_STEPS
from disaster_recovery.drills.procedures import newest_full_backup, start
from disaster_recovery.monitoring.health import current_roles
from disaster_recovery.monitoring.topology import read_record
from dr_sandbox import Sandbox


@pytest.fixture(scope="module")
def secret_box() -> Iterator[tuple[Sandbox, list[str]]]:
    """A private sandbox (drills change the topology) with a verified full backup, a verified
    base backup and archived WAL after it, and the demo application's heartbeats flowing; its
    variables in os.environ with distinctive secrets, and those secrets (leak_support.py)."""
    with (
        private_sandbox(scale=0.2, prefix="dr-drill-") as sandbox,
        known_secrets_environment(sandbox) as secret_box,
    ):
        prepare_for_drills(sandbox)
        yield secret_box


@pytest.fixture(scope="module")
def box(secret_box: tuple[Sandbox, list[str]]) -> Sandbox:
    return secret_box[0]


LAST_RUN: dict[str, str] = {}


def drill(dag_id: str, **conf: Any) -> tuple[str, dict[str, str]]:
    run = run_dag(dag_id, None, **conf)
    LAST_RUN.update(dag_id=dag_id, run_id=run.run_id)
    return run.state, task_states(run)


def newest_record(sandbox: Sandbox, kind: str) -> DrillRecord:
    settings = sandbox.settings()
    store = ObjectStore(sandbox.aws("us-east-1"), settings.bucket("us-east-1"))
    return EvidenceStore(store).records(kind)[-1]  # type: ignore[arg-type]


def alerts(sandbox: Sandbox) -> list[str]:
    return [str(m.get("alert")) for m in slack_messages(sandbox)]


def assert_original_topology(sandbox: Sandbox) -> None:
    assert current_roles(Deployment(sandbox.settings())) == ("us-east-1", "us-west-2")
    assert sandbox.status()["healthy"], sandbox.status()


def test_monthly_drill_dag_produces_checked_evidence(
    box: Sandbox,
    airflow_db: None,
    leak_search: LeakSearch,
) -> None:
    with leak_search.watching() as watcher:
        state, tasks = drill("dr_drill_monthly", seed=7)
    # Each step is a task of the grid; the teardown found nothing to restore.
    steps = DRILL_STEPS["monthly"]
    expected = ("check_overdue", *steps, "restore_topology", "evidence")
    assert (state, tasks) == ("success", dict.fromkeys(expected, "success"))
    record = newest_record(box, "monthly")
    steps = {s.name: s for s in record.steps}
    assert record.passed and [(s.name, s.result) for s in record.steps] == [
        (name, "passed") for name in steps
    ]
    assert record.airflow_run == LAST_RUN  # the console links the drill to its run
    restored = steps["restore_full"].details
    assert restored["counts_match"] and restored["rows"] > 1000 and restored["amcheck"]
    assert record.restore_throughput_mb_s and record.restore_throughput_mb_s > 0
    assert (
        steps["point_in_time"].details["exact"] and steps["point_in_time"].details["heartbeats"] > 0
    )
    assert steps["failover"].details["heartbeats_lost"] == 0
    assert steps["failover"].details["approval"]["by"].startswith("drill policy")
    assert record.rpo_seconds == 0.0
    assert record.rto_seconds is not None and record.rto_seconds < record.objectives["rto_seconds"]
    # Both regions hold the evidence; Slack got the summary.
    secondary = ObjectStore(box.aws("us-west-2"), box.settings().bucket("us-west-2"))
    assert secondary.exists(record.key)
    assert "DRDrillReport" in alerts(box)
    # Before this first drill the evidence held nothing, but this is the deployment's first
    # run: no drill was due yet, so check_overdue raised no DRDrillOverdue (it did before).
    assert alerts(box).count("DRDrillOverdue") == 0
    assert_original_topology(box)
    # No secret left; the restore's programs ran under the watch.
    assert "pg_restore" in watcher.seen, sorted(watcher.seen)
    assert leak_search.found() == []


def test_quarterly_drill_measures_real_rto_and_rpo(
    box: Sandbox,
    airflow_db: None,
    leak_search: LeakSearch,
) -> None:
    with leak_search.watching() as watcher:
        state, tasks = drill("dr_drill_quarterly")
    assert state == "success", tasks
    record = newest_record(box, "quarterly")
    steps = {s.name: s for s in record.steps}
    names = list(DRILL_STEPS["quarterly"])  # every step ran, validate among them
    assert list(steps) == names
    assert tasks == dict.fromkeys(
        ["check_overdue", *names, "restore_topology", "evidence"], "success"
    )
    # The RTO runs from the kill (one task) to the validated secondary (three tasks later).
    assert steps["validate"].details["rto_seconds"] == record.rto_seconds
    assert record.rto_seconds >= sum(steps[name].seconds or 0 for name in ("detect", "failover"))
    assert steps["detect"].details["consecutive_failures"] == 3
    assert record.rto_seconds is not None and 0 < record.rto_seconds < 1800
    # The synchronous standby lost no acknowledged heartbeat; the RPO is the time since the
    # newest one, about a heartbeat interval.
    assert record.rpo_seconds is not None and record.rpo_seconds < 5
    archive_timeout = box.settings().pitr.archive_timeout.total_seconds()
    assert steps["archive_rpo"].details["rpo_seconds"] <= archive_timeout + 30
    # The region loss included us-east-1's S3: protection went on in us-west-2.
    assert steps["kill_primary_region"].details["command"][-3:] == [
        "us-east-1",
        "--root",
        str(box.root),
    ]
    survivor = steps["survivor_protection"].details
    assert survivor["region"] == "us-west-2" and survivor["pitr_plan_region"] == "us-west-2"
    assert survivor["full_backup"].startswith("postgresql_full_")
    assert survivor["timeline"] >= 2
    assert_original_topology(box)
    # No secret left by the region's loss, the failover and the failback; and every object is
    # encrypted with its region's key after us-east-1's S3 was killed and revived.
    assert "pg_ctl" in watcher.seen, sorted(watcher.seen)
    assert leak_search.found() == []


def test_failed_middle_step_still_restores_the_topology(
    box: Sandbox, airflow_db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The region is lost and the primary moved to us-west-2 when archive_rpo fails (its
    point-in-time restore cannot start a server: the configured OS user does not exist). The
    steps after it never run; the teardown revives us-east-1 and fails back."""
    config = config_with(box, tmp_path, pitr={"restore_os_user": "no_such_drill_user"})
    monkeypatch.setenv("DR_CONFIG", config)
    before = len(alerts(box))
    state, tasks = drill("dr_drill_quarterly")
    assert state == "failed"
    assert [tasks[t] for t in ("kill_primary_region", "detect", "failover", "validate")] == [
        "success"
    ] * 4
    assert tasks["archive_rpo"] == "failed"
    assert {tasks[t] for t in ("survivor_protection", "revive_region", "failback")} == {
        "upstream_failed"
    }
    assert (tasks["restore_topology"], tasks["evidence"]) == ("success", "failed")
    record = newest_record(box, "quarterly")
    assert [(s.name, s.result) for s in record.steps][-3:] == [
        ("validate", "passed"),
        ("archive_rpo", "failed"),
        ("restore_topology", "passed"),
    ]
    assert "no_such_drill_user" in (record.steps[-2].error or "")
    assert record.steps[-1].details == {"failback": "completed"}
    assert not record.passed and (record.error or "").startswith("archive_rpo: ")
    assert record.rto_seconds is not None  # measured before the failure, kept
    assert "DRDrillFailed" in alerts(box)[before:]
    assert_original_topology(box)


def flip_byte(store: ObjectStore, key: str) -> bytes:
    data = bytearray(store.get_bytes(key))
    original = bytes(data)
    data[len(data) // 2] ^= 0xFF
    store.put_bytes(key, bytes(data))
    return original


def test_corrupted_backup_fails_the_drill_and_keeps_the_topology(
    box: Sandbox, airflow_db: None, tmp_path: Path
) -> None:
    # The copy the drill will restore (the newest of either region, from the one it names).
    file, region = newest_full_backup(start(Deployment(box.settings()), "monthly", tmp_path))
    store = box.store(region)
    newest = Catalog(store, box.settings().storage.prefix).load(file)
    original = flip_byte(store, newest.key)
    before = len(alerts(box))
    try:
        state, tasks = drill("dr_drill_monthly")
    finally:
        store.put_bytes(newest.key, original)
    assert state == "failed"
    assert (tasks["restore_full"], tasks["point_in_time"]) == ("failed", "upstream_failed")
    assert (tasks["restore_topology"], tasks["evidence"]) == ("success", "failed")
    record = newest_record(box, "monthly")
    assert (
        not record.passed
        and record.steps[1].name == "restore_full"
        and record.steps[1].result == "failed"
    )
    assert "DRDrillFailed" in alerts(box)[before:]
    assert_original_topology(box)


def config_with(box: Sandbox, tmp_path: Path, **sections: dict[str, Any]) -> str:
    data = yaml.safe_load(box.config_file.read_text())
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    path = tmp_path / "dr_config.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_rejected_failover_fails_the_drill_and_keeps_the_topology(
    box: Sandbox, airflow_db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DR_CONFIG", config_with(box, tmp_path, drills={"auto_approve": False}))
    before = len(alerts(box))
    state, tasks = drill("dr_drill_monthly")
    assert state == "failed" and tasks["failover"] == "failed" and tasks["evidence"] == "failed"
    record = newest_record(box, "monthly")
    failover = next(s for s in record.steps if s.name == "failover")
    assert failover.result == "failed" and "aborted" in (failover.error or "")
    assert "DRDrillFailed" in alerts(box)[before:]
    assert_original_topology(box)


def leftovers() -> dict[str, Any]:
    """What a drill could leave behind on this machine: its work folders and any process of a
    throwaway instance."""
    processes = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # the process ended meanwhile
        if "dr_throwaway" in text:
            processes.append(text)
    return {"folders": sorted(Path("/tmp").glob("dr-drill-*")), "processes": processes}


def databases(sandbox: Sandbox) -> set[str]:
    primary = sandbox.postgres("primary")
    with psycopg.connect(**primary.connect_kwargs("postgres")) as conn:
        return {row[0] for row in conn.execute("SELECT datname FROM pg_database")}


def production(box: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """This sandbox marked production, as the shipped configuration is."""
    monkeypatch.setenv(
        "DR_CONFIG",
        config_with(box, tmp_path, environment={"name": "litper-prod", "production": True}),
    )


@pytest.mark.parametrize("answer", ["Reject", None])
def test_production_drill_changes_nothing_until_a_person_approves(
    box: Sandbox,
    airflow_db: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    answer: str | None,
) -> None:
    # The quarterly drill would crash the primary region: on production it waits for a person,
    # and a rejection or no answer (the timeout) leaves everything as it was.
    production(box, tmp_path, monkeypatch)
    generation = read_record(Deployment(box.settings())).generation
    records_before = len(EvidenceStore(box.store("us-east-1")).records("quarterly"))
    before = len(alerts(box))
    answerer = ApprovalAnswerer("dr_drill_quarterly", answer)
    answerer.start()
    state, tasks = drill("dr_drill_quarterly")
    answerer.join(10)
    assert answerer.error is None, answerer.error
    assert "DrillApprovalRequired" in alerts(box)[before:]
    assert_original_topology(box)
    assert read_record(Deployment(box.settings())).generation == generation
    if answer == "Reject":
        # Rejected: no drill ran at all, not even its preflight, and no evidence was written.
        assert tasks["decide.approval"] == "success", tasks
        assert tasks["preflight"] == "skipped" and tasks["evidence"] == "skipped", tasks
        assert len(EvidenceStore(box.store("us-east-1")).records("quarterly")) == records_before
    else:
        # No answer in time: the drill refused before touching anything, and says why; a
        # refused setup skips its teardown (nothing was touched, nothing is restored).
        assert state == "failed" and tasks["preflight"] == "failed", tasks
        assert tasks["evidence"] == "failed" and tasks["restore_topology"] != "success", tasks
        record = newest_record(box, "quarterly")
        assert [s.name for s in record.steps] == ["preflight"]
        assert "marked production" in (record.steps[0].error or "")
        assert "nobody approved" in (record.steps[0].error or "")
        assert "DRDrillFailed" in alerts(box)[before:]


def test_approved_production_drill_restores_into_a_throwaway_instance(
    box: Sandbox, airflow_db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    production(box, tmp_path, monkeypatch)
    databases_before, leftovers_before = databases(box), leftovers()
    answerer = ApprovalAnswerer("dr_drill_monthly", "Approve")
    answerer.start()
    state, tasks = drill("dr_drill_monthly", seed=11)
    answerer.join(10)
    assert answerer.error is None, answerer.error
    assert state == "success", tasks
    record = newest_record(box, "monthly")
    assert record.passed and record.environment == "litper-prod"
    steps = {s.name: s for s in record.steps}
    restored = steps["restore_full"].details
    primary = box.postgres("primary")
    # Restored and checked in an instance of its own, never on the production primary.
    assert restored["counts_match"] and restored["rows"] > 1000 and restored["amcheck"]
    assert restored["restored_into"].startswith("throwaway instance")
    assert f":{primary.port}" not in restored["restored_into"]
    assert restored["restore_seconds"] > 0
    # The person who approved is the drill's approval, in the record.
    assert steps["preflight"].details["approval"]["approved"] is True
    assert steps["failover"].details["approval"]["by"] not in ("", "unknown")
    assert not steps["failover"].details["approval"]["by"].startswith("drill policy")
    # Nothing left behind: no database, no folder, no process.
    assert databases(box) == databases_before
    assert leftovers() == leftovers_before
    assert_original_topology(box)


def test_dr_drills_cli_lists_records_and_overdue(box: Sandbox, tmp_path: Path) -> None:
    import json

    result = run_dr("drills", env=box.environment(), timeout=120)
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    # `dr drill` runs one outside Airflow; against a production target nobody approved it
    # refuses (exit 1).
    config = config_with(box, tmp_path, environment={"production": True})
    refused = run_dr("--config", config, "drill", "monthly", env=box.environment(), timeout=120)
    assert refused.returncode != 0 and "marked production" in json.loads(refused.stdout)["error"]
    assert {r["drill"] for r in listing["records"]} == {"monthly", "quarterly"}
    assert any(r["passed"] for r in listing["records"])
    assert listing["overdue"] == []
    assert datetime.now(UTC) - datetime.fromisoformat(
        listing["records"][-1]["started_at"]
    ) < timedelta(hours=1)


def test_the_drill_restores_the_newest_backup_of_either_region(
    box: Sandbox, tmp_path: Path
) -> None:
    """A full backup that only us-west-2 holds (taken there during an outage) is the newest:
    the monthly drill restores it, from us-west-2 (the only copy it may use)."""
    deployment = Deployment(box.settings())
    taken = run_backup(deployment, "postgresql_full")
    east = box.store("us-east-1")
    east.delete([taken.manifest_key, taken.key])
    ctx = start(deployment, "monthly", tmp_path)
    assert newest_full_backup(ctx) == (taken.file, "us-west-2")
    east.copy_from(box.store("us-west-2"), taken.key)  # both regions hold it again
    east.copy_from(box.store("us-west-2"), taken.manifest_key)
    assert newest_full_backup(ctx) == (taken.file, "us-east-1")
