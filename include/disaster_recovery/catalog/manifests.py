"""Typed manifests: the record kept next to every backup object (``<file>.manifest.json``), with its verification."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from disaster_recovery.catalog.names import PHYSICAL_TYPES, manifest_key
from disaster_recovery.errors import VerificationError

Status = Literal["uploaded", "verified", "failed"]


class Verification(BaseModel):
    model_config = ConfigDict(extra="allow")

    checks: dict[str, Any]
    verified_at: datetime
    verified_by: str


class Manifest(BaseModel):
    """What we know of one backup. Logical backups add keys of their own (table counts, the
    source node), kept as they are; the physical chain's fields are declared in
    :class:`ChainManifest`."""

    model_config = ConfigDict(extra="allow")

    backup_type: str
    file: str
    bucket: str
    key: str
    size_bytes: int = 0
    sha256: str = ""
    started_at: datetime
    finished_at: datetime | None = None
    server_version: str = ""
    database: str = ""
    format: str = ""
    status: Status = "uploaded"
    verification: Verification | None = None
    replicas: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # Regions whose copy is owed (the region was lost when the backup was published) and since.
    replica_owed: dict[str, str] | None = None
    error: str | None = None
    # S3's own SHA-256 of the object as stored (full-object, or composite of the upload's parts
    # "<base64>-<parts>"), computed while streaming: a replica's is compared without a download.
    s3_checksum: str | None = None

    @property
    def verified(self) -> bool:
        return self.status == "verified" and self.verification is not None

    @property
    def manifest_key(self) -> str:
        return manifest_key(self.key)

    def check_digest(self, size: int, sha256: str, *, where: str, check: str) -> None:
        """Raise :class:`VerificationError` (naming ``check``) unless ``size`` and ``sha256``
        are what was recorded while the backup was written: the one comparison every read of a
        backup (verify, restore, replica) makes."""
        if (size, sha256) == (self.size_bytes, self.sha256):
            return
        problem = (
            f"size {size} bytes, the manifest says {self.size_bytes} (truncated or replaced)"
            if size != self.size_bytes
            else f"SHA-256 {sha256} does not match the manifest's {self.sha256}"
        )
        raise VerificationError(f"{where}: {problem}", check=check, key=self.key)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class ChainManifest(Manifest):
    """A base or incremental backup of the physical chain: where its WAL starts and ends, on
    which timeline of which cluster, and which backup it builds on. Every field but the codec is required: a chain element without
    one cannot be restored, so reading it fails instead of guessing."""

    start_lsn: str
    end_lsn: str
    timeline: int
    start_segment: str
    wal_segment_size: int
    system_identifier: str
    server_major: int
    parent: str | None
    chain_base: str
    # The codec (``pitr.compression``) the tar was stored in; manifests from before it: none.
    compression: str = "none"
    uncompressed_bytes: int | None = None


def parse_manifest(document: dict[str, Any], where: str) -> Manifest:
    """The manifest stored at ``where``, typed by its backup type; a document that lacks a
    field (or holds a wrong one) is a :class:`VerificationError` naming the object and field."""
    model = ChainManifest if document.get("backup_type") in PHYSICAL_TYPES else Manifest
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise VerificationError(
            f"{where}: not a valid {document.get('backup_type', 'backup')} manifest ({problems})",
            check="manifest",
        ) from None
