"""The health checks' history is kept and bounded: the cleanup prunes each check's record, the
per-day availability records and old heartbeats after their configured periods (session
sandbox, a private prefix; heartbeats written 10 days in the past and removed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from disaster_recovery.clients.s3 import regional_store
from disaster_recovery.config.endpoints import Deployment
from disaster_recovery.config.model import load_settings
from disaster_recovery.monitoring import heartbeat
from disaster_recovery.monitoring.history import day_key, raw_key
from disaster_recovery.postgres.db import connect
from disaster_recovery.retention.cleanup import cleanup_health_history
from dr_sandbox import Sandbox

PREFIX = "history-test"
NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)


@pytest.fixture
def deployment(sandbox: Sandbox, sandbox_env: dict[str, str], tmp_path: Path) -> Deployment:
    config = tmp_path / "dr_config.yaml"
    config.write_text(
        sandbox.config_file.read_text().replace("prefix: litper", f"prefix: {PREFIX}")
        + "\nhealth_history: {availability_records: 400d, check_records: 30d, heartbeats: 7d}\n"
    )
    return Deployment(load_settings(config))


def test_cleanup_prunes_each_kind_of_history_after_its_period(deployment: Deployment) -> None:
    east, west = (regional_store(deployment, r) for r in ("us-east-1", "us-west-2"))
    ages = {"fresh": 1, "old_check": 40, "old_day": 401}
    for store in (east, west):
        for days in ages.values():
            at = NOW - timedelta(days=days)
            store.put_json(raw_key(PREFIX, at), {"health": {}})
            store.put_json(day_key(PREFIX, at.date()), {"checks": []})
    primary = deployment.postgres("primary")
    heartbeat.ensure_schema(primary)
    with connect(primary) as conn:
        conn.execute(
            "INSERT INTO dr.heartbeat (source, committed_at) SELECT 'history-test', %s"
            " FROM generate_series(1, 3)",
            (NOW - timedelta(days=10),),
        )
    heartbeat.beat(primary, "history-test")  # a fresh one: the old three may all go
    try:
        dry = cleanup_health_history(deployment, NOW, dry_run=True)
        # Per region: checks 40 and 401 days old go (30 d), the day record 401 days old (400 d).
        assert dry.counts["health_records"] == 4 and dry.counts["availability_records"] == 2
        assert dry.counts["heartbeats"] >= 3
        assert len(list(east.list_keys(f"{PREFIX}/"))) == 6  # a dry run deletes nothing

        done = cleanup_health_history(deployment, NOW, dry_run=False)
        assert done.counts == dry.counts
        for store in (east, west):
            kept = sorted(e["Key"] for e in store.list_keys(f"{PREFIX}/"))
            assert kept == sorted(
                [
                    raw_key(PREFIX, NOW - timedelta(days=1)),
                    day_key(PREFIX, (NOW - timedelta(days=1)).date()),
                    day_key(PREFIX, (NOW - timedelta(days=40)).date()),
                ]
            )
        with connect(primary) as conn:
            row = conn.execute(
                "SELECT count(*) FROM dr.heartbeat WHERE committed_at < %s",
                (NOW - timedelta(days=7),),
            ).fetchone()
        assert row is not None and row[0] == 0
        assert heartbeat.newest(primary) is not None  # the newest always stays
    finally:
        for store in (east, west):
            store.delete([e["Key"] for e in store.list_keys(f"{PREFIX}/")])
