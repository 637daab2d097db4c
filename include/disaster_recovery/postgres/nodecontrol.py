"""Driving a PostgreSQL node beyond SQL: stop, start, fence, rewind, clone, reconfigure.

Promotion and fencing of a reachable node go through SQL. What SQL cannot do — keep a crashed
old primary from coming back writable, ``pg_rewind`` it, re-clone it — needs access to its host.
That access is pluggable (``failover.nodes.<region>.control``): ``local`` drives a data directory
on this machine (:class:`~disaster_recovery.postgres.instance.LocalInstance`, the sandbox), ``command``
runs configured argument lists (SSH, Patroni, an agent). A node without control can still be
fenced while reachable; a failback then needs an operator to rebuild it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from disaster_recovery.clients.runner import run
from disaster_recovery.config.endpoints import PostgresEndpoint
from disaster_recovery.config.model import NodeControlConfig
from disaster_recovery.errors import CommandFailed, ConfigError
from disaster_recovery.postgres import db, pgbin
from disaster_recovery.postgres.instance import LocalInstance, server_user

FENCE_SETTING = "default_transaction_read_only"


def fence_online(endpoint: PostgresEndpoint) -> dict[str, Any]:
    """Fence a running node through SQL: read-only for every new transaction (``ALTER SYSTEM``,
    so it holds across a restart too) and every client session ended. A session waiting for a
    synchronous standby to confirm its COMMIT is ended before the commit is acknowledged: its
    client gets an error, never a success (PostgreSQL warns that the transaction "might not have
    been replicated"; it is on this node alone, which a rewind discards)."""
    with db.connect(endpoint, "postgres", timeout=5) as conn:
        conn.execute(f"ALTER SYSTEM SET {FENCE_SETTING} = on")
        conn.execute("SELECT pg_reload_conf()")
        # Sessions opened before the reload keep their old default: end them.
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        ).fetchone()
        final = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None and final is not None
    return {"fenced": "read_only", "terminated_sessions": int(row[0]), "final_lsn": final[0]}


class NodeControl(Protocol):
    name: str

    def is_running(self) -> bool: ...
    def start(self) -> None: ...
    def stop(self, mode: str = "fast") -> None: ...
    def fence(self) -> str: ...
    def unfence(self) -> str: ...
    def rewind(self, source_env: dict[str, str]) -> None: ...
    def clone(self, source_env: dict[str, str], slot: str) -> None: ...
    def configure_standby(self, primary_conninfo: str, slot: str) -> None: ...


class NoControl:
    """SQL only: nothing can be done to the node's host."""

    def __init__(self, name: str):
        self.name = name

    def _refuse(self, action: str) -> ConfigError:
        return ConfigError(
            f"failover.nodes.{self.name}: no node control configured, cannot {action} "
            "(configure control: local or command)"
        )

    def is_running(self) -> bool:
        raise self._refuse("check whether it runs")

    def start(self) -> None:
        raise self._refuse("start it")

    def stop(self, mode: str = "fast") -> None:
        raise self._refuse("stop it")

    def fence(self) -> str:
        return "no node control: not fenced on disk"

    def unfence(self) -> str:
        return "no node control: nothing on disk to undo"

    def rewind(self, source_env: dict[str, str]) -> None:
        raise self._refuse("rewind it")

    def clone(self, source_env: dict[str, str], slot: str) -> None:
        raise self._refuse("clone it")

    def configure_standby(self, primary_conninfo: str, slot: str) -> None:
        raise self._refuse("configure it as a standby")


