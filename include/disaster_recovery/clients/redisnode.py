"""A Redis node's replication role and offsets, and the commands that change them (redis-py).

A replica has caught up when its ``slave_repl_offset`` equals the master's ``master_repl_offset``
(not merely when the link is up: a replica once lagged a second after ``WAIT`` said 1).
``REPLICAOF NO ONE`` promotes; ``REPLICAOF host port`` demotes a former master, which then
resynchronises (partially when it can).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis

from disaster_recovery.config.endpoints import RedisEndpoint
from disaster_recovery.errors import UnavailableError


@dataclass(frozen=True)
class RedisState:
    role: str  # "master" or "slave"
    offset: int  # master_repl_offset on a master, slave_repl_offset on a replica
    link: str | None  # master_link_status on a replica
    master: str | None  # host:port a replica follows
    replicas: int  # connected_slaves on a master


def client(endpoint: RedisEndpoint, timeout: float = 3) -> redis.Redis:
    return redis.Redis.from_url(
        endpoint.url(), socket_timeout=timeout, socket_connect_timeout=timeout
    )


def _call(endpoint: RedisEndpoint, what: str, func: Any) -> Any:
    try:
        return func(client(endpoint))
    except redis.RedisError as exc:
        raise UnavailableError(
            f"{endpoint.describe()} ({endpoint.conn_id}): {what} failed: {exc}"
        ) from None


def state(endpoint: RedisEndpoint) -> RedisState:
    info = _call(endpoint, "INFO replication", lambda c: c.info("replication"))
    role = str(info["role"])
    if role == "master":
        return RedisState(
            role,
            int(info.get("master_repl_offset", 0)),
            None,
            None,
            int(info.get("connected_slaves", 0)),
        )
    return RedisState(
        role,
        int(info.get("slave_repl_offset", 0)),
        info.get("master_link_status"),
        f"{info.get('master_host')}:{info.get('master_port')}",
        0,
    )


def pause_writes(endpoint: RedisEndpoint, seconds: float) -> None:
    """Stop client writes on a master for ``seconds`` (reads go on): the Redis side of fencing."""
    _call(
        endpoint,
        "CLIENT PAUSE",
        lambda c: c.execute_command("CLIENT", "PAUSE", int(seconds * 1000), "WRITE"),
    )


def unpause(endpoint: RedisEndpoint) -> None:
    _call(endpoint, "CLIENT UNPAUSE", lambda c: c.execute_command("CLIENT", "UNPAUSE"))


def promote(endpoint: RedisEndpoint) -> bool:
    """``REPLICAOF NO ONE``; False when it already was a master."""
    if state(endpoint).role == "master":
        return False
    _call(endpoint, "REPLICAOF NO ONE", lambda c: c.execute_command("REPLICAOF", "NO", "ONE"))
    return True


def follow(endpoint: RedisEndpoint, master: RedisEndpoint) -> bool:
    """Make ``endpoint`` a replica of ``master``; False when it already follows it."""
    current = state(endpoint)
    if current.role == "slave" and current.master == f"{master.host}:{master.port}":
        return False
    _call(
        endpoint,
        "REPLICAOF",
        lambda c: c.execute_command("REPLICAOF", master.host, str(master.port)),
    )
    if master.password:
        _call(
            endpoint, "CONFIG SET masterauth", lambda c: c.config_set("masterauth", master.password)
        )
    return True


def wait_in_sync(master: RedisEndpoint, replica: RedisEndpoint, timeout: float) -> dict[str, int]:
    """Wait until the replica's link is up and its offset equals the master's; both offsets."""
    deadline = time.monotonic() + timeout
    while True:
        source, copy = state(master), state(replica)
        if copy.link == "up" and copy.offset >= source.offset:
            return {"master_offset": source.offset, "replica_offset": copy.offset}
        if time.monotonic() >= deadline:
            raise UnavailableError(
                f"Redis replica {replica.describe()} not in sync after {timeout:g} s "
                f"(link {copy.link}, offset {copy.offset} of {source.offset})"
            )
        time.sleep(0.05)


def write_probe(endpoint: RedisEndpoint, key: str, value: str) -> bool:
    """SET then GET: True when the node accepted the write and reads it back."""

    def probe(c: redis.Redis) -> bool:
        c.set(key, value, ex=3600)
        return bool(c.get(key) == value.encode())

    return bool(_call(endpoint, "write probe", probe))
