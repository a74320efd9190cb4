"""benchmarks/bench.py in its smoke mode: tiny sizes, one repeat. Checks that the code runs, that every case agrees
with torchvision (bench.py asserts that before timing) and that the table has every row. Times nothing."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the dataclasses in it look their module up there
    spec.loader.exec_module(module)
    return module


def test_smoke_run_has_every_row(bench, capsys):
    rows = bench.main(["--smoke"])  # raises if retina and torchvision disagree on any case
    out = capsys.readouterr().out
    sizes = sorted({row.size.split(",")[0] for row in rows})
    assert sizes == ["128×128 (padded 128×128)", "96×160 (padded 128×256)"]
    for size in sizes:
        measured = [(row.step, row.threads) for row in rows if row.size.startswith(size)]
        assert measured == [(step, 1) for step in bench.STEPS]  # the smoke run: 1 thread
    for row in rows:
        assert row.device == "cpu" and len(row.ours_runs) == len(row.theirs_runs) == 2
        assert min(row.ours_runs) > 0 and min(row.theirs_runs) > 0 and row.speedup > 0
        assert row.ours_mib >= 0 and row.theirs_mib >= 0
        assert bench.markdown_row(row) in out
        assert f"| {row.device} | {row.size} | {row.step} | {row.threads} | {row.ours * 1e3:.1f} (" in out
    assert out.startswith("Machine: ") and "torch " in out and "torchvision " in out
    assert out.count("images/s") == 2 * len(sizes)  # retina's and torchvision's inference throughput, per row
    for step, _ in bench.GOALS:
        assert f"- {step} ≥ " in out
    assert "- loss peak memory ≤ torchvision's: " in out


def test_spread_and_goals(bench):
    assert bench.spread([0.0123, 0.0119, 0.0130], 1e3) == "12.3 (11.9–13.0)"
    assert bench.spread([2.0], digits=2) == "2.00"
    row = bench.Row("cpu", "512×512", "loss", 1, [1.0, 2.0, 1.0], [4.0, 4.0, 1.0], 10.0, 20.0)
    assert row.ratios == [4.0, 2.0, 1.0] and row.speedup == 2.0  # the median of the run-by-run ratios
    assert bench.goal_lines([row]) == [
        "loss ≥ 3×: NOT met, lowest 2.00× (512×512, 1 thread)",
        "loss peak memory ≤ torchvision's: met, highest ratio 0.50",
    ]
