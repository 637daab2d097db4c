"""docker-compose.yml, checked structurally (no Docker engine runs here)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from disaster_recovery.config.endpoints import env_var_name, parse_connection
from disaster_recovery.config.model import load_settings

REPO = Path(__file__).resolve().parents[2]
TOP_LEVEL = {"name", "services", "volumes", "networks", "configs", "secrets"}
SERVICE_KEYS = {
    "image",
    "build",
    "command",
    "entrypoint",
    "environment",
    "volumes",
    "ports",
    "depends_on",
    "healthcheck",
    "user",
    "restart",
    "hostname",
}
# What README.md promises a Docker user.
SERVICES = {
    "airflow-db",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-broker",
    "airflow-worker-1",
    "airflow-worker-2",
    "pg-primary",
    "pg-standby",
    "redis-primary",
    "redis-replica",
    "s3-us-east-1",
    "s3-us-west-2",
    "route53",
    "slack",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_only_known_top_level_keys(compose: dict[str, Any]) -> None:
    unknown = {k for k in compose if k not in TOP_LEVEL and not k.startswith("x-")}
    assert not unknown


def test_every_service_is_well_formed(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == SERVICES
    named_volumes = set(compose.get("volumes") or {})
    for name, service in services.items():
        assert set(service) <= SERVICE_KEYS, (name, set(service) - SERVICE_KEYS)
        assert "image" in service or "build" in service, name
        depends = service.get("depends_on") or {}
        for dependency in depends:
            assert dependency in services, (name, dependency)
        for mount in service.get("volumes") or []:
            source = mount.split(":", 1)[0]
            if source.startswith("."):
                assert (REPO / source).exists(), (name, source)
            else:
                assert source in named_volumes, (name, source)
        for port in service.get("ports") or []:
            assert re.fullmatch(r"\d+:\d+", port), (name, port)
        build = service.get("build")
        if build:
            assert (REPO / build["context"] / build["dockerfile"]).exists()


def test_airflow_runs_the_four_components_on_airflow_3_3(compose: dict[str, Any]) -> None:
    commands = {name: svc.get("command") for name, svc in compose["services"].items()}
    assert commands["airflow-apiserver"] == ["api-server"]
    assert commands["airflow-scheduler"] == ["scheduler"]
    assert commands["airflow-dag-processor"] == ["dag-processor"]
    assert commands["airflow-triggerer"] == ["triggerer"]
    dockerfile = (REPO / "docker" / "airflow.Dockerfile").read_text()
    assert "apache/airflow:3.3." in dockerfile
    assert "requirements.txt" in dockerfile and "/opt/dr" in dockerfile


def test_airflow_runs_the_celery_executor_with_two_workers(compose: dict[str, Any]) -> None:
    services = compose["services"]
    workers = {n: s for n, s in services.items() if s.get("command") == ["celery", "worker"]}
    assert set(workers) == {"airflow-worker-1", "airflow-worker-2"}
    # Each its own machine's name, as a task instance's hostname shows.
    assert len({worker["hostname"] for worker in workers.values()}) == 2
    broker = services["airflow-broker"]
    assert broker["image"].startswith("redis:") and "healthcheck" in broker
    components = ("airflow-apiserver", "airflow-scheduler", "airflow-triggerer", *workers)
    for name in components:
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://airflow-broker:6379/0", name
        assert "@airflow-db/" in env["AIRFLOW__CELERY__RESULT_BACKEND"], name
        assert "airflow-broker" in services[name]["depends_on"], name
    requirements = (REPO / "requirements.txt").read_text()
    assert "apache-airflow-providers-celery==" in requirements


def test_database_hosts_install_only_the_archiver() -> None:
    dockerfile = (REPO / "docker" / "postgres.Dockerfile").read_text()
    assert '"/opt/dr[archiver]"' in dockerfile


def test_connections_match_the_code(compose: dict[str, Any]) -> None:
    settings = load_settings()
    expected = {env_var_name(conn_id) for conn_id in settings.connections.model_dump().values()}
    airflow_env = compose["services"]["airflow-scheduler"]["environment"]
    assert expected <= set(airflow_env)
    for conn_id in settings.connections.model_dump().values():
        parsed = parse_connection(conn_id, airflow_env[env_var_name(conn_id)])
        assert parsed.conn_type, conn_id
    hosts = {
        parse_connection(c, airflow_env[env_var_name(c)]).host
        for c in (
            "dr_postgres_primary",
            "dr_postgres_standby",
            "dr_redis_primary",
            "dr_redis_replica",
        )
    }
    assert hosts == {"pg-primary", "pg-standby", "redis-primary", "redis-replica"}
    # Each region's S3 is its own server (a lost region loses its S3); Route 53 is shared.
    for role, region in (
        ("PRIMARY", settings.regions.primary),
        ("SECONDARY", settings.regions.secondary),
    ):
        extra = json.loads(airflow_env[f"AIRFLOW_CONN_DR_AWS_{role}"])["extra"]
        assert extra["region_name"] == region
        s3_host = extra["service_config"]["s3"]["endpoint_url"].split("//")[1].split(":")[0]
        assert s3_host == f"s3-{region}" == extra["endpoint_url"].split("//")[1].split(":")[0]
        assert s3_host in compose["services"]
        assert extra["service_config"]["route53"]["endpoint_url"] == "http://route53:5000"


def test_standby_streams_synchronously_from_the_primary(compose: dict[str, Any]) -> None:
    primary = " ".join(compose["services"]["pg-primary"]["command"])
    assert "synchronous_standby_names=us_west_2" in primary
    assert "wal_level=replica" in primary and "summarize_wal=on" in primary
    standby_script = " ".join(compose["services"]["pg-standby"]["entrypoint"])
    assert "pg_basebackup -h pg-primary" in standby_script and "-S us_west_2 -R" in standby_script
    assert compose["services"]["redis-replica"]["command"][-2:] == ["redis-primary", "6379"]
