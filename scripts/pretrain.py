#!/usr/bin/env python
"""Pretrain the SAR-W-MixMAE encoder on unlabeled ALOS-2 HH tiles (MixMAE with a backscatter-weighted loss).

Examples (from the repository root):

  # a synthetic scene, tiled into 256 px tiles, the tiny model, 2 epochs on the CPU
  sarlulc synth --size 1024 --out data/synth
  python scripts/pretrain.py --train_data data/synth --config hub_configs/sar-mixmae-tiny \\
      --output_dir runs/pretrain --num_train_epochs 2

  # the train split saved by `sarlulc demo`, on every GPU of the machine, bf16, resumable
  accelerate launch scripts/pretrain.py --train_data demo_output/tiles --mixed_precision bf16 \\
      --output_dir runs/pretrain --checkpointing_steps 200
  accelerate launch scripts/pretrain.py ... --resume_from_checkpoint latest

The band statistics of the training tiles go into the saved preprocessor_config.json (the input normalization's one
home). OUTPUT_DIR then holds a checkpoint for `scripts/finetune.py --pretrained OUTPUT_DIR`.
"""

import sys
from pathlib import Path

# Python puts this folder first on sys.path, where evaluate.py would shadow the `evaluate` package that the metric
# needs; drop it (the scripts import only the installed sarlulc).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from sarlulc.training.common import AugmentArguments, TileArguments, run_script  # noqa: E402
from sarlulc.training.pretraining import PretrainingArguments, PretrainingLoopArguments, run_pretraining  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return run_script(
        (PretrainingArguments, TileArguments, AugmentArguments, PretrainingLoopArguments),
        run_pretraining,
        argv,
        prog="pretrain.py",
        description=__doc__,
    )


if __name__ == "__main__":
    sys.exit(main())
