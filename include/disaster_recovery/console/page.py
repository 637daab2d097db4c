"""The DR console as a page: human headings and units, red for what needs a person now.

One renderer, on the server: the page's script asks ``api/view`` every few seconds for the
sections rendered again (JSON: section id -> HTML) and swaps them in place, so a failover's
steps advance on screen without a reload, and a browser without the script still gets the
whole page.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from disaster_recovery.console import charts

Renderer = Callable[[Any, ZoneInfo], str]

# Seconds between refreshes: fast while a failover runs.
REFRESH_SECONDS = 15
REFRESH_SECONDS_DURING_FAILOVER = 1

CHECK_LABELS = {
    "exists": "in S3",
    "checksum": "SHA-256",
    "readable": "readable",
    "sha256": "SHA-256",
    "pg_restore_list": "table list",
    "full_read": "full read",
    "replica": "copy",
    "backup_manifest": "backup manifest",
    "pg_verifybackup": "pg_verifybackup",
}

STEP_LABELS = {
    "detect": "Detect",
    "decide": "Decide (approval)",
    "stop_writes": "Stop writes",
    "sync": "Sync",
    "promote": "Promote",
    "activate_services": "Activate services",
    "dns": "DNS",
    "validate": "Validate",
}


def esc(value: Any) -> str:
    return html.escape("—" if value in (None, "") else str(value))


def duration(seconds: float | None) -> str:
    """``45 s``, ``12 min 5 s``, ``3 h 04 min``, ``2 d 5 h``."""
    if seconds is None:
        return "—"
    total = round(seconds)
    days, hours = total // 86400, total % 86400 // 3600
    minutes, secs = total % 3600 // 60, total % 60
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes:02d} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    return f"{total} s"


def size(value: int | None) -> str:
    if value is None:
        return "—"
    amount = float(value)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if amount < 1000 or unit == "TB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1000
    return f"{amount:.1f} TB"


def when(value: str | None, tz: ZoneInfo, now: datetime | None = None) -> str:
    """``2026-12-02 00:57 -05 (3 min ago)`` in the configured zone, to the minute."""
    if not value:
        return "—"
    moment = datetime.fromisoformat(value)
    local = moment.astimezone(tz)
    text = f"{local:%Y-%m-%d %H:%M} {local:%Z}"
    if now is not None:
        delta = (now - moment).total_seconds()
        if abs(delta) < 10:
            text += " (just now)"
        else:
            text += f" ({duration(abs(delta))} {'ago' if delta >= 0 else 'from now'})"
    return html.escape(text)


def flag(ok: bool | None, good: str, bad: str) -> str:
    if ok is None:
        return '<span class="muted">—</span>'
    return f'<span class="ok">{esc(good)}</span>' if ok else f'<span class="bad">{esc(bad)}</span>'


def link(url: str | None, text: str) -> str:
    if not url:
        return esc(text)
    return f'<a href="{html.escape(url)}" target="_top">{esc(text)}</a>'


def table(headings: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headings)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def error_box(data: Any) -> str | None:
    if isinstance(data, dict) and "error" in data and len(data) == 1:
        return f'<p class="bad section-error">Cannot read this section: {esc(data["error"])}</p>'
    return None


# -- sections ---------------------------------------------------------------------------------


def render_source(data: dict[str, Any], tz: ZoneInfo, now: datetime) -> str:
    if "error" in data:
        return f'<p class="bad">{esc(data["error"])}</p>'
    text = f"Read from the bucket of {esc(data['region'])} ({esc(data['bucket'])})"
    if data.get("fallback"):
        problems = "; ".join(data.get("problems") or [])
        return (
            f'<p class="warn">{text}: the primary region {esc(data["primary_region"])} '
            f"did not answer ({esc(problems)}).</p>"
        )
    notes = "".join(f"<li>{esc(n)}</li>" for n in data.get("notes") or [])
    return f"<p>{text}, the primary region.</p>" + (
        f"<ul class='muted'>{notes}</ul>" if notes else ""
    )


def render_topology(data: dict[str, Any], tz: ZoneInfo, now: datetime) -> str:
    rows = []
    for node in data["nodes"]:
        rows.append(
            [
                esc(node["region"]),
                "<b>Primary</b>" if node["role"] == "primary" else "Standby",
                esc(node["database"]),
                esc(node["redis"]),
                esc(node["services"]),
                flag(node["healthy"], "healthy", "needs attention"),
            ]
        )
    lag, limit = data["replication_lag_seconds"], data["replication_lag_threshold_seconds"]
    lag_text = "unknown (no streaming standby)" if lag is None else f"{lag:.1f} s"
    errors = "".join(
        f"<li>{esc(part)}: {esc(message)}</li>" for part, message in data["errors"].items()
    )
    return (
        f'<p class="big">Primary region: <b id="primary-region">{esc(data["primary_region"])}'
        f"</b> · standby region {esc(data['secondary_region'])}"
        f" · generation {esc(data.get('generation'))}"
        f" · timeline {esc(data.get('timeline'))}</p>"
        + table(["Region", "Role", "PostgreSQL", "Redis", "Services", "Health"], rows)
        + f"<p>Replication lag: {flag(data['replication_lag_ok'], lag_text, lag_text)} "
        f"(alert above {duration(limit)}) · checked {when(data['checked_at'], tz, now)}</p>"
        + (f'<ul class="bad">{errors}</ul>' if errors else "")
    )


def render_rpo(data: dict[str, Any], tz: ZoneInfo, now: datetime) -> str:
    rows = []
    for row in data["regions"]:
        if "error" in row:
            rows.append(
                [esc(row["region"]), f'<span class="bad">{esc(row["error"])}</span>', "", "", ""]
            )
            continue
        rows.append(
            [
                esc(row["region"]),
                esc(row["newest_segment"]),
                when(row["written_at"], tz),
                when(row["archived_at"], tz),
                flag(row["within_rpo"], duration(row["age_seconds"]), duration(row["age_seconds"]))
                if row["age_seconds"] is not None
                else '<span class="bad">nothing archived</span>',
            ]
        )
    debt = data.get("replication_debt")
    debt_text = (
        "; ".join(f"{count} segment(s) in {pair}" for pair, count in debt.items())
        if debt
        else "unknown (a region cannot be read)"
    )
    return (
        f"<p>Objective: newest archived WAL written less than {duration(data['rpo_seconds'])} "
        "ago.</p>"
        + table(["Region", "Newest archived WAL", "Written", "Archived", "Age"], rows)
        + f"<p>Replication debt between regions: {esc(debt_text)}</p>"
    )


def render_backups(data: dict[str, Any], tz: ZoneInfo, now: datetime) -> str:
    rows = []
    for row in data["tiers"]:
        if row["age_seconds"] is None:
            age = '<span class="bad">none verified</span>' if row["late"] else "none verified"
        else:
            age = flag(
                not row["late"],
                duration(row["age_seconds"]),
                duration(row["age_seconds"]) + " late",
            )
        every = (
            duration(row["expected_every_seconds"])
            if row["expected_every_seconds"]
            else "as needed"
        )
        rows.append(
            [
                esc(row["label"]),
                link(row["evidence"], row["newest_verified"] or "—"),
                age,
                esc(every),
                esc(size(row["size_bytes"])),
                esc(duration(row["duration_seconds"])),
                esc(", ".join(CHECK_LABELS.get(c, c) for c in row["checks"]) or "—"),
                esc(", ".join(row["replicas"]) or "—"),
            ]
        )
    pitr = data["pitr_window"]
    if "error" in pitr:
        window = f'<span class="bad">{esc(pitr["error"])}</span>'
    elif pitr.get("earliest"):
        window = f"from {when(pitr['earliest'], tz)} to {when(pitr['latest'], tz, now)}"
    else:
        window = f'<span class="bad">{esc(pitr.get("note") or "nothing restorable")}</span>'
    sizes = {
        r["label"]: [
            (datetime.fromisoformat(h["started_at"]), h["size_bytes"] / 1e6) for h in r["history"]
        ]
        for r in data["tiers"]
        if r["history"]
    }
    durations = {
        r["label"]: [
            (datetime.fromisoformat(h["started_at"]), h["duration_seconds"])
            for h in r["history"]
            if h["duration_seconds"] is not None
        ]
        for r in data["tiers"]
        if r["history"]
    }
    return (
        table(
            [
                "Tier",
                "Newest verified backup",
                "Age",
                "Every",
                "Size",
                "Took",
                "Checks",
                "Copies in",
            ],
            rows,
        )
        + f"<p>Point-in-time recovery window ({esc(pitr.get('region'))}): {window}</p>"
        + '<div class="charts">'
        + charts.series_chart(sizes, title="Backup size per tier", unit="MB")
        + charts.series_chart(durations, title="Backup duration per tier", unit="s")
        + "</div>"
    )


def render_in_progress(data: dict[str, Any], tz: ZoneInfo, now: datetime) -> str:
    runs = data.get("runs") or []
    if not runs:
        return '<p id="no-failover">No failover or failback is running.</p>'
    parts = []
    for run in runs:
        rows = []
        for number, step in enumerate(run["steps"], 1):
            state = step["state"] or "waiting"
            css = {"success": "ok", "failed": "bad", "running": "warn", "awaiting_input": "warn"}
            rows.append(
                [
                    str(number),
                    esc(STEP_LABELS.get(step["step"], step["step"])),
                    f'<span class="{css.get(state, "muted")} step-state" data-step="{esc(step["step"])}">'
                    f"{esc(state.replace('_', ' '))}</span>",
                    when(step.get("started_at"), tz),
                    esc(duration(step.get("seconds"))),
                ]
            )
        parts.append(
            f'<div class="run" data-run="{esc(run["run_id"])}"><p class="big warn">'
            f"{esc(run['kind'].capitalize())} in progress ({link(run.get('link'), 'open the run')}) "
            f"· started {when(run.get('started_at'), tz, now)}"
            f"{' · approved by ' + esc(run['approved_by']) if run.get('approved_by') else ''}</p>"
            + table(["#", "Step", "State", "Started", "Took"], rows)
            + "</div>"
        )
    return "".join(parts)


def render_failovers(data: dict[str, Any], tz: ZoneInfo, now: datetime) -> str:
    rto = data["rto_objective_seconds"]
    rows = []
    for run in data["recent"]:
        rows.append(
            [
                esc(str(run["kind"]).capitalize()),
                flag(
                    run["status"] in ("completed", "completed_with_warnings", "dry_run"),
                    str(run["status"]).replace("_", " "),
                    str(run["status"]).replace("_", " "),
                ),
                when(run["finished_at"], tz, now),
                esc(run["new_primary"]),
                flag(
                    run["rto_seconds"] is not None and run["rto_seconds"] <= rto,
                    duration(run["rto_seconds"]),
                    duration(run["rto_seconds"]),
                ),
                esc(run["data_loss"]),
                esc(run["approved_by"]),
                link(run["link"], "run") + " · " + link(run["evidence"], "record"),
            ]
        )
    if not rows:
        return "<p>No failover on record.</p>"
    return f"<p>Objective: recovery within {duration(rto)}.</p>" + table(
        [
            "Kind",
            "Result",
            "Finished",
            "Primary after",
            "Recovery time",
            "Data loss",
            "Approved by",
            "Links",
        ],
        rows,
    )


def render_drills(data: dict[str, Any], tz: ZoneInfo, now: datetime) -> str:
    rto, rpo = data["rto_objective_seconds"], data["rpo_objective_seconds"]
    rows = []
    for drill in data["drills"]:
        result = flag(drill["passed"], "passed", "failed")
        if drill.get("failed_step"):
            result += f" at {esc(drill['failed_step'])}"
        throughput = drill["restore_throughput_mb_s"]
        rows.append(
            [
                esc(drill["drill"].capitalize()),
                when(drill["last_started_at"], tz, now)
                if drill["last_started_at"]
                else '<span class="bad">never run</span>',
                result,
                flag(
                    None if drill["rto_seconds"] is None else drill["rto_seconds"] <= rto,
                    duration(drill["rto_seconds"]),
                    duration(drill["rto_seconds"]),
                ),
                flag(
                    None if drill["rpo_seconds"] is None else drill["rpo_seconds"] <= rpo,
                    duration(drill["rpo_seconds"]),
                    duration(drill["rpo_seconds"]),
                ),
                esc(f"{throughput:.1f} MB/s" if throughput is not None else None),
                when(drill["next_due"], tz, now),
                flag(not drill["overdue"], "on time", "OVERDUE"),
                link(drill["link"], "DAG")
                + (" · " + link(drill.get("evidence"), "record") if drill.get("evidence") else ""),
            ]
        )
    return (
        f"<p>Objectives: recovery within {duration(rto)}, data loss under {duration(rpo)}.</p>"
        + table(
            [
                "Drill",
                "Last run",
                "Result",
                "Recovery time",
                "Data loss",
                "Restore speed",
                "Next due",
                "Status",
                "Links",
            ],
            rows,
        )
    )


def render_availability(data: dict[str, Any], tz: ZoneInfo, now: datetime) -> str:
    rows, incidents = [], []
    for window in data["windows"]:
        percent = window["availability_percent"]
        rows.append(
            [
                esc(window["label"]),
                flag(window["met"], f"{percent:.3f} %", f"{percent:.3f} %")
                if percent is not None
                else '<span class="bad">not measured</span>',
                esc(f"{window['objective_percent']} %"),
                flag(
                    window["met"],
                    f"{window['down_minutes']:.1f} min",
                    f"{window['down_minutes']:.1f} min",
                ),
                esc(f"{window['budget_minutes']:.1f} min"),
                esc(f"{window['coverage_percent']:.1f} %"),
            ]
        )
        if window["label"] == "Last 30 days":
            for incident in window["incidents"]:
                incidents.append(
                    [
                        when(incident["started_at"], tz),
                        when(incident["ended_at"], tz),
                        esc(f"{incident['minutes']:.1f} min"),
                        esc(
                            {
                                "recovery": "recovered",
                                "failover": "failover completed",
                                "ongoing": "still down",
                            }.get(incident["closed_by"], incident["closed_by"])
                        ),
                        esc(incident["failed_checks"]),
                        esc(incident["region"]),
                    ]
                )
    legend = " ".join(
        f'<span class="key" style="background:{colour}"></span>{state}'
        for state, colour in charts.STATE_COLOURS.items()
    )
    return (
        table(
            [
                "Period",
                "Availability (of the measured time)",
                "Objective",
                "Down",
                "Allowed down",
                "Time measured",
            ],
            rows,
        )
        + "<h3>Health, last 30 days (one bar per hour)</h3>"
        + charts.health_strip(data["strip"])
        + f'<p class="legend">{legend}</p>'
        + "<h3>Incidents, last 30 days</h3>"
        + (
            table(["Started", "Ended", "Down", "Ended by", "Failed checks", "Primary"], incidents)
            if incidents
            else "<p>None.</p>"
        )
    )


def render_alerts(data: dict[str, Any], tz: ZoneInfo, now: datetime) -> str:
    active = data["active"]
    if not active:
        return '<p class="ok">No active alert.</p>'
    rows = [
        [
            f'<span class="{"bad" if a["severity"] == "Critical" else "warn"}">{esc(a["severity"])}</span>',
            esc(a["name"]),
            esc(a["summary"]),
            when(a["since"], tz, now),
            (link(a["link"], "open in Airflow") if a["link"] else "—")
            + (
                " · " + link(a["evidence"], "the check that raised it") if a.get("evidence") else ""
            ),
        ]
        for a in active
    ]
    return table(["Severity", "Alert", "What", "Since", "Where to look"], rows)


SECTIONS: list[tuple[str, str, Callable[[Any, ZoneInfo, datetime], str]]] = [
    ("alerts", "Active alerts", render_alerts),
    ("topology", "Topology now", render_topology),
    ("failover_in_progress", "Failover in progress", render_in_progress),
    ("rpo_exposure", "Data at risk now (RPO exposure)", render_rpo),
    ("backups", "Backups", render_backups),
    ("failovers", "Last failovers", render_failovers),
    ("drills", "Drills", render_drills),
    ("availability", "Availability", render_availability),
]


def render_sections(status: dict[str, Any], tz: ZoneInfo) -> dict[str, str]:
    """Section id -> its HTML (the page's body, and what ``api/view`` sends to refresh it)."""
    now = datetime.fromisoformat(status["generated_at"])
    rendered = {"source": render_source(status.get("source") or {}, tz, now)}
    for key, title, renderer in SECTIONS:
        if key not in status:
            continue
        data = status[key]
        try:
            inner = error_box(data) or renderer(data, tz, now)
        except Exception as exc:  # a malformed record must not blank the page
            inner = f'<p class="bad section-error">Cannot show this section: {esc(exc)}</p>'
        rendered[key] = f"<h2>{esc(title)}</h2>{inner}"
    return rendered


def updated_line(status: dict[str, Any], tz: ZoneInfo) -> str:
    return f"Updated {when(status['generated_at'], tz)}"


STYLE = """
body{font-family:system-ui,sans-serif;margin:1em 1.5em;color:#222}
h1{margin:.2em 0}h2{margin:1.2em 0 .4em;border-bottom:1px solid #ddd}h3{font-size:1em}
table{border-collapse:collapse;margin:.3em 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
th{background:#f5f5f5}.ok{color:#2e7d32}.bad{color:#c62828;font-weight:bold}
.warn{color:#e65100;font-weight:bold}.muted{color:#777}.big{font-size:1.15em}
.key{display:inline-block;width:10px;height:10px;margin:0 3px 0 10px}
.charts svg{margin-right:1em}#updated{color:#777}
"""

# While a failover runs, only its section is fetched every second (cheap: Airflow's database),
# and everything else every REFRESH_SECONDS; when the run ends, everything at once.
SCRIPT = """
(function(){
  var fast = %(fast)d, slow = %(slow)d, running = %(running)s, lastFull = Date.now();
  function swap(view){
    Object.keys(view.sections).forEach(function(id){
      var node = document.getElementById('sec-' + id);
      if(!node){
        node = document.createElement('section'); node.id = 'sec-' + id;
        document.getElementById('sections').appendChild(node);
      }
      node.innerHTML = view.sections[id];
    });
  }
  function refresh(){
    var full = !running || Date.now() - lastFull >= slow * 1000;
    fetch(full ? 'api/view' : 'api/view?only=failover_in_progress',
          {credentials: 'same-origin', cache: 'no-store'})
      .then(function(r){ if(!r.ok){ throw new Error('HTTP ' + r.status); } return r.json(); })
      .then(function(view){
        swap(view);
        if(full){ lastFull = Date.now(); }
        var ended = running && !view.running;
        running = view.running;
        document.getElementById('updated').textContent = view.updated;
        if(ended){ lastFull = 0; }
      })
      .catch(function(err){
        document.getElementById('updated').textContent = 'Refresh failed: ' + err.message;
      })
      .finally(function(){ setTimeout(refresh, (running || lastFull === 0 ? fast : slow) * 1000); });
  }
  setTimeout(refresh, (running ? fast : slow) * 1000);
})();
"""


def running(status: dict[str, Any]) -> bool:
    return bool((status.get("failover_in_progress") or {}).get("runs"))


def view(status: dict[str, Any], tz: ZoneInfo) -> dict[str, Any]:
    """What the page's script fetches: the sections rendered again."""
    return {
        "generated_at": status["generated_at"],
        "updated": html.unescape(updated_line(status, tz)),
        "running": running(status),
        "sections": render_sections(status, tz),
    }


def script_settings(status: dict[str, Any]) -> dict[str, Any]:
    return {
        "fast": REFRESH_SECONDS_DURING_FAILOVER,
        "slow": REFRESH_SECONDS,
        "running": "true" if running(status) else "false",
    }


def render_page(status: dict[str, Any], tz: ZoneInfo) -> str:
    sections = render_sections(status, tz)
    body = "".join(f'<section id="sec-{key}">{inner}</section>' for key, inner in sections.items())
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Litper DR console</title>"
        f"<style>{STYLE}</style></head><body>"
        "<h1>Litper disaster recovery</h1>"
        f'<p><span id="updated">{updated_line(status, tz)}</span> · '
        "<a href='api/status'>data as JSON</a></p>"
        f'<div id="sections">{body}</div>'
        f"<script>{SCRIPT % script_settings(status)}</script>"
        "</body></html>"
    )
