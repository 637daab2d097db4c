"""Encryption at rest: ``storage.encryption`` is validated, every object the DAGs write in the
sandbox carries its region's KMS key (a copy the destination's), and an object written without
it fails ``dr verify`` and the WAL check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from backup_support import BackupEnv, unencrypted_objects, unique_time
from helpers import run_dag, task_states
from pitr_support import switch_and_wait_archived

from disaster_recovery.backup.logical import run_backup, run_file
from disaster_recovery.backup.stores import Stores
from disaster_recovery.clients.s3 import ObjectStore
from disaster_recovery.config.encryption import Encryption, kms_key_matches
from disaster_recovery.config.endpoints import Deployment
from disaster_recovery.config.model import Settings, settings_from_dict
from disaster_recovery.errors import ConfigError, VerificationError
from disaster_recovery.wal.archive import WalArchive
from disaster_recovery.wal.continuity import check_archive, raise_for_gap
from dr_sandbox import Sandbox, sandbox_kms_key

REGIONS = ("us-east-1", "us-west-2")

# -- the setting ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encryption", "message"),
    [
        ({"us-east-1": {"algorithm": "aws:kms"}}, "aws:kms needs kms_key_id"),
        ({"us-east-1": {"algorithm": "AES256", "kms_key_id": "k"}}, "only to aws:kms"),
        ({"us-east-1": {"algorithm": "DES"}}, "'DES' is not supported"),
        ({"eu-west-1": {"algorithm": "AES256"}}, "no bucket for region(s) eu-west-1"),
        ({"us-east-1": {"algorithm": "AES256", "key": "x"}}, "unknown key(s) key"),
        ({"us-east-1": "AES256"}, "valid dictionary"),
    ],
)
def test_a_wrong_encryption_setting_is_a_config_error_naming_it(
    encryption: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        settings_from_dict({"storage": {"encryption": encryption}}, "dr_config.yaml")
    assert "storage.encryption" in str(raised.value) and message in str(raised.value)


def test_each_region_gets_its_own_encryption_and_aes256_when_left_out() -> None:
    east_key = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    settings = settings_from_dict(
        {"storage": {"encryption": {"us-east-1": {"algorithm": "aws:kms", "kms_key_id": east_key}}}}
    )
    assert settings.storage.encryption_for("us-east-1") == Encryption("aws:kms", east_key)
    assert settings.storage.encryption_for("us-west-2") == Encryption("AES256")
    assert Encryption("aws:kms", east_key).write_args() == {
        "ServerSideEncryption": "aws:kms",
        "SSEKMSKeyId": east_key,
    }
    # The shipped policy encrypts both regions.
    shipped = Settings()
    assert {shipped.storage.encryption_for(r).algorithm for r in REGIONS} == {"AES256"}


@pytest.mark.parametrize(
    ("configured", "reported", "matches"),
    [
        ("arn:aws:kms:us-east-1:1:key/abc", "arn:aws:kms:us-east-1:1:key/abc", True),
        ("abc", "arn:aws:kms:us-east-1:1:key/abc", True),
        ("abc", "arn:aws:kms:us-east-1:1:key/abcd", False),
        ("arn:aws:kms:us-east-1:1:key/abc", "arn:aws:kms:us-west-2:1:key/abc", False),
        ("abc", None, False),
        ("alias/litper-dr", "arn:aws:kms:us-east-1:1:key/anything", True),
    ],
)
def test_kms_key_matching(configured: str, reported: str | None, matches: bool) -> None:
    assert kms_key_matches(configured, reported) is matches


def test_an_objects_encryption_problem_is_named() -> None:
    kms = Encryption("aws:kms", "arn:aws:kms:us-east-1:1:key/abc")
    assert kms.problem({}) == "not encrypted at rest (expected aws:kms)"
    assert (
        kms.problem({"ServerSideEncryption": "AES256"}) == "encrypted with AES256, expected aws:kms"
    )
    assert "expected 'arn:aws:kms:us-east-1:1:key/abc'" in str(
        kms.problem({"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "other"})
    )
    assert kms.problem({"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms.kms_key_id}) is None


def test_the_wal_archiver_reads_the_same_setting_without_the_settings_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "wal_config.yaml"
    key = "arn:aws:kms:us-west-2:1:key/west"
    buckets = {region: f"bucket-{region}" for region in REGIONS}

    def write(encryption: dict[str, Any]) -> None:
        config.write_text(
            yaml.safe_dump({"storage": {"buckets": buckets, "encryption": encryption}})
        )

    write({"us-west-2": {"algorithm": "aws:kms", "kms_key_id": key}})
    monkeypatch.setenv("DR_CONFIG", str(config))
    for conn_id in ("DR_AWS_PRIMARY", "DR_AWS_SECONDARY"):
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id}", '{"conn_type": "aws"}')
    archive = WalArchive.from_environment()
    assert [loc.encryption for loc in archive.locations] == [
        Encryption("AES256"),
        Encryption("aws:kms", key),
    ]
    write({"us-west-2": {}})
    # {} is AES256 (the default algorithm); a KMS setting without a key is refused.
    assert WalArchive.from_environment().locations[1].encryption == Encryption("AES256")
    write({"us-west-2": {"algorithm": "aws:kms"}})
    with pytest.raises(ConfigError, match=r"storage\.encryption\.us-west-2: aws:kms needs"):
        WalArchive.from_environment()


# -- against the sandbox -------------------------------------------------------------------------


@pytest.fixture
def env(backup_env: BackupEnv, airflow_db: None) -> BackupEnv:
    return backup_env


def put_unencrypted(store: ObjectStore, key: str) -> None:
    """Write the object's own bytes and metadata back without any encryption header, as a
    writer that bypasses the library would (same bytes: only the encryption is wrong)."""
    head = store.head(key)
    assert head is not None
    store.client.put_object(
        Bucket=store.bucket, Key=key, Body=store.get_bytes(key), Metadata=head["Metadata"]
    )
    assert store.head(key).get("ServerSideEncryption") is None  # type: ignore[union-attr]


def test_every_object_the_dags_write_carries_its_regions_kms_key(
    sandbox: Sandbox,
    sandbox_env: dict[str, str],
    airflow_db: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The sandbox's own policy (prefix litper): the WAL check needs the archiver's WAL.
    monkeypatch.setenv("DR_CONFIG", str(sandbox.config_file))
    deployment = Deployment(sandbox.settings())
    settings = deployment.settings
    keys = {region: settings.storage.encryption_for(region).kms_key_id for region in REGIONS}
    assert keys == {region: sandbox_kms_key(region) for region in REGIONS}

    when = unique_time()
    for dag_id, run_time in [
        ("postgresql_backup_full", when),  # multipart upload, puts, cross-region copy
        ("postgresql_backup_incremental", None),  # base backup tar, backup_manifest, copies
        ("postgresql_wal_archive", None),  # the WAL check's state objects
        ("dr_health_check", None),  # health records in the secondary region
        ("postgresql_backup_cleanup", None),
    ]:
        if dag_id == "postgresql_wal_archive":
            switch_and_wait_archived(sandbox.postgres("primary"))  # the archiver's puts
        dag_run = run_dag(dag_id, run_time)
        assert str(dag_run.state) == "success", (dag_id, task_states(dag_run))

    stores = Stores.of(deployment)
    assert stores.primary.encryption.kms_key_id != stores.secondary.encryption.kms_key_id
    for store in (stores.primary, stores.secondary):
        # The whole bucket: this test's backups and the sandbox's WAL, base backups, health
        # records and the WAL check's state.
        assert len(list(store.list_keys(""))) > 10
        assert unencrypted_objects(store) == []

    file = run_file("postgresql_full", when)
    manifest = stores.catalog.load(file)
    assert manifest.encryption == {  # type: ignore[attr-defined]
        "algorithm": "aws:kms",
        "kms_key_id": keys["us-east-1"],
    }
    assert manifest.replicas["us-west-2"]["encryption"]["kms_key_id"] == keys["us-west-2"]
    checks = manifest.verification.checks  # type: ignore[union-attr]
    assert checks["checksum"]["encryption"]["kms_key_id"] == keys["us-east-1"]
    assert checks["replica"]["encryption"]["kms_key_id"] == keys["us-west-2"]
    # The replica is the destination region's: re-encrypted, not the source's key.
    head = stores.secondary.head(manifest.key)
    assert head is not None and head["SSEKMSKeyId"] == keys["us-west-2"]


def dr(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "disaster_recovery", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        check=False,
        timeout=300,
    )


def test_a_backup_written_without_encryption_fails_dr_verify(env: BackupEnv) -> None:
    manifest = run_backup(env.deployment(), "postgresql_weekly", unique_time())
    assert dr("verify", "postgresql_weekly", manifest.file).returncode == 0

    stores = env.stores()
    put_unencrypted(stores.primary, manifest.key)
    failed = dr("verify", "postgresql_weekly", manifest.file)
    assert failed.returncode != 0, failed.stderr
    result = json.loads(failed.stdout)
    assert result["valid"] is False
    assert "not encrypted at rest (expected aws:kms)" in result["encryption"]["error"]
    assert stores.primary.url(manifest.key) in result["encryption"]["error"]
    # The failed check is recorded: the backup no longer counts.
    assert env.catalog().load(manifest.file).status == "failed"


def test_a_replica_with_the_source_regions_key_fails_the_replica_check(env: BackupEnv) -> None:
    manifest = run_backup(env.deployment(), "postgresql_weekly", unique_time())
    stores = env.stores()
    # A copy made with the primary region's key (not re-encrypted for us-west-2).
    wrong = ObjectStore(
        stores.secondary.endpoint,
        stores.secondary.bucket,
        encryption=stores.primary.encryption,
    )
    wrong.copy_from(stores.primary, manifest.key)
    with pytest.raises(VerificationError) as raised:
        stores.secondary.check_encrypted(manifest.key)
    assert raised.value.check == "encryption"
    failed = dr("verify", "postgresql_weekly", manifest.file)
    assert failed.returncode != 0
    error = json.loads(failed.stdout)["encryption"]["error"]
    assert f"expected '{sandbox_kms_key('us-west-2')}'" in error


def test_the_wal_check_reports_a_segment_without_encryption(
    sandbox: Sandbox, sandbox_env: dict[str, str]
) -> None:
    segment = switch_and_wait_archived(sandbox.postgres("primary"))
    deployment = Deployment(sandbox.settings())
    archive = WalArchive.for_deployment(deployment)
    store = archive.store("us-west-2")
    key = archive.key(segment)
    original = store.get_bytes(key)
    metadata = store.head(key)["Metadata"]  # type: ignore[index]
    # Rewritten without encryption before any check has seen it.
    put_unencrypted(store, key)
    try:
        report = check_archive(deployment)
        assert report.unencrypted == {"us-east-1": [], "us-west-2": [segment]}
        facts = report.to_dict()
        assert facts["healthy"] is False and facts["gap"] is False
        with pytest.raises(VerificationError) as raised:
            raise_for_gap(facts)
        assert raised.value.check == "encryption"
        assert f"{segment} in us-west-2" in str(raised.value)
    finally:
        # Put it back as the archiver writes it, for the other tests of the session.
        store.put_bytes(key, original, metadata=metadata)
    assert check_archive(deployment).unencrypted == {"us-east-1": [], "us-west-2": []}
    # Once found intact, a segment is looked at again when its ETag changes; identical bytes
    # keep an MD5 ETag (moto, SSE-S3), so the deep check looks at every segment again.
    put_unencrypted(store, key)
    try:
        assert check_archive(deployment, deep=True).unencrypted["us-west-2"] == [segment]
    finally:
        store.put_bytes(key, original, metadata=metadata)
    assert check_archive(deployment, deep=True).unencrypted["us-west-2"] == []
