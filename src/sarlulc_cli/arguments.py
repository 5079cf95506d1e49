"""The argument records: every option of every ``sarlulc`` command, with its name, type, default and help.

One plain dataclass per group of options. A record is the single source of its options: the command line builds its
arguments from the fields (:mod:`sarlulc_cli.parser`: ``--field_name``, also spelled ``--field-name``), and the
library functions take the records (``sarlulc.training.run_finetuning(args, tile_args, augment_args, loop_args,
split_args)``; ``sarlulc.training`` re-exports them). Records carry data only: checks that need the library (paths on
disk, configs, checkpoints, data) live in the library functions that consume them and raise ``UsageError`` there.

Conventions the parser follows:

* a field without a default is required; ``metadata["positional"]`` makes it a positional argument;
* ``bool`` (and ``bool | None``) fields are flags: ``--x`` (or ``--x true|false``); fields whose default is not False
  also get ``--no_x``;
* ``X | None`` fields accept an X and default to None, which each help text explains;
* ``list[X]`` fields take one or more values; ``Literal[...]`` fields take one of the listed choices;
* ``metadata["type"]`` replaces the conversion of the text (for values such as ``1024x2048``).

This module imports only the standard library, so that ``sarlulc --help`` answers without importing torch.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import ClassVar, Literal

__all__ = [
    "AblationArguments",
    "AblationSplitArguments",
    "AugmentArguments",
    "DemoArguments",
    "EvaluationArguments",
    "FinetuningArguments",
    "FinetuningLoopArguments",
    "InferenceArguments",
    "InfoArguments",
    "LoopArguments",
    "ModelCardArguments",
    "PredictionArguments",
    "PretrainingArguments",
    "PretrainingLoopArguments",
    "PushToHubArguments",
    "SpatialSplitArguments",
    "SynthArguments",
    "TileArguments",
    "scene_size",
]


def scene_size(text: str) -> tuple[int, int]:
    """``"2048"`` -> (2048, 2048); ``"1024x2048"`` -> (1024, 2048) as (height, width); every side >= 64 px."""
    try:
        parts = [int(part) for part in text.lower().split("x")]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"size must be N or HxW in pixels, got {text!r}") from err
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 64:
        raise argparse.ArgumentTypeError(f"size must be N or HxW with every side >= 64 pixels, got {text!r}")
    return parts[0], parts[1]


# ----------------------------------------------------------------------------------------------------------------------
# Training data and augmentation (pretrain, finetune)
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class TileArguments:
    """Where the training tiles come from and how scenes are cut into them."""

    group_title: ClassVar[str] = "data"

    train_data: str = field(
        metadata={
            "help": "Training data: a dataset saved with save_to_disk (e.g. the OUT/tiles of `sarlulc demo`), a folder "
            "of scenes (GeoTIFFs with NAME_labels.tif or labels.tif next to each, and JAXA products: mosaic tiles and "
            "their .tar.gz archives, L1.5/L2.1 product folders), or one scene or product."
        }
    )
    labels: str | None = field(
        default=None,
        metadata={
            "help": "Labels for the scenes of --train_data that have no label raster of their own: a folder of JAXA "
            "HRLULC tiles (LC_N{lat}E{lon}.tif, e.g. JAXA_HRLULC_Japan_v23.12) or one label raster, warped onto each "
            "scene's grid by nearest neighbour while tiling (default: none)."
        },
    )
    tile_size: int = field(default=256, metadata={"help": "Tile side in pixels when tiling scenes (a multiple of 32)."})
    tile_stride: int | None = field(
        default=None, metadata={"help": "Distance between tile origins when tiling scenes (default: tile_size)."}
    )
    min_valid_fraction: float = field(
        default=0.5, metadata={"help": "Skip scene tiles with a smaller share of valid (non-nodata) pixels."}
    )
    cache_dir: str | None = field(
        default=None, metadata={"help": "Where tiled scenes are cached as Arrow files (default: HF_DATASETS_CACHE)."}
    )


@dataclass
class AugmentArguments:
    """Random augmentation of training tiles (drawn from the per-step generator, so resumes replay it)."""

    group_title: ClassVar[str] = "augmentation"

    crop_size: int | None = field(
        default=None,
        metadata={"help": "Train on random square crops of this side (a multiple of 32; default: the tile)."},
    )
    flip: bool = field(default=True, metadata={"help": "Random horizontal/vertical flips (--no_flip disables)."})
    rotate90: bool = field(default=True, metadata={"help": "Random 90-degree rotations (--no_rotate90 disables)."})
    gain_jitter_db: float = field(
        default=0.0,
        metadata={
            "help": "Speckle-preserving intensity jitter: a random gain in linear power, i.e. an offset of up to +-this "
            "many dB per tile (0 disables)."
        },
    )


@dataclass
class SpatialSplitArguments:
    """How scenes are split in space into train, validation and test tiles (scenes only; a saved dataset keeps its
    splits). Give the same values to finetune and evaluate so that they see the same test tiles."""

    group_title: ClassVar[str] = "spatial split"

    split_fractions: list[float] = field(
        default_factory=lambda: [0.8, 0.1, 0.1],
        metadata={"help": "Shares of train, validation and test in the spatial split (3 values)."},
    )
    split_group_size: int = field(
        default=4, metadata={"help": "The spatial split assigns groups of N x N tiles to one split."}
    )
    split_seed: int = field(default=0, metadata={"help": "Seed of the spatial split."})


@dataclass
class AblationSplitArguments(SpatialSplitArguments):
    """The spatial split with the ablation's defaults: small groups and a large test share, which gives the rare
    classes (small, clustered) a chance to appear in the test tiles of one small scene."""

    split_fractions: list[float] = field(
        default_factory=lambda: [0.6, 0.2, 0.2],
        metadata={"help": "Shares of train, validation and test groups (3 positive values)."},
    )
    split_group_size: int = field(default=2, metadata={"help": "The spatial split assigns groups of N x N tiles."})


# ----------------------------------------------------------------------------------------------------------------------
# The training loop
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class LoopArguments:
    """Options of the training loop shared by pretraining and fine-tuning."""

    group_title: ClassVar[str] = "training loop"

    output_dir: str = field(
        metadata={"help": "Folder for checkpoints (step_N), logs, the final model and all_results.json."}
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Delete step_N checkpoints already in output_dir instead of refusing to start."},
    )
    seed: int = field(default=42, metadata={"help": "Seed of initialization, data order and augmentation."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Tiles per batch on each process."})
    per_device_eval_batch_size: int = field(
        default=8, metadata={"help": "Tiles per evaluation batch and process (fine-tuning)."}
    )
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Batches whose gradients are summed into one optimizer step."}
    )
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate after warmup."})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay (not on norms, biases, tokens)."})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1."})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW beta2."})
    adam_epsilon: float = field(default=1e-8, metadata={"help": "AdamW epsilon."})
    layer_decay: float = field(
        default=1.0,
        metadata={
            "help": "Layer-wise learning-rate decay in (0, 1] for fine-tuning: encoder block i (counted from the top) "
            "learns at lr * decay**i, the decoder at lr. 1.0 turns it off."
        },
    )
    num_train_epochs: int = field(default=10, metadata={"help": "Passes over the training tiles."})
    max_train_steps: int | None = field(
        default=None, metadata={"help": "Total optimizer steps; overrides num_train_epochs and sets the schedule."}
    )
    warmup_ratio: float = field(default=0.05, metadata={"help": "Share of the steps with linear warmup."})
    warmup_steps: int | None = field(default=None, metadata={"help": "Warmup steps; overrides warmup_ratio."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm; 0 disables clipping."})
    mixed_precision: Literal["no", "fp16", "bf16"] | None = field(
        default=None,
        metadata={"help": "no, fp16 or bf16; default: what `accelerate launch` / `accelerate config` say (else no)."},
    )
    checkpointing_steps: int = field(
        default=500, metadata={"help": "Save the full training state to output_dir/step_N every N steps."}
    )
    checkpoints_total_limit: int | None = field(
        default=2, metadata={"help": "Keep only the newest K step_N folders (none: keep all)."}
    )
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={"help": "'latest' (the newest output_dir/step_N) or the path of a step_N folder to resume from."},
    )
    stop_at_step: int | None = field(
        default=None,
        metadata={
            "help": "Stop (saving a checkpoint) once this many optimizer steps are done, without changing the "
            "schedule, which still follows max_train_steps; resume later with --resume_from_checkpoint latest."
        },
    )
    eval_steps: int | None = field(
        default=None,
        metadata={"help": "Fine-tuning: evaluate every N steps and at the end (by default only at the end)."},
    )
    logging_steps: int = field(default=10, metadata={"help": "Log loss, learning rate and throughput every N steps."})
    report_to: str = field(
        default="jsonl",
        metadata={
            "help": "Trackers, comma separated: jsonl (ours, output_dir/logs/RUN/metrics.jsonl), an installed "
            "accelerate tracker (tensorboard, wandb, ...), all, or none."
        },
    )
    dataloader_num_workers: int | None = field(
        default=None, metadata={"help": "DataLoader worker processes; default 0 on CPU, up to 4 with CUDA."}
    )
    ddp_find_unused_parameters: bool = field(
        default=False,
        metadata={
            "help": "Multi-process only: let DistributedDataParallel look for parameters that get no gradient (needed "
            "when the model has parameters its loss does not use; costs a little speed)."
        },
    )
    full_determinism: bool = field(
        default=False,
        metadata={
            "help": "Use torch's deterministic algorithms, for bitwise-reproducible runs and resumes (a little slower; "
            "on CUDA, ops without a deterministic version only warn)."
        },
    )
    disable_tqdm: bool = field(default=False, metadata={"help": "Hide progress bars."})


@dataclass
class PretrainingLoopArguments(LoopArguments):
    """The loop's options with MixMAE's optimizer defaults (AdamW betas (0.9, 0.95), weight decay 0.05)."""

    learning_rate: float = field(
        default=1.5e-4, metadata={"help": "Peak learning rate (MixMAE: 1.5e-4 x total batch / 256)."}
    )
    adam_beta2: float = field(default=0.95, metadata={"help": "AdamW beta2 (MixMAE: 0.95)."})


@dataclass
class FinetuningLoopArguments(LoopArguments):
    """The loop's options with fine-tuning defaults (layer-wise lr decay 0.9, evaluation every 100 steps)."""

    layer_decay: float = field(
        default=0.9,
        metadata={"help": "Layer-wise lr decay: encoder block i from the top learns at lr * decay**i; 1.0 = off."},
    )
    eval_steps: int | None = field(
        default=100, metadata={"help": "Evaluate on the eval split every N steps (and always at the end)."}
    )
    # Every parameter of the segmentation model gets a gradient (the backbone has no final LayerNorm), so
    # DistributedDataParallel need not search for unused ones; turn it on for custom configs that leave some unused.
    ddp_find_unused_parameters: bool = field(
        default=False,
        metadata={"help": "Multi-process only: let DistributedDataParallel skip parameters without gradient."},
    )


