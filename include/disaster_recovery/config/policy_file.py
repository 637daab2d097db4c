"""Reading the policy file's bytes: the one place that turns a missing, unreadable, empty or
non-UTF-8 file into a :class:`ConfigError` naming it.

Kept apart from :mod:`disaster_recovery.config` (pydantic) so the WAL archiver, which reads the
same file once per segment, stays lean.
"""

from __future__ import annotations

from pathlib import Path

from disaster_recovery.errors import ConfigError

CONFIG_ENV_VAR = "DR_CONFIG"


def read_policy_text(file: Path) -> str:
    """The policy file's text; a missing, unreadable, empty or non-UTF-8 file is a ConfigError
    that names the file (an empty one is refused rather than silently meaning the defaults)."""
    hint = f"point --config or {CONFIG_ENV_VAR} at the policy file"
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{file}: configuration file not found ({hint})") from None
    except IsADirectoryError:
        raise ConfigError(f"{file}: is a directory, not a configuration file ({hint})") from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(f"{file}: cannot read configuration: {reason} ({hint})") from None
    if not data.strip():
        raise ConfigError(f"{file}: the configuration file is empty ({hint})")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{file}: not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); "
            "save it as UTF-8"
        ) from None
