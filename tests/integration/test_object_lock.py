"""Immutable copies: with ``storage.object_lock`` every backup, manifest, replica and WAL segment
is written locked until the end of its retention plus a margin; nothing deletes it before; the
cleanup keeps and reports what is still locked, then removes every version once the lock passed.
Runs in buckets of its own, created with Object Lock, in the sandbox's moto."""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from backup_support import unique_time
from botocore.exceptions import ClientError
from pitr_support import switch_and_wait_archived

from disaster_recovery.backup.logical import run_backup
from disaster_recovery.backup.physical import BACKUP_MANIFEST_SUFFIX, Chain, backup_and_verify
from disaster_recovery.backup.stores import Stores
from disaster_recovery.clients.object_lock import LockPolicy, lean_lock_policy, lock_policy
from disaster_recovery.clients.s3 import ObjectStore, regional_store, remove_versions, versions_of
from disaster_recovery.config.endpoints import Deployment
from disaster_recovery.config.model import Settings, load_settings
from disaster_recovery.postgres.walfiles import parse_segment, segment_name
from disaster_recovery.retention.cleanup import cleanup_chain, cleanup_old_backups
from disaster_recovery.wal.archive import WalArchive
from dr_sandbox import Sandbox

REGIONS = ("us-east-1", "us-west-2")
MAX_AGE = 3  # seconds: the weekly tier's and the WAL's retention in these tests
MARGIN = 12  # seconds: the lock outlives the retention by this much


# -- the policy ----------------------------------------------------------------------------------


def test_each_backup_types_objects_are_locked_for_its_retention_plus_the_margin() -> None:
    settings = Settings.model_validate(
        {"storage": {"prefix": "p", "object_lock": {"mode": "compliance", "margin": "2d"}}}
    )
    policy = lock_policy(settings)
    assert policy is not None
    now = datetime(2026, 1, 1, tzinfo=UTC)
    day = timedelta(days=1)
    assert policy.retain_until("p/postgresql_full/2026/01/01/f.dump", now) == now + 9 * day
    assert policy.retain_until("p/postgresql_full/2026/01/01/f.dump.manifest.json", now) == (
        now + 9 * day
    )
    assert policy.retain_until("p/postgresql_monthly/x.dump", now) == now + 368 * day
    assert policy.retain_until("p/postgresql_wal/000000010000000000000001", now) == now + 9 * day
    assert policy.retain_until("p/postgresql_base/x.tar", now) == now + 9 * day
    for unlocked in ("p/health/x.json", "p/postgresql_wal_state/v.json", "other/postgresql_full/x"):
        assert policy.retain_until(unlocked, now) is None
    assert policy.write_args("p/health/x.json") == {}
    args = policy.write_args("p/postgresql_full/x.dump")
    assert args["ObjectLockMode"] == "COMPLIANCE" and "ChecksumAlgorithm" in args
    assert lock_policy(Settings()) is None


def test_the_archiver_reads_the_lock_without_the_settings_model() -> None:
    data = {
        "storage": {"object_lock": {"mode": "governance", "margin": "6h"}},
        "tiers": {"postgresql_wal": {"retention": {"max_age": "2d"}}},
    }
    policy = lean_lock_policy(data, "p", "wal.yaml")
    assert policy == LockPolicy(
        "governance", "p", {"postgresql_wal": timedelta(days=2)}, timedelta(hours=6)
    )
    assert lean_lock_policy({"storage": {}}, "p", "wal.yaml") is None


# -- against moto --------------------------------------------------------------------------------


