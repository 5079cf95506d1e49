#!/usr/bin/env python
"""Train the paper's ablation ladder on one scene, split and seed, and print the table.

Rungs: (1) no pretraining, (2) + SAR-W-MixMAE pretraining, (3) + high-resolution injection, (4) + refine-up head,
(5) + alpha re-weighting. One pretraining run is shared by rungs 2-5; every rung is fine-tuned with the same steps
and seed, and its best validation checkpoint is evaluated on the test split: mIoU, rare-class IoU (classes under 2 %
of the training pixels), boundary F1 on thin structures (roads, rivers, canals) and IoU_water.

Examples (from the repository root):

  # CPU-sized defaults: a synthetic 1024 px scene, 64 px tiles, a tiny encoder (a few minutes)
  python scripts/ablation.py --output_dir runs/ablation

  # your own scene folder (scene.tif + labels.tif), longer runs, only rungs 1 and 5
  python scripts/ablation.py --output_dir runs/ablation-real --scene data/tile_0042 --tile_size 256 \\
      --pretrain_steps 5000 --finetune_steps 2000 --rungs 1 5

OUTPUT_DIR gets the scene (if synthesized), the saved tiles, pretrain/, rung1..rung5/, ablation.md and ablation.json.
"""

import sys
from pathlib import Path

# Python puts this folder first on sys.path, where evaluate.py would shadow the `evaluate` package that the metric
# needs; drop it (the scripts import only the installed sarlulc).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from sarlulc.training.ablation import AblationArguments, run_ablation  # noqa: E402
from sarlulc.training.common import run_script  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return run_script((AblationArguments,), run_ablation, argv, prog="ablation.py", description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
