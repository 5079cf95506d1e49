"""The paper's ablation ladder as an experiment: every rung trained with several seeds, reported as mean +- std, and
every refinement judged by its paired difference to the rung below with a 95 % interval (the logic behind ``sarlulc
ablation`` and ``scripts/ablation.py``).

Rungs, each adding one thing to the one before:

1. no pretraining (random encoder), plain UperNet (bilinear x4 head), no class re-weighting;
2. + MixMAE pretraining without the backscatter weighting (``loss_weighting="none"``);
3. + the backscatter weighting of the pretraining loss (SAR-W-MixMAE, ``loss_weighting="backscatter"``);
4. + high-resolution feature injection;
5. + progressive refine-up head;
6. + alpha-scaled class re-weighting.

Each refinement is judged on what it targets (bold in the report) as well as on mIoU and IoU_water: the weighting on
IoU_water and mIoU, injection and refine-up on the boundary F1 of thin structures, alpha on rare-class IoU and
rare-class recall (definitions in :mod:`sarlulc.training.evaluation`).

With ``--seeds N`` every rung runs N times, run ``i`` with training seed ``seed + i``: the seed of the fine-tuning (its
initialization, data order and augmentation) and of the pretraining of that seed (rungs 3-6 share one SAR-W-MixMAE
run per seed, rung 2 has its own MixMAE run). The scene, its split and the test tiles stay fixed, so a difference
between two rungs of one seed is a difference of the refinement alone, and the seeds measure how much training runs
vary. Each run keeps its best checkpoint by validation mIoU, which is scored on the test split. Statistics and report
files: :mod:`sarlulc.training.ablation_report`.

Without ``--scene`` a synthetic scene is generated (:func:`sarlulc.data.synthetic.generate_scene`): 1536 px with
``rare_abundance=2``, cut into 64 px tiles split 60/20/20 in groups of 2 x 2 tiles; a tiny encoder; 300 pretraining
and 700 fine-tuning steps per run, one torch thread.

Why the earlier single-seed ladder could not see alpha (measured with injection and refine-up, seed 0, recall on the
test tiles every 100 steps). Its benchmark (1024 px, default abundance) had the two rare classes (Bare, SolarPanel)
at 0.25 % and 0.28 % of the training pixels, in 7 and 6 of 137 training tiles and in 5 and 1 of 52 test tiles (one
solar farm scored the whole class); a batch of 8 tiles held on average 171 rare pixels of about 32000, none in 44 %
of the steps. The weight form is not the bottleneck: at alpha 0.5 a rare class weighed 2.0-2.1 against 0.24-0.36 for a
common one, and it works, but late: with alpha 0 both recalls stayed 0 through 1000 steps; with alpha 0.5 they
were 0 through step 200, Bare appeared at step 300-400 and SolarPanel at 500 (0.38 and 0.12 at step 1000); alpha 1
reached 0.6 (Bare) by step 200. The 300-step schedule ended before alpha 0.5 did anything, and model selection by
validation mIoU kept such early checkpoints. On today's benchmark (2 x the solar farms and bare patches, 1536 px:
0.8 % and 1.0 % of the training pixels, in 33 and 24 training and 12 and 18 test tiles, 574 rare pixels per step,
21 % of the steps without any) alpha 0.5 still gives recall 0 at every evaluation of a 400-step run, first recall at
step 300-400 of a 1000-step run and about 0.5 for both classes by step 700 (from scratch or from SAR-W-MixMAE alike);
hence 700 fine-tuning steps. The ladder's report prints the exposure numbers of the scene it ran on (its first
section).

The default ladder (3 seeds, 700 steps) then gave, rung 6 against rung 5: rare-class IoU +14.7 points [-5.7, +35.0]
and rare-class recall +26.1 points [-8.1, +60.4] (95 % intervals; per seed +20.8, +17.9, +5.4 and +37.7, +29.8,
+10.9), from 0 in every seed of rungs 1-5. Alpha now moves the rare classes in every seed, but with 3 seeds
(t = 4.30) the interval still includes 0: the answer at this size is "an effect of uncertain size"; more seeds
narrow it. It took 12.8 CPU minutes (one thread; 25 minutes of wall time on two cores shared with other work).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sarlulc_cli.arguments import (
    AblationArguments,
    AblationSplitArguments,
    AugmentArguments,
    FinetuningArguments,
    FinetuningLoopArguments,
    PretrainingArguments,
    PretrainingLoopArguments,
    SpatialSplitArguments,
    TileArguments,
)

from ..data.classes import ClassScheme, get_scheme
from ..data.synthetic import LABELS_FILENAME, MAX_RARE_ABUNDANCE, SCENE_FILENAME, generate_scene
from ..data.tiles import SceneSource, datasets_progress_bars, find_scene_sources, split_tile_dataset
from ..errors import UsageError
from ..files import write_json
from ..models.configuration_sar_lulc import SarLulcConfig
from ..scale import SMALL_SEEDS, scaled
from .ablation_report import METRICS, format_markdown, summarize, write_ablation_report
from .batches import TileNormalization, is_saved_dataset, spatial_split
from .common import library_progress_bars
from .evaluation import (
    RARE_THRESHOLD,
    SegmentationTally,
    class_shares,
    evaluate_tiles,
    load_checkpoint,
    rare_class_ids,
    segmentation_report,
)
from .finetuning import run_finetuning
from .loop import BEST_DIRNAME
from .pretraining import run_pretraining

__all__ = [
    "PRETRAININGS",
    "RUNGS",
    "AblationArguments",
    "AblationSplitArguments",
    "Rung",
    "benchmark_exposure",
    "check_ablation_arguments",
    "run_ablation",
]

TEST_REPORT_FILENAME = "test_report.json"

PRETRAININGS: dict[str, tuple[str, ...]] = {
    "mixmae": ("loss_weighting=none",),
    "sar-w-mixmae": ("loss_weighting=backscatter",),
}
"""The pretraining variants of the ladder: name -> the sar_mixmae config fields that make it (applied after
``--encoder_overrides``)."""


@dataclass(frozen=True)
class Rung:
    """One setting of the ladder.

    Attributes:
        number, name: as in the report.
        pretraining: a key of :data:`PRETRAININGS`, or None for a random encoder.
        highres_injection, refine_up_head, reweighting: the three refinements of the segmentation model.
        targets: the metrics (keys of :data:`sarlulc.training.ablation_report.METRICS`) that the step from the rung
            below to this one is meant to improve.
    """

    number: int
    name: str
    pretraining: str | None
    highres_injection: bool
    refine_up_head: bool
    reweighting: bool
    targets: tuple[str, ...]


RUNGS = (
    Rung(1, "no pretraining", None, False, False, False, ()),
    Rung(2, "+ MixMAE pretraining", "mixmae", False, False, False, ("mean_iou",)),
    Rung(3, "+ backscatter weighting (SAR-W-MixMAE)", "sar-w-mixmae", False, False, False, ("iou_water", "mean_iou")),
    Rung(4, "+ high-res injection", "sar-w-mixmae", True, False, False, ("boundary_f1_thin",)),
    Rung(5, "+ refine-up head", "sar-w-mixmae", True, True, False, ("boundary_f1_thin",)),
    Rung(6, "+ alpha re-weighting", "sar-w-mixmae", True, True, True, ("rare_class_iou", "rare_class_recall")),
)


def check_ablation_arguments(args: AblationArguments, split_args: SpatialSplitArguments) -> None:
    """Check the options before anything is generated or trained; raises :class:`UsageError`."""
    unknown = sorted(set(args.rungs) - {rung.number for rung in RUNGS})
    if unknown or not args.rungs:
        raise UsageError(f"--rungs must be among 1..{len(RUNGS)}, got {args.rungs}")
    if len(set(args.rungs)) != len(args.rungs):
        raise UsageError(f"--rungs lists a rung twice: {args.rungs}")
    if args.seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {args.seeds}")
    if args.scene is not None and not Path(args.scene).is_dir():
        raise UsageError(f"--scene {args.scene} is not a folder (give the folder holding the scene and its labels)")
    if args.tile_size % 32 or args.synthetic_size < 4 * args.tile_size:
        raise UsageError("--tile_size must be a multiple of 32 and --synthetic_size at least 4 tiles")
    if not 0.0 < args.rare_abundance <= MAX_RARE_ABUNDANCE:
        raise UsageError(f"--rare_abundance must be in (0, {MAX_RARE_ABUNDANCE:g}], got {args.rare_abundance}")
    if min(args.pretrain_steps, args.finetune_steps, args.batch_size, args.eval_steps) < 1:
        raise UsageError("--pretrain_steps, --finetune_steps, --batch_size and --eval_steps must be >= 1")
    if not 0.0 <= args.alpha <= 1.0:
        raise UsageError(f"--alpha must be in [0, 1], got {args.alpha}")
    if args.num_threads < 0:
        raise UsageError(f"--num_threads must be >= 0 (0: torch's default), got {args.num_threads}")
    # Every rung is selected on validation and scored on test: the ladder needs all three splits.
    if len(split_args.split_fractions) != 3 or min(split_args.split_fractions) <= 0:
        raise UsageError(
            f"--split_fractions needs 3 positive shares (train validation test), got {split_args.split_fractions}"
        )
    spatial_split(split_args)


@contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` intra-op torch threads (0: leave torch's setting), restoring it after.

    The ladder's models are tiny: a second thread gains little, and on a machine whose cores are busy several threads
    per process wait on each other; measured on two shared cores, a fine-tuning step took 10 times longer with two
    threads than with one.
    """
    if count == 0:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ----------------------------------------------------------------------------------------------------------------------
