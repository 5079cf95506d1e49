"""The subcommands of ``sarlulc``: what each one is called, which argument records it parses, what it runs.

A :class:`Command` names its target as ``"module:function"``, imported only when the command runs, so that listing
the commands or asking one for ``--help`` imports nothing of the library (nor torch). The target is called with one
record per entry of ``records``, in that order.

The scripts in ``scripts/`` are these commands under another name (``python scripts/finetune.py ARGS`` is
``sarlulc finetune ARGS``); ``{prog}`` in an epilog becomes the way the command was invoked.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from .arguments import (
    AblationArguments,
    AblationSplitArguments,
    AugmentArguments,
    DemoArguments,
    EvaluationArguments,
    FinetuningArguments,
    FinetuningLoopArguments,
    InferenceArguments,
    InfoArguments,
    ModelCardArguments,
    PredictionArguments,
    PretrainingArguments,
    PretrainingLoopArguments,
    PushToHubArguments,
    SpatialSplitArguments,
    SynthArguments,
    TileArguments,
)

__all__ = ["COMMANDS", "Command", "resolve"]


def resolve(reference: str) -> Any:
    """The object a ``"module:name"`` reference names (importing the module)."""
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Command:
    """One subcommand.

    Attributes:
        name: as typed after ``sarlulc``.
        summary: one line for the list of commands.
        description: what the command does (its ``--help``).
        records: the argument record types it parses, in the order the target takes them.
        target: ``"module:function"`` called with the parsed records.
        epilog: examples shown after the options; ``{prog}`` is replaced by how the command was invoked.
        user_errors: exception classes (besides ``UsageError`` and ``SarLulcDataError``) that mean the user's input
            is at fault for this command: reported as one line, exit status 2.
        external_errors: ``"module:NAME"`` of a tuple of exception classes that mean something outside the user's
            input failed (the network, the Hub): reported as one line, exit status 1.
    """

    name: str
    summary: str
    description: str
    records: tuple[type, ...]
    target: str
    epilog: str = ""
    user_errors: tuple[type[BaseException], ...] = ()
    external_errors: str | None = None


_SYNTH = Command(
    name="synth",
    summary="write a synthetic ALOS-2 scene and its land-cover labels, or a synthetic JAXA product",
    description="Write OUT/scene.tif (uint16 DN, HH, nodata 0) and OUT/labels.tif (uint8 JAXA codes 1..14, nodata 0) "
    "on the same grid: a procedural landscape with speckle, in bounded memory at any size. With --product, write the "
    "landscape in the exact layout of a JAXA product instead (a 25 m mosaic tile and its .tar.gz archive, or an L1.5 "
    "GeoTIFF product) with its labels as HRLULC tiles, so that the product readers can be tried on it.",
    records=(SynthArguments,),
    target="sarlulc_cli.runners:synth",
    epilog="""Examples:

  {prog} --out data/synth --size 1024
  {prog} --out data/synth-utm --size 2048x4096 --crs utm --looks 2
  {prog} --out data/mosaic --product mosaic --size 512            # 2019: GeoTIFF members
  {prog} --out data/mosaic-2017 --product mosaic --year 2017      # raw + ENVI .hdr members
  {prog} --out data/l15 --product l15 --size 512 --bigtiff
""",
)

_INFO = Command(
    name="info",
    summary="say what the readers find in scenes, JAXA products and label folders",
    description="For every PATH, one block: what sarlulc recognizes it as (plain GeoTIFF, mosaic tile, L1.5/L2.1 "
    "product, CEOS delivery, HRLULC label tiles), its polarizations, backscatter convention (sigma0/gamma0), "
    "calibration factor and where it comes from, acquisition date, CRS, grid, ground sampling distance and the share "
    "of valid pixels. The first command to run on a new download. A path that cannot be read is reported in one line "
    "(exit status 2) after the blocks of the others.",
    records=(InfoArguments,),
    target="sarlulc.data.info:run_info",
    epilog="""Examples:

  {prog} N40E135_19_MOS_F02DAR.tar.gz
  {prog} 0000123456_001001_ALOS2146686640-170209/ JAXA_HRLULC_Japan_v23.12/
""",
)

_DEMO = Command(
    name="demo",
    summary="run the walk-through on a small synthetic scene",
    description="The whole method on a small synthetic ALOS-2-like scene, in minutes on a CPU: synthesize a scene, "
    "tile it into a spatially split dataset, pretrain SAR-W-MixMAE, fine-tune the LULC model, predict the scene into a "
    "GeoTIFF map, evaluate it on the held-out test tiles, and draw a quicklook.",
    records=(DemoArguments,),
    target="sarlulc_cli.runners:demo",
    epilog="""Examples:

  {prog}                                  # ./demo_output, about 7 minutes on two CPU cores
  {prog} --out /tmp/demo --data-only      # the data steps only
