"""The ablation ladder: its statistics (checked against independent computations), a 2-seed toy run of all six rungs
(the report's structure and arithmetic, the table against the JSON, the plot, each saved model re-scored here), the
benchmark's rare-class exposure, and the command's argument checks."""

from __future__ import annotations

import copy
import json
import math
import re
import statistics
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from helpers_training import shared_scene, shared_tiles
from sarlulc.data.classes import LULC_9
from sarlulc.errors import UsageError
from sarlulc.files import json_ready
from sarlulc.training import AblationArguments
from sarlulc.training.ablation import PRETRAININGS, RUNGS, benchmark_exposure, check_ablation_arguments, run_ablation
from sarlulc.training.ablation_report import (
    METRICS,
    format_markdown,
    paired_difference,
    spread,
    summarize,
    t_quantile_975,
)
from sarlulc_cli import main
from sarlulc_cli.arguments import AblationSplitArguments

SEEDS = (0, 1)
KEYS = [metric.key for metric in METRICS]


def _t_975_closed_form(df: int) -> float:
    """The two t quantiles with a closed form: Cauchy (df 1) and df 2."""
    if df == 1:
        return math.tan(math.pi * 0.475)
    if df == 2:
        p = 0.975
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    raise ValueError(df)


# ----------------------------------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------------------------------
def test_t_quantiles_closed_forms():
    for df in (1, 2):
        assert t_quantile_975(df) == pytest.approx(_t_975_closed_form(df), abs=1e-6)
    with pytest.raises(ValueError):
        t_quantile_975(0)


def test_t_quantiles_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in [*range(1, 61), 100, 1000]:
        assert t_quantile_975(df) == pytest.approx(float(stats.t.ppf(0.975, df)), abs=1e-6), df


def test_spread_and_paired_difference_against_statistics():
    upper, lower = [0.50, 0.53, 0.58, None], [0.40, 0.41, 0.47, 0.3]
    result = paired_difference(upper, lower)
    differences = [0.10, 0.12, 0.11]
    assert result.n == 3 and math.isnan(result.per_seed[3])
    assert result.mean == pytest.approx(statistics.mean(differences), abs=1e-12)
    assert result.std == pytest.approx(statistics.stdev(differences), abs=1e-12)
    half = _t_975_closed_form(2) * statistics.stdev(differences) / math.sqrt(3)
    assert (result.low, result.high) == pytest.approx((statistics.mean(differences) - half, result.mean + half))
    assert result.verdict == "up" and result.low > 0
    assert paired_difference([0.1, 0.5], [0.3, 0.2]).verdict == "unclear"
    assert paired_difference([0.1, 0.2, 0.15], [0.3, 0.41, 0.36]).verdict == "down"
    assert paired_difference([0.1, None], [0.3, 0.35]).verdict == "n/a"
    values = spread([0.2, float("nan"), 0.4, None, 0.9])
    assert (values.n, values.mean, values.std) == pytest.approx(
        (3, statistics.mean([0.2, 0.4, 0.9]), statistics.stdev([0.2, 0.4, 0.9]))
    )
    assert math.isnan(spread([0.3]).std) and spread([]).n == 0
    with pytest.raises(ValueError, match="same seeds"):
        paired_difference([0.1], [0.1, 0.2])


# ----------------------------------------------------------------------------------------------------------------------
# The benchmark scene: more solar farms and bare patches, nothing else changed
# ----------------------------------------------------------------------------------------------------------------------
def test_rare_abundance_only_adds_rare_pixels(tmp_path: Path):
    import rasterio

    from sarlulc.data.synthetic import SyntheticSceneConfig, generate_scene

    codes = {}
    for abundance in (1.0, 3.0):
        result = generate_scene(tmp_path / str(abundance), size=512, seed=3, rare_abundance=abundance, progress=False)
        with rasterio.open(result.labels) as labels:
            codes[abundance] = labels.read(1)
        with rasterio.open(result.scene) as scene:
            assert float(scene.tags()["SARLULC_SYNTHETIC_RARE_ABUNDANCE"]) == abundance
    rare_codes = (10, 12)  # bare, solar panel
    before, after = np.isin(codes[1.0], rare_codes), np.isin(codes[3.0], rare_codes)
    changed = codes[1.0] != codes[3.0]
    assert changed.any() and after.sum() > 1.5 * before.sum()
    assert after[before].all()  # every farm and patch of the default scene is still there
    assert after[changed].all()  # and every changed pixel became one
    with pytest.raises(ValueError, match="rare_abundance"):
        SyntheticSceneConfig(rare_abundance=0.0)


