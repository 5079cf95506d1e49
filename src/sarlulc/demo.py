"""`sarlulc demo`: the whole method end to end on a small synthetic ALOS-2-like scene, in minutes on a CPU.

1. synthesize a scene and its labels (``OUT/scene/scene.tif``, ``OUT/scene/labels.tif``);
2. tile them into a spatially split dataset (``OUT/tiles``), with class and band statistics of the train split;
3. pretrain the tiny SAR-W-MixMAE encoder on the train tiles (``OUT/pretrain``);
4. fine-tune the LULC model with all three refinements from it (``OUT/lulc``; best validation model in ``best/``);
5. predict the whole scene into a georeferenced GeoTIFF map, with a confidence band and a water mask;
6. evaluate the map on the test tiles, which no training step saw (``OUT/evaluation``);
7. draw a quicklook PNG with the class legend (``OUT/quicklook.png``).

The step sizes are CPU-sized: the scores measure a few minutes of training on one synthetic scene, and say that
the whole chain works, not how good the method is.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

Echo = Callable[[str], None]

__all__ = ["DemoResult", "run_demo"]


@dataclass
class DemoResult:
    """What :func:`run_demo` produced: paths inside its output folder and the headline scores."""

    scene: Path
    labels: Path
    tiles: Path
    split_sizes: dict[str, int]
    class_frequencies: Path
    band_statistics: Path
    pretrained: Path | None = None
    model: Path | None = None
    map: Path | None = None
    extra_maps: dict[str, Path] | None = None
    report: Path | None = None
    quicklook: Path | None = None
    mean_iou: float | None = None
    iou_water: float | None = None


def run_demo(
    out_dir: str | Path = "demo_output",
    *,
    size: int = 1024,
    seed: int = 0,
    tile_size: int = 128,
    group_size: int = 2,
    pretrain_steps: int = 300,
    finetune_steps: int = 400,
    train: bool = True,
    progress: bool = True,
    echo: Echo = print,
) -> DemoResult:
    """Run the demo's steps in order, printing what each one did (see the module docstring).

    `train=False` stops after the data steps (1 and 2).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    steps = 7 if train else 2
    start = time.perf_counter()
    scene = _synthesize(out_dir, size, seed, progress, echo, steps)
    splits, tiles_dir = _tiles(scene.scene.parent, out_dir, tile_size, group_size, progress, echo, steps)
    frequencies_path, bands_path = _statistics(splits["train"], out_dir, progress, echo)
    result = DemoResult(
        scene=scene.scene,
        labels=scene.labels,
        tiles=tiles_dir,
        split_sizes={name: len(dataset) for name, dataset in splits.items()},
        class_frequencies=frequencies_path,
        band_statistics=bands_path,
    )
    if not train:
        return result

    result.pretrained = _pretrain(tiles_dir, out_dir, tile_size, pretrain_steps, seed, progress, echo)
    result.model = _finetune(tiles_dir, result.pretrained, out_dir, finetune_steps, seed, progress, echo)
    report = _predict(result.model, scene.scene, out_dir, progress, echo)
    result.map, result.extra_maps = report.path, dict(report.extra_paths)
    evaluation = _evaluate(result.model, result.map, scene.labels, splits["test"], out_dir, echo)
    result.report = evaluation["files"]["json"]
    result.mean_iou, result.iou_water = evaluation["mean_iou"], evaluation.get("iou_water")
    result.quicklook = _quicklook(scene.scene, scene.labels, result.map, splits["test"], out_dir, echo)

    echo(f"\ndone in {(time.perf_counter() - start) / 60:.1f} min. Outputs in {out_dir}/:")
    echo(f"  land-cover map (GeoTIFF, colour table)  {result.map}")
    for kind, path in result.extra_maps.items():
        echo(f"  {kind + ' (GeoTIFF)':<40} {path}")
    echo(f"  metrics on the held-out test tiles      {result.report} (per class: {evaluation['files']['markdown']})")
    echo(f"  quicklook with the class legend         {result.quicklook}")
    echo(f"  fine-tuned model (transformers)         {result.model}")
    echo(f"  test-tile mIoU {100 * result.mean_iou:.1f} %, IoU_water {100 * (result.iou_water or float('nan')):.1f} %")
    return result


# ----------------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------------


def _synthesize(out_dir: Path, size: int, seed: int, progress: bool, echo: Echo, steps: int):
    from .data.synthetic import describe_synthetic, generate_scene

    start = time.perf_counter()
    result = generate_scene(out_dir / "scene", size=size, seed=seed, progress=progress, overwrite=True)
    height, width = result.config.height, result.config.width  # `size`, or smaller under SARLULC_DOCS_SMALL
    echo(f"[1/{steps}] synthetic scene ({height} x {width} px, seed {seed}) in {time.perf_counter() - start:.1f} s")
    describe_synthetic(result, lambda line: echo(f"      {line}"))
    return result