# The data
# ----------------------------------------------------------------------------------------------------------------------
def _scene_folder(args: AblationArguments, root: Path, progress: bool) -> Path:
    if args.scene is not None:
        return Path(args.scene)
    folder = root / "scene"
    if not ((folder / SCENE_FILENAME).is_file() and (folder / LABELS_FILENAME).is_file()):
        generate_scene(
            folder,
            size=args.synthetic_size,
            seed=args.scene_seed,
            rare_abundance=args.rare_abundance,
            progress=progress,
        )
    return folder


def _scene_sources(folder: Path) -> list[SceneSource]:
    """The folder's scenes, identified by their path inside it: the spatial split hashes the id, so the split (and the
    test tiles) must not depend on where the folder lies."""
    return [
        SceneSource(source.scene, source.labels, scene_id=Path(source.scene).relative_to(folder).as_posix())
        for source in find_scene_sources(folder)
    ]


def _tiles(args: AblationArguments, split_args: SpatialSplitArguments, scene: Path, root: Path, progress: bool) -> Path:
    """Tile and split the scene once and save it, so every run reads the very same tiles."""
    tiles = root / "tiles"
    if not is_saved_dataset(tiles):
        splits = split_tile_dataset(
            _scene_sources(scene),
            spatial_split(split_args),
            tile_size=args.tile_size,
            scheme=get_scheme("lulc-9"),
            cache_dir=root / "cache",
            progress=progress,
        )
        with datasets_progress_bars(progress):
            splits.save_to_disk(str(tiles))
    return tiles