# ----------------------------------------------------------------------------------------------------------------------
# Models and tasks
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class PretrainingArguments:
    """Model options of pretraining (data: :class:`TileArguments`, augmentation: :class:`AugmentArguments`, the loop:
    :class:`PretrainingLoopArguments`)."""

    group_title: ClassVar[str] = "model"

    config: str | None = field(
        default=None,
        metadata={
            "help": "Folder with a sar_mixmae config.json, e.g. hub_configs/sar-mixmae-tiny or hub_configs/sar-mixmae-base "
            "(default: the tiny model's defaults)."
        },
    )
    config_overrides: list[str] | None = field(
        default=None,
        metadata={"help": "Config fields to change, as KEY=VALUE (JSON values), e.g. embed_dim=32 depths=[1,1,1,1]."},
    )
    dataset_split: str = field(
        default="train", metadata={"help": "Split of a saved DatasetDict to pretrain on (tiled scenes: all tiles)."}
    )


@dataclass
class FinetuningArguments:
    """Task and model options of fine-tuning (data: :class:`TileArguments`, the split of scenes:
    :class:`SpatialSplitArguments`, augmentation: :class:`AugmentArguments`, the loop: :class:`FinetuningLoopArguments`)."""

    group_title: ClassVar[str] = "task and model"

    task: Literal["lulc", "water"] = field(
        default="lulc", metadata={"help": "lulc: the 9 LULC classes; water: water vs not water (from the same labels)."}
    )
    class_scheme: str | None = field(
        default=None,
        metadata={
            "help": "Class scheme name (lulc-9, water, jaxa-14) or JSON file; default: the task's (lulc-9/water)."
        },
    )
    pretrained: str | None = field(
        default=None, metadata={"help": "Output folder of `sarlulc pretrain`: its encoder weights initialize ours."}
    )
    from_scratch: bool = field(
        default=False, metadata={"help": "Random initialization instead of --pretrained (the no-pretraining baseline)."}
    )
    config: str | None = field(
        default=None,
        metadata={
            "help": "Folder with a sar_lulc config.json (hub_configs/sar-lulc-tiny, ...); with --pretrained its encoder "
            "part is replaced by the checkpoint's. Default: the package defaults."
        },
    )
    config_overrides: list[str] | None = field(
        default=None,
        metadata={
            "help": "Config fields to change, KEY=VALUE (JSON values); nested: backbone_config.embed_dim=16. "
            "id2label=null drops a config's classes in favour of the task's."
        },
    )
    use_highres_injection: bool | None = field(
        default=None, metadata={"help": "Refinement (i), true/false (default: the config's)."}
    )
    use_refine_up_head: bool | None = field(
        default=None, metadata={"help": "Refinement (ii), true/false (default: the config's)."}
    )
    class_weight_alpha: float | None = field(
        default=None,
        metadata={"help": "Refinement (iii): alpha in [0, 1] of the class re-weighting; 0 = none (default: config's)."},
    )
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    eval_split: str = field(default="validation", metadata={"help": "Split to evaluate on (model selection)."})


