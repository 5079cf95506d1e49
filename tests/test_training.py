"""sarlulc.training: augmentation, normalization, optimizer groups, determinism, resume, metric wiring, evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import sarlulc
from helpers_training import REPO, TINY_ENCODER, TINY_SEGMENTATION, shared_scene, shared_tiles
from sarlulc.data.classes import LULC_9
from sarlulc.errors import UsageError
from sarlulc.metrics import confusion_matrix, metrics_from_confusion
from sarlulc.models.image_processing_sar import SarImageProcessor
from sarlulc.models.modeling_sar_mixmae import SarMixMAEForPreTraining
from sarlulc.training import (
    AugmentArguments,
    EvaluationArguments,
    FinetuningArguments,
    FinetuningLoopArguments,
    InferenceArguments,
    PretrainingArguments,
    PretrainingLoopArguments,
    SpatialSplitArguments,
    TileArguments,
)
from sarlulc.training.augment import AugmentConfig, augment_batch
from sarlulc.training.batches import TileNormalization
from sarlulc.training.configs import build_config, parse_overrides
from sarlulc.training.evaluation import SegmentationTally, boundary_counts, run_evaluation, segmentation_report
from sarlulc.training.finetuning import run_finetuning
from sarlulc.training.loop import (
    EpochShuffleSampler,
    list_checkpoints,
    parameter_groups,
    resolve_checkpoint,
    sar_mixmae_layer_ids,
    step_generator,
)
from sarlulc.training.pretraining import run_pretraining
from sarlulc.training.trackers import JsonlTracker, read_jsonl_log, validate_report_to
from sarlulc_cli import main


@pytest.fixture(scope="module")
def tiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_tiles(tmp_path_factory)


def _pretrain(tiles: Path, output: Path, **loop: object):
    """Tiny pretraining: 7 tiles of 64 px, batches of 2 (3 steps per epoch), crops, jitter and drop path."""
    options = dict(
        output_dir=str(output),
        per_device_train_batch_size=2,
        max_train_steps=5,
        checkpointing_steps=2,
        logging_steps=1,
        full_determinism=True,
        disable_tqdm=True,
    )
    options.update(loop)
    return run_pretraining(
        PretrainingArguments(config_overrides=[*TINY_ENCODER, "drop_path_rate=0.1"]),
        TileArguments(train_data=str(tiles)),
        AugmentArguments(crop_size=32, gain_jitter_db=2.0),
        PretrainingLoopArguments(**options),
    )


def _finetune(tiles: Path, output: Path, **loop: object):
    """Tiny fine-tuning from scratch: batches of 2 with 2 accumulation steps, layer decay, evaluation every 2 steps."""
    options = dict(
        output_dir=str(output),
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        learning_rate=1e-3,
        layer_decay=0.8,
        max_train_steps=5,
        eval_steps=2,
        checkpointing_steps=2,
        logging_steps=1,
        full_determinism=True,
        disable_tqdm=True,
    )
    options.update(loop)
    return run_finetuning(
        FinetuningArguments(from_scratch=True, config_overrides=TINY_SEGMENTATION),
        TileArguments(train_data=str(tiles)),
        AugmentArguments(gain_jitter_db=1.0),
        FinetuningLoopArguments(**options),
    )


@pytest.fixture(scope="module")
def finetuned(tiles: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted tiny fine-tuning run (5 steps)."""
    output = tmp_path_factory.mktemp("finetuned") / "run"
    result = _finetune(tiles, output)
    assert result.finished and result.completed_steps == 5
    return output


def _assert_same_weights(first: Path, second: Path) -> None:
    a, b = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)


