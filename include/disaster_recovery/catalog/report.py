"""A backup as every entry point reports it (CLI, seed API, DAG results, chain listings)."""

from __future__ import annotations

from typing import Any

from disaster_recovery.catalog.manifests import ChainManifest, Manifest


def backup_report(manifest: Manifest) -> dict[str, Any]:
    """The seed's shape of a backup; chain elements add where their WAL starts and ends."""
    checks = manifest.verification.checks if manifest.verification else {}
    report: dict[str, Any] = {
        "status": manifest.status,
        "backup_type": manifest.backup_type,
        "backup_file": manifest.file,
        "location": f"s3://{manifest.bucket}/{manifest.key}",
        "size_bytes": manifest.size_bytes,
        "sha256": manifest.sha256,
        "started_at": manifest.started_at.isoformat(),
        "finished_at": manifest.finished_at.isoformat() if manifest.finished_at else None,
        "verified": manifest.verified,
        "checks": {name: _passed(result) for name, result in checks.items()},
        "replicated_to": sorted(manifest.replicas),
    }
    if isinstance(manifest, ChainManifest):
        report |= {
            "start_lsn": manifest.start_lsn,
            "end_lsn": manifest.end_lsn,
            "timeline": manifest.timeline,
            "start_segment": manifest.start_segment,
            "parent": manifest.parent,
            "compression": manifest.compression,
        }
    return report


def _passed(result: Any) -> bool:
    """Logical checks record ``{"ok": ...}``; the chain's record what they found."""
    return bool(result.get("ok")) if isinstance(result, dict) and "ok" in result else bool(result)
