"""The DR dashboard plugin: served by FastAPI, reading the S3 catalog of the sandbox."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest
from fastapi.testclient import TestClient

from disaster_recovery.catalog.listing import Catalog
from disaster_recovery.catalog.manifests import Manifest, Verification
from disaster_recovery.catalog.names import backup_file_name
from disaster_recovery.clients.s3 import ObjectStore
from disaster_recovery.config.endpoints import Deployment
from dr_sandbox import Sandbox

PLUGIN = Path(__file__).resolve().parents[2] / "plugins" / "dr_dashboard.py"


def load_plugin() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dr_dashboard", PLUGIN)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def recorded_backup(sandbox: Sandbox, sandbox_env: dict[str, str]) -> Manifest:
    settings = sandbox.settings()
    store = ObjectStore(sandbox.aws("us-east-1"), settings.bucket("us-east-1"))
    catalog = Catalog(store, "dashboard-test")
    started = datetime.now(UTC) - timedelta(hours=2)
    file = backup_file_name("postgresql_weekly", started)
    manifest = Manifest(
        backup_type="postgresql_weekly",
        file=file,
        bucket=store.bucket,
        key=catalog.key_for(file),
        size_bytes=1234,
        sha256="0" * 64,
        started_at=started,
        finished_at=started,
        status="verified",
        verification=Verification(checks={"sha256": "ok"}, verified_at=started, verified_by="test"),
        replicas={"us-west-2": {"sha256": "0" * 64}},
    )
    catalog.save(manifest)
    yield manifest
    store.delete([manifest.manifest_key])


def test_page_and_json_show_the_newest_verified_backup(
    recorded_backup: Manifest, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "dr_config.yaml"
    config.write_text(
        sandbox.config_file.read_text().replace("prefix: litper", "prefix: dashboard-test")
    )
    monkeypatch.setenv("DR_CONFIG", str(config))
    client = TestClient(load_plugin().app)

    status = client.get("/api/status").json()
    weekly = next(row for row in status["backups"] if row["backup_type"] == "postgresql_weekly")
    assert weekly["newest_verified"] == recorded_backup.file
    assert weekly["age"] == "2h 00m"
    assert weekly["replicated_to"] == ["us-west-2"]
    assert status["objectives"]["rpo"] == "15m"

    page = client.get("/")
    assert page.status_code == 200
    assert recorded_backup.file in page.text and "Litper disaster recovery" in page.text


def test_an_unreadable_section_shows_its_error_and_the_rest_renders(sandbox: Sandbox) -> None:
    from disaster_recovery.config.endpoints import ConnectionFields
    from disaster_recovery.monitoring import dashboard

    def broken_lookup(conn_id: str) -> ConnectionFields:
        return ConnectionFields(
            conn_id,
            "aws",
            login="testing",
            password="testing",
            extra={"endpoint_url": "http://127.0.0.1:9", "region_name": "us-east-1"},
        )

    status = dashboard.collect(Deployment(sandbox.settings(), lookup=broken_lookup))
    assert "cannot reach S3" in status["backups"]["error"]
    assert status["objectives"]["rto"] == "30m"
    assert "Cannot read" in dashboard.render_html(status)


def test_plugin_registers_the_app_and_a_nav_entry() -> None:
    plugin = load_plugin().DisasterRecoveryPlugin
    assert plugin.fastapi_apps[0]["url_prefix"] == "/dr"
    assert plugin.external_views[0]["href"] == "/dr/"
