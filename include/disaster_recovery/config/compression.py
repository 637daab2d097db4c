"""The physical chain's compression setting (``pitr.compression``): a codec and its level.

Only the spec lives here (settings are typed when read); the streams that compress and
decompress are in :mod:`disaster_recovery.clients.compression`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from disaster_recovery.errors import ConfigError

# Codec -> (lowest level, highest level, level used when the spec names none).
LEVELS = {"none": (0, 0, 0), "gzip": (1, 9, 1), "zstd": (1, 19, 1)}
_SPEC = re.compile(r"^(?P<name>[a-z0-9]+)(?::(?P<level>-?\d{1,2}))?$")


@dataclass(frozen=True)
class Codec:
    """``none``, ``gzip:N`` or ``zstd:N``; a manifest without one was stored as ``none``."""

    name: str = "none"
    level: int = 0

    @classmethod
    def parse(cls, spec: str | None, where: str = "pitr.compression") -> Codec:
        match = _SPEC.match((spec or "none").strip().lower())
        if not match or match.group("name") not in LEVELS:
            raise ConfigError(
                f"{where}: {spec!r} is not a compression spec (use none, gzip:1-9 or zstd:1-19)"
            )
        name = match.group("name")
        low, high, default = LEVELS[name]
        level = int(match.group("level")) if match.group("level") is not None else default
        if not low <= level <= high:
            raise ConfigError(f"{where}: {name} level {level} is outside {low}-{high}")
        return cls(name, level)

    def __str__(self) -> str:
        return "none" if self.name == "none" else f"{self.name}:{self.level}"

    @property
    def tar_suffix(self) -> str:
        """The file name PostgreSQL's tools give a tar in this codec (pg_verifybackup reads
        ``base.tar.gz`` by its name)."""
        return {"none": ".tar", "gzip": ".tar.gz", "zstd": ".tar.zst"}[self.name]
