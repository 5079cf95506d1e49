#!/usr/bin/env python
"""Predict a land-cover (or water) map for a whole ALOS-2 scene with a segmentation checkpoint.

The scene is cut into overlapping tiles (read window by window, bounded memory at any scene size), the tiles'
class probabilities are blended, and the map is written as a tiled, compressed GeoTIFF with the scene's CRS and
transform, the class colour table and nodata 255. See sarlulc.inference for the details.

Examples (from the repository root):

  python scripts/predict.py runs/lulc/best data/scene.tif maps/lulc.tif
  python scripts/predict.py runs/water/best data/scene.tif maps/water.tif --water --probabilities confidence

  # data-parallel over the GPUs of a machine: each process predicts a band of tile rows, the main process merges
  accelerate launch --num_processes 4 scripts/predict.py runs/lulc/best data/scene.tif maps/lulc.tif

  # two CPU processes (accelerate 1.x starts only one for --cpu without MPI; this goes through torchrun instead)
  ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 scripts/predict.py CHECKPOINT SCENE OUT

Under several processes the output folder must be one that every process can see (a shared filesystem across
machines): each process writes its rows into a temporary part file there, which the main process merges.
"""

import argparse
import sys
from pathlib import Path

# Python puts this folder first on sys.path, where evaluate.py would shadow the `evaluate` package; drop it (the
# script imports only the installed sarlulc).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from sarlulc.cli import add_predict_arguments, run_predict  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="predict.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_predict_arguments(parser)
    return run_predict(parser.parse_args(argv), prog="predict.py")


if __name__ == "__main__":
    sys.exit(main())