def _tiles(scene_dir: Path, out_dir: Path, tile_size: int, group_size: int, progress: bool, echo: Echo, steps: int):
    from .data.tiles import SpatialSplit, datasets_progress_bars, split_tile_dataset

    start = time.perf_counter()
    # a test share large enough that the held-out evaluation sees a few groups of a small scene
    split = SpatialSplit.from_shares([0.6, 0.2, 0.2], group_size=group_size, seed=0)
    splits = split_tile_dataset(scene_dir, split, tile_size=tile_size, cache_dir=out_dir / "cache", progress=progress)
    tiles_dir = out_dir / "tiles"
    with datasets_progress_bars(progress):
        splits.save_to_disk(str(tiles_dir))
    echo(
        f"[2/{steps}] {tile_size} x {tile_size} tiles, spatial split by groups of {group_size} x {group_size} tiles, "
        f"in {time.perf_counter() - start:.1f} s; saved to {tiles_dir}"
    )
    for name, dataset in splits.items():
        echo(f"      {name:<11} {len(dataset):>5} tiles")
    return splits, tiles_dir


def _statistics(train, out_dir: Path, progress: bool, echo: Echo) -> tuple[Path, Path]:
    from .data.classes import get_scheme
    from .data.tiles import band_statistics, class_frequencies

    frequencies = class_frequencies(train, get_scheme("lulc-9"), progress=progress)
    bands = band_statistics(train, progress=progress)
    frequencies_path, bands_path = out_dir / "class_frequencies.json", out_dir / "band_statistics.json"
    frequencies.save_json(frequencies_path)
    bands.save_json(bands_path)
    echo(f"      statistics of the train split (saved to {frequencies_path.name}, {bands_path.name}):")
    for line in frequencies.table().splitlines():
        echo(f"      {line}")
    low, high = bands.clip_range
    for name, mean, std in zip(("HH", "HV"), bands.mean, bands.std):
        echo(f"      {name} sigma0 clipped to [{low:g}, {high:g}] dB: mean {mean:.3f} dB, std {std:.3f} dB")
    missing = [frequencies.id2label[i] for i in np.flatnonzero(frequencies.counts == 0)]
    if missing:
        echo(f"      classes absent from the train split: {', '.join(missing)}")
    return frequencies_path, bands_path


# ----------------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------------


def _pretrain(tiles: Path, out_dir: Path, tile_size: int, steps: int, seed: int, progress: bool, echo: Echo) -> Path:
    from .training import AugmentArguments, PretrainingArguments, TileArguments, run_pretraining
    from .training.pretraining import PretrainingLoopArguments

    output = out_dir / "pretrain"
    echo(f"\n[3/7] SAR-W-MixMAE pretraining of the tiny encoder on the train tiles, {steps} steps -> {output}")
    start = time.perf_counter()
    run_pretraining(
        # the tiny model's defaults, at the demo's tile size (the windows shrink to the smaller stage grids)
        PretrainingArguments(config_overrides=[f"image_size={tile_size}"]),
        TileArguments(train_data=str(tiles)),
        AugmentArguments(),
        PretrainingLoopArguments(
            output_dir=str(output),
            overwrite_output_dir=True,
            seed=seed,
            per_device_train_batch_size=16,
            learning_rate=1e-3,
            max_train_steps=steps,
            checkpointing_steps=steps,
            checkpoints_total_limit=1,
            logging_steps=50,
            disable_tqdm=not progress,
        ),
    )
    echo(f"      pretrained in {(time.perf_counter() - start) / 60:.1f} min")
    return output


def _finetune(tiles: Path, pretrained: Path, out_dir: Path, steps: int, seed: int, progress: bool, echo: Echo) -> Path:
    from .training import AugmentArguments, FinetuningArguments, TileArguments, run_finetuning
    from .training.finetuning import FinetuningLoopArguments
    from .training.loop import BEST_DIRNAME

    output = out_dir / "lulc"
    echo(
        f"\n[4/7] fine-tuning the 9-class LULC model from it (high-res injection, refine-up head, alpha 0.5), "
        f"{steps} steps -> {output}"
    )
    start = time.perf_counter()
    run_finetuning(
        FinetuningArguments(task="lulc", pretrained=str(pretrained), class_weight_alpha=0.5),
        TileArguments(train_data=str(tiles)),
        AugmentArguments(),
        FinetuningLoopArguments(
            output_dir=str(output),
            overwrite_output_dir=True,
            seed=seed,
            per_device_train_batch_size=8,
            learning_rate=1e-3,
            max_train_steps=steps,
            eval_steps=100,
            checkpointing_steps=steps,
            checkpoints_total_limit=1,
            logging_steps=50,
            disable_tqdm=not progress,
        ),
    )
    best = output / BEST_DIRNAME
    model = best if (best / "config.json").is_file() else output
    echo(f"      fine-tuned in {(time.perf_counter() - start) / 60:.1f} min; best validation model: {model}")
    return model


# ----------------------------------------------------------------------------------------------------------------------
# Map, evaluation, quicklook
# ----------------------------------------------------------------------------------------------------------------------


