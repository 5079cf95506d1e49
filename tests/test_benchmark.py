"""scripts/benchmark.py runs end to end at toy sizes and reports consistent figures (the timings themselves are
not checked: performance is read from the benchmark's output, never asserted in tests)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_benchmark(tmp_path: Path, *args: str) -> tuple[dict, str]:
    out = tmp_path / "results.json"
    options = ["--warmup", "1", "--repeats", "2", "--threads", "1", "--json", str(out)]
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "benchmark.py"), *args, *options],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text()), done.stdout


def check_timings(results: list[dict]) -> None:
    for result in results:
        assert result["seconds_min"] <= result["seconds"] <= result["seconds_max"], result["name"]
        assert result["throughput"] == pytest.approx(result["items"] / result["seconds"])


def test_segment_benchmark_compares_equal_architectures(tmp_path):
    results, printed = run_benchmark(
        tmp_path, "segment", "--dims", "tiny", "--image-size", "256", "--batch-size", "1", "--each-refinement"
    )
    by_name = {result["name"]: result for result in results["segment"]}
    assert len(by_name) == 5
    check_timings(results["segment"])
    ours_off = by_name["[tiny] SarLulc, refinements off (ours)"]["flops_per_item"]
    upernet = by_name["[tiny] UperNet + Swin (transformers)"]["flops_per_item"]
    # With the refinements off, our model is UperNet on a Swin encoder: our analytic count equals PyTorch's count of
    # the transformers model, so the two do the same work and the time ratio is a fair comparison.
    assert ours_off == upernet
    assert by_name["[tiny] SarLulc, refinements on (ours)"]["flops_per_item"] > ours_off
    assert "1.000x" in printed and "time over all-off" in printed


def test_pretrain_benchmark_reports_every_model(tmp_path):
    results, printed = run_benchmark(tmp_path, "pretrain", "--image-size", "128", "--window", "4", "--batch-size", "2")
    names = [result["name"] for result in results["pretrain"]]
    assert any("SAR-W-MixMAE" in name for name in names) and any("SimMIM" in name for name in names)
    assert any("MAE (transformers ViT)" in name for name in names)
    check_timings(results["pretrain"])
    flops = {result["name"]: result["flops_per_item"] for result in results["pretrain"]}
    ours = next(value for name, value in flops.items() if "SAR-W-MixMAE" in name)
    simmim = next(value for name, value in flops.items() if "SimMIM" in name)
    assert 1.0 < ours / simmim < 1.15  # equal encoder tokens; the dual-reconstruction decoder adds a few percent
    assert "1.000x" in printed
