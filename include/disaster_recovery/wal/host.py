"""The database host's side of the archive: the archiver's env and policy files and the ``archive_command`` /
``restore_command`` text PostgreSQL runs."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from disaster_recovery.config.endpoints import env_var_name
from disaster_recovery.errors import ConfigError, ToolError
from disaster_recovery.wal.archive import ArchiverTuning

if TYPE_CHECKING:  # the archiver imports boto3 and pydantic only when it needs them
    from disaster_recovery.config.endpoints import Deployment
    from disaster_recovery.config.model import Settings

# archive_command's fast path for files the async uploader confirmed (the script says how).
FAST_PUSH_SCRIPT = Path(__file__).resolve().parent / "archive_push.sh"

# -- settings and credentials on a database host ----------------------------------------


def load_env_file(path: str | Path) -> dict[str, str]:
    """Read ``KEY=value`` / ``export KEY='value'`` lines (the sandbox.env format)."""
    values: dict[str, str] = {}
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the archiver's env file: {exc}") from None
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ")
        key, sep, raw = line.partition("=")
        if not sep:
            continue
        parts = shlex.split(raw) if raw.strip() else [""]
        values[key.strip()] = parts[0] if parts else ""
    return values


def archiver_env(settings: Settings, deployment: Deployment, config_file: Path) -> dict[str, str]:
    """What ``dr wal push|fetch`` needs on a database host: the two S3 Connections and the
    policy file. Nothing else (no database password) goes into the archiver's env file."""

    env = {"DR_CONFIG": str(config_file)}
    for region in (settings.regions.primary, settings.regions.secondary):
        aws = deployment.aws(region)
        extra: dict[str, Any] = {"region_name": aws.region}
        if aws.endpoint_url:
            extra["endpoint_url"] = aws.endpoint_url
        if aws.role_arn:  # the archiver assumes the same role (docs/security.md)
            extra["role_arn"] = aws.role_arn
            extra["assume_role_method"] = aws.assume_role_method
            extra["assume_role_kwargs"] = aws.assume_role_kwargs
            if aws.sts_endpoint_url:
                extra["service_config"] = {"sts": {"endpoint_url": aws.sts_endpoint_url}}
            if aws.web_identity_token_file:
                extra["assume_role_with_web_identity_token_file"] = aws.web_identity_token_file
        if aws.profile:
            extra["profile_name"] = aws.profile
        env[env_var_name(aws.conn_id)] = json.dumps(
            {
                "conn_type": "aws",
                "login": aws.access_key,
                "password": aws.secret_key,
                "extra": extra,
            }
        )
    return env


def archiver_config(settings: Settings) -> dict[str, Any]:
    """The part of the policy the archiver reads, as a stand-alone dr_config.yaml document."""
    return {
        "timezone": settings.timezone,
        "regions": settings.regions.model_dump(),
        "storage": {
            "prefix": settings.storage.prefix,
            "buckets": dict(settings.storage.buckets),
            "encryption": dict(settings.storage.encryption),
            **(
                {"object_lock": settings.storage.object_lock.model_dump(mode="json")}
                if settings.storage.object_lock
                else {}
            ),
        },
        "tiers": {"postgresql_wal": settings.tiers.postgresql_wal.model_dump(mode="json")},
        "connections": settings.connections.model_dump(),
        # Every key the archiver reads (ArchiverTuning's fields), so none falls back to a default.
        "pitr": settings.pitr.model_dump(include=set(ArchiverTuning.__dataclass_fields__)),
    }


def write_archiver_files(
    folder: Path, settings: Settings, deployment: Deployment, owner: str | None
) -> Path:
    """Write ``wal.env`` and ``wal_config.yaml`` into ``folder`` (readable only by ``owner``,
    the OS user PostgreSQL runs as) and return the env file's path."""

    folder.mkdir(parents=True, exist_ok=True)
    config_file = folder / "wal_config.yaml"
    config_file.write_text(yaml.safe_dump(archiver_config(settings), sort_keys=False))
    env_file = folder / "wal.env"
    env = archiver_env(settings, deployment, config_file)
    env_file.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()))
    for path in (config_file, env_file):
        path.chmod(0o600)
        if owner:
            import pwd  # here: the archiver's push path (this module) never needs it

            entry = pwd.getpwnam(owner)
            os.chown(path, entry.pw_uid, entry.pw_gid)
    return env_file


def _reachable_by_others(path: Path) -> bool:
    """Can a user other than the owner (PostgreSQL's OS user) execute ``path``?"""
    target = path.resolve()
    return all(p.stat().st_mode & 0o001 for p in (target, *target.parents))


def archiver_python(os_user: str | None) -> tuple[str, list[str]]:
    """The interpreter PostgreSQL's OS user can run, and extra import paths it needs.

    Normally ``sys.executable``. When we are root and that interpreter sits where the server
    user cannot reach it (a pyenv under ``/root``), the system Python of the same version runs
    the archiver with our environment's site-packages on its path.
    """

    current = Path(sys.executable)
    if os_user is None or _reachable_by_others(current):
        return sys.executable, []
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (Path(f"/usr/bin/python{version}"), Path(f"/usr/local/bin/python{version}")):
        if candidate.exists() and _reachable_by_others(candidate):
            import sysconfig  # here: the archiver's push path never needs it

            paths = sysconfig.get_paths()
            return str(candidate), [
                paths["purelib"],
                paths["platlib"],
            ]

    raise ToolError(
        f"{current}: PostgreSQL's OS user cannot run this Python, and no system "
        f"python{version} was found; install the package where that user can run it"
    )


def archiver_command(
    action: str, env_file: Path, os_user: str | None, python: str | None = None
) -> str:
    """``archive_command``/``restore_command`` text: absolute paths only, since PostgreSQL runs
    it without our shell's environment (and as ``os_user``, the server's OS user, when we are
    root). ``python``: the interpreter of an archiver install (``pip install '.[archiver]'``)
    instead of :func:`archiver_python`'s choice."""
    python, extra_paths = (python, []) if python else archiver_python(os_user)
    path = ":".join(dict.fromkeys([str(Path(__file__).resolve().parents[2]), *extra_paths]))
    command = (
        f"env PYTHONPATH={shlex.quote(path)} {shlex.quote(python)} "
        f"-m disaster_recovery.wal --env-file {shlex.quote(str(env_file))} {action}"
    )
    if action == "push":  # the fast path first; it runs the command for anything unconfirmed
        return f"/bin/sh {shlex.quote(str(FAST_PUSH_SCRIPT))} %p {command}"
    return f"{command} %f %p"
