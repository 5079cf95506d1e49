"""The ``sarlulc`` command line run in-process through ``sarlulc_cli.main``: ``synth``, ``demo`` and ``evaluate`` of
the demo's outputs. The command-line machinery itself (records, parser, exit statuses, help without torch) is in
test_cli_parsing.py."""

import json

import datasets
import numpy as np
import pytest
import rasterio

from sarlulc.data.classes import LULC_9
from sarlulc.demo import run_demo
from sarlulc_cli import main


@pytest.fixture(autouse=True)
def hf_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(cache))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache / "datasets"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache / "datasets")


def test_help_lists_the_subcommands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for command in ("synth", "demo", "predict", "evaluate", "pretrain", "finetune", "ablation", "push-to-hub"):
        assert f"    {command}" in out
    for command in ("synth", "demo"):
        assert main([command, "--help"]) == 0
        assert capsys.readouterr().out.startswith(f"usage: sarlulc {command} ")


def test_synth_2048_writes_a_georeferenced_pair(tmp_path, capsys):
    out = tmp_path / "synthetic"
    assert main(["synth", "--size", "2048", "--seed", "0", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    scene_path, labels_path = out / "scene.tif", out / "labels.tif"
    assert str(scene_path) in printed and str(labels_path) in printed
    with rasterio.open(scene_path) as scene, rasterio.open(labels_path) as labels:
        assert scene.crs.to_epsg() == 4326 and labels.crs == scene.crs
        assert scene.transform == labels.transform
        assert scene.transform.a == pytest.approx(1 / 10800) and scene.transform.e == pytest.approx(-1 / 10800)
        assert scene.shape == labels.shape == (2048, 2048)
        assert scene.nodata == 0 and labels.nodata == 0
        assert scene.dtypes == ("uint16",) and labels.dtypes == ("uint8",)
        codes = labels.read(1, out_shape=(256, 256))
    assert set(np.unique(codes).tolist()) <= set(range(15))
    assert "Solar panel" in printed and "Wetland" in printed


def test_synth_utm_rectangular(tmp_path):
    out = tmp_path / "utm"
    assert main(["synth", "--size", "200x320", "--crs", "utm", "--looks", "2", "--out", str(out), "--no-progress"]) == 0
    with rasterio.open(out / "scene.tif") as scene:
        assert scene.shape == (200, 320) and scene.res == (10.0, 10.0)
        assert scene.crs.to_epsg() // 100 == 326
        assert float(scene.tags()["SARLULC_SYNTHETIC_LOOKS"]) == 2.0


@pytest.mark.parametrize("size", ["12", "abc", "10x20x30"])
def test_synth_rejects_bad_sizes(tmp_path, size, capsys):
    assert main(["synth", "--size", size, "--out", str(tmp_path / "never")]) == 2
    assert "argument --size: size must be N or HxW" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_demo_prints_splits_and_statistics(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--size", "512", "--tile-size", "64", "--data-only", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    tiles = datasets.load_from_disk(str(out / "tiles"))
    assert list(tiles) == ["train", "validation", "test"]
    for name, dataset in tiles.items():
        assert len(dataset) > 0
        assert f"{name:<11} {len(dataset):>5} tiles" in printed
    frequencies = json.loads((out / "class_frequencies.json").read_text())
    assert frequencies["scheme"] == "lulc-9"
    labels = np.asarray(tiles["train"].with_format("numpy", dtype=None)["label"])
    expected = np.bincount(labels.ravel(), minlength=256)[: LULC_9.num_classes]
    assert frequencies["counts"] == expected.tolist()
    for name in LULC_9.names:
        assert name in printed
    bands = json.loads((out / "band_statistics.json").read_text())
    assert f"mean {bands['mean'][0]:.3f} dB" in printed and -35 < bands["mean"][0] < 5


def test_run_demo_returns_its_outputs(tmp_path):
    lines = []
    result = run_demo(
        tmp_path / "demo", size=256, tile_size=64, group_size=1, train=False, progress=False, echo=lines.append
    )
    assert result.scene.exists() and result.labels.exists() and result.tiles.exists()
    assert sum(result.split_sizes.values()) > 0
    assert [line.split()[0] for line in lines if line.startswith("[")] == ["[1/2]", "[2/2]"]
    assert result.model is None and result.map is None


def test_the_full_demo_chain_writes_a_georeferenced_map_and_scores_it(tmp_path):
    """The whole chain at toy scale (a few steps each): the map is on the scene's grid and the reported scores are
    the confusion counts of the map against the label raster on the held-out test tiles, recomputed here."""
    from rasterio.windows import Window

    lines = []
    result = run_demo(
        tmp_path / "demo",
        size=768,  # enough tiles for one pretraining batch of 16 in the train split
        tile_size=128,
        group_size=1,
        pretrain_steps=3,
        finetune_steps=3,
        progress=False,
        echo=lines.append,
    )
    assert [line.split()[0] for line in lines if line.startswith(("[", "\n["))] == [f"[{i}/7]" for i in range(1, 8)]
    assert (result.pretrained / "model.safetensors").is_file()
    assert (result.model / "model.safetensors").is_file()
    assert set(result.extra_maps) == {"confidence", "water"}
    with rasterio.open(result.scene) as scene, rasterio.open(result.map) as predicted:
        assert (predicted.height, predicted.width) == (scene.height, scene.width)
        assert predicted.crs == scene.crs and predicted.transform == scene.transform
        valid = scene.read_masks(1) > 0
        classes = predicted.read(1)
    assert np.all(classes[valid] < LULC_9.num_classes) and np.all(classes[~valid] == 255)

    test = datasets.load_from_disk(str(result.tiles))["test"]
    confusion = np.zeros((LULC_9.num_classes, LULC_9.num_classes), dtype=np.int64)
    with rasterio.open(result.labels) as labels:
        for row_off, col_off in zip(test["row_off"], test["col_off"]):
            window = Window(col_off, row_off, 128, 128)
            target = LULC_9.encode(labels.read(1, window=window, boundless=True, fill_value=0))
            prediction = classes[row_off : row_off + 128, col_off : col_off + 128]
            keep = (target != 255) & (prediction != 255)
            np.add.at(confusion, (target[keep], prediction[keep]), 1)
    present = (confusion.sum(0) + confusion.sum(1)) > 0  # in the prediction or the reference
    iou = np.diag(confusion) / (confusion.sum(0) + confusion.sum(1) - np.diag(confusion)).clip(min=1)
    assert result.mean_iou == pytest.approx(iou[present].mean(), abs=1e-6)
    report = json.loads(result.report.read_text())
    assert report["mean_iou"] == pytest.approx(result.mean_iou)
    assert result.quicklook.stat().st_size > 10_000
    assert any("mIoU" in line for line in lines)

    # `sarlulc evaluate` on the saved test tiles counts every labelled pixel of them once
    evaluation = tmp_path / "evaluation"
    args = ["evaluate", "--model_dir", str(result.model), "--data", str(result.tiles), "--split", "test"]
    assert main([*args, "--output_dir", str(evaluation), "--disable_tqdm", "true"]) == 0
    tiles_report = json.loads((evaluation / "eval_report.json").read_text())
    labelled = sum(int((np.asarray(label) != LULC_9.ignore_index).sum()) for label in test["label"])
    assert np.asarray(tiles_report["confusion_matrix"]).sum() == labelled
