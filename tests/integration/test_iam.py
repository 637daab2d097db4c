"""Least privilege, enforced: ``dr iam-policy`` policies loaded into a moto server that checks
every request against IAM (``INITIAL_NO_AUTH_ACTION_COUNT``). The archiver and a full backup
succeed under their policies; the archiver cannot delete nor touch backups; the cleanup fails
with a clear error under the Airflow role and deletes under the cleanup role."""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from backup_support import unique_time

from disaster_recovery.backup.logical import run_backup
from disaster_recovery.backup.stores import Stores
from disaster_recovery.clients.s3 import ObjectStore
from disaster_recovery.config.endpoints import (
    ConnectionFields,
    Deployment,
    aws_endpoint,
    env_var_name,
    parse_connection,
)
from disaster_recovery.config.iam import ROLES, policy_document
from disaster_recovery.config.model import Settings, load_settings
from disaster_recovery.errors import ConfigError
from disaster_recovery.retention.cleanup import cleanup_old_backups
from dr_sandbox import Sandbox

REGIONS = ("us-east-1", "us-west-2")
ENFORCED_ROLES = ("archiver", "airflow", "cleanup")
ZONE_ID = "Z0123456789LITPER"
ASSUMED_ROLE = "dr-airflow-role"
ROLE_ARN = f"arn:aws:iam::123456789012:role/{ASSUMED_ROLE}"


def dr(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "disaster_recovery", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        check=False,
        timeout=120,
    )


# -- the documents -------------------------------------------------------------------------------


def statements_allowing(policy: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in policy["Statement"] if action in s["Action"]]


def test_only_the_cleanup_role_may_delete_and_the_archiver_only_touches_wal() -> None:
    settings = Settings()
    policies = {
        role: policy_document(settings, role, zone_id=ZONE_ID if role != "archiver" else None)
        for role in ROLES
    }
    coordination = ("*.claim.json", "/locks/*", "/split-brain/*", "/_debt/*")
    for role, policy in policies.items():
        deleting = [s for s in policy["Statement"] if any("Delete" in a for a in s["Action"])]
        if role == "cleanup":
            assert deleting
        for statement in deleting if role != "cleanup" else []:
            # Other roles remove only the coordination objects they create themselves (a run's
            # claim, the chain's lease, split-brain markers, a lost region's WAL debt): never a
            # backup, a manifest or a WAL file.
            assert statement["Action"] == ["s3:DeleteObject"], (role, statement)
            assert all(r.endswith(coordination) for r in statement["Resource"]), (role, statement)
        assert all(s["Effect"] == "Allow" for s in policy["Statement"])
    archiver = policies["archiver"]
    objects = [r for s in archiver["Statement"] for r in s["Resource"] if "/" in r]
    assert objects == [
        "arn:aws:s3:::litper-dr-backups-us-east-1/litper/postgresql_wal/*",
        "arn:aws:s3:::litper-dr-backups-us-west-2/litper/postgresql_wal/*",
    ]
    assert {a for s in archiver["Statement"] for a in s["Action"]} == {
        "s3:PutObject",
        "s3:GetObject",
        "s3:ListBucket",
    }
    assert not statements_allowing(policies["cleanup"], "s3:PutObject")
    # Route 53: only the zone named, for the roles that move records.
    change = statements_allowing(policies["airflow"], "route53:ChangeResourceRecordSets")
    assert change[0]["Resource"] == f"arn:aws:route53:::hostedzone/{ZONE_ID}"
    assert not statements_allowing(policies["archiver"], "route53:ChangeResourceRecordSets")


def test_with_object_lock_writers_set_retentions_the_cleanup_reads_them_and_none_bypasses() -> None:
    settings = Settings.model_validate({"storage": {"object_lock": {"mode": "governance"}}})
    policies = {role: policy_document(settings, role, zone_id=ZONE_ID) for role in ROLES}
    for role in ("airflow", "operator", "archiver"):
        (retention,) = statements_allowing(policies[role], "s3:PutObjectRetention")
        wal_only = role == "archiver"
        assert all(r.endswith("/postgresql_wal/*") == wal_only for r in retention["Resource"])
    assert statements_allowing(policies["cleanup"], "s3:GetObjectRetention")
    assert not statements_allowing(policies["cleanup"], "s3:PutObjectRetention")
    for policy in policies.values():
        assert not statements_allowing(policy, "s3:BypassGovernanceRetention")
    assert not statements_allowing(
        policy_document(Settings(), "airflow", zone_id=ZONE_ID), "s3:PutObjectRetention"
    )