# ----------------------------------------------------------------------------------------------------------------------
# Prediction and evaluation
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class InferenceArguments:
    """How a scene goes through the model: sliding tiles with blended overlaps (sarlulc.inference.predict_scene)."""

    group_title: ClassVar[str] = "inference"

    tile: int = field(default=512, metadata={"help": "Tile side in px, a multiple of 32."})
    overlap: int = field(default=64, metadata={"help": "Px shared by neighbouring tiles, below tile/2."})
    batch_size: int | None = field(
        default=None, metadata={"help": "Tiles per model call (default: 2 on the CPU, 8 on a GPU)."}
    )
    device: str | None = field(
        default=None,
        metadata={"help": "cpu, cuda, cuda:1, ... (default: cuda if available; per process under accelerate)."},
    )
    num_workers: int | None = field(
        default=None, metadata={"help": "Threads preparing tiles (default: 1 on the CPU, 4 on a GPU)."}
    )


@dataclass
class PredictionArguments:
    """What ``sarlulc predict`` reads and writes (the tiling: :class:`InferenceArguments`)."""

    group_title: ClassVar[str] = "prediction"

    checkpoint: str = field(
        metadata={
            "positional": True,
            "help": "Folder of a segmentation checkpoint (save_pretrained), or a Hub model id.",
        }
    )
    scene: str = field(
        metadata={
            "positional": True,
            "help": "ALOS-2 scene: a GeoTIFF (band 1 HH, optional band 2 HV) or a JAXA product (25 m mosaic tile, "
            "its folder or .tar.gz archive; L1.5/L2.1 product folder, summary.txt or .zip; CEOS delivery).",
        }
    )
    out: str = field(
        metadata={"positional": True, "help": "Class map GeoTIFF to write (uint8 class ids, 255 = no data)."}
    )
    probabilities: Literal["classes", "confidence"] | None = field(
        default=None,
        metadata={
            "help": "Also write OUT_probabilities.tif (one band per class) or OUT_confidence.tif (the winning class), "
            "probability x 255 (default: neither)."
        },
    )
    water: bool = field(default=False, metadata={"help": "Also write OUT_water.tif (1 water, 0 other, 255 no data)."})
    overwrite: bool = field(default=False, metadata={"help": "Replace existing outputs."})
    progress: bool = field(default=True, metadata={"help": "Show the progress bar (--no_progress hides it)."})
    bands: list[int] | None = field(
        default=None,
        metadata={"help": "1-based scene bands to read, in the model's channel order (e.g. --bands 1 for HH only)."},
    )
    polarizations: list[str] | None = field(
        default=None,
        metadata={
            "help": "Polarizations to read, in the model's channel order (e.g. --polarizations HH); an "
            "alternative to --bands."
        },
    )
    strict: bool = field(
        default=False,
        metadata={
            "help": "Refuse a scene whose backscatter convention (sigma0/gamma0) or polarizations differ from the "
            "model's training data (default: warn and predict)."
        },
    )
    output_grid: Literal["scene", "model"] = field(
        default="scene",
        metadata={
            "help": "For a scene at another GSD than the model's (resampled to it): write the maps on the scene's "
            "grid (its CRS, transform and shape) or on the model's grid."
        },
    )


