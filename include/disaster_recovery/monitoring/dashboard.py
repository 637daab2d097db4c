"""The DR dashboard's data and page: objectives, the newest backup of each tier, and the
measured figures, read from the catalog in S3 (never from Airflow's database, so the page
works the same in either region).

Each section is collected on its own: a section that cannot be read shows its error, and the
rest of the page still renders.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from disaster_recovery.catalog.listing import Catalog
from disaster_recovery.catalog.names import LOGICAL_TYPES, PHYSICAL_TYPES
from disaster_recovery.clients.s3 import regional_store
from disaster_recovery.config.durations import format_duration
from disaster_recovery.config.endpoints import Deployment

log = logging.getLogger(__name__)

Section = Callable[[Deployment], Any]


def objectives(deployment: Deployment) -> dict[str, Any]:
    target = deployment.settings.objectives
    return {
        "rpo": format_duration(target.rpo),
        "rto": format_duration(target.rto),
        "availability_percent": target.availability_percent,
        "primary_region": deployment.settings.regions.primary,
        "secondary_region": deployment.settings.regions.secondary,
    }


def human_age(age: timedelta) -> str:
    """``3d 4h``, ``2h 05m``, ``7m``: precise enough for a person, stable within a minute."""
    seconds = max(0, int(age.total_seconds()))
    days, hours, minutes = seconds // 86400, seconds % 86400 // 3600, seconds % 3600 // 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m"


def primary_catalog(deployment: Deployment) -> Catalog:
    settings = deployment.settings
    region = settings.regions.primary
    store = regional_store(deployment, region)
    return Catalog(store, settings.storage.prefix)


def newest_backups(deployment: Deployment, now: datetime | None = None) -> list[dict[str, Any]]:
    """Per backup type: the newest verified backup, its age, and how many are on record."""
    now = now or datetime.now(UTC)
    catalog = primary_catalog(deployment)
    rows = []
    for backup_type in (*LOGICAL_TYPES, *PHYSICAL_TYPES):
        manifests = catalog.manifests([backup_type])
        verified = [m for m in manifests if m.verified]
        newest = verified[-1] if verified else None
        rows.append(
            {
                "backup_type": backup_type,
                "count": len(manifests),
                "verified": len(verified),
                "newest_verified": newest.file if newest else None,
                "age": human_age(now - newest.started_at) if newest else None,
                "size_bytes": newest.size_bytes if newest else None,
                "replicated_to": sorted(newest.replicas) if newest else [],
            }
        )
    return rows


SECTIONS: dict[str, Section] = {
    "objectives": objectives,
    "backups": newest_backups,
}


def collect(deployment: Deployment, sections: dict[str, Section] | None = None) -> dict[str, Any]:
    """Every section's data; a failing section holds ``{"error": ...}`` instead."""
    result: dict[str, Any] = {"generated_at": datetime.now(UTC).isoformat()}
    for name, section in (sections or SECTIONS).items():
        try:
            result[name] = section(deployment)
        except Exception as exc:
            log.warning("dashboard section %s failed: %s", name, exc)
            result[name] = {"error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}
    return result


def _cell(value: Any) -> str:
    if isinstance(value, list):
        value = ", ".join(str(v) for v in value)
    return html.escape("—" if value in (None, "") else str(value))


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>No records yet.</p>"
    head = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row.values()) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _section(title: str, data: Any) -> str:
    if isinstance(data, dict) and set(data) == {"error"}:
        inner = f'<p class="error">Cannot read: {html.escape(data["error"])}</p>'
    elif isinstance(data, list):
        inner = _table(data)
    elif isinstance(data, dict):
        inner = _table([data])
    else:
        inner = f"<p>{_cell(data)}</p>"
    return f"<h2>{html.escape(title)}</h2>{inner}"


def render_html(status: dict[str, Any]) -> str:
    parts = [
        _section(name.replace("_", " ").capitalize(), data)
        for name, data in status.items()
        if name != "generated_at"
    ]
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Litper DR</title>"
        "<meta http-equiv='refresh' content='60'>"
        "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}.error{color:#b00}"
        ".fail{color:#b00;font-weight:bold}.pass{color:#080}</style></head><body>"
        "<h1>Litper disaster recovery</h1>"
        f"<p>Generated {html.escape(status['generated_at'])} · <a href='api/status'>JSON</a></p>"
        + "".join(parts)
        + "</body></html>"
    )
