"""CI smoke run of ``benchmarks/run.py``: every measurement still runs against the current API.

Timings are not asserted (the machine is shared); the run only has to succeed and list every
measurement of ``benchmarks.run.MEASUREMENTS``. A baseline whose package is not installed
(NannyML, or Evidently outside the dev extra) may be listed as "not installed"; nothing may be
listed as "failed".
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "benchmarks" / "run.py"


def _measurements() -> dict[str, tuple[str, str]]:
    spec = importlib.util.spec_from_file_location("_bench_run", RUN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module.MEASUREMENTS


@pytest.mark.slow
def test_smoke_run_lists_every_measurement(tmp_path):
    out = tmp_path / "RESULTS.md"
    done = subprocess.run(
        [
            sys.executable,
            str(RUN),
            "--rows",
            "2e4",
            "--repeat",
            "1",
            "--out",
            str(out),
            "--cache",
            str(tmp_path / "cache"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # the measurement tables; a targets section (50 M / 10 M rows only) may follow them
    table = out.read_text().split("## Targets")[0]
    assert "## 20 k pairs" in table
    assert re.search(r"Machine: \d+ cores", table)
    rows = {
        line.split(" | ")[0].removeprefix("| "): line
        for line in table.splitlines()
        if line.startswith("| ") and not line.startswith("| measurement")
    }
    measurements = _measurements()
    assert set(rows) == set(measurements)
    for name, (module, _) in measurements.items():
        cells = [c.strip() for c in rows[name].strip("|").split("|")]
        if cells[1].startswith("not installed"):
            # Only the optional baselines (the bench extra) may be missing.
            assert module in ("evidently", "nannyml"), rows[name]
            continue
        assert float(cells[1]) > 0, rows[name]  # wall seconds
        assert float(cells[2]) > 0, rows[name]  # peak RSS MB
    # The week is generated in the cache folder (schema-v1 layout), not in the repository.
    (week,) = (tmp_path / "cache").glob("rows-20000-layout*")  # named by the files' layout
    assert (week / "manifest.json").exists()
    assert len(list((week / "pairs").glob("date=*/*.parquet"))) == 7