def locked_deployment(
    sandbox: Sandbox,
    tmp_path: Path,
    name: str,
    margin: str,
    retention: dict[str, dict[str, Any]],
    **sections: dict[str, Any],
) -> Deployment:
    """The sandbox's policy on two new buckets with Object Lock (compliance, ``margin``), each
    tier of ``retention`` (``pitr`` for the base backups) given its retention and ``sections``
    merged in; exported as DR_CONFIG (the caller's monkeypatch restores it)."""
    data = yaml.safe_load(sandbox.config_file.read_text())
    tag = secrets.token_hex(4)
    data["storage"]["buckets"] = {region: f"litper-{name}-{tag}-{region}" for region in REGIONS}
    data["storage"]["object_lock"] = {"mode": "compliance", "margin": margin}
    for tier, values in retention.items():
        if tier == "pitr":
            data["pitr"] = {**data.get("pitr", {}), "base_retention": values}
        else:
            data["tiers"][tier] = {**data["tiers"][tier], "retention": values}
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    config_file = tmp_path / f"{name}.yaml"
    config_file.write_text(yaml.safe_dump(data))
    os.environ["DR_CONFIG"] = str(config_file)
    deployment = Deployment(load_settings(config_file))
    for region in REGIONS:
        store = regional_store(deployment, region)
        store.ensure_bucket()
        config = store.client.get_object_lock_configuration(Bucket=store.bucket)
        assert config["ObjectLockConfiguration"]["ObjectLockEnabled"] == "Enabled"
    return deployment


@pytest.fixture
def locked(
    sandbox: Sandbox, sandbox_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Deployment:
    """A deployment whose two buckets (new, with Object Lock) lock in compliance mode."""
    monkeypatch.setenv("DR_CONFIG", "")
    retention = {"max_age": f"{MAX_AGE}s", "keep_last": 0}
    return locked_deployment(
        sandbox,
        tmp_path,
        "locked",
        f"{MARGIN}s",
        {"postgresql_weekly": retention, "postgresql_wal": retention},
        storage={"prefix": "locked"},
        backup={"task_retries": 0},
    )


def lock_of(store: ObjectStore, key: str) -> tuple[str, datetime]:
    head = store.head(key)
    assert head is not None, key
    return head["ObjectLockMode"], head["ObjectLockRetainUntilDate"]


def _lock_until(store: ObjectStore, keys: list[str], until: datetime) -> None:
    """Hold every version of ``keys`` until ``until`` (a compliance lock may only be extended):
    the test decides which lock passes first, whatever the machine's speed."""
    for key in keys:
        for version in versions_of(store, key):
            store.client.put_object_retention(
                Bucket=store.bucket,
                Key=key,
                VersionId=version["VersionId"],
                Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until},
            )


def test_backups_manifests_replicas_and_wal_are_written_locked_and_cannot_be_deleted(
    locked: Deployment, tmp_path: Path
) -> None:
    before = datetime.now(UTC).replace(microsecond=0)  # S3 keeps whole seconds
    manifest = run_backup(locked, "postgresql_weekly", unique_time())
    stores = Stores.of(locked)
    for store in (stores.primary, stores.secondary):
        for key in (manifest.key, manifest.manifest_key):
            mode, until = lock_of(store, key)
            assert mode == "COMPLIANCE"
            # The write time plus the retention plus the margin.
            assert before + timedelta(seconds=MAX_AGE + MARGIN) <= until
            assert until <= datetime.now(UTC) + timedelta(seconds=MAX_AGE + MARGIN)
        # The copy in us-west-2 is locked too, and still encrypted with its region's key.
        assert store.head(manifest.key)["ServerSideEncryption"] == "aws:kms"  # type: ignore[index]

    segment = tmp_path / "000000010000000000000007"
    segment.write_bytes(os.urandom(2048))
    archive = WalArchive.for_deployment(locked)
    archive.push(segment)
    for region in REGIONS:
        assert lock_of(archive.store(region), archive.key(segment.name))[0] == "COMPLIANCE"

    # Records that are no backup data stay unlocked.
    stores.primary.put_json("locked/health/check.json", {"ok": True})
    assert "ObjectLockMode" not in stores.primary.head("locked/health/check.json")  # type: ignore[operator]

    # No credential deletes a locked version; a plain delete only hides it behind a marker.
    # (Held a while longer first: on a busy machine the backup alone may outlast the lock.)
    _lock_until(stores.primary, [manifest.key], datetime.now(UTC) + timedelta(seconds=30))
    client, bucket = stores.primary.client, stores.primary.bucket
    version = versions_of(stores.primary, manifest.key)[0]["VersionId"]
    for bypass in (False, True):
        with pytest.raises(ClientError) as refused:
            client.delete_object(
                Bucket=bucket,
                Key=manifest.key,
                VersionId=version,
                BypassGovernanceRetention=bypass,
            )
        assert refused.value.response["Error"]["Code"] == "AccessDenied"
    client.delete_object(Bucket=bucket, Key=manifest.key)
    assert not stores.primary.exists(manifest.key)
    body = client.get_object(Bucket=bucket, Key=manifest.key, VersionId=version)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == manifest.sha256


