"""Drill evidence: one JSON record per drill in S3, and the overdue check that reads only them.

Records live at ``drills/<year>/<drill>_<YYYYMMDDTHHMMSSZ>.json`` in the primary region's
bucket (and are copied to the secondary's), so the proof that the objectives hold survives the
loss of either region and of Airflow's database.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from disaster_recovery.clients.s3 import ObjectStore
from disaster_recovery.clients.slack import Alert

DrillKind = Literal["monthly", "quarterly"]
EVIDENCE_PREFIX = "drills"
# Outside drills/ (which holds only records): when the deployment first checked its drills.
FIRST_RUN_KEY = "deployment/first_run.json"
# A monthly drill must have passed within 35 days, a quarterly one within 95.
OVERDUE_AFTER: dict[str, timedelta] = {
    "monthly": timedelta(days=35),
    "quarterly": timedelta(days=95),
}


class DrillStep(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    started_at: datetime
    finished_at: datetime | None = None
    seconds: float | None = None
    result: Literal["passed", "failed", "skipped"] = "passed"
    details: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None


class DrillRecord(BaseModel):
    model_config = ConfigDict(extra="allow")

    drill: DrillKind
    environment: str
    started_at: datetime
    finished_at: datetime | None = None
    passed: bool = False
    steps: list[DrillStep] = Field(default_factory=list)
    rto_seconds: float | None = None
    rpo_seconds: float | None = None
    objectives: dict[str, float] = Field(default_factory=dict)
    restore_throughput_mb_s: float | None = None
    error: str | None = None
    # The Airflow run that ran it (dag_id, run_id), when one did: the console links to it.
    airflow_run: dict[str, str] | None = None

    @property
    def key(self) -> str:
        return f"{EVIDENCE_PREFIX}/{self.started_at:%Y}/{self.drill}_{self.started_at.astimezone(UTC):%Y%m%dT%H%M%SZ}.json"

    @contextmanager
    def step(self, name: str) -> Iterator[DrillStep]:
        """Time a step and record it, passed or failed (the error re-raised)."""
        step = DrillStep(name=name, started_at=datetime.now(UTC))
        self.steps.append(step)
        clock = time.monotonic()
        try:
            yield step
        except BaseException as exc:
            step.result = "failed"
            step.error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise
        finally:
            step.finished_at = datetime.now(UTC)
            step.seconds = round(time.monotonic() - clock, 3)


class EvidenceStore:
    def __init__(self, store: ObjectStore):
        self.store = store

    def save(self, record: DrillRecord) -> str:
        self.store.put_json(record.key, record.model_dump(mode="json"))
        return record.key

    def records(self, drill: DrillKind | None = None) -> list[DrillRecord]:
        """Every record (of one kind), oldest first."""
        found = []
        for entry in self.store.list_keys(f"{EVIDENCE_PREFIX}/"):
            name = entry["Key"].rsplit("/", 1)[-1]
            if entry["Key"].endswith(".json") and (drill is None or name.startswith(f"{drill}_")):
                found.append(DrillRecord.model_validate(self.store.get_json(entry["Key"])))
        return sorted(found, key=lambda r: r.started_at)


def first_run(store: ObjectStore, now: datetime, *, record: bool = True) -> datetime:
    """When this deployment first checked its drills (``deployment/first_run.json``).

    Written once, by whichever scheduled check comes first (``If-None-Match``), and read ever
    after: a new deployment has had no time to run a drill, so a drill is due one window after
    this, not at once. ``record=False`` (a person listing drills) reads only: not yet recorded
    means the deployment starts now.
    """
    body = json.dumps({"first_run": now.astimezone(UTC).isoformat()}).encode()
    if record and store.put_new(FIRST_RUN_KEY, body):
        return now
    found = store.get_versioned(FIRST_RUN_KEY)
    if found is None:  # deleted in between: this check is the first again
        return now
    return datetime.fromisoformat(json.loads(found[0])["first_run"])


def overdue_alerts(
    records: list[DrillRecord], now: datetime, *, deployed: datetime | None = None
) -> list[Alert]:
    """DRDrillOverdue for each kind with no passed drill within its window. With ``deployed``
    (:func:`first_run`), a kind that never passed is overdue only once its first drill was due:
    one window after the deployment's first run."""
    alerts = []
    for kind, window in OVERDUE_AFTER.items():
        passed = [r for r in records if r.drill == kind and r.passed]
        last = max((r.started_at for r in passed), default=None)
        if last is None and deployed is not None and now - deployed <= window:
            continue
        if last is None or now - last > window:
            since = (
                f"last passed {last:%Y-%m-%d}"
                if last
                else f"none has passed since the deployment's first run on {deployed:%Y-%m-%d}"
                if deployed
                else "none has ever passed"
            )
            alerts.append(
                Alert(
                    "DRDrillOverdue",
                    f"no {kind} DR drill has passed in {window.days} days ({since})",
                    details={"drill": kind, "last_passed": last.isoformat() if last else None},
                )
            )
    return alerts