# ----------------------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------------------
def test_augmentation_moves_image_mask_and_labels_together_and_is_reproducible():
    labels = torch.arange(2 * 64 * 64).reshape(2, 64, 64) % 251
    images = labels[:, None].float().repeat(1, 2, 1, 1)
    valid = labels % 3 != 0
    config = AugmentConfig(crop_size=32, flip=True, rotate90=True)
    out = augment_batch(images, valid, labels, config, step_generator(0, 0, 0, 0))
    again = augment_batch(images, valid, labels, config, step_generator(0, 0, 0, 0))
    other = augment_batch(images, valid, labels, config, step_generator(0, 0, 1, 0))
    assert out[0].shape == (2, 2, 32, 32) and out[1].shape == out[2].shape == (2, 32, 32)
    assert torch.equal(out[0][:, 0], out[2].float()) and torch.equal(out[0][:, 1], out[2].float())
    assert torch.equal(out[1], out[2] % 3 != 0)
    assert all(torch.equal(x, y) for x, y in zip(out, again))
    assert not torch.equal(out[2], other[2])


def test_gain_jitter_is_one_db_offset_per_tile_on_valid_pixels_only():
    images = torch.full((3, 1, 32, 32), -12.0)
    valid = torch.ones(3, 32, 32, dtype=torch.bool)
    valid[:, :4] = False
    images[~valid[:, None]] = 0.0
    config = AugmentConfig(flip=False, rotate90=False, gain_db=3.0)
    jittered, mask, _ = augment_batch(images, valid, None, config, step_generator(1, 0, 0, 0))
    assert torch.equal(mask, valid)
    assert (jittered[:, :, :4] == 0.0).all()  # invalid pixels keep the 0.0 marker
    offsets = jittered[:, 0, 4:] + 12.0
    for offset in offsets:
        assert torch.allclose(offset, offset[0, 0].expand_as(offset))  # one gain per tile: speckle statistics kept
        assert abs(float(offset[0, 0])) <= 3.0
    assert len({round(float(o[0, 0]), 4) for o in offsets}) == 3


def test_tile_normalization_equals_the_image_processor():
    rng = np.random.default_rng(0)
    db = rng.uniform(-45.0, 12.0, size=(4, 1, 64, 64)).astype(np.float32)
    valid = rng.random((4, 64, 64)) > 0.2
    db[:, 0][~valid] = 0.0
    processor = SarImageProcessor(image_mean=[-13.5], image_std=[7.25], clip_db=[-35.0, 5.0])
    expected = processor.preprocess(list(db), valid_masks=list(valid), input_kind="db", return_tensors="pt")
    ours = TileNormalization.from_processor(processor)(torch.from_numpy(db), torch.from_numpy(valid))
    torch.testing.assert_close(ours, expected["pixel_values"])
    assert torch.equal(expected["pixel_mask"].bool(), torch.from_numpy(valid))


def test_parameter_groups_exclude_norms_biases_tokens_and_tables_from_decay_and_scale_by_layer():
    config = build_config(sarlulc.SarMixMAEConfig, None, parse_overrides(TINY_ENCODER))
    model = SarMixMAEForPreTraining(config)
    ids, top = sar_mixmae_layer_ids(model, config.depths)
    assert top == 5
    assert ids["sar_mixmae.embeddings.patch_embeddings.projection.weight"] == 0
    assert ids["sar_mixmae.encoder.stages.2.blocks.0.mlp.fc1.weight"] == 3
    assert ids["sar_mixmae.encoder.downsamples.0.reduction.weight"] == 2  # the merge feeds stage 2's first block
    assert ids["decoder_pred.weight"] == ids["sar_mixmae.layernorm.weight"] == 5
    groups = parameter_groups(model, weight_decay=0.05, layer_decay=0.5, layer_ids=(ids, top))
    by_name = {name: group for group in groups for name in group["names"]}
    for name in ("mask_token", "sar_mixmae.encoder.stages.0.blocks.0.attention.relative_position_bias_table"):
        assert by_name[name]["weight_decay"] == 0.0
    assert by_name["sar_mixmae.encoder.stages.0.blocks.0.attention.qkv.bias"]["weight_decay"] == 0.0
    assert by_name["sar_mixmae.encoder.stages.0.blocks.0.attention.qkv.weight"]["weight_decay"] == 0.05
    assert by_name["sar_mixmae.embeddings.patch_embeddings.projection.weight"]["lr_scale"] == 0.5**5
    assert by_name["sar_mixmae.encoder.stages.3.blocks.0.mlp.fc2.weight"]["lr_scale"] == 0.5
    assert by_name["decoder_pred.weight"]["lr_scale"] == 1.0
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_epoch_sampler_and_step_generators_are_pure_functions_of_their_position():
    sampler = EpochShuffleSampler(10, seed=3)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    sampler.set_epoch(0)
    assert list(sampler) == first and sorted(second) == list(range(10)) and second != first
    draw = [torch.rand(3, generator=step_generator(5, e, b, p)) for e, b, p in ((0, 0, 0), (0, 0, 0), (0, 1, 0))]
    assert torch.equal(draw[0], draw[1]) and not torch.equal(draw[0], draw[2])
    assert not torch.equal(draw[0], torch.rand(3, generator=step_generator(5, 0, 0, 1)))