def _deleted_files(result: dict[str, Any]) -> list[str]:
    return sorted(i["file"] for i in result["deleted"] if not i["reason"].startswith("kept"))


def test_the_cleanup_keeps_locked_backups_then_removes_every_version(locked: Deployment) -> None:
    first = run_backup(locked, "postgresql_weekly", unique_time())
    time.sleep(1.1)
    second = run_backup(locked, "postgresql_weekly", first.started_at + timedelta(seconds=5))
    stores = Stores.of(locked)
    assert [m.file for m in stores.catalog.manifests(["postgresql_weekly"])] == [
        first.file,
        second.file,
    ]

    # The policy lets the older one go (past max_age, not the newest): its lock has not passed
    # (held a few seconds from now: on a busy machine the second backup may outlast it).
    for store in (stores.primary, stores.secondary):
        _lock_until(
            store, [first.key, first.manifest_key], datetime.now(UTC) + timedelta(seconds=6)
        )
    policy_time = datetime.now(UTC) + timedelta(seconds=MAX_AGE + 1)
    early = cleanup_old_backups(locked, now=policy_time)
    assert early["locked"] == 1 and early["weekly"] == 0
    kept = [i for i in early["deleted"] if i["file"] == first.file]
    assert kept and kept[0]["reason"].startswith("kept: Object Lock until")
    for store in (stores.primary, stores.secondary):
        assert store.exists(first.key) and store.exists(first.manifest_key)

    # Once every lock has passed, exactly what the policy says goes, with all its versions.
    _, until = lock_of(stores.primary, first.manifest_key)  # the manifest was written last
    time.sleep(max(0.0, (until - datetime.now(UTC)).total_seconds()) + 1)
    late = cleanup_old_backups(locked, now=datetime.now(UTC))
    assert late["weekly"] == 1 and late["locked"] == 0
    assert _deleted_files(late) == [first.file]
    for store in (stores.primary, stores.secondary):
        for key in (first.key, first.manifest_key):
            assert versions_of(store, key) == [], key
        # The newest verified backup of the tier is never deleted.
        assert store.exists(second.key)
    assert [m.file for m in stores.catalog.manifests(["postgresql_weekly"])] == [second.file]


def test_many_objects_are_checked_and_removed_with_one_listing_per_folder(
    locked: Deployment,
) -> None:
    """A retention run over a day of WAL reads the versions with one listing per folder (under
    its keys' common prefix), not one per key, and deletes them in batches: the keys still
    held keep every version, the others lose every version."""
    store = regional_store(locked, "us-east-1")
    wal = [f"locked/postgresql_wal/{segment_name(1, n)}" for n in range(1, 41)]
    other = [f"locked/postgresql_weekly/old_{n}.dump" for n in range(3)]
    for key in wal + other:  # unlocked (no lock in the write) unless held below
        store.client.put_object(Bucket=store.bucket, Key=key, Body=b"v1")
    for key in (wal[0], other[0]):
        store.client.put_object(Bucket=store.bucket, Key=key, Body=b"v2")
    later = datetime.now(UTC) + timedelta(hours=1)
    held = {wal[7]: later, other[2]: later + timedelta(minutes=5)}
    for key, until in held.items():
        _lock_until(store, [key], until)
    neighbour = "locked/postgresql_wal/000000010000000100000001"  # shares the folder, not asked
    store.client.put_object(Bucket=store.bucket, Key=neighbour, Body=b"stays")

    calls: dict[str, int] = {}

    def count(event_name: str, **_: Any) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        calls[operation] = calls.get(operation, 0) + 1

    store.client.meta.events.register("before-call.s3", count)
    try:
        removed, kept = remove_versions(store, wal + other)
    finally:
        store.client.meta.events.unregister("before-call.s3", count)
    assert calls["ListObjectVersions"] == 2, calls  # one per folder, one page each
    assert calls["DeleteObjects"] == 1, calls  # every version of 41 keys in one request
    assert calls["HeadObject"] == len(wal) + len(other) + 2, calls  # one per version
    assert removed == len(wal) + len(other) - 2
    assert {item.key for item in kept} == set(held)
    assert all(abs((item.until - held[item.key]).total_seconds()) < 1 for item in kept), kept
    for key in wal + other:
        versions = versions_of(store, key)
        assert (len(versions) == 1) if key in held else (versions == []), (key, versions)
    assert len(versions_of(store, neighbour)) == 1


