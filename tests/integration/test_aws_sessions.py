"""Every S3 client of a process reads botocore's service models through one loader: a backup
reaches S3 through some twenty stores, and each new session used to parse S3's model, its
endpoint rules and the partitions again (~0.1 s a client). Both ways a session is built are
covered: the CLI's own (the Connection's keys) and Airflow's (the amazon provider's hook)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.loaders import JSONFileLoader

from disaster_recovery.airflow_support import connections
from disaster_recovery.clients.aws_sessions import session_for, sharing_models
from disaster_recovery.clients.s3 import ObjectStore
from disaster_recovery.config.endpoints import Deployment
from disaster_recovery.config.model import load_settings


@pytest.fixture
def files_read(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The model files botocore reads from disk while the test runs."""
    read: list[str] = []
    original = JSONFileLoader.load_file

    def counting(self: JSONFileLoader, file_path: str) -> Any:
        read.append(file_path)
        return original(self, file_path)

    monkeypatch.setattr(JSONFileLoader, "load_file", counting)
    yield read


@pytest.mark.parametrize(
    "deployment_of",
    [
        pytest.param(lambda: Deployment(load_settings()), id="cli"),
        pytest.param(connections.deployment, id="airflow-provider-hook"),
    ],
)
def test_new_stores_parse_no_model_again_and_still_work(
    sandbox_env: dict[str, str],
    files_read: list[str],
    deployment_of: Callable[[], Deployment],
) -> None:
    deployment = deployment_of()
    settings = deployment.settings
    region = settings.regions.primary

    def new_store() -> ObjectStore:
        return ObjectStore(deployment.aws(region), settings.bucket(region))

    key = f"session-test/{uuid.uuid4().hex}"
    new_store().put_bytes(key, b"first")  # the first client of the process may read the models
    read_before = len(files_read)
    stores = [new_store() for _ in range(3)]
    for store in stores:
        assert store.get_bytes(key) == b"first"  # a working client of its own session ...
    assert files_read[read_before:] == []  # ... that read no model file again
    sessions = [session_for(store.endpoint) for store in stores]
    assert len({id(session) for session in sessions}) == 3  # credentials stay per session
    assert len({id(s._session.get_component("data_loader")) for s in sessions}) == 1
    new_store().delete([key])


def test_a_session_is_given_the_shared_loader_once_even_from_many_threads() -> None:
    """The WAL archiver builds both regions' clients from one session on two threads: the
    loader is registered once, before any client, never while another thread reads it."""
    import boto3

    session = boto3.session.Session()
    core = session._session
    registered: list[str] = []
    original = core.register_component

    def counting(name: str, component: Any) -> None:
        registered.append(name)
        original(name, component)

    core.register_component = counting
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda _: sharing_models(session), range(32)))
    assert registered == ["data_loader"]
    other = sharing_models(boto3.session.Session())._session
    assert core.get_component("data_loader") is other.get_component("data_loader")


def test_the_archivers_regions_build_their_store_once_from_many_threads(
    sandbox_env: dict[str, str],
) -> None:
    """A push runs each region on a thread of its own; the archive's one session builds each
    region's client once, never from two threads at the same time."""
    from disaster_recovery.wal.archive import WalArchive

    archive = WalArchive.for_deployment(Deployment(load_settings()))
    region = archive.regions[0]
    together = threading.Barrier(8)

    def store_at_once(_: int) -> ObjectStore:
        together.wait()
        return archive.store(region)

    with ThreadPoolExecutor(max_workers=8) as pool:
        stores = list(pool.map(store_at_once, range(8)))
    assert len({id(store) for store in stores}) == 1
    key = f"session-test/{uuid.uuid4().hex}"
    stores[0].put_bytes(key, b"archived")
    assert archive.store(region).get_bytes(key) == b"archived"
    stores[0].delete([key])