def test_checkpoint_folders_resolve_and_bad_paths_are_user_errors(tmp_path: Path):
    for step in (10, 2, 7):  # complete as far as checkpoint_is_complete looks: an optimizer state and weights
        (tmp_path / f"step_{step}").mkdir()
        (tmp_path / f"step_{step}" / "optimizer.bin").write_bytes(b"state")
        (tmp_path / f"step_{step}" / "pytorch_model.bin").write_bytes(b"weights")
    (tmp_path / "step_x").mkdir()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_2", "step_7", "step_10"]
    assert resolve_checkpoint(tmp_path, "latest").name == "step_10"
    assert resolve_checkpoint(tmp_path, str(tmp_path / "step_7")).name == "step_7"
    with pytest.raises(UsageError, match="no such checkpoint folder"):
        resolve_checkpoint(tmp_path, str(tmp_path / "step_99"))
    with pytest.raises(UsageError, match="not a training checkpoint"):
        resolve_checkpoint(tmp_path, str(tmp_path / "step_x"))
    with pytest.raises(UsageError, match="no step_N checkpoint"):
        resolve_checkpoint(tmp_path / "empty", "latest")


def test_config_overrides_are_json_and_checked():
    assert parse_overrides(["a=16", "b=[1,2]", "c=true", "d=gelu"]) == {"a": 16, "b": [1, 2], "c": True, "d": "gelu"}
    with pytest.raises(UsageError, match="KEY=VALUE"):
        parse_overrides(["embed_dim"])
    config = build_config(sarlulc.SarLulcConfig, None, parse_overrides(TINY_SEGMENTATION))
    assert config.backbone_config.embed_dim == 16 and config.backbone_config.hidden_size == 128
    with pytest.raises(UsageError, match="has no field 'embed_dimm'"):
        build_config(sarlulc.SarMixMAEConfig, None, {"embed_dimm": 3})
    with pytest.raises(UsageError, match="invalid sar_mixmae config"):
        build_config(sarlulc.SarMixMAEConfig, None, {"mask_ratio": 2.0})


def test_jsonl_tracker_and_report_to(tmp_path: Path):
    tracker = JsonlTracker("run", tmp_path)
    tracker.start()
    tracker.store_init_configuration({"lr": 0.1})
    tracker.log({"loss": 1.0}, step=1)
    tracker.log({"loss": float("nan")}, step=2)
    tracker.log({"loss": 0.5}, step=1)  # written again after a resume
    records = read_jsonl_log(tmp_path / "run" / "metrics.jsonl")
    assert [(r["step"], r["loss"]) for r in records] == [(1, 0.5), (2, None)]
    assert validate_report_to("jsonl") == ["jsonl"] and validate_report_to("none") == []
    with pytest.raises(ValueError, match="unknown tracker 'tensorbored'"):
        validate_report_to("tensorbored")