def _class_pixels_per_tile(tiles: Any, num_classes: int) -> np.ndarray:
    """int64 ``(tiles, classes)``: labeled pixels of every class in every tile."""
    labels = np.asarray(tiles.select_columns(["label"]).with_format("numpy")["label"])
    flat = labels.reshape(len(labels), -1)
    return np.stack([(flat == class_id).sum(axis=1) for class_id in range(num_classes)], axis=1).astype(np.int64)


def _no_hit_probability(tiles: int, hit_tiles: int, batch: int) -> float:
    """Probability that a batch of ``batch`` distinct tiles drawn uniformly from ``tiles`` misses all ``hit_tiles``
    (hypergeometric: each batch of the loop's shuffled, drop-last epochs is such a draw)."""
    if batch > tiles:
        return math.nan
    return math.comb(tiles - hit_tiles, batch) / math.comb(tiles, batch)


def benchmark_exposure(splits: Any, scheme: ClassScheme, batch_size: int, alpha: float) -> dict[str, Any]:
    """What the ladder's data offers the rare classes: enough to tell whether alpha helps, or not.

    Args:
        splits: the saved ``DatasetDict`` (train, validation, test) the ladder trains and scores on.
        scheme: its class scheme.
        batch_size: tiles per training step.
        alpha: rung 6's ``class_weight_alpha``.

    Returns:
        ``tiles`` per split; ``train_share`` per class; ``rare_classes`` (under :data:`RARE_THRESHOLD` of the training
        pixels) with, per rare class, its ``pixels`` and ``tiles`` (tiles holding it) per split; ``class_weights`` at
        0 and at ``alpha`` (:meth:`SarLulcConfig.class_weights`); and per training step (a batch of ``batch_size``
        tiles): the expected ``rare_pixels_per_step`` of all rare classes together and the probability of a step
        without any rare pixel (``p_step_without_rare``).
    """
    counts = {name: _class_pixels_per_tile(splits[name], scheme.num_classes) for name in splits}
    train = counts["train"]
    frequencies = train.sum(axis=0).tolist()
    rare = rare_class_ids(frequencies)
    config = SarLulcConfig(id2label=scheme.id2label, class_frequencies=frequencies, class_weight_alpha=alpha)
    weights = dict(zip(scheme.names, config.class_weights()))
    rare_per_tile = train[:, rare].sum(axis=1) if rare else np.zeros(len(train), dtype=np.int64)
    return {
        "tiles": {name: len(value) for name, value in counts.items()},
        "batch_size": batch_size,
        "train_share": dict(zip(scheme.names, class_shares(frequencies).tolist())),
        "rare_threshold": RARE_THRESHOLD,
        "rare_classes": {
            scheme.names[i]: {
                "pixels": {name: int(value[:, i].sum()) for name, value in counts.items()},
                "tiles": {name: int((value[:, i] > 0).sum()) for name, value in counts.items()},
            }
            for i in rare
        },
        "alpha": alpha,
        "class_weights": weights,
        "pixels_per_step": batch_size * float(train.sum()) / max(len(train), 1),
        "rare_pixels_per_step": batch_size * float(rare_per_tile.mean()) if len(train) else math.nan,
        "p_step_without_rare": _no_hit_probability(len(train), int((rare_per_tile > 0).sum()), batch_size),
    }


