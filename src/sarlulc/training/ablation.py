"""The paper's ablation ladder on one scene, one split and one seed (the logic behind ``scripts/ablation.py``).

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data.classes import get_scheme
from ..data.synthetic import LABELS_FILENAME, SCENE_FILENAME, generate_scene
from ..data.tiles import SpatialSplit, datasets_progress_bars, split_tile_dataset
from .common import AugmentArguments, TileArguments
from .data import TileNormalization, UsageError, is_saved_dataset
from .evaluation import SegmentationTally, evaluate_tiles, load_checkpoint, segmentation_report
from .finetuning import FinetuningArguments, FinetuningLoopArguments, run_finetuning
from .loop import BEST_DIRNAME, write_json
from .pretraining import PretrainingArguments, PretrainingLoopArguments, run_pretraining

__all__ = ["RUNGS", "AblationArguments", "Rung", "format_table", "run_ablation"]


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

_TINY_ENCODER = [
    "embed_dim=16",
    "depths=[1,1,1,1]",
    "num_heads=[1,2,2,4]",
    "window_size=[16,16,8,4]",
    "image_size=64",
    "decoder_embed_dim=32",
    "decoder_depth=1",
    "decoder_num_heads=2",
]
_TINY_DECODER = ["decoder_hidden_size=32"]


@dataclass
class AblationArguments:
    """Options of ``scripts/ablation.py``."""

    output_dir: str = field(metadata={"help": "Folder for the scene, tiles, every run and the table."})
    scene: str | None = field(
        default=None,
        metadata={"help": "Folder with scene.tif + labels.tif (or NAME.tif + NAME_labels.tif); default: synthesize."},
    )
    synthetic_size: int = field(default=1024, metadata={"help": "Side in pixels of the synthetic scene."})
    seed: int = field(default=0, metadata={"help": "Seed of the synthetic scene, the split and every training run."})
    tile_size: int = field(default=64, metadata={"help": "Tile side in pixels (a multiple of 32)."})
    split_group_size: int = field(default=2, metadata={"help": "The spatial split assigns groups of N x N tiles."})
    split_fractions: list[float] = field(
        default_factory=lambda: [0.6, 0.2, 0.2],
        metadata={
            "help": "Shares of train, validation and test groups; a large test share gives the rare classes (small, "
            "clustered) a chance to appear in the test tiles."
        },
    )
    encoder_overrides: list[str] = field(
        default_factory=lambda: list(_TINY_ENCODER),
        metadata={"help": "sar_mixmae config fields (KEY=VALUE) of the encoder, for pretraining and rung 1."},
    )
    decoder_overrides: list[str] = field(
        default_factory=lambda: list(_TINY_DECODER),
        metadata={"help": "sar_lulc config fields (KEY=VALUE) of the segmentation model."},
    )
    pretrain_steps: int = field(default=300, metadata={"help": "Optimizer steps of the shared pretraining run."})
    finetune_steps: int = field(default=300, metadata={"help": "Optimizer steps of every rung."})
    batch_size: int = field(default=8, metadata={"help": "Tiles per batch."})
    pretrain_learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate of pretraining."})
    finetune_learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate of fine-tuning."})
    alpha: float = field(default=0.5, metadata={"help": "class_weight_alpha of rung 5 (rungs 1-4 use 0)."})
    eval_steps: int = field(default=100, metadata={"help": "Validation (model selection) every N steps."})
    rungs: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5], metadata={"help": "Rungs to run."})
    reuse_pretraining: bool = field(
        default=True, metadata={"help": "Reuse OUTPUT/pretrain when it already holds a model (--no_reuse_pretraining)."}
    )
    disable_tqdm: bool = field(default=False, metadata={"help": "Hide progress bars."})

    def validate(self) -> None:
        unknown = sorted(set(self.rungs) - {rung.number for rung in RUNGS})
        if unknown or not self.rungs:
            raise UsageError(f"--rungs must be among 1..{len(RUNGS)}, got {self.rungs}")
        if self.scene is not None and not Path(self.scene).is_dir():
            raise UsageError(f"--scene {self.scene} is not a folder (give the folder holding the scene and its labels)")
        if self.tile_size % 32 or self.synthetic_size < 4 * self.tile_size:
            raise UsageError("--tile_size must be a multiple of 32 and --synthetic_size at least 4 tiles")
        if min(self.pretrain_steps, self.finetune_steps, self.batch_size, self.eval_steps) < 1:
            raise UsageError("--pretrain_steps, --finetune_steps, --batch_size and --eval_steps must be >= 1")
        if not 0.0 <= self.alpha <= 1.0:
            raise UsageError(f"--alpha must be in [0, 1], got {self.alpha}")
        if len(self.split_fractions) != 3 or min(self.split_fractions) <= 0:
            raise UsageError(
                f"--split_fractions needs 3 positive shares (train validation test), got {self.split_fractions}"
            )


def _scene_folder(args: AblationArguments, root: Path) -> Path:
    if args.scene is not None:
        return Path(args.scene)
    folder = root / "scene"
    if not ((folder / SCENE_FILENAME).is_file() and (folder / LABELS_FILENAME).is_file()):
        generate_scene(folder, size=args.synthetic_size, seed=args.seed, progress=not args.disable_tqdm)
    return folder


def _tiles(args: AblationArguments, scene: Path, root: Path) -> Path:
    """Tile and split the scene once and save it, so every run reads the very same tiles."""
    tiles = root / "tiles"
    if not is_saved_dataset(tiles):
        progress = not args.disable_tqdm
        fractions = dict(zip(("train", "validation", "test"), args.split_fractions))
        split = SpatialSplit(fractions=fractions, group_size=args.split_group_size, seed=args.seed)
        splits = split_tile_dataset(
            scene,
            split,
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


def run_ablation(args: AblationArguments, echo: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run the ladder (module docstring); write ``ablation.md`` and ``ablation.json`` into the output folder.

    Returns:
        One row per rung: ``rung``, ``setting``, ``mean_iou``, ``rare_class_iou``, ``boundary_f1_thin``,
        ``iou_water``, ``rare_classes`` and the rung's ``model_dir``.
    """
    args.validate()
    root = Path(args.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    scene = _scene_folder(args, root)
    tiles = _tiles(args, scene, root)
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
    (root / "ablation.md").write_text(table + "\n")
    write_json(root / "ablation.json", {"arguments": vars(args), "rows": rows})
    echo(table)
    return rows
