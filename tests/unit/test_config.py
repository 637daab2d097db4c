"""Configuration: typed settings from dr_config.yaml, every problem reported at once."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from disaster_recovery.config.durations import parse_duration
from disaster_recovery.config.model import DEFAULT_CONFIG_PATH, load_settings, settings_from_dict
from disaster_recovery.config.seed import settings_from_seed
from disaster_recovery.errors import ConfigError


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "dr_config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_default_file_holds_the_design_policy() -> None:
    settings = load_settings(DEFAULT_CONFIG_PATH)
    assert settings.timezone == "America/Bogota"
    assert (settings.regions.primary, settings.regions.secondary) == ("us-east-1", "us-west-2")
    assert settings.objectives.rpo == timedelta(minutes=15)
    assert settings.objectives.rto == timedelta(minutes=30)
    assert settings.objectives.availability_percent == 99.9
    tiers = settings.tiers
    assert tiers.postgresql_full.schedule == "0 3 * * *"
    assert tiers.postgresql_incremental.schedule == "0 * * * *"
    assert tiers.postgresql_weekly.schedule == "0 3 * * 1"
    assert tiers.postgresql_monthly.schedule == "0 3 1 * *"
    assert tiers.postgresql_full.retention.max_age == timedelta(days=7)
    assert tiers.postgresql_incremental.retention.max_age == timedelta(hours=24)
    assert tiers.postgresql_wal.retention.max_age == timedelta(days=7)
    assert tiers.postgresql_weekly.retention.keep_last == 4
    assert tiers.postgresql_monthly.retention.keep_last == 12
    assert settings.thresholds.replication_lag == timedelta(seconds=60)
    assert settings.thresholds.health_failures_before_failover == 3
    assert settings.alerts.slack_channel == ""  # the webhook posts to its own channel
    assert settings.connections.postgres_primary == "dr_postgres_primary"
    assert settings.wal_stale_after == settings.objectives.rpo


def test_dr_config_env_var_points_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, {"timezone": "UTC", "objectives": {"rpo": "5m"}})
    monkeypatch.setenv("DR_CONFIG", str(path))
    settings = load_settings()
    assert settings.timezone == "UTC"
    assert settings.objectives.rpo == timedelta(minutes=5)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=rf"{missing}: configuration file not found"):
        load_settings(missing)


def test_unknown_key_is_named_with_its_path(tmp_path: Path) -> None:
    path = write(tmp_path, {"storage": {"bucketz": {}}})
    with pytest.raises(ConfigError, match=r"storage\.bucketz: unknown key") as caught:
        load_settings(path)
    assert str(path) in str(caught.value)


def test_bad_cron_is_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "tiers": {
                "postgresql_full": {
                    "schedule": "0 25 * * *",
                    "retention": {"max_age": "7d", "keep_last": 7},
                }
            }
        },
    )
    with pytest.raises(ConfigError, match=r"tiers\.postgresql_full\.schedule: .*not a valid cron"):
        load_settings(path)


def test_bad_duration_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, {"objectives": {"rpo": "fifteen minutes"}})
    with pytest.raises(ConfigError, match=r"objectives\.rpo: .*not a duration"):
        load_settings(path)


def test_negative_retention_is_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "tiers": {
                "postgresql_weekly": {
                    "schedule": "0 3 * * 1",
                    "retention": {"max_age": "4w", "keep_last": -1},
                }
            }
        },
    )
    with pytest.raises(ConfigError, match=r"tiers\.postgresql_weekly\.retention\.keep_last"):
        load_settings(path)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "timezone": "Mars/Olympus",
            "objectives": {"rto": "-3m"},
            "thresholds": {"health_failures_before_failover": 0},
            "extra_section": True,
        },
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert "4 problem(s)" in message
    for key in (
        "timezone",
        "objectives.rto",
        "thresholds.health_failures_before_failover",
        "extra_section",
    ):
        assert f"\n  {key}:" in message


def test_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_settings(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("24h", timedelta(hours=24)),
        ("7d", timedelta(days=7)),
        ("4w", timedelta(weeks=4)),
        (60, timedelta(seconds=60)),
    ],
)
def test_durations(text: object, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "5", "5x", "-1m", "m5", True])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_seed_dict_maps_onto_the_same_settings() -> None:
    settings = settings_from_seed(
        {
            "db_host": "10.0.0.5",
            "db_name": "litper",
            "backup_bucket": "litper-backups",
            "retention": {"daily": 7, "weekly": 4, "monthly": 12},
        }
    )
    assert settings.storage.buckets["us-east-1"] == "litper-backups"
    assert settings.tiers.postgresql_full.retention.keep_last == 7
    assert settings.tiers.postgresql_full.retention.max_age == timedelta(days=7)
    assert settings.tiers.postgresql_weekly.retention.max_age == timedelta(weeks=4)
    assert settings.tiers.postgresql_monthly.retention.keep_last == 12


def test_seed_dict_rejects_unknown_and_negative() -> None:
    with pytest.raises(
        ConfigError, match=r"(?s)db_hots: unknown key.*retention\.yearly: unknown key"
    ):
        settings_from_seed({"db_hots": "x", "retention": {"yearly": 1}})
    with pytest.raises(ConfigError, match=r"retention\.daily: must be a whole number >= 0"):
        settings_from_seed({"retention": {"daily": -2}})


def test_settings_are_frozen() -> None:
    settings = settings_from_dict({})
    with pytest.raises(Exception):
        settings.timezone = "UTC"  # type: ignore[misc]


# -- safe by default (issue 16) -------------------------------------------------------------------


def test_the_shipped_config_is_a_production_one() -> None:
    settings = load_settings(DEFAULT_CONFIG_PATH)
    assert settings.environment.production and settings.environment.name == "production"
    # A drill may change this topology only after a person approved it; so may a file that
    # leaves the environment out (the model's defaults are production too).
    assert settings.drills_need_a_person
    assert settings.drills.auto_approve is None
    assert settings_from_dict({}).drills_need_a_person


@pytest.mark.parametrize(
    ("environment", "drills", "needs_a_person"),
    [
        ({"production": False}, {}, False),
        ({"production": False}, {"auto_approve": False}, False),
        ({"production": True}, {}, True),
        ({"production": True}, {"auto_approve": False}, True),
        ({"production": True, "allow_drills_on_production": True}, {}, True),
        # The explicit opt-out takes both keys.
        ({"production": True, "allow_drills_on_production": True}, {"auto_approve": True}, False),
    ],
)
def test_who_approves_a_drill(
    environment: dict[str, bool], drills: dict[str, bool], needs_a_person: bool
) -> None:
    settings = settings_from_dict({"environment": environment, "drills": drills})
    assert settings.drills_need_a_person is needs_a_person


@pytest.mark.parametrize(
    ("environment", "drills", "named"),
    [
        (
            {"production": True},
            {"auto_approve": True},
            ["drills.auto_approve", "environment.production", "allow_drills_on_production"],
        ),
        (
            {"production": False, "allow_drills_on_production": True},
            {},
            ["environment.allow_drills_on_production", "environment.production: false"],
        ),
    ],
)
def test_contradictory_settings_are_refused_naming_the_keys(
    tmp_path: Path, environment: dict[str, bool], drills: dict[str, bool], named: list[str]
) -> None:
    path = write(tmp_path, {"environment": environment, "drills": drills})
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    message = str(raised.value)
    assert str(path) in message
    for key in named:
        assert key in message, (key, message)
