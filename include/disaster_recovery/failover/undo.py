"""A stopped failover says what it left changed, and undoes what it can.

STOP WRITES changes the source region before SYNC decides whether the run may go on: the
application goes read-only, the old primary is fenced (read-only by SQL, ``standby.signal`` on
disk), Redis writes are paused. When the run then stops (SYNC refused the data loss, a step
failed) and nothing was promoted, leaving those changes would turn a refused failover into an
outage nobody announced. So, when nothing was promoted:

- the application is made writable again and Redis unpaused;
- the database fence is undone where the node answers; where it does not, the node is really
  lost and the fence stays, so that it cannot come back as a second writable primary;

and every change that stays is listed with the command that undoes it, in the result document
and in the Slack message. Once the target is promoted nothing is undone: the old primary must
stay fenced.
"""

from __future__ import annotations

import json
import logging
import shlex
from typing import Any

from disaster_recovery.clients import redisnode
from disaster_recovery.errors import DisasterRecoveryError
from disaster_recovery.failover.plan import Plan, record, target_promoted
from disaster_recovery.postgres import db

log = logging.getLogger(__name__)

PROMOTED = ("done", "already_done")


def settle_result(plan: Plan, document: dict[str, Any]) -> dict[str, Any]:
    """Settle a stopped run's result document in place: the undo record joins its steps, and
    ``undone``, ``left_changed`` and the error say what the run left behind."""
    if document.get("status") not in ("aborted", "failed"):
        return document
    try:
        settled = settle_stopped_run(plan, document["steps"])
    except Exception as exc:  # the result must go out even if undoing crashed
        log.exception("undoing STOP WRITES failed")
        settled = record(
            "undo_stop_writes",
            "failed",
            undone=[],
            left_changed=[_change("unknown: undoing STOP WRITES failed", str(exc), "see the log")],
        )
    if settled is None:
        document.setdefault("undone", [])
        document.setdefault("left_changed", [])
        return document
    document["steps"].append(settled)
    document["undone"] = settled["undone"]
    document["left_changed"] = settled["left_changed"]
    document["error"] = f"{document.get('error') or document['status']}. {summary(settled)}"
    return document