class LocalNodeControl:
    """A node whose data directory is on this machine."""

    def __init__(self, name: str, instance: LocalInstance):
        self.name = name
        self.instance = instance

    def is_running(self) -> bool:
        return self.instance.is_running()

    def start(self) -> None:
        self.instance.start()

    def stop(self, mode: str = "fast") -> None:
        self.instance.stop(mode=mode)

    def fence(self) -> str:
        """Make the node come back, if it ever restarts, as a read-only standby, never a primary.

        ``standby.signal`` makes PostgreSQL start in recovery (hard read-only); the read-only
        default is a second line. Both are on disk, so they hold across a crash and a restart.
        """
        if not (self.instance.data_dir / "PG_VERSION").exists():
            return "no data directory: nothing to fence"
        self.instance.mark_standby()
        self.instance.edit_auto_conf({FENCE_SETTING: "on"})
        return "standby.signal and default_transaction_read_only written"

    def unfence(self) -> str:
        """Undo :meth:`fence` (a failover stopped before anything was promoted): the node keeps
        its primary role across a restart."""
        if not (self.instance.data_dir / "PG_VERSION").exists():
            return "no data directory: nothing to undo"
        self.instance.mark_standby(False)
        self.instance.edit_auto_conf({FENCE_SETTING: None})
        return "standby.signal and default_transaction_read_only removed"

    def rewind(self, source_env: dict[str, str]) -> None:
        """``pg_rewind`` onto the source's timeline (the node must be stopped; a crashed node is
        recovered in single-user mode by pg_rewind itself)."""
        # A fenced node carries standby.signal, and single-user mode refuses standby mode
        # ("standby mode is not supported by single-user servers"): lift it for the rewind;
        # configure_standby puts it back.
        self.instance.mark_standby(False)
        run(
            [
                pgbin.program("pg_rewind"),
                "-D",
                self.instance.data_dir,
                "--source-server",
                "dbname=postgres",
                "--no-sync",
            ],
            user=self.instance.os_user,
            env=source_env,
            target=f"rewind {self.instance.describe()}",
            timeout=3600,
        )

    def clone(self, source_env: dict[str, str], slot: str) -> None:
        self.instance.clone_from(source_env)

    def configure_standby(self, primary_conninfo: str, slot: str) -> None:
        """This node's own role settings; the rest of the config came from the source and is
        shared. The fence comes off: the node is a standby now, by standby.signal."""
        self.instance.set_role_settings(
            {"primary_conninfo": primary_conninfo, "primary_slot_name": slot}
        )
        self.instance.edit_auto_conf({FENCE_SETTING: None})
        # Retry streaming quickly after a restart onto a new timeline (default 5 s): a local
        # node's tuning, kept out of the shared config that travels with rewinds.
        self.instance.edit_auto_conf({"wal_retrieve_retry_interval": "200ms"})
        # A rewound node starts "interrupted" and fsyncs its data directory file by file before
        # recovery (seconds, growing with the directory); one syncfs() per filesystem is enough.
        self.instance.edit_auto_conf({"recovery_init_sync_method": "syncfs"})
        self.instance.mark_standby()


class CommandNodeControl:
    """Configured argument lists per action; ``{primary_conninfo}``, ``{slot}``, ``{mode}``."""

    def __init__(self, name: str, commands: dict[str, list[str]]):
        self.name = name
        self.commands = commands

    def _run(self, action: str, env: dict[str, str] | None = None, **values: str) -> str:
        template = self.commands.get(action)
        if not template:
            raise ConfigError(f"failover.nodes.{self.name}.commands.{action} is not configured")
        args = [part.format(**values) for part in template]
        return run(args, env=env, target=f"{action} {self.name}", timeout=3600).stdout

    def is_running(self) -> bool:
        try:
            self._run("is_running")
        except CommandFailed:
            return False
        return True

    def start(self) -> None:
        self._run("start")

    def stop(self, mode: str = "fast") -> None:
        self._run("stop", mode=mode)

    def fence(self) -> str:
        if "fence" not in self.commands:
            return "no fence command configured"
        self._run("fence")
        return "fence command ran"

    def unfence(self) -> str:
        if "unfence" not in self.commands:
            raise ConfigError(
                f"failover.nodes.{self.name}.commands.unfence is not configured: undo the fence "
                "command's work on the host by hand"
            )
        self._run("unfence")
        return "unfence command ran"

    def rewind(self, source_env: dict[str, str]) -> None:
        self._run("rewind", env=source_env)

    def clone(self, source_env: dict[str, str], slot: str) -> None:
        self._run("clone", env=source_env, slot=slot)

    def configure_standby(self, primary_conninfo: str, slot: str) -> None:
        self._run("configure_standby", primary_conninfo=primary_conninfo, slot=slot)


def node_control(region: str, config: NodeControlConfig | None) -> NodeControl:
    if config is None or config.control == "none":
        return NoControl(region)
    if config.control == "command":
        return CommandNodeControl(region, config.commands)
    missing = [
        key
        for key in ("data_dir", "cluster_name", "socket_dir", "log_file")
        if not getattr(config, key)
    ]
    if missing:
        raise ConfigError(f"failover.nodes.{region}: control local needs {', '.join(missing)}")
    return LocalNodeControl(
        region,
        LocalInstance(
            data_dir=Path(config.data_dir),
            port=config.port,
            cluster_name=config.cluster_name,
            socket_dir=Path(config.socket_dir),
            log_file=Path(config.log_file),
            os_user=server_user(config.os_user, f"failover.nodes.{region}.os_user"),
        ),
    )
