"""Every benchmark script still imports (they use the test helpers, which move): run as a
module that is not ``__main__``, so nothing is started."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.parametrize("script", sorted(BENCH.glob("*.py")), ids=lambda p: p.name)
def test_benchmark_script_imports(script: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    namespace = runpy.run_path(str(script), run_name="bench_import_check")
    assert callable(namespace["main"])
