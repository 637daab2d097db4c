"""A failover or failback while it runs, in S3: the operator whose Airflow is in the lost region
(``dr status``) still sees which step it is on.

After every step (and when a step starts) the run's document
``<prefix>/failover-progress/<run_id>_<kind>.json`` is written to the target region's bucket: the
region the run makes primary, the one that must answer for the run to succeed. Its ``status``
is ``running`` until the run ends, then the run's outcome; the full result goes to the run
history (``failovers/``) as before. Objects are overwritten, never deleted (the Airflow role may
not delete, and Object Lock may keep every version anyway).

Writing the progress never stops a failover: a bucket that does not answer costs one short
attempt per step and a warning in the log.
"""

from __future__ import annotations

import logging
from typing import Any

from disaster_recovery.clients.s3 import ObjectStore, regional_store, s3_client
from disaster_recovery.config.endpoints import Deployment
from disaster_recovery.config.model import Settings
from disaster_recovery.errors import DisasterRecoveryError
from disaster_recovery.monitoring.health import utcnow

log = logging.getLogger(__name__)

PROGRESS_FOLDER = "failover-progress"
RUNNING = "running"
# Step outcomes (the engine's record statuses) as the console shows states.
STEP_STATES = {
    "done": "success",
    "already_done": "success",
    "approved": "success",
    "dry_run": "success",
    "skipped": "skipped",
    "failed": "failed",
    "aborted": "failed",
    "rejected": "failed",
    "timed_out": "failed",
}


def progress_folder(settings: Settings) -> str:
    return f"{settings.storage.prefix}/{PROGRESS_FOLDER}/"


def progress_key(settings: Settings, kind: str, run_id: str) -> str:
    return f"{progress_folder(settings)}{run_id}_{kind}.json"


def _quick_store(deployment: Deployment, region: str) -> ObjectStore:
    """The region's bucket with short timeouts and one retry: progress is worth a moment, not
    a stalled step."""
    client = s3_client(deployment.aws(region), max_attempts=2, connect_timeout=3, read_timeout=10)
    return regional_store(deployment, region, client=client)


class RunProgress:
    """The progress document of one run (``kind`` failover or failback, ``run_id`` of its
    :class:`~disaster_recovery.failover.plan.Plan`), written to ``region``'s bucket."""

    def __init__(
        self,
        deployment: Deployment,
        region: str,
        kind: str,
        run_id: str,
        steps: tuple[str, ...],
        **facts: Any,
    ):
        self.deployment = deployment
        self.region = region
        self.key = progress_key(deployment.settings, kind, run_id)
        self._store: ObjectStore | None = None
        self.document: dict[str, Any] = {
            "kind": kind,
            "run_id": run_id,
            "status": RUNNING,
            "region": region,
            "started_at": utcnow().isoformat(),
            "steps": [{"step": name, "state": None} for name in steps],
            **facts,
        }

    @property
    def store(self) -> ObjectStore:
        if self._store is None:
            self._store = _quick_store(self.deployment, self.region)
        return self._store

    def resume(self) -> RunProgress:
        """Continue the document already written (each task of a DAG run writes its own step)."""
        try:
            if self.store.exists(self.key):
                self.document = self.store.get_json(self.key)
        except DisasterRecoveryError as exc:
            log.warning("could not read the progress %s: %s", self.key, exc)
        return self

    def step(self, name: str, state: str, *, seconds: float | None = None, by: Any = None) -> None:
        """``name`` is ``running`` now, or ended with the engine's status ``state``."""
        for entry in self.document["steps"]:
            if entry["step"] == name:
                if state == RUNNING:
                    entry["started_at"] = utcnow().isoformat()
                entry["state"] = STEP_STATES.get(state, state)
                if seconds is not None:
                    entry["seconds"] = round(seconds, 1)
        if by:
            self.document["approved_by"] = by
        self._write()

    def finish(self, status: str) -> None:
        self.document["status"] = status
        self.document["finished_at"] = utcnow().isoformat()
        self._write()

    def _write(self) -> None:
        self.document["updated_at"] = utcnow().isoformat()
        try:
            self.store.put_json(self.key, self.document)
        except DisasterRecoveryError as exc:
            log.warning("could not write the failover progress to %s: %s", self.region, exc)


def running_switches(store: ObjectStore, settings: Settings) -> list[dict[str, Any]]:
    """The progress documents in ``store`` of runs that have not ended, oldest first."""
    found = []
    for entry in store.list_keys(progress_folder(settings)):
        if entry["Key"].endswith(".json"):
            document = store.get_json(entry["Key"])
            if document.get("status") == RUNNING:
                document["evidence"] = store.url(entry["Key"])
                found.append(document)
    return sorted(found, key=lambda d: str(d.get("started_at")))
