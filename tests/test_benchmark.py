"""scripts/benchmark.py runs end to end at toy sizes and reports consistent figures (the timings themselves are
not checked: performance is read from the benchmark's output, never asserted in tests).

What is checked instead is everything that can be wrong without a slow machine being to blame: the printed tables
say what the JSON says (throughputs, min/max, the ratio to the peer, GFLOP per item, achieved TFLOP/s), every figure is
positive and finite, every row timed one batch, and the FLOP counts of our models are those of :mod:`sarlulc.flops`
for the configurations the rows name. A doctored result fails these checks (the negative controls)."""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import subprocess
import sys
from argparse import Namespace
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "benchmark.py"


def run_benchmark(tmp_path: Path, *args: str) -> tuple[dict, str]:
    out = tmp_path / "results.json"
    options = ["--warmup", "1", "--repeats", "2", "--threads", "1", "--json", str(out)]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args, *options],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text()), done.stdout


@pytest.fixture(scope="module")
def benchmark_script() -> Iterator[ModuleType]:
    """The benchmark script as a module (its configurations), without running it."""
    spec = importlib.util.spec_from_file_location("benchmark_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def printed_tables(printed: str) -> list[dict[str, list[str]]]:
    """Every markdown table of the output: row name -> its cells, one dict per table in print order."""
    tables: list[dict[str, list[str]]] = []
    for line in printed.splitlines():
        if line.startswith("## "):
            tables.append({})
        elif line.startswith("| ") and tables and not line.startswith("| model"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            tables[-1][cells[0]] = cells[1:]
    return [table for table in tables if table]


def check_report(results: list[dict], printed: str, references: list[str], batch_size: int) -> None:
    """The printed tables against the JSON results (see the module docstring); ``references``: each table's peer."""
    by_name = {result["name"]: result for result in results}
    tables = printed_tables(printed)
    assert len(tables) == len(references)
    assert sorted(name for table in tables for name in table) == sorted(by_name)
    for table, reference in zip(tables, references):
        peer = by_name[reference]
        for name, cells in table.items():
            result = by_name[name]
            throughput, slowest, fastest, ratio, gflop, tflops = cells[:6]
            assert result["items"] == batch_size, name
            for key in ("seconds", "seconds_min", "seconds_max", "throughput"):
                assert math.isfinite(result[key]) and result[key] > 0, (name, key)
            assert result["seconds_min"] <= result["seconds"] <= result["seconds_max"], name
            assert result["throughput"] == pytest.approx(result["items"] / result["seconds"])
            assert float(throughput) == pytest.approx(result["throughput"], abs=0.006), name
            assert float(slowest) == pytest.approx(result["items"] / result["seconds_max"], abs=0.006), name
            assert float(fastest) == pytest.approx(result["items"] / result["seconds_min"], abs=0.006), name
            assert ratio.endswith("x")
            assert float(ratio[:-1]) == pytest.approx(result["throughput"] / peer["throughput"], abs=6e-4), name
            flops = result["flops_per_item"]
            assert flops is not None and math.isfinite(flops) and flops > 0, name
            assert float(gflop) == pytest.approx(flops / 1e9, abs=0.006), name
            assert float(tflops) == pytest.approx(flops * result["throughput"] / 1e12, abs=6e-4), name
        assert table[reference][3] == "1.000x"


SEGMENT_SWITCHES = {  # row name (after the dims tag) -> (high-res injection, refine-up head)
    "SarLulc, refinements on (ours)": (True, True),
    "SarLulc, refinements off (ours)": (False, False),
    "SarLulc, high-res injection only": (True, False),
    "SarLulc, refine-up head only": (False, True),
}


def test_segment_benchmark_compares_equal_architectures(tmp_path, benchmark_script):
    from sarlulc.flops import segmentation_flops

    results, printed = run_benchmark(
        tmp_path, "segment", "--dims", "tiny", "--image-size", "256", "--batch-size", "1", "--each-refinement"
    )
    rows = results["segment"]
    by_name = {result["name"]: result for result in rows}
    assert len(by_name) == 5
    peer = "[tiny] UperNet + Swin (transformers)"
    check_report(rows, printed, [peer], batch_size=1)
    # Our rows count the FLOPs of the model with their switches, as sarlulc.flops computes them.
    arguments = Namespace(image_size=256, window=8)
    for name, (highres, refine) in SEGMENT_SWITCHES.items():
        config = benchmark_script._segment_model(arguments, "tiny", highres, refine).config
        assert (config.use_highres_injection, config.use_refine_up_head) == (highres, refine)
        assert by_name[f"[tiny] {name}"]["flops_per_item"] == segmentation_flops(config, 1, 256, 256).forward, name
    # With the refinements off, our model is UperNet on a Swin encoder: our analytic count equals PyTorch's count of
    # the transformers model, so the two do the same work and the time ratio is a fair comparison.
    ours_off = by_name["[tiny] SarLulc, refinements off (ours)"]["flops_per_item"]
    assert ours_off == by_name[peer]["flops_per_item"]
    assert by_name["[tiny] SarLulc, refinements on (ours)"]["flops_per_item"] > ours_off
    assert "time over all-off" in printed

    # Negative controls: a row made twice as fast (consistently within the JSON), or a FLOP count 1 % off, no longer
    # matches the printed table.
    faster = copy.deepcopy(rows)
    faster[0].update({key: faster[0][key] / 2 for key in ("seconds", "seconds_min", "seconds_max")})
    faster[0]["throughput"] *= 2
    more_flops = copy.deepcopy(rows)
    more_flops[0]["flops_per_item"] *= 1.01
    for doctored in (faster, more_flops):
        with pytest.raises(AssertionError):
            check_report(doctored, printed, [peer], batch_size=1)


def test_pretrain_benchmark_reports_every_model(tmp_path, benchmark_script):
    from sarlulc import SarMixMAEConfig
    from sarlulc.flops import pretraining_flops

    options = ["--image-size", "128", "--window", "4", "--batch-size", "2", "--profile", "2"]
    results, printed = run_benchmark(tmp_path, "pretrain", *options)
    rows = results["pretrain"]
    names = [result["name"] for result in rows]
    assert names == [
        "SAR-W-MixMAE (ours)",
        "SimMIM (transformers Swin)",
        "MAE (transformers ViT)",
        "encoder: ours, group-masked",
        "encoder: transformers SwinModel",
    ]
    check_report(rows, printed, ["SimMIM (transformers Swin)", "encoder: transformers SwinModel"], batch_size=2)
    dims = benchmark_script.DIMS["tiny"]
    decoder_dim, decoder_depth, decoder_heads = dims["decoder"]
    ours = SarMixMAEConfig(
        image_size=128,
        window_size=4,
        embed_dim=dims["embed_dim"],
        depths=dims["depths"],
        num_heads=dims["num_heads"],
        decoder_embed_dim=decoder_dim,
        decoder_depth=decoder_depth,
        decoder_num_heads=decoder_heads,
    )
    flops = {result["name"]: result["flops_per_item"] for result in rows}
    assert flops["SAR-W-MixMAE (ours)"] == pretraining_flops(ours, 1, 128, 128).training
    # equal encoder tokens; the dual-reconstruction decoder adds a few percent
    assert 1.0 < flops["SAR-W-MixMAE (ours)"] / flops["SimMIM (transformers Swin)"] < 1.15

    doctored = copy.deepcopy(rows)
    doctored[1]["items"] = 3  # a row that timed another batch size
    with pytest.raises(AssertionError):
        check_report(doctored, printed, ["SimMIM (transformers Swin)", "encoder: transformers SwinModel"], batch_size=2)

    # --profile: the profiled matrix products of our step are the model's matrix products (the analytic count also
    # has the patch-embedding convolution and the decoder's fused attention, so it is a little larger)
    products = rows[0]["extra"]["profile"]["products_flops"]
    assert 0.95 * 2 * flops["SAR-W-MixMAE (ours)"] <= products <= 2 * flops["SAR-W-MixMAE (ours)"]
    check_target_budget(rows, printed, batch_size=2)
    for key, factor in (("step_ms_at_speedup", 1.15 / 1.10), ("rest_budget_ms_at_fraction", 0.9)):
        doctored = copy.deepcopy(rows)
        doctored[0]["extra"]["target_budget"][key] *= factor  # e.g. a 1.10x target passed off as 1.15x
        with pytest.raises(AssertionError):
            check_target_budget(doctored, printed, batch_size=2)


def check_target_budget(rows: list[dict], printed: str, batch_size: int) -> None:
    """The targets' time budget (JSON and printed) against its definition, from the timed steps, the profile of our
    step, the measured peak and our FLOPs."""
    by_name = {row["name"]: row for row in rows}
    ours, peer = by_name["SAR-W-MixMAE (ours)"], by_name["SimMIM (transformers Swin)"]
    profile = ours["extra"]["profile"]
    budget = ours["extra"]["target_budget"]
    assert 0 < profile["products_ms"] < profile["step_ms"]
    peak = ours["extra"]["matmul_peak_flops"]
    step = 1e3 * ours["seconds"]
    products = step * profile["products_ms"] / profile["step_ms"]
    step_at_fraction = 1e3 * ours["flops_per_item"] * batch_size / (0.70 * peak)
    step_at_speedup = 1e3 * peer["seconds"] / 1.15
    expected = {
        "step_ms": step,
        "peer_step_ms": 1e3 * peer["seconds"],
        "products_ms": products,
        "products_fraction_of_peak": profile["products_flops"] / (profile["products_ms"] / 1e3) / peak,
        "rest_ms": step - products,
        "step_ms_at_fraction": step_at_fraction,
        "rest_budget_ms_at_fraction": step_at_fraction - products,
        "step_ms_at_speedup": step_at_speedup,
        "rest_budget_ms_at_speedup": step_at_speedup - products,
    }
    for key, value in expected.items():
        assert budget[key] == pytest.approx(value, rel=1e-9), key
    lines = printed.split("## what the pretraining targets leave")[1].splitlines()
    for prefix, step_key, rest_key in (
        (">= 70% of the measured peak", "step_ms_at_fraction", "rest_budget_ms_at_fraction"),
        (">= 1.15x SimMIM", "step_ms_at_speedup", "rest_budget_ms_at_speedup"),
    ):
        line = next(line for line in lines if line.startswith(prefix))
        assert float(line.split("a step of <= ")[1].split(" ms")[0]) == pytest.approx(budget[step_key], abs=0.051)
        if budget[rest_key] > 0:
            assert float(line.split("leaving ")[1].split(" ms")[0]) == pytest.approx(budget[rest_key], abs=0.051)
        else:
            assert "leaving no time" in line


def test_data_benchmark_reports_product_reads_next_to_bare_reads(tmp_path):
    results, printed = run_benchmark(tmp_path, "data", "--mosaic-size", "256", "--data-window", "128")
    rows = results["data"]
    names = [row["name"] for row in rows]
    sources = ("/vsitar/", "extracted")
    assert names == [
        *(f"{kind}, {where}" for where in sources for kind in ("open_scene + read_db", "bare rasterio")),
        "bare rasterio, extracted, memory-mapped",
        *(f"{kind}, {where}" for where in sources for kind in ("read_db", "bare reads")),
        "bare reads, extracted, memory-mapped",
    ]
    check_data_report(rows, printed)
    doctored = copy.deepcopy(rows)  # a row twice as fast as the table says: the check must notice
    doctored[0].update({key: doctored[0][key] / 2 for key in ("seconds", "seconds_min", "seconds_max")})
    doctored[0]["throughput"] *= 2
    with pytest.raises(AssertionError):
        check_data_report(doctored, printed)


def check_data_report(rows: list[dict], printed: str) -> None:
    """Every printed row says what its JSON result says: windows/s (median, slowest, fastest round) and the ratio to
    the bare reads of the same source with GDAL's defaults; every row read the 4 windows of the 256 px tile; the
    calibrated reads of the extracted files are also compared with the memory-mapped bare reads."""
    by_name = {row["name"]: row for row in rows}
    table_rows = {}
    for line in printed.splitlines():
        if line.startswith("| ") and not line.startswith("| run"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            table_rows[cells[0]] = cells[1:]
    assert sorted(table_rows) == sorted(by_name)
    for name, (throughput, slowest, fastest, ratio) in table_rows.items():
        row = by_name[name]
        assert row["items"] == 4, name
        assert row["seconds_min"] <= row["seconds"] <= row["seconds_max"], name
        assert float(throughput) == pytest.approx(row["items"] / row["seconds"], abs=0.006), name
        assert float(slowest) == pytest.approx(row["items"] / row["seconds_max"], abs=0.006), name
        assert float(fastest) == pytest.approx(row["items"] / row["seconds_min"], abs=0.006), name
        where = name.split(", ")[1]
        opening = name.startswith(("open_scene", "bare rasterio"))
        peer = by_name[f"{'bare rasterio' if opening else 'bare reads'}, {where}"]
        assert float(ratio[:-1]) == pytest.approx(peer["seconds"] / row["seconds"], abs=6e-4), name
    for ours, mapped in (
        ("open_scene + read_db, extracted", "bare rasterio, extracted, memory-mapped"),
        ("read_db, extracted", "bare reads, extracted, memory-mapped"),
    ):
        line = next(line for line in printed.splitlines() if line.startswith(f"({ours}: "))
        ratio = float(line.split(": ")[1].split("x ")[0])
        assert ratio == pytest.approx(by_name[mapped]["seconds"] / by_name[ours]["seconds"], abs=6e-4), line


def test_profile_counts_the_flops_of_the_matrix_products_from_their_shapes(benchmark_script):
    """The --profile ceiling line divides the matrix products' FLOPs (from recorded shapes) by their time: those FLOPs
    must be what PyTorch's own counter finds for the same work."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    layer = torch.nn.Linear(24, 40)
    tokens, right, batch, weights = (
        torch.randn(21, 24),
        torch.randn(40, 8),
        torch.randn(5, 7, 24),
        torch.randn(5, 24, 16),
    )

    def work():
        return (layer(tokens) @ right).sum() + torch.bmm(batch, weights).sum()  # addmm, mm, bmm

    def profiled_flops(repeats: int) -> int:
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as recorded:
            for _ in range(repeats):
                work()
        products = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")
        events = [e for e in recorded.key_averages(group_by_input_shape=True) if e.key in products]
        assert {e.key for e in events} == {"aten::mm", "aten::addmm", "aten::bmm"}
        return sum(benchmark_script.matrix_product_flops(e.key, e.input_shapes) * e.count for e in events)

    with FlopCounterMode(display=False) as counter:
        work()
    assert profiled_flops(1) == counter.get_total_flops() == 2 * (21 * 24 * 40 + 21 * 40 * 8 + 5 * 7 * 24 * 16)
    # negative control: the comparison sees a count that is off (the work profiled twice)
    assert profiled_flops(2) != counter.get_total_flops()


def test_a_negative_profile_count_is_refused_in_one_line():
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "pretrain", "--profile", "-3"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .endswith("--profile: the number of operators to print must be >= 0, got -3")
    )
    assert "Traceback" not in done.stderr and not done.stdout
