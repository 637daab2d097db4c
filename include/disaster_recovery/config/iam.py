"""Least privilege: the IAM policy each role needs, derived from the policy file.

Roles (``dr iam-policy --role R``):

- ``archiver``: the WAL archiver on a database host. Puts and gets WAL under the archive prefix,
  nothing else: it cannot read backups, and cannot delete anything.
- ``airflow``: the DAG workers. Write, read and copy backups, manifests, evidence and health
  records, abort their own failed uploads, move the DNS records. No delete: a leaked worker
  credential cannot erase a backup.
- ``cleanup``: the retention cleanup, the only role that deletes (objects and their versions)
  under the prefix. It writes nothing.
- ``operator``: a person running the runbook CLI (restores, failover, checks): what Airflow
  does, plus reading object versions. No delete either.

Every role that reads or writes objects may use the regions' KMS keys for that
(``kms:GenerateDataKey`` to write, ``kms:Decrypt`` to read; a cross-region copy needs both).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from disaster_recovery.config.defaults import WAL_DEBT_FOLDER, wal_prefix
from disaster_recovery.config.encryption import Encryption, is_alias
from disaster_recovery.errors import ConfigError

if TYPE_CHECKING:
    from disaster_recovery.config.model import Settings

ROLES = ("airflow", "archiver", "cleanup", "operator")
# Roles that move DNS records during a failover and so need the Route 53 zone.
DNS_ROLES = ("airflow", "operator")

_WRITE = ["s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]
_DELETE = ["s3:DeleteObject", "s3:DeleteObjectVersion"]


def policy_document(settings: Settings, role: str, *, zone_id: str | None = None) -> dict[str, Any]:
    """The IAM policy JSON ``role`` needs for the configured buckets, prefix and keys."""
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r}; known: {', '.join(ROLES)}")
    if role in DNS_ROLES and not zone_id:
        raise ConfigError(
            f"the {role} role changes DNS records: pass --zone-id, the hosted zone id of "
            f"{settings.dns.zone} (aws route53 list-hosted-zones-by-name --dns-name "
            f"{settings.dns.zone})"
        )
    statements = {
        "archiver": _archiver,
        "airflow": _airflow,
        "cleanup": _cleanup,
        "operator": _operator,
    }[role](settings)
    statements += _lock_statements(settings, role)
    statements += _kms_statements(settings, role)
    if role in DNS_ROLES:
        statements += _route53_statements(str(zone_id))
    return {"Version": "2012-10-17", "Statement": statements}


def _buckets(settings: Settings) -> list[str]:
    return [settings.bucket(r) for r in (settings.regions.primary, settings.regions.secondary)]


def _under(prefix: str) -> str:
    """The object-name pattern for everything under ``prefix`` (the whole bucket without one)."""
    return f"{prefix.strip('/')}/*" if prefix.strip("/") else "*"


def _objects(settings: Settings, pattern: str) -> list[str]:
    return [f"arn:aws:s3:::{bucket}/{pattern}" for bucket in _buckets(settings)]


def _bucket_arns(settings: Settings) -> list[str]:
    return [f"arn:aws:s3:::{bucket}" for bucket in _buckets(settings)]


def _list_statement(settings: Settings, sid: str, pattern: str) -> dict[str, Any]:
    # Without ListBucket, S3 answers a HEAD of a missing object with 403 instead of 404.
    statement: dict[str, Any] = {
        "Sid": sid,
        "Effect": "Allow",
        "Action": ["s3:ListBucket"],
        "Resource": _bucket_arns(settings),
    }
    if pattern != "*":
        statement["Condition"] = {"StringLike": {"s3:prefix": [pattern.rstrip("*") + "*"]}}
    return statement


def _archiver(settings: Settings) -> list[dict[str, Any]]:
    wal = _under(wal_prefix(settings.storage.prefix))
    return [
        {
            "Sid": "ArchiveWal",
            "Effect": "Allow",
            "Action": ["s3:PutObject", "s3:GetObject"],
            "Resource": _objects(settings, wal),
        },
        _list_statement(settings, "FindWal", wal),
    ]


def _airflow(settings: Settings) -> list[dict[str, Any]]:
    everything = _under(settings.storage.prefix)
    return [
        {
            "Sid": "WriteAndReadBackups",
            "Effect": "Allow",
            "Action": list(_WRITE),
            "Resource": _objects(settings, everything),
        },
        _list_statement(settings, "ListBackups", everything),
        {
            "Sid": "FindUnfinishedUploads",
            "Effect": "Allow",
            "Action": ["s3:ListBucketMultipartUploads"],
            "Resource": _bucket_arns(settings),
        },
        {
            # Coordination objects the tasks create and remove themselves, never a backup: a
            # run's claim on its backup's name, the physical chain's lease, the split-brain
            # markers, and the WAL a returning region was owed (removed once it is filled).
            "Sid": "ReleaseCoordinationObjects",
            "Effect": "Allow",
            "Action": ["s3:DeleteObject"],
            "Resource": [
                arn
                for pattern in _coordination_patterns(settings)
                for arn in _objects(settings, pattern)
            ],
        },
    ]


def wal_debt(settings: Settings) -> str:
    return f"{settings.storage.prefix}/{WAL_DEBT_FOLDER}".strip("/")


def _coordination_patterns(settings: Settings) -> list[str]:
    prefix = settings.storage.prefix.strip("/")
    under = f"{prefix}/" if prefix else ""
    return [
        f"{under}*.claim.json",
        f"{under}locks/*",
        f"{under}topology/split-brain/*",
        _under(wal_debt(settings)),
    ]


def _cleanup(settings: Settings) -> list[dict[str, Any]]:
    everything = _under(settings.storage.prefix)
    return [
        {
            "Sid": "DeleteExpiredBackups",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:AbortMultipartUpload", *_DELETE],
            "Resource": _objects(settings, everything),
        },
        _list_statement(settings, "ListBackups", everything),
        {
            # s3:DeleteObject on the bucket itself grants nothing in AWS (the action's resource
            # is an object); moto authorizes a DeleteObjects request against the bucket first.
            "Sid": "FindVersionsAndUploads",
            "Effect": "Allow",
            "Action": ["s3:ListBucketVersions", "s3:ListBucketMultipartUploads", "s3:DeleteObject"],
            "Resource": _bucket_arns(settings),
        },
    ]


def _operator(settings: Settings) -> list[dict[str, Any]]:
    statements = _airflow(settings)
    statements.append(
        {
            "Sid": "InspectVersions",
            "Effect": "Allow",
            "Action": ["s3:GetObjectVersion", "s3:ListBucketVersions"],
            "Resource": _objects(settings, _under(settings.storage.prefix))
            + _bucket_arns(settings),
        }
    )
    return statements


def _lock_statements(settings: Settings, role: str) -> list[dict[str, Any]]:
    """With Object Lock: writers set a retention on what they write (S3 asks for
    ``s3:PutObjectRetention`` on a write carrying lock headers, and the copies and multipart
    uploads set it afterwards); the cleanup reads each version's retention to skip the locked
    ones. Nobody gets ``s3:BypassGovernanceRetention``."""
    if settings.storage.object_lock is None:
        return []
    if role == "cleanup":
        actions = ["s3:GetObjectVersion", "s3:GetObjectRetention"]
        pattern = _under(settings.storage.prefix)
    elif role == "archiver":
        actions, pattern = ["s3:PutObjectRetention"], _under(wal_prefix(settings.storage.prefix))
    else:
        actions, pattern = ["s3:PutObjectRetention"], _under(settings.storage.prefix)
    return [
        {
            "Sid": "ObjectLockRetention",
            "Effect": "Allow",
            "Action": actions,
            "Resource": _objects(settings, pattern),
        }
    ]


def _kms_actions(role: str) -> list[str]:
    if role == "cleanup":
        return ["kms:Decrypt"]  # reads manifests, writes nothing
    return ["kms:GenerateDataKey", "kms:Decrypt"]


def _kms_statements(settings: Settings, role: str) -> list[dict[str, Any]]:
    """Use of each region's KMS key; nothing for regions encrypted with AES256."""
    keys: list[tuple[str, Encryption]] = [
        (region, settings.storage.encryption_for(region))
        for region in (settings.regions.primary, settings.regions.secondary)
    ]
    kms = [(region, e) for region, e in keys if e.algorithm == "aws:kms" and e.kms_key_id]
    arns = [
        _key_arn(region, str(e.kms_key_id)) for region, e in kms if not is_alias(str(e.kms_key_id))
    ]
    aliases = [str(e.kms_key_id) for _, e in kms if is_alias(str(e.kms_key_id))]
    statements: list[dict[str, Any]] = []
    if arns:
        statements.append(
            {
                "Sid": "UseBackupKeys",
                "Effect": "Allow",
                "Action": _kms_actions(role),
                "Resource": arns,
            }
        )
    if aliases:
        # An alias is not a key ARN: allow the keys that carry it.
        statements.append(
            {
                "Sid": "UseBackupKeysByAlias",
                "Effect": "Allow",
                "Action": _kms_actions(role),
                "Resource": "*",
                "Condition": {
                    "ForAnyValue:StringEquals": {
                        "kms:ResourceAliases": [a.split(":", 5)[-1] for a in aliases]
                    }
                },
            }
        )
    return statements


def _key_arn(region: str, key_id: str) -> str:
    return key_id if key_id.startswith("arn:") else f"arn:aws:kms:{region}:*:key/{key_id}"


def _route53_statements(zone_id: str) -> list[dict[str, Any]]:
    zone = zone_id.rsplit("/", 1)[-1]
    return [
        {
            "Sid": "MoveDnsRecords",
            "Effect": "Allow",
            "Action": ["route53:ChangeResourceRecordSets", "route53:ListResourceRecordSets"],
            "Resource": f"arn:aws:route53:::hostedzone/{zone}",
        },
        {
            "Sid": "WatchDnsChanges",
            "Effect": "Allow",
            "Action": ["route53:GetChange"],
            "Resource": "arn:aws:route53:::change/*",
        },
        {
            # Finding the zone by name cannot be narrowed to one zone (IAM allows only "*").
            "Sid": "FindDnsZone",
            "Effect": "Allow",
            "Action": ["route53:ListHostedZonesByName"],
            "Resource": "*",
        },
    ]