def _predict(model: Path, scene: Path, out_dir: Path, progress: bool, echo: Echo):
    from .inference import predict_scene

    map_path = out_dir / "lulc_map.tif"
    echo(f"\n[5/7] sliding-window prediction of the whole scene -> {map_path}")
    report = predict_scene(
        model,
        scene,
        map_path,
        tile=512,
        overlap=64,
        batch_size=2,
        probabilities="confidence",
        water=True,
        progress=progress,
        overwrite=True,
    )
    echo(f"      {report.tiles} tiles of {report.tile} px (overlap {report.overlap}) in {report.seconds_total:.1f} s")
    return report


def _evaluate(model: Path, map_path: Path, labels: Path, test_tiles, out_dir: Path, echo: Echo) -> dict:
    """Score the written map on the test tiles' windows against the label raster (same grid), as `sarlulc evaluate
    --scene --split test` does."""
    import json

    from rasterio.windows import Window

    from .training.evaluation import scheme_for_model, score_map, segmentation_report, write_report

    config = json.loads((model / "config.json").read_text())
    id2label = {int(k): v for k, v in config["id2label"].items()}
    scheme = scheme_for_model(id2label)
    rows = test_tiles.select_columns(["row_off", "col_off", "label"])
    windows = []
    for row_off, col_off, tile_labels in zip(rows["row_off"], rows["col_off"], rows["label"]):
        height, width = np.asarray(tile_labels).shape
        windows.append(Window(col_off, row_off, width, height))
    tally = score_map(map_path, labels, scheme, windows)
    report = segmentation_report(tally, scheme, config.get("class_frequencies"))
    files = write_report(report, out_dir / "evaluation")
    echo(f"\n[6/7] evaluation of the map on the {len(rows)} held-out test tiles -> {files['json']}")
    for name, scores in report["per_class"].items():
        iou = scores["iou"]
        shown = f"{100 * iou:5.1f} %" if iou == iou else "  n/a (absent from map and reference)"
        echo(f"      {name:<18} IoU {shown}   ({scores['reference_pixels']} reference px)")
    echo(f"      mIoU {100 * report['mean_iou']:.1f} %")
    report["files"] = files
    return report


def _quicklook(scene: Path, labels: Path, map_path: Path, test_tiles, out_dir: Path, echo: Echo) -> Path:
    """Backscatter, reference and prediction side by side, decimated to at most ~1000 px, with the class legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import rasterio
    from matplotlib.patches import Patch, Rectangle
    from rasterio.enums import Resampling

    from .data.classes import LULC_9
    from .data.products import open_scene
    from .models.image_processing_sar import calibrate_to_db

    with rasterio.open(map_path) as src:
        factor = max(1, int(np.ceil(max(src.height, src.width) / 1000)))
        shape = (src.height // factor, src.width // factor)
        predicted = src.read(1, out_shape=shape, resampling=Resampling.nearest)
    with rasterio.open(labels) as src:
        reference = LULC_9.encode(src.read(1, out_shape=shape, resampling=Resampling.nearest))
    with open_scene(scene) as src:  # the scene's input kind and calibration factor, from its tags
        kind, factor_db, nodata = src.input_kind, src.calibration_factor, src.nodata
    with rasterio.open(scene) as src:
        raw = src.read(1, out_shape=shape, resampling=Resampling.nearest)
    db, valid = calibrate_to_db(raw, kind, factor_db, nodata)
    db = np.where(valid, db, np.nan)

    palette = np.zeros((256, 3), dtype=np.uint8)
    for cls in LULC_9.classes:
        palette[cls.id] = cls.color
    palette[LULC_9.ignore_index] = (255, 255, 255)
    figure, axes = plt.subplots(1, 3, figsize=(18, 6.8))
    axes[0].imshow(db, cmap="gray", vmin=-30, vmax=0)
    axes[0].set_title("HH sigma0 (dB)")
    axes[1].imshow(palette[reference])
    axes[1].set_title("reference (JAXA codes -> 9 classes)")
    axes[2].imshow(palette[predicted])
    axes[2].set_title("prediction (test tiles outlined)")
    size = np.asarray(test_tiles[0]["label"]).shape[0] / factor if len(test_tiles) else 0
    for row_off, col_off in zip(test_tiles["row_off"], test_tiles["col_off"]):
        axes[2].add_patch(
            Rectangle((col_off / factor, row_off / factor), size, size, fill=False, edgecolor="black", linewidth=0.8)
        )
    for axis in axes:
        axis.set_xticks([])
        axis.set_yticks([])
    legend = [Patch(facecolor=np.array(c.color) / 255, edgecolor="black", label=c.name) for c in LULC_9.classes]
    figure.legend(handles=legend, loc="lower center", ncol=len(legend), frameon=False, fontsize=10)
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    path = out_dir / "quicklook.png"
    figure.savefig(path, dpi=80)
    plt.close(figure)
    echo(f"\n[7/7] quicklook -> {path}")
    return path
