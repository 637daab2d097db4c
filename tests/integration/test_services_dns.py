"""ACTIVATE SERVICES kinds and Route 53 switching, against the shared sandbox's moto server and
demo application (nothing here changes the sandbox's topology)."""

from __future__ import annotations

import boto3
import pytest

from disaster_recovery.clients.route53 import DnsSwitch
from disaster_recovery.clients.services import Services, http_json
from disaster_recovery.config.endpoints import Deployment
from disaster_recovery.config.model import load_settings, settings_from_dict
from disaster_recovery.errors import ConfigError
from dr_sandbox import Sandbox


def _deployment_with(services: dict, dns: dict | None = None) -> Deployment:
    data = load_settings().model_dump(mode="python")
    data["services"] = services
    if dns is not None:
        data["dns"] = dns
    return Deployment(settings_from_dict(data))


def test_activate_by_ecs_desired_count_and_by_http(
    sandbox: Sandbox, sandbox_env: dict[str, str]
) -> None:
    ecs = boto3.client("ecs", **sandbox.aws("us-west-2").client_kwargs())
    ecs.create_cluster(clusterName="litper")
    ecs.register_task_definition(
        family="api", containerDefinitions=[{"name": "api", "image": "litper/api:1", "memory": 256}]
    )
    ecs.create_service(cluster="litper", serviceName="api", taskDefinition="api", desiredCount=0)
    app = sandbox.app_url("us-east-1")
    deployment = _deployment_with(
        {
            "us-west-2": {
                "activate": {
                    "kind": "ecs",
                    "cluster": "litper",
                    "service": "api",
                    "desired_count": 3,
                },
                "deactivate": {"kind": "ecs", "cluster": "litper", "service": "api"},
            },
            "us-east-1": {
                "health_urls": [f"{app}/health"],
                "activate": {"kind": "http", "url": f"{app}/writer", "body": {"enabled": False}},
            },
        }
    )
    services = Services(deployment)
    assert services.activate("us-west-2") == {"kind": "ecs", "service": "api", "desired_count": 3}
    described = ecs.describe_services(cluster="litper", services=["api"])["services"][0]
    assert described["desiredCount"] == 3
    assert services.deactivate("us-west-2")["desired_count"] == 0
    assert services.activate("us-east-1") == {"kind": "http", "status": 200}
    assert http_json(f"{app}/stats")[1]["writer"] is False
    assert services.health("us-east-1")["status"] == "healthy"


def test_bad_service_config_is_reported_with_its_key() -> None:
    with pytest.raises(ConfigError, match=r"services\.us-west-2\.activate.*needs cluster, service"):
        settings_from_dict({"services": {"us-west-2": {"activate": {"kind": "ecs"}}}})
    with pytest.raises(ConfigError, match="unknown kind 'k8s'"):
        settings_from_dict({"services": {"us-west-2": {"activate": {"kind": "k8s"}}}})


def test_dns_switch_upserts_waits_and_reads_back(
    sandbox: Sandbox, sandbox_env: dict[str, str]
) -> None:
    # A zone of its own, so the sandbox's records keep pointing at us-east-1.
    client = boto3.client("route53", **sandbox.aws("us-west-2").client_kwargs("route53"))
    client.create_hosted_zone(Name="switch-test.internal.", CallerReference="switch-test")
    deployment = _deployment_with(
        {},
        {
            "zone": "switch-test.internal",
            "records": ["db", "app"],
            "targets": {"app": {"us-west-2": "lb.usw2.example.com"}},
        },
    )
    dns = DnsSwitch(deployment.aws("us-west-2"), deployment.settings.dns)
    assert dns.current() == {"db.switch-test.internal.": None, "app.switch-test.internal.": None}
    change = dns.point_to("us-west-2")
    assert change["change_status"] == "INSYNC"
    assert dns.current() == {
        "db.switch-test.internal.": "db.us-west-2.switch-test.internal.",
        "app.switch-test.internal.": "lb.usw2.example.com.",
    }
    assert dns.points_to("us-west-2") and not dns.points_to("us-east-1")
    dns.point_to("us-east-1")
    assert dns.points_to("us-east-1")
    missing = _deployment_with({}, {"zone": "nowhere.internal"})
    with pytest.raises(ConfigError, match=r"no hosted zone 'nowhere\.internal\.'"):
        DnsSwitch(missing.aws("us-west-2"), missing.settings.dns).point_to("us-west-2")
