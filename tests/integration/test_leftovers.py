"""Cleanup of what no manifest accounts for: backup objects whose run died before its manifest,
and multipart uploads a killed worker never aborted (real moto server, a prefix of its own)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from disaster_recovery.backup.stores import Stores
from disaster_recovery.catalog.names import backup_file_name, manifest_key, object_key
from disaster_recovery.config.endpoints import Deployment, env_var_name, parse_connection
from disaster_recovery.retention.cleanup import cleanup_leftovers, cleanup_old_backups
from dr_sandbox import Sandbox

PREFIX = "leftovers-test"
LATER = timedelta(days=2)  # past backup.leftover_grace (1 day)


@pytest.fixture
def deployment(sandbox: Sandbox) -> Deployment:
    env = sandbox.environment()
    settings = sandbox.settings()
    storage = settings.storage.model_copy(update={"prefix": PREFIX})
    return Deployment(
        settings.model_copy(update={"storage": storage}),
        lookup=lambda conn_id: parse_connection(conn_id, env[env_var_name(conn_id)]),
    )


@pytest.fixture
def stores(deployment: Deployment) -> Iterator[Stores]:
    stores = Stores.of(deployment)
    yield stores
    for store in (stores.primary, stores.secondary):
        store.delete([entry["Key"] for entry in store.list_keys(f"{PREFIX}/")])
        for upload in store.multipart_uploads(f"{PREFIX}/"):
            store.abort_upload(upload["Key"], upload["UploadId"])


def _key(backup_type: str, hours_ago: int) -> str:
    started = datetime.now(UTC) - timedelta(hours=hours_ago)
    return object_key(PREFIX, backup_file_name(backup_type, started))


def test_objects_without_manifest_and_stale_uploads_go_after_the_grace(
    deployment: Deployment, stores: Stores
) -> None:
    orphan_dump = _key("postgresql_full", 1)
    orphan_tar = _key("postgresql_base", 2)
    catalogued = _key("postgresql_full", 3)
    for store in (stores.primary, stores.secondary):
        store.put_bytes(orphan_dump, b"a dump whose run died before its manifest")
        store.put_bytes(orphan_tar, b"tar")
        store.put_bytes(orphan_tar + ".backup_manifest", b"{}")
        store.put_bytes(catalogued, b"a catalogued dump")
        store.put_bytes(manifest_key(catalogued), b"{}")
    upload = stores.primary.client.create_multipart_upload(
        Bucket=stores.primary.bucket, Key=_key("postgresql_full", 4)
    )

    # Within the grace (a run may still be between its upload and its manifest): nothing goes.
    now = datetime.now(UTC)
    assert cleanup_leftovers(deployment, now, dry_run=False).counts == {
        "orphans": 0,
        "stale_uploads": 0,
    }

    dry = cleanup_leftovers(deployment, now + LATER, dry_run=True)
    assert dry.counts == {"orphans": 6, "stale_uploads": 1}  # 3 keys x 2 regions
    assert stores.primary.exists(orphan_dump) and stores.primary.open_multipart_uploads(PREFIX)

    done = cleanup_leftovers(deployment, now + LATER, dry_run=False)
    assert done.counts == dry.counts
    assert {item["key"] for item in done.items} == {
        orphan_dump,
        orphan_tar,
        orphan_tar + ".backup_manifest",
        upload["Key"],
    }
    for store in (stores.primary, stores.secondary):
        assert not store.exists(orphan_dump) and not store.exists(orphan_tar)
        assert not store.exists(orphan_tar + ".backup_manifest")
        assert store.exists(catalogued) and store.exists(manifest_key(catalogued))
        assert store.open_multipart_uploads(f"{PREFIX}/") == []
    again = cleanup_leftovers(deployment, now + LATER, dry_run=False)
    assert again.counts == {"orphans": 0, "stale_uploads": 0}


def test_cleanup_reports_leftovers_with_the_tiers(deployment: Deployment, stores: Stores) -> None:
    stores.primary.put_bytes(_key("postgresql_weekly", 1), b"orphan")
    result = cleanup_old_backups(deployment, dry_run=True)
    assert result["orphans"] == 0 and result["stale_uploads"] == 0  # younger than the grace
    assert {"daily", "weekly", "monthly", "base", "incremental", "wal"} <= set(result)