# -- property: on a locked, versioned bucket the cleanup realizes exactly the policy's plan ---------

QUICK_KEEP_LAST = 2


@pytest.fixture
def quickly_unlocked(
    sandbox: Sandbox, sandbox_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Deployment:
    """Locked buckets whose weekly locks pass two seconds after a write."""
    monkeypatch.setenv("DR_CONFIG", "")
    return locked_deployment(
        sandbox,
        tmp_path,
        "quick",
        "1s",
        {"postgresql_weekly": {"max_age": "1s", "keep_last": QUICK_KEEP_LAST}},
    )


def _catalogued_backup(stores: Stores, prefix: str, age_minutes: int, verified: bool) -> str:
    """A weekly backup (object and manifest, both regions) started ``age_minutes`` ago."""
    from disaster_recovery.catalog.listing import Catalog
    from disaster_recovery.catalog.manifests import Manifest, Verification
    from disaster_recovery.catalog.names import backup_file_name

    started = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=age_minutes)
    file = backup_file_name("postgresql_weekly", started)
    for store in (stores.primary, stores.secondary):
        catalog = Catalog(store, prefix)
        key = catalog.key_for(file)
        store.put_bytes(key, b"dump " + file.encode())
        catalog.save(
            Manifest(
                backup_type="postgresql_weekly",
                file=file,
                bucket=store.bucket,
                key=key,
                size_bytes=5 + len(file),
                started_at=started,
                finished_at=started,
                status="verified" if verified else "failed",
                verification=Verification(checks={}, verified_at=started, verified_by="test")
                if verified
                else None,
            )
        )
        store.put_bytes(key, b"dump " + file.encode())  # a second version of the object
    return file


def test_after_the_locks_pass_the_cleanup_deletes_exactly_the_plan_with_every_version(
    quickly_unlocked: Deployment,
) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from disaster_recovery.catalog.listing import Catalog
    from disaster_recovery.retention.logical import plan_deletions, policies_from_settings

    backups = st.lists(
        st.tuples(st.integers(min_value=1, max_value=10_000), st.booleans()),
        min_size=1,
        max_size=5,
        unique_by=lambda b: b[0],
    )

    @settings(
        max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
    )
    @given(backups=backups)
    def check(backups: list[tuple[int, bool]]) -> None:
        prefix = f"quick-{secrets.token_hex(4)}"
        data = yaml.safe_load(Path(os.environ["DR_CONFIG"]).read_text())
        data["storage"]["prefix"] = prefix
        config_file = Path(os.environ["DR_CONFIG"]).with_name(f"{prefix}.yaml")
        config_file.write_text(yaml.safe_dump(data))
        deployment = Deployment(load_settings(config_file))
        stores = Stores.of(deployment)
        files = [_catalogued_backup(stores, prefix, age, ok) for age, ok in backups]
        manifests = stores.catalog.manifests(["postgresql_weekly"])
        time.sleep(2.2)  # every lock has passed
        now = datetime.now(UTC)
        plan = {
            d.file
            for d in plan_deletions(manifests, now, policies_from_settings(deployment.settings))
        }
        result = cleanup_old_backups(deployment, now=now)
        planned.append(len(plan))
        assert result["locked"] == 0 and result["weekly"] == len(plan)
        assert {i["file"] for i in result["deleted"]} == plan
        for store in (stores.primary, stores.secondary):
            catalog_now = {m.file for m in Catalog(store, prefix).manifests(["postgresql_weekly"])}
            assert catalog_now == set(files) - plan
            for manifest in manifests:
                versions = versions_of(store, manifest.key) + versions_of(
                    store, manifest.manifest_key
                )
                if manifest.file in plan:
                    assert versions == [], manifest.file
                else:
                    assert len(versions_of(store, manifest.key)) == 2

    planned: list[int] = []
    check()
    assert max(planned) > 0 and min(planned) == 0  # examples that delete, and that keep all