@dataclass
class EvaluationArguments:
    """What ``sarlulc evaluate`` scores and how (a scene is first predicted with :class:`InferenceArguments`; the
    split of a scene: :class:`SpatialSplitArguments`)."""

    group_title: ClassVar[str] = "evaluation"

    model_dir: str = field(metadata={"help": "A `sarlulc finetune` output folder (OUTPUT or OUTPUT/best)."})
    data: str | None = field(
        default=None, metadata={"help": "A saved tile dataset (save_to_disk); evaluates its --split (default test)."}
    )
    scene: str | None = field(
        default=None,
        metadata={
            "help": "A scene GeoTIFF (with --labels): predicts it into OUTPUT_DIR/<scene name>_map.tif, as `sarlulc "
            "predict` would, and scores that map window by window (all of it, or the tiles of --split)."
        },
    )
    labels: str | None = field(default=None, metadata={"help": "The label raster of --scene (JAXA-style codes)."})
    split: str | None = field(
        default=None,
        metadata={
            "help": "Split to evaluate: of --data (default test), or of --scene cut by the spatial split options "
            "(default: the whole scene)."
        },
    )
    tile_size: int = field(
        default=256,
        metadata={
            "help": "--scene: side of the scored windows; with --split, the tile size the split was made with "
            "(finetune's --tile_size)."
        },
    )
    class_scheme: str | None = field(
        default=None, metadata={"help": "Class scheme of the labels; default: the built-in one matching the model."}
    )
    thin_width: int = field(
        default=5, metadata={"help": "Boundary F1: parts of a class narrower than this (odd, px) are thin structures."}
    )
    boundary_tolerance: int = field(default=2, metadata={"help": "Boundary F1: matching tolerance in pixels."})
    rare_threshold: float = field(
        default=0.02, metadata={"help": "Rare-class IoU: classes under this share of the training pixels."}
    )
    output_dir: str | None = field(
        default=None, metadata={"help": "Where the report (and a scene's map) go (default: MODEL_DIR/eval_<split>)."}
    )
    disable_tqdm: bool = field(default=False, metadata={"help": "Hide progress bars."})