def test_kms_keys_come_from_the_encryption_setting() -> None:
    settings = Settings.model_validate(
        {
            "storage": {
                "prefix": "p",
                "encryption": {
                    "us-east-1": {
                        "algorithm": "aws:kms",
                        "kms_key_id": "arn:aws:kms:us-east-1:111122223333:key/east",
                    },
                    "us-west-2": {"algorithm": "aws:kms", "kms_key_id": "alias/litper-west"},
                },
            }
        }
    )
    policy = policy_document(settings, "archiver")
    by_arn = statements_allowing(policy, "kms:GenerateDataKey")
    assert by_arn[0]["Resource"] == ["arn:aws:kms:us-east-1:111122223333:key/east"]
    assert by_arn[1]["Condition"] == {
        "ForAnyValue:StringEquals": {"kms:ResourceAliases": ["alias/litper-west"]}
    }
    cleanup = policy_document(settings, "cleanup")
    assert not statements_allowing(cleanup, "kms:GenerateDataKey")
    assert statements_allowing(cleanup, "kms:Decrypt")
    # AES256 everywhere: no KMS statement at all.
    assert not statements_allowing(policy_document(Settings(), "archiver"), "kms:Decrypt")


def test_cli_prints_the_policy_and_asks_for_the_zone_where_needed() -> None:
    archiver = dr("iam-policy", "--role", "archiver")
    assert archiver.returncode == 0, archiver.stderr
    assert json.loads(archiver.stdout) == policy_document(load_settings(), "archiver")
    missing_zone = dr("iam-policy", "--role", "airflow")
    assert missing_zone.returncode == 3
    assert "--zone-id" in json.loads(missing_zone.stdout)["error"]
    with pytest.raises(ConfigError, match="unknown role"):
        policy_document(Settings(), "root")


# -- enforced by moto ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class IamWorld:
    """A moto server enforcing IAM, with the buckets and one user per role."""

    endpoint_url: str
    settings: Settings
    config_file: Path
    keys: dict[str, tuple[str, str]]  # role -> (access key id, secret)

    def connection(self, role: str, conn_id: str, region: str) -> dict[str, Any]:
        """``role``'s keys; ``assumed``: the base user's keys plus ``role_arn``, with STS at
        this server (``service_config.sts``, where the amazon provider looks for it)."""
        key, secret = self.keys["base" if role == "assumed" else role]
        extra: dict[str, Any] = {"endpoint_url": self.endpoint_url, "region_name": region}
        if role == "assumed":
            extra["role_arn"] = ROLE_ARN
            extra["service_config"] = {"sts": {"endpoint_url": self.endpoint_url}}
        return {"conn_type": "aws", "login": key, "password": secret, "extra": extra}

    def deployment(self, role: str, sandbox_env: dict[str, str]) -> Deployment:
        """The sandbox's databases, this server's S3 with ``role``'s credentials."""
        aws = {
            self.settings.connections.aws_primary: "us-east-1",
            self.settings.connections.aws_secondary: "us-west-2",
        }

        def lookup(conn_id: str) -> ConnectionFields:
            if conn_id in aws:
                value = json.dumps(self.connection(role, conn_id, aws[conn_id]))
                return parse_connection(conn_id, value)
            return parse_connection(conn_id, sandbox_env[env_var_name(conn_id)])

        return Deployment(self.settings, lookup=lookup)

    def store(self, role: str, region: str) -> ObjectStore:
        conn = parse_connection("x", json.dumps(self.connection(role, "x", region)))
        return ObjectStore(
            aws_endpoint(conn, region),
            self.settings.bucket(region),
            encryption=self.settings.storage.encryption_for(region),
        )


