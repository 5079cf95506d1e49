#!/usr/bin/env python
"""Fine-tune the LULC (9 classes) or water segmentation model on labeled ALOS-2 HH tiles.

Examples (from the repository root):

  # the paper's model: pretrained encoder + the three refinements, on a synthetic scene split in space
  python scripts/finetune.py --task lulc --pretrained runs/pretrain --train_data data/synth \\
      --config hub_configs/sar-lulc-tiny --output_dir runs/lulc --num_train_epochs 20

  # the no-pretraining baseline for the water task, with the splits saved by `sarlulc demo`
  python scripts/finetune.py --task water --from_scratch --train_data demo_output/tiles --output_dir runs/water

  # two GPUs, switching the refinements off (on two CPU processes instead:
  # ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 ...)
  accelerate launch --num_processes 2 scripts/finetune.py --task lulc --pretrained runs/pretrain \\
      --train_data data/synth --output_dir runs/lulc-plain --use_highres_injection false \\
      --use_refine_up_head false --class_weight_alpha 0

The training split's class frequencies go into the config (loss weights); the model is evaluated on the validation
split with the sar_lulc_iou metric every --eval_steps steps. OUTPUT_DIR gets the final model, OUTPUT_DIR/best the best
one (by mIoU, or IoU_water for --task water), both loadable with AutoModelForSemanticSegmentation.from_pretrained and
AutoImageProcessor.from_pretrained; evaluate them on the test split with scripts/evaluate.py.
"""

import sys
from pathlib import Path

# Python puts this folder first on sys.path, where evaluate.py would shadow the `evaluate` package that the metric
# needs; drop it (the scripts import only the installed sarlulc).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from sarlulc.training.common import AugmentArguments, TileArguments, run_script  # noqa: E402
from sarlulc.training.finetuning import FinetuningArguments, FinetuningLoopArguments, run_finetuning  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return run_script(
        (FinetuningArguments, TileArguments, AugmentArguments, FinetuningLoopArguments),
        run_finetuning,
        argv,
        prog="finetune.py",
        description=__doc__,
    )


if __name__ == "__main__":
    sys.exit(main())