# ----------------------------------------------------------------------------------------------------------------------
# The ablation ladder
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class AblationArguments:
    """Options of ``sarlulc ablation`` (the split of the scene: :class:`AblationSplitArguments`)."""

    group_title: ClassVar[str] = "ablation"

    output_dir: str = field(metadata={"help": "Folder for the scene, tiles, every run and the report."})
    scene: str | None = field(
        default=None,
        metadata={"help": "Folder with scene.tif + labels.tif (or NAME.tif + NAME_labels.tif); default: synthesize."},
    )
    synthetic_size: int = field(default=1536, metadata={"help": "Side in pixels of the synthetic scene."})
    scene_seed: int = field(default=0, metadata={"help": "Seed of the synthetic scene (fixed for every run)."})
    rare_abundance: float = field(
        default=2.0,
        metadata={
            "help": "Solar farms and bare patches of the synthetic scene, as a multiple of the default landscape's "
            "(2: each class about 1 percent of the pixels, still rare, but in enough training and test tiles to measure)."
        },
    )
    seeds: int = field(
        default=3,
        metadata={"help": "Runs per rung; run i fine-tunes (and pretrains, for rungs 2-6) with seed + i."},
    )
    seed: int = field(default=0, metadata={"help": "Training seed of the first run of every rung."})
    tile_size: int = field(default=64, metadata={"help": "Tile side in pixels (a multiple of 32)."})
    encoder_overrides: list[str] = field(
        default_factory=lambda: [
            "embed_dim=16",
            "depths=[1,1,1,1]",
            "num_heads=[1,2,2,4]",
            "window_size=[16,16,8,4]",
            "image_size=64",
            "decoder_embed_dim=32",
            "decoder_depth=1",
            "decoder_num_heads=2",
        ],
        metadata={
            "help": "sar_mixmae config fields (KEY=VALUE) of the encoder, for pretraining and rung 1 (each "
            "pretraining variant then sets its own loss weighting)."
        },
    )
    decoder_overrides: list[str] = field(
        default_factory=lambda: ["decoder_hidden_size=32"],
        metadata={"help": "sar_lulc config fields (KEY=VALUE) of the segmentation model."},
    )
    pretrain_steps: int = field(default=300, metadata={"help": "Optimizer steps of every pretraining run."})
    finetune_steps: int = field(
        default=700,
        metadata={
            "help": "Optimizer steps of every fine-tuning run (at alpha 0.5 the rare classes are first predicted after "
            "300-400 steps: shorter runs cannot show what alpha does)."
        },
    )
    batch_size: int = field(default=8, metadata={"help": "Tiles per batch."})
    pretrain_learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate of pretraining."})
    finetune_learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate of fine-tuning."})
    alpha: float = field(default=0.5, metadata={"help": "class_weight_alpha of rung 6 (rungs 1-5 use 0)."})
    eval_steps: int = field(default=100, metadata={"help": "Validation (model selection) every N steps."})
    rungs: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 6], metadata={"help": "Rungs to run."})
    reuse_pretraining: bool = field(
        default=True,
        metadata={"help": "Reuse a pretraining run that OUTPUT/pretrain already holds (--no_reuse_pretraining)."},
    )
    num_threads: int = field(
        default=1,
        metadata={
            "help": "torch threads per run (0: torch's default). The tiny models gain little from more, and on a busy "
            "machine several threads per process make every step many times slower."
        },
    )
    disable_tqdm: bool = field(default=False, metadata={"help": "Hide progress bars."})