# ----------------------------------------------------------------------------------------------------------------------
# A toy ladder: 2 seeds, every rung, a few steps
# ----------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ladder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    shared_tiles(tmp_path_factory)  # builds the shared 256 px scene
    output = tmp_path_factory.mktemp("ablation")
    summary = run_ablation(
        AblationArguments(
            output_dir=str(output),
            scene=str(shared_scene()),
            seeds=len(SEEDS),
            seed=SEEDS[0],
            pretrain_steps=2,
            finetune_steps=3,
            eval_steps=3,
            batch_size=4,
            disable_tqdm=True,
        ),
        echo=lambda line: None,
    )
    return output, summary


def _check_arithmetic(report: dict) -> None:
    """Means, stds and paired intervals of ``report`` recomputed from its per-seed values (statistics, numpy)."""
    for rung in report["rungs"]:
        for key in KEYS:
            values = [run[key] for run in rung["runs"] if run[key] is not None]
            assert rung["n"][key] == len(values)
            if values:
                assert rung["mean"][key] == pytest.approx(statistics.mean(values), abs=1e-12)
            if len(values) >= 2:
                assert rung["std"][key] == pytest.approx(statistics.stdev(values), abs=1e-12)
    by_number = {rung["rung"]: rung for rung in report["rungs"]}
    for difference in report["differences"]:
        upper, lower = by_number[difference["rung"]], by_number[difference["below"]]
        for key in KEYS:
            pairs = [(a[key], b[key]) for a, b in zip(upper["runs"], lower["runs"])]
            d = np.array([a - b for a, b in pairs if a is not None and b is not None])
            values = difference["metrics"][key]
            assert values["n"] == len(d)
            if len(d) == 2:
                half = _t_975_closed_form(1) * np.std(d, ddof=1) / math.sqrt(2)
                assert values["mean"] == pytest.approx(d.mean(), abs=1e-12)
                # centred on the mean, half-width t * sd / sqrt(n) (the table holds t to 6 decimals)
                assert (values["low"] + values["high"]) / 2 == pytest.approx(d.mean(), abs=1e-12)
                assert (values["high"] - values["low"]) / 2 == pytest.approx(half, rel=1e-6, abs=1e-12)


def test_ladder_report_structure_and_arithmetic(ladder):
    output, summary = ladder
    saved = json.loads((output / "ablation.json").read_text())
    assert saved["seeds"] == list(SEEDS) and list(saved["metrics"]) == KEYS
    assert [rung["rung"] for rung in saved["rungs"]] == [1, 2, 3, 4, 5, 6]
    for rung, spec in zip(saved["rungs"], RUNGS):
        assert rung["setting"] == spec.name and rung["targets"] == list(spec.targets)
        assert [run["seed"] for run in rung["runs"]] == list(SEEDS)
        assert all(run[key] is None or 0.0 <= run[key] <= 1.0 for run in rung["runs"] for key in KEYS)
    assert [(d["rung"], d["below"]) for d in saved["differences"]] == [(2, 1), (3, 2), (4, 3), (5, 4), (6, 5)]
    assert saved["arguments"]["seeds"] == 2 and saved["arguments"]["split_fractions"] == [0.6, 0.2, 0.2]
    assert saved["benchmark"]["tiles"]["test"] > 0
    assert saved == json.loads(json.dumps(json_ready({k: v for k, v in summary.items() if k != "files"})))
    _check_arithmetic(saved)


def test_ladder_negative_control(ladder):
    """A doctored per-seed value breaks the check above, and summarize moves the mean with it."""
    _, summary = ladder
    report = json.loads((Path(summary["files"]["json"])).read_text())
    doctored = copy.deepcopy(report)
    doctored["rungs"][0]["runs"][1]["mean_iou"] += 0.1
    with pytest.raises(AssertionError):
        _check_arithmetic(doctored)
    ladder_input = [{k: rung[k] for k in ("rung", "setting", "targets", "runs")} for rung in doctored["rungs"]]
    again = summarize(ladder_input, report["seeds"])
    assert again["rungs"][0]["mean"]["mean_iou"] == pytest.approx(report["rungs"][0]["mean"]["mean_iou"] + 0.05)
    assert again["differences"][0]["metrics"]["mean_iou"]["mean"] == pytest.approx(
        report["differences"][0]["metrics"]["mean_iou"]["mean"] - 0.05, abs=1e-12
    )