# -- the physical chain and WAL: base backups, an incremental, segments -----------------------------

CHAIN_DUE = 2  # seconds: base backups, incrementals and WAL are due this long after their write


@pytest.fixture
def locked_chain(
    sandbox: Sandbox, sandbox_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Deployment:
    """Locked buckets where base backups (one kept), incrementals and WAL are due CHAIN_DUE
    seconds after they are written, and locked a second longer."""
    monkeypatch.setenv("DR_CONFIG", "")
    due = {"max_age": f"{CHAIN_DUE}s", "keep_last": 0}
    return locked_deployment(
        sandbox,
        tmp_path,
        "chain",
        "1s",
        {"pitr": {**due, "keep_last": 1}, "postgresql_incremental": due, "postgresql_wal": due},
        storage={"prefix": "chain"},
    )


def _chain_keys(manifest: Any) -> list[str]:
    return [manifest.key, manifest.key + BACKUP_MANIFEST_SUFFIX, manifest.manifest_key]


def _cleanup_now(deployment: Deployment, dry_run: bool = False) -> dict[str, Any]:
    """The cleanup's chain step, with the policy's clock past every due date (the locks run on
    S3's clock)."""
    now = datetime.now(UTC) + timedelta(seconds=CHAIN_DUE)
    return cleanup_old_backups(deployment, now=now, dry_run=dry_run, steps=[cleanup_chain])


def _wait_until(moment: datetime) -> None:
    time.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()) + 0.5)