# ----------------------------------------------------------------------------------------------------------------------
# Synthetic data and the demo
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class SynthArguments:
    """Options of ``sarlulc synth``."""

    group_title: ClassVar[str] = "synthetic scene"

    out: str = field(metadata={"help": "Output folder."})
    size: tuple[int, int] = field(
        default=(2048, 2048),
        metadata={"type": scene_size, "metavar": "N|HxW", "help": "N or HxW in pixels (default 2048)."},
    )
    seed: int = field(default=0, metadata={"help": "Random seed."})
    crs: str = field(
        default="EPSG:4326",
        metadata={"help": "EPSG:4326 (default, ~10 m in degrees), utm, or a projected CRS in metres."},
    )
    looks: float = field(default=4.0, metadata={"help": "Speckle looks L."})
    # The same number as sarlulc.data.alos2.DEFAULT_CALIBRATION_FACTOR (a test keeps them equal): this module cannot
    # import the library, and the help should show the value.
    calibration_factor: float = field(default=-83.0, metadata={"help": "CF in dB for the DN encoding."})
    block_size: int = field(default=512, metadata={"help": "GeoTIFF tile size."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars (--no_progress hides them)."})
    product: Literal["scene", "mosaic", "l15"] = field(
        default="scene",
        metadata={
            "help": "scene: OUT/scene.tif + OUT/labels.tif. mosaic: a 25 m yearly mosaic tile as JAXA ships it "
            "(OUT/{block}_{yy}_MOS_F02DAR.tar.gz and the tile's extracted folder: HH, HV, mask, date, linci). l15: an "
            "L1.5 GeoTIFF product folder (IMG-HH/HV-ALOS2....tif + summary.txt). Products come with their labels as "
            "JAXA HRLULC tiles in OUT/JAXA_HRLULC_Japan_v{version}/ and are rendered in memory (keep them small)."
        },
    )
    year: int = field(
        default=2019, metadata={"help": "--product mosaic: the year; before 2019, raw files with ENVI .hdr headers."}
    )
    bigtiff: bool = field(default=False, metadata={"help": "--product l15: write the image files as BigTIFF."})
    hrlulc_version: Literal["21.11", "23.12"] = field(
        default="23.12", metadata={"help": "--product mosaic|l15: the HRLULC version of the label tiles."}
    )


@dataclass
class InfoArguments:
    """What ``sarlulc info`` describes."""

    group_title: ClassVar[str] = "info"

    paths: list[str] = field(
        metadata={
            "positional": True,
            "metavar": "PATH",
            "help": "Scenes, JAXA products (folders, archives, summary.txt, image files) or HRLULC label folders.",
        }
    )
    mask_invalid: list[str] | None = field(
        default=None,
        metadata={
            "help": "Mask categories (nodata, ocean, layover, shadow, land) that make a product's pixel invalid in the "
            "valid fraction (default: nodata layover shadow)."
        },
    )


@dataclass
class DemoArguments:
    """Options of ``sarlulc demo`` (the signature of ``sarlulc.demo.run_demo``)."""

    group_title: ClassVar[str] = "demo"

    out: str = field(default="demo_output", metadata={"help": "Output folder."})
    size: int = field(default=1024, metadata={"help": "Scene side in pixels."})
    seed: int = field(default=0, metadata={"help": "Random seed."})
    tile_size: int = field(default=128, metadata={"help": "Tile side in pixels."})
    group_size: int = field(default=2, metadata={"help": "Split groups of N x N tiles."})
    pretrain_steps: int = field(default=300, metadata={"help": "SAR-W-MixMAE steps."})
    finetune_steps: int = field(default=400, metadata={"help": "Fine-tuning steps."})
    data_only: bool = field(
        default=False, metadata={"help": "Stop after the data steps (synthesize, tile, statistics)."}
    )
    progress: bool = field(default=True, metadata={"help": "Show progress bars (--no_progress hides them)."})


# ----------------------------------------------------------------------------------------------------------------------
# Publishing
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class PushToHubArguments:
    """Where ``sarlulc push-to-hub`` uploads what."""

    group_title: ClassVar[str] = "upload"

    output_dir: str = field(
        metadata={"positional": True, "metavar": "OUTPUT_DIR", "help": "A `sarlulc finetune` output folder."}
    )
    repo_id: str = field(metadata={"metavar": "USER/NAME", "help": "Model repository (created if needed)."})
    private: bool = field(default=False, metadata={"help": "Create the repository private."})
    token: str | None = field(
        default=None, metadata={"help": "Hub token (default, and safer: `hf auth login` or HF_TOKEN)."}
    )
    commit_message: str | None = field(
        default=None, metadata={"help": "Default: 'Upload sarlulc <task> segmentation model'."}
    )
    dry_run: str | None = field(
        default=None,
        metadata={"metavar": "DIR", "help": "Write the folder that would be uploaded to DIR; upload nothing."},
    )


@dataclass
class ModelCardArguments:
    """What the model card says that the output folder cannot tell (``sarlulc.hub.CardOptions``)."""

    group_title: ClassVar[str] = "model card"

    license: str = field(default="apache-2.0", metadata={"help": "Hub license id of the weights."})
    dataset_name: str | None = field(
        default=None, metadata={"help": "Evaluation dataset's name (default: from the run's training data)."}
    )
    dataset_type: str | None = field(
        default=None, metadata={"help": "Evaluation dataset's id, a Hub dataset id if it has one."}
    )
    dataset_split: str | None = field(
        default=None, metadata={"help": "Split of the metrics (default: the run's eval split)."}
    )
    synthetic: bool | None = field(
        default=None,
        metadata={"help": "Whether the training scenes were synthetic (default: read from the training scenes' tags)."},
    )
    base_model: str | None = field(
        default=None, metadata={"help": "Hub id of the SAR-W-MixMAE pretraining checkpoint, if published."}
    )
    class_scheme: str | None = field(
        default=None, metadata={"help": "Class scheme name or JSON file for the colours (default: the run's)."}
    )
    template: str | None = field(
        default=None, metadata={"help": "Jinja model card template (default: the one shipped with sarlulc)."}
    )
