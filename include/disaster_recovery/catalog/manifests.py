"""Typed manifests: the record kept next to every backup object (``<file>.manifest.json``), with its verification."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from disaster_recovery.catalog.names import manifest_key

Status = Literal["uploaded", "verified", "failed"]


class Verification(BaseModel):
    model_config = ConfigDict(extra="allow")

    checks: dict[str, Any]
    verified_at: datetime
    verified_by: str


class Manifest(BaseModel):
    """What we know of one backup. Type-specific fields (LSNs, parents, table counts) are extra
    keys, kept as they are."""

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
    error: str | None = None

    @property
    def verified(self) -> bool:
        return self.status == "verified" and self.verification is not None

    @property
    def manifest_key(self) -> str:
        return manifest_key(self.key)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
