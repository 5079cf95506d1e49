#!/usr/bin/env python
"""Evaluate a fine-tuned segmentation checkpoint and write a report: JSON (every metric), a per-class markdown table
(IoU, F1, accuracy) and a confusion-matrix PNG.

Examples (from the repository root):

  # the test split of the tiles saved by `sarlulc demo`
  python scripts/evaluate.py --model_dir runs/lulc/best --data demo_output/tiles --split test

  # a whole scene against its label raster, window by window (bounded memory at any scene size)
  python scripts/evaluate.py --model_dir runs/lulc/best --scene data/synth/scene.tif --labels data/synth/labels.tif

  # the test tiles of the same spatial split finetune.py used on that scene
  python scripts/evaluate.py --model_dir runs/lulc/best --scene data/synth/scene.tif \\
      --labels data/synth/labels.tif --split test --split_group_size 4 --tile_size 256

Besides mIoU, per-class IoU/F1/accuracy and the water metrics, the report holds the rare-class IoU (classes under 2 %
of the training pixels, from the checkpoint's class_frequencies) and the boundary F1 on thin structures (roads,
rivers, canals: parts of a class narrower than --thin_width px; see sarlulc.training.evaluation for the definition).
"""

import sys
from pathlib import Path

# Python puts this folder first on sys.path, where evaluate.py would shadow the `evaluate` package that the metric
# needs; drop it (the scripts import only the installed sarlulc).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from sarlulc.training.common import run_script  # noqa: E402
from sarlulc.training.evaluation import EvaluationArguments, evaluate_and_summarize  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return run_script((EvaluationArguments,), evaluate_and_summarize, argv, prog="evaluate.py", description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
