"""The paper's ablation ladder on one scene, one split and one seed (the logic behind ``sarlulc ablation`` and
``scripts/ablation.py``).

Rungs, each adding one thing to the previous:

1. no pretraining (random encoder), plain UperNet (bilinear x4 head), no class re-weighting;
2. + SAR-W-MixMAE pretraining (one pretraining run, shared by rungs 2-5);
3. + high-resolution feature injection;
4. + progressive refine-up head;
5. + alpha-scaled class re-weighting.

Every rung is fine-tuned with the same data, seed, steps and optimizer, its best checkpoint (validation mIoU) is
evaluated on the test split, and the results are tabulated: mIoU, rare-class IoU, thin-structure boundary F1 and
IoU_water (definitions in :mod:`sarlulc.training.evaluation`). Without a scene, a synthetic one is generated. The defaults
are sized for a CPU: a 1024 px scene, 64 px tiles split 60/20/20 in groups of 2 x 2 tiles, a tiny encoder, 300
steps per run (a few minutes on two cores).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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

from ..data.classes import get_scheme
from ..data.synthetic import LABELS_FILENAME, SCENE_FILENAME, generate_scene
from ..data.tiles import datasets_progress_bars, split_tile_dataset
from ..errors import UsageError
from ..files import write_json, write_text_atomic
from .batches import TileNormalization, is_saved_dataset, spatial_split
from .evaluation import SegmentationTally, evaluate_tiles, load_checkpoint, segmentation_report
from .finetuning import run_finetuning
from .loop import BEST_DIRNAME
from .pretraining import run_pretraining

__all__ = [
    "RUNGS",
    "AblationArguments",
    "AblationSplitArguments",
    "Rung",
    "check_ablation_arguments",
    "format_table",
    "run_ablation",
]


@dataclass(frozen=True)
class Rung:
    """One setting of the ladder."""

    number: int
    name: str
    pretrained: bool
    highres_injection: bool
    refine_up_head: bool
    reweighting: bool


RUNGS = (
    Rung(1, "no pretraining", False, False, False, False),
    Rung(2, "+ pretraining", True, False, False, False),
    Rung(3, "+ high-res injection", True, True, False, False),
    Rung(4, "+ refine-up head", True, True, True, False),
    Rung(5, "+ alpha re-weighting", True, True, True, True),
)


def check_ablation_arguments(args: AblationArguments, split_args: SpatialSplitArguments) -> None:
    """Check the options before anything is generated or trained; raises :class:`UsageError`."""
    unknown = sorted(set(args.rungs) - {rung.number for rung in RUNGS})
    if unknown or not args.rungs:
        raise UsageError(f"--rungs must be among 1..{len(RUNGS)}, got {args.rungs}")
    if args.scene is not None and not Path(args.scene).is_dir():
        raise UsageError(f"--scene {args.scene} is not a folder (give the folder holding the scene and its labels)")
    if args.tile_size % 32 or args.synthetic_size < 4 * args.tile_size:
        raise UsageError("--tile_size must be a multiple of 32 and --synthetic_size at least 4 tiles")
    if min(args.pretrain_steps, args.finetune_steps, args.batch_size, args.eval_steps) < 1:
        raise UsageError("--pretrain_steps, --finetune_steps, --batch_size and --eval_steps must be >= 1")
    if not 0.0 <= args.alpha <= 1.0:
        raise UsageError(f"--alpha must be in [0, 1], got {args.alpha}")
    # Every rung is selected on validation and scored on test: the ladder needs all three splits.
    if len(split_args.split_fractions) != 3 or min(split_args.split_fractions) <= 0:
        raise UsageError(
            f"--split_fractions needs 3 positive shares (train validation test), got {split_args.split_fractions}"
        )
    spatial_split(split_args)


def _scene_folder(args: AblationArguments, root: Path) -> Path:
    if args.scene is not None:
        return Path(args.scene)
    folder = root / "scene"
    if not ((folder / SCENE_FILENAME).is_file() and (folder / LABELS_FILENAME).is_file()):
        generate_scene(folder, size=args.synthetic_size, seed=args.seed, progress=not args.disable_tqdm)
    return folder


def _tiles(args: AblationArguments, split_args: SpatialSplitArguments, scene: Path, root: Path) -> Path:
    """Tile and split the scene once and save it, so every run reads the very same tiles."""
    tiles = root / "tiles"
    if not is_saved_dataset(tiles):
        progress = not args.disable_tqdm
        splits = split_tile_dataset(
            scene,
            spatial_split(split_args),
            tile_size=args.tile_size,
            scheme=get_scheme("lulc-9"),
            cache_dir=root / "cache",
            progress=progress,
        )
        with datasets_progress_bars(progress):
            splits.save_to_disk(str(tiles))
    return tiles


def _pretrain(args: AblationArguments, tiles: Path, root: Path) -> Path:
    output = root / "pretrain"
    if args.reuse_pretraining and (output / "model.safetensors").is_file():
        return output
    run_pretraining(
        PretrainingArguments(config_overrides=args.encoder_overrides),
        TileArguments(train_data=str(tiles)),
        AugmentArguments(),
        PretrainingLoopArguments(
            output_dir=str(output),
            overwrite_output_dir=True,
            seed=args.seed,
            per_device_train_batch_size=args.batch_size,
            learning_rate=args.pretrain_learning_rate,
            max_train_steps=args.pretrain_steps,
            checkpointing_steps=args.pretrain_steps,
            checkpoints_total_limit=1,
            disable_tqdm=args.disable_tqdm,
        ),
    )
    return output


def _finetune(args: AblationArguments, rung: Rung, tiles: Path, pretrained: Path | None, output: Path) -> None:
    encoder = [f"backbone_config.{item}" for item in args.encoder_overrides]
    run_finetuning(
        FinetuningArguments(
            task="lulc",
            pretrained=str(pretrained) if rung.pretrained else None,
            from_scratch=not rung.pretrained,
            config_overrides=[*args.decoder_overrides, *([] if rung.pretrained else encoder)],
            use_highres_injection=rung.highres_injection,
            use_refine_up_head=rung.refine_up_head,
            class_weight_alpha=args.alpha if rung.reweighting else 0.0,
        ),
        TileArguments(train_data=str(tiles)),
        AugmentArguments(),
        FinetuningLoopArguments(
            output_dir=str(output),
            overwrite_output_dir=True,
            seed=args.seed,
            per_device_train_batch_size=args.batch_size,
            learning_rate=args.finetune_learning_rate,
            max_train_steps=args.finetune_steps,
            eval_steps=args.eval_steps,
            checkpointing_steps=args.finetune_steps,
            checkpoints_total_limit=1,
            disable_tqdm=args.disable_tqdm,
        ),
    )


def _test_report(model_dir: Path, tiles: Path, progress: bool) -> dict[str, Any]:
    import datasets

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, processor = load_checkpoint(model_dir, device)
    scheme = get_scheme("lulc-9")
    tally = SegmentationTally(scheme.num_classes, scheme.ignore_index)
    test = datasets.load_from_disk(str(tiles))["test"]
    evaluate_tiles(model, test, TileNormalization.from_processor(processor), tally, device=device, progress=progress)
    return segmentation_report(tally, scheme, model.config.class_frequencies)


def format_table(rows: list[dict[str, Any]]) -> str:
    """The ablation as a markdown table (percentages)."""

    def percent(value: float | None) -> str:
        return "n/a" if value is None or value != value else f"{100 * value:.2f}"

    lines = [
        "| rung | setting | mIoU % | rare-class IoU % | boundary F1 (thin) % | IoU_water % |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['rung']} | {row['setting']} | {percent(row['mean_iou'])} | {percent(row['rare_class_iou'])} | "
            f"{percent(row['boundary_f1_thin'])} | {percent(row['iou_water'])} |"
        )
    return "\n".join(lines)


def run_ablation(
    args: AblationArguments,
    split_args: SpatialSplitArguments | None = None,
    *,
    echo: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Run the ladder (module docstring); write ``ablation.md`` and ``ablation.json`` into the output folder.

    Args:
        args: the ladder's options.
        split_args: the spatial split of the scene (default :class:`AblationSplitArguments`: 60/20/20 in groups of
            2 x 2 tiles).
        echo: where progress lines and the table go.

    Returns:
        One row per rung: ``rung``, ``setting``, ``mean_iou``, ``rare_class_iou``, ``boundary_f1_thin``,
        ``iou_water``, ``rare_classes`` and the rung's ``model_dir``.
    """
    split_args = split_args if split_args is not None else AblationSplitArguments()
    check_ablation_arguments(args, split_args)
    root = Path(args.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    scene = _scene_folder(args, root)
    tiles = _tiles(args, split_args, scene, root)
    selected = [rung for rung in RUNGS if rung.number in args.rungs]
    pretrained = _pretrain(args, tiles, root) if any(rung.pretrained for rung in selected) else None
    rows = []
    for rung in selected:
        echo(f"rung {rung.number}: {rung.name}")
        output = root / f"rung{rung.number}"
        _finetune(args, rung, tiles, pretrained, output)
        report = _test_report(output / BEST_DIRNAME, tiles, progress=not args.disable_tqdm)
        rows.append(
            {
                "rung": rung.number,
                "setting": rung.name,
                "mean_iou": report["mean_iou"],
                "rare_class_iou": report["rare_class_iou"],
                "boundary_f1_thin": report["boundary_f1_thin"],
                "iou_water": report["iou_water"],
                "rare_classes": report["rare_classes"],
                "model_dir": str(output / BEST_DIRNAME),
            }
        )
    table = format_table(rows)
    write_text_atomic(root / "ablation.md", table + "\n")
    write_json(root / "ablation.json", {"arguments": {**asdict(args), **asdict(split_args)}, "rows": rows})
    echo(table)
    return rows
