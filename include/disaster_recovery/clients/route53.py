"""Route 53: point the platform's names (db, redis, app) at a region, wait until INSYNC, read back.

There is no resolver in the sandbox (moto has no DNS server): "what does the name answer" is
read from the Route 53 API, which is also what the demo application does.
"""

from __future__ import annotations

import time
from typing import Any

from disaster_recovery.config.endpoints import AwsEndpoint
from disaster_recovery.config.model import DnsConfig
from disaster_recovery.errors import ConfigError, UnavailableError


class DnsSwitch:
    def __init__(self, aws: AwsEndpoint, config: DnsConfig):
        self.aws = aws
        self.config = config
        self._zone_id: str | None = None

    def _client(self) -> Any:
        from disaster_recovery.clients.aws_sessions import aws_client

        return aws_client(self.aws, "route53")

    def zone_id(self) -> str:
        if self._zone_id is None:
            zones = self._client().list_hosted_zones_by_name(DNSName=self.config.zone)[
                "HostedZones"
            ]
            zone = next((z for z in zones if z["Name"] == self.config.zone), None)
            if zone is None:
                raise ConfigError(f"Route 53 has no hosted zone {self.config.zone!r} (dns.zone)")
            self._zone_id = str(zone["Id"]).split("/")[-1]
        return self._zone_id

    def targets(self, region: str) -> dict[str, str]:
        """Each record's fully qualified name -> its target in ``region``."""
        return {
            self.config.fqdn(name): self.config.target(name, region) for name in self.config.records
        }

    def current(self) -> dict[str, str | None]:
        """What each record answers now (its CNAME value), None when it does not exist."""
        client = self._client()
        answers: dict[str, str | None] = {}
        for fqdn in self.targets("any"):
            records = client.list_resource_record_sets(
                HostedZoneId=self.zone_id(),
                StartRecordName=fqdn,
                StartRecordType="CNAME",
                MaxItems="1",
            )["ResourceRecordSets"]
            match = next((r for r in records if r["Name"] == fqdn and r["Type"] == "CNAME"), None)
            answers[fqdn] = match["ResourceRecords"][0]["Value"] if match else None
        return answers

    def points_to(self, region: str) -> bool:
        current = self.current()
        return all(current.get(fqdn) == target for fqdn, target in self.targets(region).items())

    def point_to(self, region: str, comment: str = "") -> dict[str, Any]:
        """UPSERT every record to ``region``, wait INSYNC, and check by reading back."""
        targets = self.targets(region)
        changes = [
            {
                "Action": "UPSERT",
                "ResourceRecordSet": {
                    "Name": fqdn,
                    "Type": "CNAME",
                    "TTL": self.config.ttl,
                    "ResourceRecords": [{"Value": target}],
                },
            }
            for fqdn, target in targets.items()
        ]
        client = self._client()
        change = client.change_resource_record_sets(
            HostedZoneId=self.zone_id(),
            ChangeBatch={"Comment": comment or f"litper-dr: point at {region}", "Changes": changes},
        )["ChangeInfo"]
        status = self._wait_insync(client, change["Id"], change["Status"])
        current = self.current()
        wrong = {
            fqdn: current.get(fqdn)
            for fqdn, target in targets.items()
            if current.get(fqdn) != target
        }
        if wrong:
            raise UnavailableError(f"Route 53 still answers {wrong} after the change to {region}")
        return {"change_id": change["Id"], "change_status": status, "records": targets}

    def _wait_insync(self, client: Any, change_id: str, status: str) -> str:
        deadline = time.monotonic() + self.config.insync_timeout.total_seconds()
        while status != "INSYNC":
            if time.monotonic() >= deadline:
                raise UnavailableError(
                    f"Route 53 change {change_id} still {status} after "
                    f"{self.config.insync_timeout.total_seconds():g} s"
                )
            time.sleep(1)
            status = client.get_change(Id=change_id)["ChangeInfo"]["Status"]
        return status