""",
)

_PREDICT = Command(
    name="predict",
    summary="predict a land-cover map for a whole scene",
    description="Predict a whole ALOS-2 scene with a segmentation checkpoint and write a georeferenced class map with "
    "a colour table (nodata 255). The scene is cut into overlapping tiles (read window by window, bounded memory at "
    "any scene size) and the tiles' class probabilities are blended; the map is a tiled, compressed GeoTIFF with the "
    "scene's CRS and transform. See sarlulc.inference for the details.",
    records=(PredictionArguments, InferenceArguments),
    target="sarlulc_cli.runners:predict",
    epilog="""Examples:

  {prog} runs/lulc/best data/scene.tif maps/lulc.tif
  {prog} runs/water/best data/scene.tif maps/water.tif --water --probabilities confidence

  # data-parallel over the GPUs of a machine: each process predicts a band of tile rows, the main process merges
  accelerate launch --num_processes 4 scripts/predict.py runs/lulc/best data/scene.tif maps/lulc.tif

  # two CPU processes (accelerate 1.x starts only one for --cpu without MPI; this goes through torchrun instead)
  ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 scripts/predict.py CHECKPOINT SCENE OUT

Under several processes the output folder must be one that every process can see (a shared filesystem across
machines): each process writes its rows into a temporary part file there, which the main process merges.
""",
    # What predict_scene raises for the user's scene, checkpoint, options and output path (see its docstring).
    user_errors=(ValueError, OSError),
)

_EVALUATE = Command(
    name="evaluate",
    summary="score a checkpoint on saved tiles or on a labelled scene and write a report",
    description="Evaluate a fine-tuned segmentation checkpoint on saved tiles (--data DIR --split test), or predict a "
    "scene into a map exactly as `sarlulc predict` does and score that map against its label raster (--scene SCENE "
    "--labels LABELS, optionally only the tiles of one --split). Writes a JSON report (every metric), a per-class "
    "markdown table (IoU, F1, accuracy) and a confusion-matrix PNG.",
    records=(EvaluationArguments, InferenceArguments, SpatialSplitArguments),
    target="sarlulc.training.evaluation:evaluate_and_summarize",
    epilog="""Examples:

  # the test split of the tiles saved by `sarlulc demo`
  {prog} --model_dir runs/lulc/best --data demo_output/tiles --split test

  # a whole scene: predicted into OUTPUT_DIR/scene_map.tif, then scored against its label raster
  {prog} --model_dir runs/lulc/best --scene data/synth/scene.tif --labels data/synth/labels.tif

  # the test tiles of the same spatial split that finetune used on that scene
  {prog} --model_dir runs/lulc/best --scene data/synth/scene.tif --labels data/synth/labels.tif \\
      --split test --split_group_size 4 --tile_size 256

Besides mIoU, per-class IoU/F1/accuracy and the water metrics, the report holds the rare-class IoU (classes under 2 %
of the training pixels, from the checkpoint's class_frequencies) and the boundary F1 on thin structures (roads,
rivers, canals: parts of a class narrower than --thin_width px; see sarlulc.training.evaluation for the definition).
""",
)

_PRETRAIN = Command(
    name="pretrain",
    summary="pretrain the SAR-W-MixMAE encoder on unlabeled tiles",
    description="Pretrain the SAR-W-MixMAE encoder on unlabeled ALOS-2 HH tiles (MixMAE with a backscatter-weighted "
    "loss). The band statistics of the training tiles go into the saved preprocessor_config.json; OUTPUT_DIR then "
    "holds a checkpoint for `sarlulc finetune --pretrained OUTPUT_DIR`.",
    records=(PretrainingArguments, TileArguments, AugmentArguments, PretrainingLoopArguments),
    target="sarlulc.training.pretraining:run_pretraining",
    epilog="""Examples:

  # a synthetic scene, tiled into 256 px tiles, the tiny model, 2 epochs on the CPU
  sarlulc synth --size 1024 --out data/synth
  {prog} --train_data data/synth --config hub_configs/sar-mixmae-tiny --output_dir runs/pretrain \\
      --num_train_epochs 2

  # the train split saved by `sarlulc demo`, on every GPU of the machine, bf16, resumable
  accelerate launch scripts/pretrain.py --train_data demo_output/tiles --mixed_precision bf16 \\
      --output_dir runs/pretrain --checkpointing_steps 200
  accelerate launch scripts/pretrain.py ... --resume_from_checkpoint latest