def _setup_calls(
    settings: Settings, policies: dict[str, dict[str, Any]], endpoint_url: str
) -> Iterator[Callable[[], Any]]:
    """The requests made before enforcement starts, one callable each (counted up front)."""
    admin = {
        "endpoint_url": endpoint_url,
        "region_name": "us-east-1",
        "aws_access_key_id": "AKIAADMINSETUP",
        "aws_secret_access_key": "setup",
    }
    iam = boto3.client("iam", **admin)
    for region in REGIONS:
        s3 = boto3.client("s3", **{**admin, "region_name": region})
        kwargs: dict[str, Any] = {"Bucket": settings.bucket(region)}
        if region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        yield lambda s3=s3, kwargs=kwargs: s3.create_bucket(**kwargs)
    for role in ENFORCED_ROLES:
        document = json.dumps(policies[role])
        yield lambda role=role: iam.create_user(UserName=f"dr-{role}")
        yield lambda role=role, document=document: iam.create_policy(
            PolicyName=f"dr-{role}", PolicyDocument=document
        )
        yield lambda role=role: iam.attach_user_policy(
            UserName=f"dr-{role}", PolicyArn=f"arn:aws:iam::123456789012:policy/dr-{role}"
        )
        yield lambda role=role: iam.create_access_key(UserName=f"dr-{role}")
    # A user whose only right is to assume a role carrying the Airflow policy.
    may_assume = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": ROLE_ARN}],
    }
    yield lambda: iam.create_user(UserName="dr-base")
    yield lambda: iam.create_policy(PolicyName="dr-base", PolicyDocument=json.dumps(may_assume))
    yield lambda: iam.attach_user_policy(
        UserName="dr-base", PolicyArn="arn:aws:iam::123456789012:policy/dr-base"
    )
    yield lambda: iam.create_access_key(UserName="dr-base")
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::123456789012:user/dr-base"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    yield lambda: iam.create_role(RoleName=ASSUMED_ROLE, AssumeRolePolicyDocument=json.dumps(trust))
    yield lambda: iam.attach_role_policy(
        RoleName=ASSUMED_ROLE, PolicyArn="arn:aws:iam::123456789012:policy/dr-airflow"
    )


@pytest.fixture(scope="module")
def world(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IamWorld]:
    folder = tmp_path_factory.mktemp("iam")
    data = yaml.safe_load(sandbox.config_file.read_text())
    data["storage"]["prefix"] = f"iam-{unique_time():%H%M%S}"
    config_file = folder / "dr_config.yaml"
    config_file.write_text(yaml.safe_dump(data))
    settings = load_settings(config_file)
    policies = {}
    for role in ENFORCED_ROLES:
        # From the CLI, as an operator would produce them.
        printed = dr(
            "--config", str(config_file), "iam-policy", "--role", role, "--zone-id", ZONE_ID
        )
        assert printed.returncode == 0, printed.stderr
        policies[role] = json.loads(printed.stdout)

    port = _free_port()
    endpoint_url = f"http://127.0.0.1:{port}"
    calls = list(_setup_calls(settings, policies, endpoint_url))
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(len(calls))},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port)
        keys: dict[str, tuple[str, str]] = {}
        results = [call() for call in calls]
        for result in results:
            if "AccessKey" in result:
                access = result["AccessKey"]
                keys[access["UserName"].removeprefix("dr-")] = (
                    access["AccessKeyId"],
                    access["SecretAccessKey"],
                )
        yield IamWorld(endpoint_url, settings, config_file, keys)
    finally:
        server.terminate()
        server.wait(timeout=10)


def _wait_for_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"moto did not listen on {port} within {timeout} s")


def test_iam_is_enforced(world: IamWorld) -> None:
    anonymous = ObjectStore(
        aws_endpoint(
            parse_connection(
                "x",
                json.dumps(
                    {
                        "conn_type": "aws",
                        "login": "AKIANOBODY",
                        "password": "nobody",
                        "extra": {"endpoint_url": world.endpoint_url},
                    }
                ),
            ),
            "us-east-1",
        ),
        world.settings.bucket("us-east-1"),
    )
    with pytest.raises(ConfigError, match=r"InvalidAccessKeyId|access denied"):
        anonymous.put_bytes("x", b"x")