def test_the_chain_and_wal_stay_while_locked_then_go_exactly_as_the_retention_says(
    locked_chain: Deployment, tmp_path: Path
) -> None:
    """Base B1, incremental I1 on it, base B2 (kept), WAL below B1, between B1 and B2 and from
    B2. Each cleanup deletes, with every version, what the chain retention lets go and Object
    Lock has released, keeps and reports the rest; a locked version resists every delete."""
    deployment = locked_chain
    b1 = backup_and_verify(deployment, "base")["backup_file"]
    i1 = backup_and_verify(deployment, "incremental")["backup_file"]
    switch_and_wait_archived(deployment.postgres("primary"))
    b2 = backup_and_verify(deployment, "base")["backup_file"]
    chain = {m.file: m for m in Chain(deployment, "us-east-1").elements()}
    assert chain[i1].parent == b1 and chain[b2].parent is None
    first = parse_segment(chain[b1].start_segment)[1]
    last = parse_segment(chain[b2].start_segment)[1]
    assert first < last, (chain[b1].start_segment, chain[b2].start_segment)
    archive = WalArchive.for_deployment(deployment)

    def push(segnos: range) -> list[str]:
        names = [segment_name(chain[b2].timeline, segno) for segno in segnos]
        for name in names:
            (tmp_path / name).write_bytes(os.urandom(1024))
            archive.push(tmp_path / name)
        return names

    below_b1 = push(range(first - 2, first))
    between = push(range(first, min(last, first + 2)))
    from_b2 = push(range(last, last + 1))
    due_wal = [archive.key(n) for n in below_b1 + between]
    stores = [archive.store(region) for region in REGIONS]
    for store in stores:
        # Written locked, multipart tars included, in both regions.
        for key in [k for f in (b1, i1, b2) for k in _chain_keys(chain[f])] + due_wal:
            assert lock_of(store, key)[0] == "COMPLIANCE", key
    # The chain's locks pass first, then the WAL's, each leaving time for a cleanup (timed with
    # a dry run, with room: a busy machine runs it many times slower).
    started = time.monotonic()
    _cleanup_now(deployment, dry_run=True)
    pace = timedelta(seconds=3 * (time.monotonic() - started) + 5)
    chain_until = datetime.now(UTC) + pace
    wal_until = chain_until + pace
    for store in stores:
        _lock_until(store, [k for f in (b1, i1) for k in _chain_keys(chain[f])], chain_until)
        _lock_until(store, due_wal, wal_until)

    # 1. All due, all locked: B1 and I1 are kept whole (B1 keeps the WAL from its start); the
    #    segments below B1 are due but locked. Nothing goes, nothing fails.
    early = _cleanup_now(deployment)
    assert datetime.now(UTC) < chain_until, "the cleanup took longer than the locks"
    assert (early["base"], early["incremental"], early["wal"]) == (0, 0, 0)
    assert early["locked"] == 2 * (2 + len(below_b1))  # per region: B1, I1, those segments
    kept = {(i["file"], i["region"]) for i in early["deleted"] if i["reason"].startswith("kept")}
    assert {(f, r) for f in (b1, i1) for r in REGIONS} <= kept
    assert [i["count"] for i in early["deleted"] if i.get("backup_type") == "postgresql_wal"] == [
        len(below_b1)
    ] * 2
    for store in stores:
        for key in _chain_keys(chain[b1]) + _chain_keys(chain[i1]) + due_wal:
            assert store.exists(key), key
        # No credential deletes a locked version of a base backup, an incremental or a segment.
        for key in (chain[b1].key, chain[i1].key, due_wal[0]):
            version = versions_of(store, key)[0]["VersionId"]
            for bypass in (False, True):
                with pytest.raises(ClientError) as refused:
                    store.client.delete_object(
                        Bucket=store.bucket,
                        Key=key,
                        VersionId=version,
                        BypassGovernanceRetention=bypass,
                    )
                assert refused.value.response["Error"]["Code"] == "AccessDenied"

    # 2. The chain's locks have passed, the WAL's not: B1 and I1 go with every version; the WAL
    #    before B2 is now due, and stays under its lock, reported.
    _wait_until(chain_until)
    middle = _cleanup_now(deployment)
    assert datetime.now(UTC) < wal_until, "the cleanup took longer than the locks"
    assert (middle["base"], middle["incremental"], middle["wal"]) == (1, 1, 0)
    assert middle["locked"] == 2 * len(due_wal)
    for store in stores:
        for key in _chain_keys(chain[b1]) + _chain_keys(chain[i1]):
            assert versions_of(store, key) == [], key
        for key in _chain_keys(chain[b2]) + due_wal:
            assert store.exists(key), key
    assert [m.file for m in Chain(deployment, "us-west-2").elements()] == [b2]

    # 3. Every lock has passed: exactly the WAL before B2 goes, every version; B2 and its WAL
    #    stay.
    _wait_until(wal_until)
    late = _cleanup_now(deployment)
    counts = (late["base"], late["incremental"], late["wal"], late["locked"])
    assert counts == (0, 0, len(due_wal), 0)
    for store in stores:
        for key in due_wal:
            assert versions_of(store, key) == [], key
        for key in _chain_keys(chain[b2]) + [archive.key(n) for n in from_b2]:
            assert store.exists(key), key


def test_the_sandbox_creates_its_buckets_with_object_lock(tmp_path: Path) -> None:
    from disaster_recovery.cli import build_parser
    from dr_sandbox import SandboxPorts

    args = build_parser().parse_args(["sandbox", "up", "--object-lock", "compliance"])
    assert args.object_lock == "compliance"
    root = tmp_path / "box"
    root.mkdir()
    box = Sandbox(root, SandboxPorts.free(), object_lock=args.object_lock)
    try:
        # The steps of `up` that matter here: the policy, moto, the buckets.
        box.state.save(box.state_file)
        box._write_config()
        box._start_moto()
        box._prepare_aws()
        settings = box.settings()
        assert settings.storage.object_lock is not None
        assert settings.storage.object_lock.mode == "compliance"
        for region in REGIONS:
            store = box.store(region)
            config = store.client.get_object_lock_configuration(Bucket=store.bucket)
            assert config["ObjectLockConfiguration"]["ObjectLockEnabled"] == "Enabled"
            versioning = store.client.get_bucket_versioning(Bucket=store.bucket)
            assert versioning["Status"] == "Enabled"
    finally:
        box.down(purge=True)
