"""The documentation run's scale-down switch: ``SARLULC_DOCS_SMALL=1``.

Every example of the README and ``docs/`` runs in the test suite as it is written. A few of them would take minutes at
their real sizes (the demo, training runs, the ablation ladder, whole-scene predictions), so when the environment
variable ``SARLULC_DOCS_SMALL`` is set to anything but ``""`` or ``"0"`` the package shrinks its sizes and step counts,
and nothing else: the commands, their options and their outputs stay the same, only smaller. The caps:

* a synthetic scene or product (``sarlulc synth``, the demo's scene, the ablation's scene) is at most
  :data:`SMALL_SCENE_SIZE` pixels a side, so every map predicted from one is small too: 448 px is one tile of
  whole-scene prediction at the default tile (512 px) and overlap (64 px), where a 512 px scene would take four, and
  still gives the demo its train, validation and test tiles;
* a training run (pretraining, fine-tuning, every ablation rung) stops after :data:`SMALL_TRAIN_STEPS` optimizer steps
  of at most :data:`SMALL_BATCH_SIZE` tiles per process (a small scene's train split may hold fewer tiles than one
  full batch);
* the ablation ladder runs at most :data:`SMALL_SEEDS` seeds per rung (two, the fewest its paired intervals need).

Leave it unset for real work: the results of a scaled-down run mean nothing. With the variable unset nothing changes.
"""

from __future__ import annotations

import os

DOCS_SMALL_ENV = "SARLULC_DOCS_SMALL"
SMALL_SCENE_SIZE = 448
SMALL_TRAIN_STEPS = 2
SMALL_BATCH_SIZE = 4
SMALL_SEEDS = 2

__all__ = [
    "DOCS_SMALL_ENV",
    "SMALL_BATCH_SIZE",
    "SMALL_SCENE_SIZE",
    "SMALL_SEEDS",
    "SMALL_TRAIN_STEPS",
    "docs_small",
    "scaled",
]


def docs_small() -> bool:
    """Whether ``SARLULC_DOCS_SMALL`` asks for the scaled-down sizes."""
    return os.environ.get(DOCS_SMALL_ENV, "").strip() not in ("", "0")


def scaled(value: int, small: int) -> int:
    """``value``, capped at ``small`` when :func:`docs_small` is on."""
    return min(value, small) if docs_small() else value