def test_boundary_f1_is_one_for_a_perfect_map_and_punishes_noise():
    scheme = LULC_9
    labels = torch.full((1, 64, 64), 2, dtype=torch.long)
    labels[:, :, 30:32] = 0  # a 2 px river
    labels[:, 40:, :] = 5
    labels[:, 0, 0] = 255
    tally = SegmentationTally(scheme.num_classes)
    tally.update(labels.clamp(max=8), labels)
    report = segmentation_report(tally, scheme, class_frequencies=[10, 0, 80, 0, 0, 10, 0, 0, 0])
    assert report["boundary_f1_thin"] == 1.0 and report["mean_iou"] == 1.0
    assert report["rare_classes"] == ["Built-up", "Cropland", "Grassland", "Evergreen forest", "Bare", "SolarPanel"]
    noise = torch.randint(0, 9, labels.shape, generator=torch.Generator().manual_seed(0))
    matched_pred, predicted, _, reference = boundary_counts(noise, labels, scheme.num_classes)
    assert reference > 0 and predicted > 0
    assert matched_pred / predicted < 0.5  # speckle-like predictions are thin everywhere, mostly far from real edges
    shifted = torch.roll(labels.clamp(max=8), 1, dims=2)
    counts = boundary_counts(shifted, labels, scheme.num_classes, tolerance=1)
    assert counts[0] == counts[1] and counts[2] == counts[3]  # a 1 px shift is within the tolerance


# ----------------------------------------------------------------------------------------------------------------------
# The loop end to end (in-process, CPU, float32)
# ----------------------------------------------------------------------------------------------------------------------
def test_pretraining_resumed_after_a_stop_ends_with_the_uninterrupted_weights(tiles: Path, tmp_path: Path):
    straight = _pretrain(tiles, tmp_path / "straight")
    assert straight.finished and straight.completed_steps == 5
    stopped = _pretrain(tiles, tmp_path / "resumed", stop_at_step=4)  # mid-epoch: epoch 1, batch 1 of 3
    assert not stopped.finished and stopped.completed_steps == 4
    assert not (tmp_path / "resumed" / "model.safetensors").exists()
    assert [p.name for p in list_checkpoints(tmp_path / "resumed")] == ["step_2", "step_4"]
    resumed = _pretrain(tiles, tmp_path / "resumed", resume_from_checkpoint="latest")
    assert resumed.finished and resumed.completed_steps == 5
    _assert_same_weights(tmp_path / "straight", tmp_path / "resumed")

    # The band statistics of the training tiles are in the processor config, their one home; the model config has none.
    saved = tmp_path / "straight"
    config = json.loads((saved / "config.json").read_text())
    processor = json.loads((saved / "preprocessor_config.json").read_text())
    statistics = json.loads((saved / "band_statistics.json").read_text())
    assert processor["image_mean"] == statistics["mean"] and processor["image_std"] == statistics["std"]
    assert not {"input_db_mean", "input_db_std", "input_clip_db"} & config.keys()
    assert -30.0 < statistics["mean"][0] < 0.0
    assert [p.name for p in list_checkpoints(saved)] == ["step_2", "step_4"]  # every 2 steps, the last 2 kept
    assert json.loads((saved / "all_results.json").read_text())["train_samples_per_second"] > 0


def test_finetuning_resumed_after_a_stop_ends_with_the_uninterrupted_weights(
    tiles: Path, finetuned: Path, tmp_path: Path
):
    stopped = _finetune(tiles, tmp_path, stop_at_step=3)
    assert not stopped.finished
    resumed = _finetune(tiles, tmp_path, resume_from_checkpoint=str(tmp_path / "step_3"))
    assert resumed.finished and resumed.completed_steps == 5
    _assert_same_weights(finetuned, tmp_path)
    _assert_same_weights(finetuned / "best", tmp_path / "best")
    assert resumed.metrics["best_mean_iou"] == json.loads((finetuned / "all_results.json").read_text())["best_mean_iou"]


