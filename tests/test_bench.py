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
        assert [row.step for row in rows if row.size.startswith(size)] == list(bench.STEPS)
    for row in rows:
        assert row.device == "cpu" and row.ours > 0 and row.theirs > 0
        assert row.ours_mib >= 0 and row.theirs_mib >= 0
        table_row = f"| {row.device} | {row.size} | {row.step} | {row.ours * 1e3:.1f} | {row.theirs * 1e3:.1f} |"
        assert table_row in out
    assert out.startswith("Machine: ") and "torch " in out and "torchvision " in out
    assert out.count("images/s") == 2 * len(sizes)  # retina's and torchvision's inference throughput per size