def test_the_archiver_archives_and_fetches_wal_and_can_do_nothing_else(
    world: IamWorld, tmp_path: Path
) -> None:
    pg_wal = tmp_path / "pg_wal"
    pg_wal.mkdir()
    segment = pg_wal / "000000010000000000000001"
    segment.write_bytes(os.urandom(64 * 1024))
    env_file = tmp_path / "wal.env"
    conns = world.settings.connections
    lines = {
        "DR_CONFIG": str(world.config_file),
        env_var_name(conns.aws_primary): json.dumps(
            world.connection("archiver", conns.aws_primary, "us-east-1")
        ),
        env_var_name(conns.aws_secondary): json.dumps(
            world.connection("archiver", conns.aws_secondary, "us-west-2")
        ),
    }
    env_file.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in lines.items()))

    def archiver(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "disaster_recovery.wal", "--env-file", str(env_file), *args],
            capture_output=True,
            text=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")},
            check=False,
            timeout=60,
        )

    pushed = archiver("push", str(segment))
    assert pushed.returncode == 0, pushed.stderr
    again = archiver("push", str(segment))  # identical: HEAD + digest, still allowed
    assert again.returncode == 0, again.stderr
    fetched = tmp_path / "fetched"
    got = archiver("fetch", segment.name, str(fetched))
    assert got.returncode == 0, got.stderr
    assert fetched.read_bytes() == segment.read_bytes()

    wal_key = f"{world.settings.storage.prefix}/postgresql_wal/{segment.name}"
    for region in REGIONS:
        store = world.store("archiver", region)
        head = world.store("airflow", region).head(wal_key)
        assert head is not None and head["ServerSideEncryption"] == "aws:kms"
        with pytest.raises(ConfigError, match="AccessDenied") as refused:
            store.delete([wal_key])
        assert "cleanup role" in str(refused.value)
        assert world.store("airflow", region).exists(wal_key)  # still there
        with pytest.raises(ConfigError, match="access denied"):
            store.put_bytes(f"{world.settings.storage.prefix}/postgresql_full/x.dump", b"x")


def test_a_full_backup_succeeds_under_the_airflow_policy_and_only_cleanup_deletes(
    world: IamWorld, sandbox: Sandbox, sandbox_env: dict[str, str]
) -> None:
    airflow = world.deployment("airflow", sandbox_env)
    manifest = run_backup(airflow, "postgresql_full", unique_time())
    assert manifest.verified and "us-west-2" in manifest.replicas

    # An archiver may not read backups.
    with pytest.raises(ConfigError, match="access denied"):
        world.store("archiver", "us-east-1").get_bytes(manifest.key)

    # A leftover (a dump whose run died before its manifest) that the cleanup removes once
    # older than backup.leftover_grace.
    prefix = world.settings.storage.prefix
    orphan = f"{prefix}/postgresql_full/2025/01/01/postgresql_full_20250101_000000.dump"
    Stores.of(airflow).primary.put_bytes(orphan, b"a dump whose manifest never came")
    later = datetime.now(UTC) + timedelta(days=2)

    with pytest.raises(ConfigError) as refused:
        cleanup_old_backups(airflow, now=later)
    message = str(refused.value)
    assert "DELETE refused (AccessDenied)" in message and orphan in message
    assert "dr iam-policy --role cleanup" in message
    assert Stores.of(airflow).primary.exists(orphan)

    cleaner = world.deployment("cleanup", sandbox_env)
    result = cleanup_old_backups(cleaner, now=later)
    assert result["orphans"] == 1 and [d["key"] for d in result["deleted"]] == [orphan]
    assert not Stores.of(airflow).primary.exists(orphan)
    # The newest verified backup of its tier stays, and the cleanup role cannot write.
    assert Stores.of(airflow).primary.exists(manifest.key)
    with pytest.raises(ConfigError, match="access denied"):
        Stores.of(cleaner).primary.put_bytes(f"{prefix}/postgresql_full/y.dump", b"y")


# -- the provider's credentials: role_arn ----------------------------------------------------------