def test_logged_validation_miou_equals_the_metric_on_the_saved_models_predictions(tiles: Path, finetuned: Path):
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

    logged = [r for r in read_jsonl_log(finetuned / "logs" / "finetune-lulc" / "metrics.jsonl") if "eval_mean_iou" in r]
    assert [r["step"] for r in logged] == [2, 4, 5]

    # Independently: the saved model and processor, through the processor's own (numpy) preprocessing.
    model = AutoModelForSemanticSegmentation.from_pretrained(finetuned).eval()
    processor = AutoImageProcessor.from_pretrained(finetuned)
    validation = datasets.load_from_disk(str(tiles))["validation"].with_format("numpy")
    batch = processor.preprocess(
        list(validation["image"]), valid_masks=list(validation["valid_mask"]), input_kind="db", return_tensors="pt"
    )
    with torch.no_grad():
        predictions = model(pixel_values=batch["pixel_values"], pixel_mask=batch["pixel_mask"]).logits.argmax(1)
    counts = confusion_matrix(predictions.numpy(), np.asarray(validation["label"]), LULC_9.num_classes)
    expected = metrics_from_confusion(counts, LULC_9.num_classes)["mean_iou"]
    assert logged[-1]["eval_mean_iou"] == pytest.approx(expected, abs=1e-9)
    results = json.loads((finetuned / "all_results.json").read_text())
    assert results["eval_mean_iou"] == pytest.approx(expected, abs=1e-9)
    best = json.loads((finetuned / "best" / "eval_results.json").read_text())
    assert best["eval_mean_iou"] == results["best_mean_iou"] == max(r["eval_mean_iou"] for r in logged)
    train_labels = datasets.load_from_disk(str(tiles))["train"].with_format("numpy")["label"]
    assert model.config.class_frequencies == np.bincount(np.ravel(train_labels), minlength=256)[:9].tolist()


def _confusion(prediction: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """Plain numpy: (reference, prediction) pixel counts where both are classes (255 = nodata/ignore)."""
    keep = (prediction < num_classes) & (target < num_classes)
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (target[keep], prediction[keep]), 1)
    return counts


def _iou(counts: np.ndarray) -> np.ndarray:
    union = counts.sum(0) + counts.sum(1) - np.diag(counts)
    return np.where(union > 0, np.diag(counts) / np.maximum(union, 1), np.nan)


def test_evaluation_on_saved_tiles_equals_the_logged_validation_miou(tiles: Path, finetuned: Path):
    split_report = run_evaluation(
        EvaluationArguments(model_dir=str(finetuned), data=str(tiles), split="validation", disable_tqdm=True)
    )
    logged = json.loads((finetuned / "all_results.json").read_text())["eval_mean_iou"]
    assert split_report["mean_iou"] == pytest.approx(logged, abs=1e-9)
    for path in split_report["files"].values():
        assert Path(path).is_file() and Path(path).stat().st_size > 0
    assert "| 0 | Water |" in Path(split_report["files"]["markdown"]).read_text()


