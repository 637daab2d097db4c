"""A PostgreSQL instance in a local data directory, driven with initdb/pg_ctl.

Used by the sandbox (primary and standby), by point-in-time restores (a recovered instance) and
by drills. Node identity (port, socket folder, cluster name) goes on the ``postgres`` command
line, never in a config file: ``pg_rewind`` and ``pg_basebackup`` copy config files from the
source node, and a rewound node once took its source's port that way. Role settings that must
not travel (``primary_conninfo``, ``primary_slot_name``, ``synchronous_standby_names``) are
rewritten by :meth:`LocalInstance.set_role_settings` after every clone, promotion or rewind.
"""

from __future__ import annotations

import os
import pwd
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from disaster_recovery.clients.runner import run
from disaster_recovery.errors import CommandFailed, ConfigError, UnavailableError
from disaster_recovery.postgres import pgbin

ROLE_SETTINGS = (
    "primary_conninfo",
    "primary_slot_name",
    "synchronous_standby_names",
    "restore_command",
    "recovery_target_time",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_action",
    "recovery_target_inclusive",
    "recovery_target_timeline",
)


def server_user(configured: str, setting: str) -> str | None:
    """The OS user to run a server as: PostgreSQL refuses to run as root, so when we are root
    the caller must name an existing unprivileged user (``setting`` says where); otherwise we run
    it as ourselves (None)."""
    if os.geteuid() != 0:
        return None
    if not configured:
        raise ConfigError(
            f"PostgreSQL refuses to run as root: set {setting} to the OS user that runs "
            "PostgreSQL on this host (e.g. postgres)"
        )
    try:
        pwd.getpwnam(configured)
    except KeyError:
        raise ConfigError(f"{setting}: no OS user named {configured!r} on this host") from None
    return configured


def make_traversable(path: Path, user: str) -> None:
    """Let ``user`` reach ``path``: add the search (x) bit for others on every parent folder it
    does not own. A checkout in a 0700 temporary folder otherwise hides the PostgreSQL programs
    and data directories from the server's OS user."""
    uid = pwd.getpwnam(user).pw_uid
    for parent in [path.resolve(), *path.resolve().parents]:
        info = parent.stat()
        if parent.is_dir() and info.st_uid != uid and not info.st_mode & 0o001:
            os.chmod(parent, info.st_mode | 0o001)


def server_program(name: str, user: str | None) -> str:
    """A server-side program (initdb, pg_ctl, pg_basebackup...) runnable by ``user``."""
    path = pgbin.program(name)
    if user is not None:
        make_traversable(Path(path).parent, user)
    return path


def hand_over(path: Path, user: str | None) -> None:
    """Make ``path`` (recursively) owned by ``user`` and its parents traversable by it."""
    if user is None:
        return
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.lchown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)
    make_traversable(path.parent, user)