def _benchmark_lines(benchmark: dict[str, Any]) -> list[str]:
    """The exposure of the rare classes in a few markdown lines."""
    tiles = benchmark["tiles"]
    lines = [
        f"Tiles: {tiles.get('train', 0)} train, {tiles.get('validation', 0)} validation, {tiles.get('test', 0)} test. "
        f"Rare classes (under {100 * benchmark['rare_threshold']:g} % of the training pixels):"
    ]
    for name, values in benchmark["rare_classes"].items():
        lines.append(
            f"- {name}: {100 * benchmark['train_share'][name]:.2f} % of the training pixels; in "
            f"{values['tiles']['train']} train / {values['tiles']['validation']} validation / "
            f"{values['tiles']['test']} test tiles ({values['pixels']['test']} test pixels); loss weight "
            f"{benchmark['class_weights'][name]:.2f} at alpha {benchmark['alpha']:g}"
        )
    if not benchmark["rare_classes"]:
        lines.append("- none: rare-class IoU and recall are undefined")
    common = [w for name, w in benchmark["class_weights"].items() if name not in benchmark["rare_classes"]]
    lines.append(
        f"- common classes' loss weights at alpha {benchmark['alpha']:g}: {min(common):.2f}-{max(common):.2f}; "
        f"rare pixels per training step: {benchmark['rare_pixels_per_step']:.0f} of "
        f"{benchmark['pixels_per_step']:.0f} on average, no rare pixel in "
        f"{100 * benchmark['p_step_without_rare']:.0f} % of the steps"
        if common
        else "- every class is rare"
    )
    return lines


# ----------------------------------------------------------------------------------------------------------------------
# The runs
# ----------------------------------------------------------------------------------------------------------------------
def _pretrain(args: AblationArguments, variant: str, seed: int, tiles: Path, root: Path) -> Path:
    output = root / "pretrain" / f"{variant}-seed{seed}"
    if args.reuse_pretraining and (output / "model.safetensors").is_file():
        return output
    run_pretraining(
        PretrainingArguments(config_overrides=[*args.encoder_overrides, *PRETRAININGS[variant]]),
        TileArguments(train_data=str(tiles)),
        AugmentArguments(),
        PretrainingLoopArguments(
            output_dir=str(output),
            overwrite_output_dir=True,
            seed=seed,
            per_device_train_batch_size=args.batch_size,
            learning_rate=args.pretrain_learning_rate,
            max_train_steps=args.pretrain_steps,
            checkpointing_steps=args.pretrain_steps,
            checkpoints_total_limit=1,
            disable_tqdm=args.disable_tqdm,
        ),
    )
    return output


def _finetune(
    args: AblationArguments, rung: Rung, seed: int, tiles: Path, pretrained: Path | None, output: Path
) -> None:
    encoder = [f"backbone_config.{item}" for item in args.encoder_overrides]
    run_finetuning(
        FinetuningArguments(
            task="lulc",
            pretrained=str(pretrained) if pretrained is not None else None,
            from_scratch=pretrained is None,
            config_overrides=[*args.decoder_overrides, *([] if pretrained is not None else encoder)],
            use_highres_injection=rung.highres_injection,
            use_refine_up_head=rung.refine_up_head,
            class_weight_alpha=args.alpha if rung.reweighting else 0.0,
        ),
        TileArguments(train_data=str(tiles)),
        AugmentArguments(),
        FinetuningLoopArguments(
            output_dir=str(output),
            overwrite_output_dir=True,
            seed=seed,
            per_device_train_batch_size=args.batch_size,
            learning_rate=args.finetune_learning_rate,
            max_train_steps=args.finetune_steps,
            eval_steps=args.eval_steps,
            checkpointing_steps=args.finetune_steps,
            checkpoints_total_limit=1,
            disable_tqdm=args.disable_tqdm,
        ),
    )