@pytest.fixture
def one_torch_thread():
    """One intra-op thread for predict_scene's tiny tiles: on a small shared CPU, OpenMP threads waiting for each
    other make the tiny model several times slower (test_inference.py does the same); results do not depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_scene_evaluation_scores_the_written_map_against_the_label_raster(
    tiles: Path, finetuned: Path, tmp_path: Path, one_torch_thread: None
):
    """`evaluate --scene` predicts the map as `sarlulc predict` would and scores it: the report's counts are the
    numpy confusion counts of that map against the label raster, on the whole scene and on the test tiles' windows."""
    import rasterio

    scene = shared_scene()
    inference = InferenceArguments(tile=64, overlap=16, batch_size=4)
    whole = run_evaluation(
        EvaluationArguments(
            model_dir=str(finetuned / "best"),
            scene=str(scene / "scene.tif"),
            labels=str(scene / "labels.tif"),
            tile_size=64,
            output_dir=str(tmp_path / "whole"),
            disable_tqdm=True,
        ),
        inference,
    )
    map_path = tmp_path / "whole" / "scene_map.tif"
    assert whole["map"] == str(map_path) and whole["evaluated"].endswith("(scene)")
    with rasterio.open(map_path) as predicted, rasterio.open(scene / "labels.tif") as labels:
        assert predicted.transform == labels.transform and predicted.shape == labels.shape == (256, 256)
        prediction, target = predicted.read(1), LULC_9.encode(labels.read(1))
    assert (prediction != 255).any() and (prediction == 255).any()  # the synthetic scene's nodata wedge
    expected = _confusion(prediction, target, LULC_9.num_classes)
    assert np.array_equal(np.asarray(whole["confusion_matrix"]), expected)
    iou = _iou(expected)
    reported = np.array([whole["per_class"][name]["iou"] for name in LULC_9.names], dtype=float)
    np.testing.assert_allclose(reported, iou, rtol=0, atol=1e-12)
    assert whole["mean_iou"] == pytest.approx(np.nanmean(iou), abs=1e-12)
    windows_with_data = sum(
        bool((prediction[r : r + 64, c : c + 64] != 255).any()) for r in range(0, 256, 64) for c in range(0, 256, 64)
    )
    assert whole["tiles"] == windows_with_data

    # --split test: only the windows of the test tiles of the split the saved tiles were made with (groups of 2 x 2)
    test = run_evaluation(
        EvaluationArguments(
            model_dir=str(finetuned / "best"),
            scene=str(scene / "scene.tif"),
            labels=str(scene / "labels.tif"),
            split="test",
            tile_size=64,
            output_dir=str(tmp_path / "test"),
            disable_tqdm=True,
        ),
        inference,
        SpatialSplitArguments(split_group_size=2),
    )
    with rasterio.open(tmp_path / "test" / "scene_map.tif") as predicted:
        assert np.array_equal(predicted.read(1), prediction)  # the same map: same model, same options
    saved_test = datasets.load_from_disk(str(tiles))["test"]
    expected_test = sum(
        _confusion(prediction[r : r + 64, c : c + 64], target[r : r + 64, c : c + 64], LULC_9.num_classes)
        for r, c in zip(saved_test["row_off"], saved_test["col_off"])
    )
    assert test["tiles"] == len(saved_test) and np.array_equal(np.asarray(test["confusion_matrix"]), expected_test)
    assert not np.array_equal(expected_test, expected)  # a real restriction (negative control)


def test_scoring_a_map_checks_the_grid_and_each_changed_pixel_moves_one_count(tmp_path: Path):
    import rasterio
    from rasterio.transform import from_origin

    from sarlulc.errors import SarLulcDataError
    from sarlulc.training.evaluation import score_map

    rng = np.random.default_rng(0)
    codes = rng.choice([0, 1, 2, 3, 5, 6, 8, 10, 11, 12], size=(96, 80)).astype(np.uint8)  # 0 = label nodata
    prediction = LULC_9.encode(codes).astype(np.uint8)
    prediction[prediction == 255] = 3  # the model predicts something where the labels have no data
    prediction[:10, :10] = 255  # map nodata (no valid scene pixel)
    profile = dict(driver="GTiff", width=80, height=96, count=1, dtype="uint8", crs="EPSG:32654")
    transform = from_origin(500000, 3900000, 10, 10)
    with rasterio.open(tmp_path / "labels.tif", "w", transform=transform, nodata=0, **profile) as out:
        out.write(codes, 1)
    with rasterio.open(tmp_path / "map.tif", "w", transform=transform, nodata=255, **profile) as out:
        out.write(prediction, 1)
    tally = score_map(tmp_path / "map.tif", tmp_path / "labels.tif", LULC_9, window_size=32)
    target = LULC_9.encode(codes)
    target[prediction == 255] = 255
    assert np.array_equal(tally.confusion[:9, :9], _confusion(prediction, target, 9))
    assert tally.confusion.sum() == int(((target != 255) & (prediction != 255)).sum()) and tally.tiles == 9

    # one changed valid pixel moves exactly one count from the diagonal
    row, col = np.argwhere((target != 255) & (prediction != 255))[0]
    changed = prediction.copy()
    changed[row, col] = (prediction[row, col] + 1) % 9
    with rasterio.open(tmp_path / "changed.tif", "w", transform=transform, nodata=255, **profile) as out:
        out.write(changed, 1)
    difference = score_map(tmp_path / "changed.tif", tmp_path / "labels.tif", LULC_9).confusion - tally.confusion
    assert np.abs(difference).sum() == 2 and difference[target[row, col], changed[row, col]] == 1

    shifted = from_origin(500010, 3900000, 10, 10)
    with rasterio.open(tmp_path / "shifted.tif", "w", transform=shifted, nodata=255, **profile) as out:
        out.write(prediction, 1)
    with pytest.raises(SarLulcDataError, match="not aligned"):
        score_map(tmp_path / "shifted.tif", tmp_path / "labels.tif", LULC_9)