_NUMBER = r"[+-]?\d+\.\d\d|n/a"


def _value(text: str) -> float | None:
    return None if text == "n/a" else float(text)


def _percent(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(100 * value, 2)


def test_ladder_table_equals_json(ladder):
    output, _ = ladder
    report = json.loads((output / "ablation.json").read_text())
    rows = [line for line in (output / "ablation.md").read_text().splitlines() if re.match(r"\| \d \|", line)]
    ladder_rows, difference_rows = rows[: len(report["rungs"])], rows[len(report["rungs"]) :]
    assert len(difference_rows) == len(report["differences"])
    for line, rung in zip(ladder_rows, report["rungs"]):
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert cells[:2] == [str(rung["rung"]), rung["setting"]]
        for cell, key in zip(cells[2:], KEYS):
            numbers = [_value(v) for v in re.findall(_NUMBER, cell)]
            assert numbers[0] == _percent(rung["mean"][key])
            if rung["n"][key] >= 2:
                assert numbers[1] == _percent(rung["std"][key])
    for line, difference in zip(difference_rows, report["differences"]):
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert cells[:3] == [str(difference["rung"]), difference["setting"], str(difference["below"])]
        for cell, key in zip(cells[3:], KEYS):
            values = difference["metrics"][key]
            assert cell.startswith("**") == (key in difference["targets"])
            numbers = [_value(v) for v in re.findall(_NUMBER, cell)]
            assert numbers == [_percent(values["mean"]), _percent(values["low"]), _percent(values["high"])]


def test_ladder_plot_decodes(ladder):
    output, _ = ladder
    with Image.open(output / "ablation.png") as image:
        image.load()
        assert image.format == "PNG" and image.width > 400 and image.height > 200


def _confusion(prediction: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    keep = (prediction < num_classes) & (target < num_classes)
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (target[keep], prediction[keep]), 1)
    return counts


def test_ladder_scores_are_what_the_saved_models_score(ladder):
    """Each rung's saved model of seed 0 has its rung's switches and pretraining, and scores on the test tiles (plain
    numpy confusion counts here) what the report says."""
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

    output, summary = ladder
    test = datasets.load_from_disk(str(output / "tiles"))["test"].with_format("numpy")
    train_labels = np.asarray(datasets.load_from_disk(str(output / "tiles"))["train"].with_format("numpy")["label"])
    shares = np.bincount(train_labels.ravel(), minlength=256)[:9] / np.count_nonzero(train_labels != 255)
    rare = np.flatnonzero(shares < 0.02)
    assert len(test) > 0
    for rung, spec in zip(summary["rungs"], RUNGS):
        run = rung["runs"][0]
        model_dir = Path(run["model_dir"])
        assert model_dir == output / f"rung{spec.number}" / f"seed{SEEDS[0]}" / "best"
        model = AutoModelForSemanticSegmentation.from_pretrained(model_dir).eval()
        config = model.config
        assert (config.use_highres_injection, config.use_refine_up_head) == (
            spec.highres_injection,
            spec.refine_up_head,
        )
        assert config.class_weight_alpha == (0.5 if spec.reweighting else 0.0)
        pretrained = json.loads((model_dir.parent / "training_args.json").read_text())["pretrained"]
        if spec.pretraining is None:
            assert pretrained is None
        else:
            assert Path(pretrained) == output / "pretrain" / f"{spec.pretraining}-seed{SEEDS[0]}"
            weighting = json.loads((Path(pretrained) / "config.json").read_text())["loss_weighting"]
            assert f"loss_weighting={weighting}" in PRETRAININGS[spec.pretraining]
        processor = AutoImageProcessor.from_pretrained(model_dir)
        batch = processor.preprocess(
            list(test["image"]), valid_masks=list(test["valid_mask"]), input_kind="db", return_tensors="pt"
        )
        with torch.no_grad():
            prediction = model(pixel_values=batch["pixel_values"], pixel_mask=batch["pixel_mask"]).logits.argmax(1)
        counts = _confusion(prediction.numpy(), np.asarray(test["label"]), LULC_9.num_classes)
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.diag(counts) / (counts.sum(0) + counts.sum(1) - np.diag(counts))
            recall = np.diag(counts) / counts.sum(1)
        assert run["mean_iou"] == pytest.approx(np.nanmean(iou), abs=1e-9)
        assert run["iou_water"] == pytest.approx(iou[LULC_9.water_id], abs=1e-9, nan_ok=True)
        rare_recall = recall[rare][np.isfinite(recall[rare])]
        expected_recall = rare_recall.mean() if rare_recall.size else math.nan
        assert run["rare_class_recall"] == pytest.approx(expected_recall, abs=1e-9, nan_ok=True)
        assert run["rare_classes"] == [LULC_9.names[i] for i in rare]
        report = json.loads((model_dir.parent / "test_report.json").read_text())
        assert report["mean_iou"] == pytest.approx(run["mean_iou"], abs=1e-12)


def test_benchmark_exposure_counts(ladder):
    output, summary = ladder
    splits = datasets.load_from_disk(str(output / "tiles"))
    exposure = benchmark_exposure(splits, LULC_9, batch_size=3, alpha=1.0)
    labels = {name: np.asarray(splits[name].with_format("numpy")["label"]) for name in splits}
    train = labels["train"]
    shares = np.bincount(train.ravel(), minlength=256)[:9] / np.count_nonzero(train != 255)
    rare = [i for i in range(9) if shares[i] < 0.02]
    assert list(exposure["rare_classes"]) == [LULC_9.names[i] for i in rare]
    for i in rare:
        values = exposure["rare_classes"][LULC_9.names[i]]
        for name, array in labels.items():
            assert values["pixels"][name] == int((array == i).sum())
            assert values["tiles"][name] == int(((array == i).reshape(len(array), -1).any(axis=1)).sum())
    hit = np.isin(train, rare).reshape(len(train), -1)
    tiles, hits = len(train), int(hit.any(axis=1).sum())
    # P(a batch of 3 distinct tiles misses every tile with a rare pixel), as a product of conditional probabilities
    expected = np.prod([(tiles - hits - k) / (tiles - k) for k in range(3)])
    assert exposure["p_step_without_rare"] == pytest.approx(max(expected, 0.0), abs=1e-12)
    assert exposure["rare_pixels_per_step"] == pytest.approx(3 * hit.sum() / tiles)
    assert exposure["alpha"] == 1.0
    assert summary["benchmark"]["batch_size"] == 4


# ----------------------------------------------------------------------------------------------------------------------
# Options
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rungs": [7]}, "--rungs"),
        ({"rungs": [2, 2]}, "twice"),
        ({"seeds": 0}, "--seeds"),
        ({"rare_abundance": 0.0}, "--rare_abundance"),
        ({"num_threads": -1}, "--num_threads"),
        ({"alpha": 1.5}, "--alpha"),
    ],
)
def test_bad_options_are_usage_errors(tmp_path: Path, options: dict, message: str):
    with pytest.raises(UsageError, match=message):
        check_ablation_arguments(AblationArguments(output_dir=str(tmp_path), **options), AblationSplitArguments())


def test_command_line_reports_bad_options_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture):
    status = main(["ablation", "--output_dir", str(tmp_path), "--seeds", "0"], prog="ablation.py")
    error = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(error) == 1 and "--seeds must be >= 1" in error[0]
    assert not (tmp_path / "ablation.json").exists()


def test_markdown_marks_targets_and_verdicts():
    ladder_input = [
        {
            "rung": 5,
            "setting": "a",
            "targets": [],
            "runs": [{"seed": s, **dict.fromkeys(KEYS, 0.1)} for s in (0, 1, 2)],
        },
        {
            "rung": 6,
            "setting": "b",
            "targets": ["rare_class_iou"],
            "runs": [{"seed": s, **dict.fromkeys(KEYS, 0.1), "rare_class_iou": 0.3 + 0.01 * s} for s in (0, 1, 2)],
        },
    ]
    text = format_markdown(summarize(ladder_input, [0, 1, 2]))
    row = next(line for line in text.splitlines() if line.startswith("| 6 | b | 5 |"))
    assert "**+21.00 [" in row and "rare-class IoU: raises it" in row
    assert "| 5 | a | 10.00 ± 0.00 |" in text