def quote_conf(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass
class LocalInstance:
    data_dir: Path
    port: int
    cluster_name: str
    socket_dir: Path
    log_file: Path
    host: str = "127.0.0.1"
    # The OS user the server runs as (PostgreSQL refuses root); None: as this process.
    os_user: str | None = None

    def describe(self) -> str:
        return f"{self.cluster_name} ({self.host}:{self.port}, {self.data_dir})"

    def _options(self) -> str:
        return " ".join(
            [
                f"-p {self.port}",
                f"-c listen_addresses={self.host}",
                f"-c unix_socket_directories={self.socket_dir}",
                f"-c cluster_name={self.cluster_name}",
            ]
        )

    def _prepare_dirs(self) -> None:
        for folder in (self.socket_dir, self.log_file.parent):
            folder.mkdir(parents=True, exist_ok=True)
            hand_over(folder, self.os_user)

    def initdb(self, superuser: str, password: str) -> None:
        """Create a new cluster with data checksums and password authentication over TCP."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        self._prepare_dirs()
        pwfile = self.data_dir.parent / f".{self.cluster_name}.pw"
        pwfile.write_text(password + "\n")
        hand_over(self.data_dir, self.os_user)
        hand_over(pwfile, self.os_user)
        try:
            run(
                [
                    server_program("initdb", self.os_user),
                    "-D",
                    self.data_dir,
                    "-U",
                    superuser,
                    "--pwfile",
                    pwfile,
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "--data-checksums",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ],
                user=self.os_user,
                target=self.describe(),
                timeout=120,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        with (self.data_dir / "pg_hba.conf").open("a") as hba:
            hba.write("host replication all 127.0.0.1/32 scram-sha-256\n")

    def append_config(self, settings: dict[str, str]) -> None:
        """Settings shared by every node of the cluster (they travel with base backups)."""
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# litper-dr\n")
            for key, value in settings.items():
                conf.write(f"{key} = {value}\n")

    def set_role_settings(self, settings: Mapping[str, str]) -> None:
        """Replace every role setting in postgresql.auto.conf with ``settings`` (empty to reset)."""
        self.edit_auto_conf(settings, drop=ROLE_SETTINGS)

    def edit_auto_conf(
        self, changes: Mapping[str, str | None], *, drop: Iterable[str] = ()
    ) -> None:
        """Set (or, with None, remove) keys in postgresql.auto.conf, first removing ``drop``.

        Written directly (not ALTER SYSTEM) so it works while the server is down: the one place
        that edits this file (fencing, role changes, recovery settings).
        """
        auto = self.data_dir / "postgresql.auto.conf"
        lines = auto.read_text().splitlines() if auto.exists() else []
        removed = {*drop, *changes}
        kept = [ln for ln in lines if ln.split("=", 1)[0].strip() not in removed]
        kept += [
            f"{key} = {quote_conf(value)}" for key, value in changes.items() if value is not None
        ]
        # Replaced, not rewritten in place: a reload (pg_reload_conf) reading a half-written file
        # would lose settings such as the fence's default_transaction_read_only.
        temporary = auto.with_name(auto.name + ".dr-tmp")
        temporary.write_text("\n".join(kept) + "\n")
        temporary.chmod(0o600)
        if self.os_user is not None:  # the server's own file, as PostgreSQL writes it
            entry = pwd.getpwnam(self.os_user)
            os.chown(temporary, entry.pw_uid, entry.pw_gid)
        os.replace(temporary, auto)

    def mark_standby(self, standby: bool = True) -> None:
        signal_file = self.data_dir / "standby.signal"
        if standby:
            signal_file.touch()
            hand_over(signal_file, self.os_user)
        else:
            signal_file.unlink(missing_ok=True)

    def start(self, timeout: int = 60) -> None:
        self._prepare_dirs()
        if self.is_running():
            return
        try:
            run(
                [
                    server_program("pg_ctl", self.os_user),
                    "start",
                    "-w",
                    "-t",
                    str(timeout),
                    "-D",
                    self.data_dir,
                    "-l",
                    self.log_file,
                    "-o",
                    self._options(),
                ],
                user=self.os_user,
                target=self.describe(),
                timeout=timeout + 15,
            )
        except CommandFailed as exc:
            raise UnavailableError(f"{exc}\n--- server log ---\n{self.log_tail()}") from None

    def stop(self, mode: str = "fast", timeout: int = 60) -> None:
        """Stop the server; ``mode="immediate"`` is a crash (no checkpoint), as in a region loss."""
        if not self.is_running():
            return
        run(
            [
                server_program("pg_ctl", self.os_user),
                "stop",
                "-w",
                "-t",
                str(timeout),
                "-m",
                mode,
                "-D",
                self.data_dir,
            ],
            user=self.os_user,
            target=self.describe(),
            timeout=timeout + 15,
        )

    def kill(self) -> None:
        """SIGKILL the postmaster: the harshest way to lose a node."""
        pid = self.postmaster_pid()
        if pid:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 10
            while self._postmaster_alive() and time.monotonic() < deadline:
                time.sleep(0.05)

    def postmaster_pid(self) -> int | None:
        pidfile = self.data_dir / "postmaster.pid"
        try:
            return int(pidfile.read_text().splitlines()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None

    def _postmaster_alive(self) -> bool:
        pid = self.postmaster_pid()
        if not pid:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def is_running(self) -> bool:
        if not (self.data_dir / "PG_VERSION").exists():
            return False
        result = run(
            [server_program("pg_ctl", self.os_user), "status", "-D", self.data_dir],
            user=self.os_user,
            check=False,
            timeout=30,
        )
        return result.returncode == 0

    def promote(self, timeout: int = 60) -> None:
        run(
            [
                server_program("pg_ctl", self.os_user),
                "promote",
                "-w",
                "-t",
                str(timeout),
                "-D",
                self.data_dir,
            ],
            user=self.os_user,
            target=self.describe(),
            timeout=timeout + 15,
        )

    def clone_from(
        self, source_env: dict[str, str], slot: str | None = None, timeout: int = 3600
    ) -> None:
        """Make this data directory a physical copy of a running server (``pg_basebackup``)."""
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        hand_over(self.data_dir.parent, self.os_user)
        self._prepare_dirs()
        args: list[str | Path] = [
            server_program("pg_basebackup", self.os_user),
            "-D",
            self.data_dir,
            "-X",
            "stream",
            "--checkpoint=fast",
            "--no-password",
        ]
        if slot:
            args += ["-C", "-S", slot]
        run(
            args,
            user=self.os_user,
            env=source_env,
            target=f"clone into {self.describe()}",
            timeout=timeout,
        )

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no server log)"

    def destroy(self) -> None:
        self.kill()
        shutil.rmtree(self.data_dir, ignore_errors=True)
