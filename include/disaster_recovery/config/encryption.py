"""Encryption at rest: what every object write carries, and the check that an object has it.

Each region's bucket has its own setting (``storage.encryption``): ``AES256`` (keys managed by
S3) or ``aws:kms`` with that region's KMS key. A KMS key lives in one region, so a copy to the
other region is encrypted again with the destination's key: the copy request names it, since
S3 never carries a source object's encryption over to a copy by itself.

Nothing here imports boto3 or pydantic: the WAL archiver reads the same setting at start-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from disaster_recovery.errors import ConfigError

ALGORITHMS = ("AES256", "aws:kms")


@dataclass(frozen=True)
class Encryption:
    """One bucket's server-side encryption: the algorithm and, for ``aws:kms``, the key."""

    algorithm: str = "AES256"
    kms_key_id: str | None = None

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(
                f"encryption algorithm {self.algorithm!r} is not supported; use one of "
                f"{', '.join(ALGORITHMS)}"
            )
        if self.algorithm == "aws:kms" and not self.kms_key_id:
            raise ValueError("aws:kms needs kms_key_id (the region's KMS key ARN, id or alias)")
        if self.algorithm == "AES256" and self.kms_key_id:
            raise ValueError("kms_key_id applies only to aws:kms; remove it or use aws:kms")

    def write_args(self) -> dict[str, str]:
        """The request parameters of a PUT, a multipart upload or a copy that encrypt it."""
        args = {"ServerSideEncryption": self.algorithm}
        if self.kms_key_id:
            args["SSEKMSKeyId"] = self.kms_key_id
        return args

    def to_dict(self) -> dict[str, str | None]:
        return {"algorithm": self.algorithm, "kms_key_id": self.kms_key_id}

    def problem(self, head: Mapping[str, Any]) -> str | None:
        """Why an object (its HEAD response) is not encrypted as configured, or None."""
        actual = head.get("ServerSideEncryption")
        if not actual:
            return f"not encrypted at rest (expected {self.algorithm})"
        if actual != self.algorithm:
            return f"encrypted with {actual}, expected {self.algorithm}"
        if self.kms_key_id and not kms_key_matches(self.kms_key_id, head.get("SSEKMSKeyId")):
            return (
                f"encrypted with KMS key {head.get('SSEKMSKeyId')!r}, expected {self.kms_key_id!r}"
            )
        return None


def kms_key_matches(configured: str, actual: str | None) -> bool:
    """S3 reports the key's ARN: a configured ARN must equal it and a bare key id must end it.
    An alias names a key only KMS can resolve, so with an alias any key of that algorithm is
    accepted (configure the key ARN for an exact check)."""
    if is_alias(configured):
        return True
    if not actual:
        return False
    return actual == configured or actual.endswith(f":key/{configured}")


def is_alias(key_id: str) -> bool:
    return key_id.startswith("alias/") or ":alias/" in key_id


def parse_encryption(raw: Any, where: str) -> Encryption:
    """One region's ``storage.encryption`` entry; a clear ConfigError when it is wrong."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping such as {{algorithm: AES256}}, got {raw!r}")
    unknown = set(raw) - {"algorithm", "kms_key_id"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    try:
        return Encryption(**raw)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def encryption_by_region(raw: Any, regions: list[str], where: str) -> dict[str, Encryption]:
    """Each region's encryption from the ``storage.encryption`` mapping; AES256 where absent."""
    raw = raw or {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping of region to its encryption")
    unknown = set(raw) - set(regions)
    if unknown:
        raise ConfigError(
            f"{where}: no bucket for region(s) {', '.join(sorted(unknown))} "
            f"(storage.buckets has {', '.join(regions)})"
        )
    return {
        region: parse_encryption(raw[region], f"{where}.{region}")
        if region in raw
        else Encryption()
        for region in regions
    }