def settle_stopped_run(plan: Plan, records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """For a run that stopped after STOP WRITES: undo it if nothing was promoted, and say what
    was undone and what was left changed (with the command that undoes it). None when the run
    had not changed anything yet (stopped before STOP WRITES) or was a dry run."""
    by_step = {r["step"]: r for r in records}
    stopped = by_step.get("stop_writes")
    if plan.dry_run or not stopped or stopped.get("status") != "done":
        return None
    if (by_step.get("promote") or {}).get("status") in PROMOTED or _promoted(plan):
        return record(
            "undo_stop_writes",
            "not_undone",
            undone=[],
            left_changed=[
                _change(
                    f"{plan.source} stays fenced and read-only",
                    f"{plan.target} was promoted: two writable primaries must never exist",
                    f"finish the run (dns, validate) or fail back with `dr failback` "
                    f"(the old primary rejoins as a standby of {plan.target})",
                )
            ],
        )
    undone: list[str] = []
    left: list[dict[str, str]] = []
    for undo in (_undo_application, _undo_redis, _undo_database):
        undo(plan, stopped, undone, left)
    return record(
        "undo_stop_writes",
        "done" if not left else "partly_undone",
        undone=undone,
        left_changed=left,
    )


def summary(settled: dict[str, Any]) -> str:
    """One paragraph for the result's error and the Slack message."""
    parts = []
    if settled["undone"]:
        parts.append("undone: " + "; ".join(settled["undone"]))
    if settled["left_changed"]:
        parts.append(
            "left changed: "
            + "; ".join(f"{c['what']} (undo: {c['undo']})" for c in settled["left_changed"])
        )
    return " | ".join(parts) or "nothing to undo"


def _promoted(plan: Plan) -> bool:
    try:
        return target_promoted(plan)
    except DisasterRecoveryError:
        return False


def _change(what: str, why: str, undo: str) -> dict[str, str]:
    return {"what": what, "why": why, "undo": undo}


def _undo_application(
    plan: Plan, stopped: dict[str, Any], undone: list[str], left: list[dict[str, str]]
) -> None:
    if (stopped.get("application") or {}).get("read_only") is not True:
        return
    url = plan.services.config(plan.source).read_only_url
    command = "curl -X POST -H 'Content-Type: application/json' -d " + shlex.quote(
        json.dumps({"read_only": False})
    )
    try:
        answer = plan.services.set_read_only(plan.source, False)
    except DisasterRecoveryError as exc:
        answer = {"read_only": "failed", "error": str(exc)}
    if answer.get("read_only") is False:
        undone.append(f"the {plan.source} application is writable again")
    else:
        left.append(
            _change(
                f"the {plan.source} application is read-only",
                f"it did not take the change back: {answer.get('error') or answer}",
                f"{command} {shlex.quote(url)}",
            )
        )


def _undo_redis(
    plan: Plan, stopped: dict[str, Any], undone: list[str], left: list[dict[str, str]]
) -> None:
    if not (stopped.get("redis") or {}).get("paused"):
        return
    endpoint = plan.redis(plan.source)
    try:
        redisnode.unpause(endpoint)
        undone.append(f"Redis {endpoint.describe()} accepts writes again (unpaused)")
    except DisasterRecoveryError as exc:
        pause = plan.settings.failover.sync_timeout.total_seconds() + 60
        left.append(
            _change(
                f"Redis {endpoint.describe()} is paused for writes (at most {pause:g} s from "
                "STOP WRITES)",
                f"CLIENT UNPAUSE failed: {exc}",
                f"redis-cli -h {endpoint.host} -p {endpoint.port} CLIENT UNPAUSE",
            )
        )


def _undo_database(
    plan: Plan, stopped: dict[str, Any], undone: list[str], left: list[dict[str, str]]
) -> None:
    database = stopped.get("database") or {}
    endpoint = plan.pg(plan.source)
    fenced = database.get("fenced")
    if fenced == "already a standby":
        return
    on_disk = str(database.get("on_disk") or "")
    if fenced == "unreachable":
        # Really lost: the fence on disk is what keeps it from coming back as a second primary.
        left.append(
            _change(
                f"{endpoint.describe()} stays fenced ({on_disk or 'recorded as fenced'})",
                "the node did not answer: when it comes back it must not accept writes until a "
                "person decides (fail over, or keep it as the primary)",
                "if it stays the primary: delete standby.signal and the "
                "default_transaction_read_only line of postgresql.auto.conf in its data "
                "directory, then restart it",
            )
        )
        return
    sql = "ALTER SYSTEM RESET default_transaction_read_only; SELECT pg_reload_conf();"
    try:
        with db.connect(endpoint, "postgres", timeout=5) as conn:
            conn.execute("ALTER SYSTEM RESET default_transaction_read_only")
            conn.execute("SELECT pg_reload_conf()")
        undone.append(f"{endpoint.describe()} accepts writes again (read-only default reset)")
    except DisasterRecoveryError as exc:
        left.append(
            _change(
                f"{endpoint.describe()} is read-only by default",
                f"the reset failed: {exc}",
                f"psql -h {endpoint.host} -p {endpoint.port} -U {shlex.quote(endpoint.user)} "
                f"-d postgres -c {shlex.quote(sql)}",
            )
        )
    if "written" in on_disk or "ran" in on_disk:
        try:
            undone.append(f"{endpoint.describe()}: {plan.node(plan.source).unfence()}")
        except DisasterRecoveryError as exc:
            left.append(
                _change(
                    f"{endpoint.describe()} is fenced on disk ({on_disk}): it would restart as a "
                    "standby",
                    f"undoing it failed: {exc}",
                    "delete standby.signal and the default_transaction_read_only line of "
                    "postgresql.auto.conf in its data directory",
                )
            )