def test_role_arn_outside_airflow_assumes_the_role_through_sts(
    world: IamWorld, sandbox_env: dict[str, str]
) -> None:
    from disaster_recovery.clients.aws_sessions import session_for

    # The base user alone may not touch the buckets...
    prefix = world.settings.storage.prefix
    with pytest.raises(ConfigError, match="access denied"):
        world.store("base", "us-east-1").put_bytes(f"{prefix}/health/base.json", b"{}")
    # ...the same keys with role_arn act as the role.
    deployment = world.deployment("assumed", sandbox_env)
    endpoint = deployment.aws("us-east-1")
    assert endpoint.role_arn == ROLE_ARN and "aws_access_key_id" not in endpoint.client_kwargs()
    identity = session_for(endpoint).client("sts", endpoint_url=world.endpoint_url)
    arn = identity.get_caller_identity()["Arn"]
    assert arn.startswith(f"arn:aws:sts::123456789012:assumed-role/{ASSUMED_ROLE}/litper-dr"), arn
    store = Stores.of(deployment).primary
    store.put_bytes(f"{prefix}/health/assumed.json", b"{}")
    assert store.head(f"{prefix}/health/assumed.json")["ServerSideEncryption"] == "aws:kms"  # type: ignore[index]
    # A role the base user may not assume: a clear error naming it.
    other = parse_connection(
        "dr_aws_other",
        json.dumps(
            {
                **world.connection("assumed", "x", "us-east-1"),
                "extra": {
                    **world.connection("assumed", "x", "us-east-1")["extra"],
                    "role_arn": "arn:aws:iam::123456789012:role/nobody",
                },
            }
        ),
    )
    with pytest.raises(
        ConfigError, match="STS refused to assume arn:aws:iam::123456789012:role/nobody"
    ):
        session_for(aws_endpoint(other, "us-east-1"))


def test_inside_airflow_the_providers_hook_assumes_the_role(
    world: IamWorld,
    sandbox: Sandbox,
    sandbox_env: dict[str, str],
    airflow_db: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from helpers import run_dag, task_states

    from disaster_recovery.airflow_support.aws_hook import provider_session
    from disaster_recovery.backup.logical import run_file

    conns = world.settings.connections
    for conn_id, region in ((conns.aws_primary, "us-east-1"), (conns.aws_secondary, "us-west-2")):
        monkeypatch.setenv(
            env_var_name(conn_id), json.dumps(world.connection("assumed", conn_id, region))
        )
    monkeypatch.setenv("DR_CONFIG", str(world.config_file))
    session = provider_session(conns.aws_primary, "us-east-1")
    arn = session.client("sts", endpoint_url=world.endpoint_url).get_caller_identity()["Arn"]
    assert f"assumed-role/{ASSUMED_ROLE}/" in arn, arn
    # The tasks' deployment takes its sessions from the hook, not from our own STS code.
    from disaster_recovery.airflow_support import aws_hook, connections

    asked: list[tuple[str, str]] = []

    def recording(conn_id: str, region: str) -> Any:
        asked.append((conn_id, region))
        return provider_session(conn_id, region)

    monkeypatch.setattr(aws_hook, "provider_session", recording)
    tasks_store = Stores.of(connections.deployment(world.settings)).secondary
    tasks_store.put_bytes(f"{world.settings.storage.prefix}/health/hook.json", b"{}")
    # Reading the topology record asks for both regions' sessions; every one came from the hook.
    assert (conns.aws_secondary, "us-west-2") in asked
    assert set(asked) <= {(conns.aws_primary, "us-east-1"), (conns.aws_secondary, "us-west-2")}

    # A whole backup DAG with these Connections: every S3 call goes through the hook's session.
    when = unique_time()
    dag_run = run_dag("postgresql_backup_full", when)
    assert str(dag_run.state) == "success", task_states(dag_run)
    file = run_file("postgresql_full", when)
    airflow = world.deployment("airflow", sandbox_env)
    manifest = Stores.of(airflow).catalog.load(file)
    assert manifest.verified and "us-west-2" in manifest.replicas


def test_the_archiver_env_file_carries_role_arn_and_the_archiver_assumes_it(
    world: IamWorld, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    from disaster_recovery.wal.host import archiver_env

    env = archiver_env(world.settings, world.deployment("assumed", sandbox_env), world.config_file)
    primary = json.loads(env[env_var_name(world.settings.connections.aws_primary)])
    assert primary["extra"]["role_arn"] == ROLE_ARN
    assert primary["extra"]["service_config"] == {"sts": {"endpoint_url": world.endpoint_url}}
    env_file = tmp_path / "wal.env"
    env_file.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()))
    segment = tmp_path / "000000010000000000000002"
    segment.write_bytes(os.urandom(4096))
    pushed = subprocess.run(
        [
            sys.executable,
            "-m",
            "disaster_recovery.wal",
            "--env-file",
            str(env_file),
            "push",
            str(segment),
        ],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")},
        check=False,
        timeout=60,
    )
    assert pushed.returncode == 0, pushed.stderr
    key = f"{world.settings.storage.prefix}/postgresql_wal/{segment.name}"
    assert all(world.store("airflow", region).exists(key) for region in REGIONS)