def _test_report(model_dir: Path, test: Any, scheme: ClassScheme, progress: bool) -> dict[str, Any]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with library_progress_bars(progress):
        model, processor = load_checkpoint(model_dir, device)
    tally = SegmentationTally(scheme.num_classes, scheme.ignore_index)
    evaluate_tiles(model, test, TileNormalization.from_processor(processor), tally, device=device, progress=progress)
    return segmentation_report(tally, scheme, model.config.class_frequencies)


def run_ablation(
    args: AblationArguments,
    split_args: SpatialSplitArguments | None = None,
    *,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the ladder (module docstring); write ``ablation.md``, ``ablation.json`` and ``ablation.png`` into the
    output folder, and each run's test report (``test_report.json``) next to its model.

    Args:
        args: the ladder's options.
        split_args: the spatial split of the scene (default :class:`AblationSplitArguments`: 60/20/20 in groups of
            2 x 2 tiles).
        echo: where progress lines and the tables go.

    Returns:
        What ``ablation.json`` holds: the summary of :func:`sarlulc.training.ablation_report.summarize` (``seeds``,
        ``metrics``, ``rungs`` with their per-seed ``runs`` (each with ``seed``, the metrics, ``rare_classes`` and
        ``model_dir``), ``mean``, ``std`` and ``n``; ``differences``), plus ``arguments``, ``benchmark``
        (:func:`benchmark_exposure`), ``files`` and ``runtime_seconds``.
    """
    import datasets

    split_args = split_args if split_args is not None else AblationSplitArguments()
    check_ablation_arguments(args, split_args)
    started = time.perf_counter()
    root = Path(args.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    progress = not args.disable_tqdm
    scheme = get_scheme("lulc-9")
    selected = [rung for rung in RUNGS if rung.number in args.rungs]
    seeds = [args.seed + index for index in range(scaled(args.seeds, SMALL_SEEDS))]  # SARLULC_DOCS_SMALL
    with _torch_threads(args.num_threads):
        tiles = _tiles(args, split_args, _scene_folder(args, root, progress), root, progress)
        splits = datasets.load_from_disk(str(tiles))
        benchmark = benchmark_exposure(splits, scheme, args.batch_size, args.alpha)
        runs: dict[int, list[dict[str, Any]]] = {rung.number: [] for rung in selected}
        for index, seed in enumerate(seeds):
            pretrained: dict[str, Path] = {}
            for rung in selected:
                echo(f"seed {seed} ({index + 1}/{len(seeds)}), rung {rung.number}: {rung.name}")
                if rung.pretraining is not None and rung.pretraining not in pretrained:
                    pretrained[rung.pretraining] = _pretrain(args, rung.pretraining, seed, tiles, root)
                output = root / f"rung{rung.number}" / f"seed{seed}"
                _finetune(args, rung, seed, tiles, pretrained.get(rung.pretraining or ""), output)
                report = _test_report(output / BEST_DIRNAME, splits["test"], scheme, progress)
                write_json(output / TEST_REPORT_FILENAME, report)
                runs[rung.number].append(
                    {
                        "seed": seed,
                        **{metric.key: report.get(metric.key, math.nan) for metric in METRICS},
                        "rare_classes": report.get("rare_classes", []),
                        "model_dir": str(output / BEST_DIRNAME),
                    }
                )
    ladder = [
        {"rung": rung.number, "setting": rung.name, "targets": list(rung.targets), "runs": runs[rung.number]}
        for rung in selected
    ]
    summary = summarize(ladder, seeds)
    summary.update(
        arguments={**asdict(args), **asdict(split_args)},
        benchmark=benchmark,
        runtime_seconds=round(time.perf_counter() - started, 1),
    )
    header = [
        f"Scene {args.scene or 'synthetic'}; every run: {args.pretrain_steps} pretraining and {args.finetune_steps} "
        f"fine-tuning steps of {args.batch_size} tiles of {args.tile_size} px, best validation checkpoint scored on "
        "the test split.",
        "",
        *_benchmark_lines(benchmark),
    ]
    files = write_ablation_report(summary, root, header)
    summary["files"] = {kind: str(path) for kind, path in files.items()}
    echo(format_markdown(summary, header))
    return summary