# ----------------------------------------------------------------------------------------------------------------------
# The commands' arguments (in-process through sarlulc_cli.main, as the scripts call it; test_scripts.py runs real
# subprocesses)
# ----------------------------------------------------------------------------------------------------------------------
def _command(name: str, prog: str):
    return lambda argv: main([name, *argv], prog=prog)


def _finetune_argv(tiles: Path, output: Path, *extra: str) -> list[str]:
    return [
        "--train_data",
        str(tiles),
        "--output_dir",
        str(output),
        "--config_overrides",
        *TINY_SEGMENTATION,
        "--disable_tqdm",
        *extra,
    ]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--from_scratch", "--train_data", "/no/such/folder"], "/no/such/folder does not exist"),
        (["--pretrained", "/no/such/checkpoint"], "no config.json there"),
        ([], "exactly one of --pretrained"),
        (
            ["--from_scratch", "--task", "water", "--config", str(REPO / "hub_configs" / "sar-lulc-tiny")],
            "num_labels=9",
        ),
        (["--from_scratch", "--config_overrides", "num_labels=5"], "num_labels=5"),
        (["--from_scratch", "--resume_from_checkpoint", "/no/such/step_3"], "no such checkpoint folder"),
        # lulc-9 tiles serve the water task (remapped: tests/test_tile_schemes.py); jaxa-14 cannot be derived from them (Built-up holds 2 codes)
        (["--from_scratch", "--class_scheme", "jaxa-14"], "another class scheme"),
        # the encoder config's own input-size check (SarMixMAEConfig.check_input_size), as the user's error
        (["--from_scratch", "--crop_size", "48"], "the training input size"),
        (["--from_scratch", "--split_fractions", "0.8", "0.2"], "need 3 split shares (train, validation, test)"),
        (["--from_scratch", "--split_group_size", "0"], "group_size must be >= 1"),
    ],
)
def test_bad_finetuning_arguments_fail_before_training(
    extra: list[str], message: str, tiles: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    argv = _finetune_argv(tiles, tmp_path / "out", *extra)
    assert _command("finetune", "finetune.py")(argv) == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error
    assert not list((tmp_path / "out").glob("step_*"))


def test_unknown_task_is_rejected_by_the_parser(tiles: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    argv = _finetune_argv(tiles, tmp_path, "--from_scratch", "--task", "forest")
    assert _command("finetune", "finetune.py")(argv) == 2
    assert "finetune.py: error: argument --task: invalid choice: 'forest'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--config", "/no/such/config"], "no config.json there"),
        (["--config_overrides", "embed_dimm=16"], "has no field 'embed_dimm'"),
        (["--report_to", "tensorbored"], "unknown tracker"),
        (["--resume_from_checkpoint", "latest"], "has no step_N checkpoint"),
    ],
)
def test_bad_pretraining_arguments_fail_before_training(
    extra: list[str], message: str, tiles: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    argv = ["--train_data", str(tiles), "--output_dir", str(tmp_path / "out"), "--disable_tqdm", *extra]
    assert _command("pretrain", "pretrain.py")(argv) == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error
    assert not list((tmp_path / "out").glob("step_*"))


def test_existing_checkpoints_are_not_overwritten_silently(tiles: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    (tmp_path / "step_4").mkdir()
    argv = ["--train_data", str(tiles), "--output_dir", str(tmp_path), "--disable_tqdm"]
    assert _command("pretrain", "pretrain.py")(argv) == 2
    assert "--resume_from_checkpoint latest" in capsys.readouterr().err
