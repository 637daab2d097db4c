"""Node control by configured commands: argument lists, placeholders, the password via env."""

from __future__ import annotations

from pathlib import Path

import pytest

from disaster_recovery.config.model import NodeControlConfig, settings_from_dict
from disaster_recovery.errors import ConfigError
from disaster_recovery.postgres.nodecontrol import CommandNodeControl, NoControl, node_control


def test_command_control_fills_placeholders_and_passes_secrets_by_env(tmp_path: Path) -> None:
    out = tmp_path / "calls"
    script = f'echo "$0|$1|$PGPASSWORD" >> {out}'
    control = node_control(
        "us-east-1",
        NodeControlConfig(
            control="command",
            commands={
                "is_running": ["false"],
                "fence": ["sh", "-c", script, "fence", "-"],
                "rewind": ["sh", "-c", script, "rewind", "-"],
                "configure_standby": ["sh", "-c", script, "{primary_conninfo}", "{slot}"],
            },
        ),
    )
    assert isinstance(control, CommandNodeControl)
    assert control.is_running() is False
    assert control.fence() == "fence command ran"
    control.rewind({"PGPASSWORD": "s3cret", "PGHOST": "db1"})
    control.configure_standby("host=db1 port=5432", "us_east_1")
    assert out.read_text().splitlines() == [
        "fence|-|",
        "rewind|-|s3cret",
        "host=db1 port=5432|us_east_1|",
    ]
    with pytest.raises(ConfigError, match=r"commands\.start is not configured"):
        control.start()


def test_no_control_refuses_what_needs_the_host_but_fencing_is_recorded() -> None:
    control = node_control("us-east-1", None)
    assert isinstance(control, NoControl)
    assert "not fenced on disk" in control.fence()
    with pytest.raises(ConfigError, match="no node control configured, cannot rewind"):
        control.rewind({})


def test_node_control_config_errors_name_the_key() -> None:
    with pytest.raises(
        ConfigError, match=r"failover\.nodes\.us-east-1\.commands.*unknown node control action"
    ):
        settings_from_dict(
            {
                "failover": {
                    "nodes": {"us-east-1": {"control": "command", "commands": {"reboot": ["x"]}}}
                }
            }
        )
    with pytest.raises(ConfigError, match="control local needs data_dir"):
        node_control("us-east-1", NodeControlConfig(control="local"))
