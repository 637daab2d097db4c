"""The console's pure parts: human units, redaction, the health strip, the SVG pictures, and a
page that renders every section even when some hold errors (no server needed)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from xml.etree import ElementTree
from zoneinfo import ZoneInfo

import pytest

from disaster_recovery.console import charts, page
from disaster_recovery.console import sections as console
from disaster_recovery.monitoring.history import DayRecord, day_of_key

BOGOTA = ZoneInfo("America/Bogota")
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "—"),
        (42.4, "42 s"),
        (60, "1 min"),
        (725, "12 min 5 s"),
        (11040, "3 h 04 min"),
        (3600, "1 h"),
        (190800, "2 d 5 h"),
        (86400, "1 d"),
    ],
)
def test_durations_read_like_a_person_would_say_them(seconds: float | None, text: str) -> None:
    assert page.duration(seconds) == text


@pytest.mark.parametrize(
    ("size", "text"),
    [(None, "—"), (512, "512 B"), (1_732_792, "1.7 MB"), (3_200_000_000, "3.2 GB")],
)
def test_sizes_in_decimal_units(size: int | None, text: str) -> None:
    assert page.size(size) == text


def test_times_in_the_configured_zone_to_the_minute() -> None:
    moment = console.moment(NOW - timedelta(minutes=3, microseconds=123456))
    assert moment == "2026-12-02T11:56:59+00:00"
    assert page.when(moment, BOGOTA, NOW) == "2026-12-02 06:56 -05 (3 min 1 s ago)"
    assert page.when(console.moment(NOW), BOGOTA, NOW).endswith("(just now)")


def test_redaction_removes_every_known_secret_everywhere() -> None:
    secrets = {"s3cr3t-pass", "https://hooks.slack.com/services/T/B/X"}
    document = {
        "a": ["error: password s3cr3t-pass refused"],
        "b": {"c": "POST https://hooks.slack.com/services/T/B/X: 500"},
        "n": 3,
    }
    clean = console.redact(document, secrets)
    assert clean == {
        "a": ["error: password [hidden] refused"],
        "b": {"c": "POST [hidden]: 500"},
        "n": 3,
    }


def test_health_strip_takes_the_worst_state_of_each_hour() -> None:
    day = DayRecord(
        NOW.date(),
        [
            [(NOW - timedelta(hours=2, minutes=50)).isoformat(), True, True, "us-east-1"],
            [(NOW - timedelta(hours=2, minutes=40)).isoformat(), False, True, "us-east-1"],
            [(NOW - timedelta(hours=1, minutes=30)).isoformat(), True, False, "us-east-1"],
            [(NOW - timedelta(minutes=10)).isoformat(), True, True, "us-east-1"],
        ],
        {},
    )
    cells = console.health_strip([day], NOW - timedelta(hours=4), NOW)
    assert [c["state"] for c in cells] == ["unknown", "down", "degraded", "up"]
    assert cells[0]["hour"] == "2026-12-02T08:00:00+00:00"


def test_pictures_are_well_formed_svg() -> None:
    strip = charts.health_strip([{"hour": "2026-12-02T10:00:00+00:00", "state": "down"}])
    assert ElementTree.fromstring(strip)  # noqa: S314 (our own SVG).tag.endswith("svg")
    chart = charts.series_chart(
        {"Weekly": [(NOW - timedelta(days=7), 1.5), (NOW, 1.7)], "Daily": [(NOW, 2.0)]},
        title="Backup size per tier",
        unit="MB",
    )
    root = ElementTree.fromstring(chart)  # noqa: S314
    assert len(root.findall("{http://www.w3.org/2000/svg}circle")) == 3
    assert "No verified backups yet" in charts.series_chart({}, title="t", unit="s")


def test_history_keys_name_their_day() -> None:
    assert day_of_key("litper/health/2026/11/30/120000_000001.json").isoformat() == "2026-11-30"
    assert day_of_key("litper/availability/2025/01/02.json").isoformat() == "2025-01-02"
    assert day_of_key("litper/availability/notes.txt") is None


def test_a_page_with_failing_sections_still_renders_the_others() -> None:
    status = {
        "generated_at": console.moment(NOW),
        "source": {
            "region": "us-west-2",
            "bucket": "b",
            "primary_region": "us-east-1",
            "fallback": True,
            "problems": ["us-east-1: cannot reach S3"],
            "notes": [],
        },
        "topology": {"error": "cannot connect"},
        "alerts": {"active": []},
        "failover_in_progress": {"runs": []},
    }
    html = page.render_page(status, BOGOTA)
    assert "Cannot read this section: cannot connect" in html
    assert "No active alert." in html and "No failover or failback is running." in html
    assert "the primary region us-east-1 did not answer" in html
    assert not re.search(r"\d\d:\d\d:\d\d\.\d", html)