""",
)

_FINETUNE = Command(
    name="finetune",
    summary="fine-tune the LULC or water segmentation model on labeled tiles",
    description="Fine-tune the LULC (9 classes) or water segmentation model on labeled ALOS-2 HH tiles. The training "
    "split's class frequencies go into the config (loss weights); the model is evaluated on the validation split with "
    "the sar_lulc_iou metric every --eval_steps steps. OUTPUT_DIR gets the final model, OUTPUT_DIR/best the best one "
    "(by mIoU, or IoU_water for --task water), both loadable with AutoModelForSemanticSegmentation.from_pretrained and "
    "AutoImageProcessor.from_pretrained; evaluate them on the test split with `sarlulc evaluate`.",
    records=(FinetuningArguments, TileArguments, AugmentArguments, FinetuningLoopArguments, SpatialSplitArguments),
    target="sarlulc.training.finetuning:run_finetuning",
    epilog="""Examples:

  # the paper's model: pretrained encoder + the three refinements, on a synthetic scene split in space
  {prog} --task lulc --pretrained runs/pretrain --train_data data/synth \\
      --config hub_configs/sar-lulc-tiny --output_dir runs/lulc --num_train_epochs 20

  # the no-pretraining baseline for the water task, with the splits saved by `sarlulc demo`
  {prog} --task water --from_scratch --train_data demo_output/tiles --output_dir runs/water

  # two GPUs, switching the refinements off (on two CPU processes instead:
  # ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 ...)
  accelerate launch --num_processes 2 scripts/finetune.py --task lulc --pretrained runs/pretrain \\
      --train_data data/synth --output_dir runs/lulc-plain --use_highres_injection false \\
      --use_refine_up_head false --class_weight_alpha 0
""",
)

_ABLATION = Command(
    name="ablation",
    summary="train the paper's ablation ladder with several seeds and tell what each refinement changes",
    description="Train the paper's ablation ladder on one scene and split, with --seeds runs per rung, and report "
    "mean +- std per rung and the paired difference of each refinement to the rung below with a 95% t-interval. "
    "Rungs: (1) no pretraining, (2) + MixMAE pretraining, (3) + backscatter weighting (SAR-W-MixMAE), (4) + "
    "high-resolution injection, (5) + refine-up head, (6) + alpha re-weighting. Run i of every rung fine-tunes (and "
    "pretrains) with seed + i; each run's best validation checkpoint is scored on the test split: mIoU, IoU_water, "
    "rare-class IoU and recall (classes under 2% of the training pixels), boundary F1 on thin structures. OUTPUT_DIR "
    "gets the scene (if synthesized), the saved tiles, pretrain/, rungN/seedS/, ablation.md, ablation.json and "
    "ablation.png.",
    records=(AblationArguments, AblationSplitArguments),
    target="sarlulc.training.ablation:run_ablation",
    epilog="""Examples:

  # CPU-sized defaults: a synthetic 1536 px scene, 64 px tiles, a tiny encoder, 3 seeds (about 13 CPU minutes)
  {prog} --output_dir runs/ablation

  # a longer experiment: 5 seeds, 3x the pretraining and 1.7x the fine-tuning steps (about 40 CPU minutes)
  {prog} --output_dir runs/ablation-long --seeds 5 --pretrain_steps 900 --finetune_steps 1200

  # your own scene folder (scene.tif + labels.tif), larger tiles, only rungs 5 and 6 (is alpha worth it?)
  {prog} --output_dir runs/ablation-real --scene data/tile_0042 --tile_size 256 \\
      --pretrain_steps 5000 --finetune_steps 2000 --rungs 5 6
""",
)

_PUSH_TO_HUB = Command(
    name="push-to-hub",
    summary="publish a fine-tuned checkpoint on the Hugging Face Hub with a model card",
    description="Publish a fine-tuned segmentation checkpoint (a `sarlulc finetune` output folder) on the Hugging Face "
    "Hub with a model card built from the run: metrics (model-index), preprocessing, classes and colours, "
    "architecture and refinements, training data, usage and limitations. Uploaded: config.json, the safetensors "
    "weights, preprocessor_config.json, the remote-code .py files (model, processor, 'sar-segmentation' pipeline), the "
    "run's small JSON summaries and README.md; never step_* checkpoints, optimizer states, logs or training_args.json "
    "(it records local paths).",
    records=(PushToHubArguments, ModelCardArguments),
    target="sarlulc_cli.runners:push_to_hub",
    epilog="""Examples:

  # look first: write the exact folder that would be uploaded (README.md = the card), upload nothing
  {prog} runs/lulc --repo-id me/sar-lulc-tiny --dry-run hub_preview

  # upload (token from `hf auth login` or HF_TOKEN), as a private repository
  {prog} runs/lulc/best --repo-id me/sar-lulc-tiny --private
""",
    external_errors="sarlulc.hub:HUB_ERRORS",
)

COMMANDS: dict[str, Command] = {
    command.name: command
    for command in (_SYNTH, _INFO, _DEMO, _PREDICT, _EVALUATE, _PRETRAIN, _FINETUNE, _ABLATION, _PUSH_TO_HUB)
}
"""Every subcommand by name, in the order ``sarlulc --help`` lists them."""
