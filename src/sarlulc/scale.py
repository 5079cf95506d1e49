"""The documentation run's scale-down switch: ``SARLULC_DOCS_SMALL=1``.

Every example of the README and ``docs/`` runs in the test suite as it is written. A few of them would take minutes at
their real sizes (the demo, training runs, the ablation ladder), so when the environment variable
``SARLULC_DOCS_SMALL`` is set to anything but ``""`` or ``"0"`` the package shrinks its sizes and step counts, and
nothing else: the commands, their options and their outputs stay the same, only smaller. The caps:

* a training run (pretraining, fine-tuning, every ablation rung) stops after :data:`SMALL_TRAIN_STEPS` optimizer steps;
* a synthetic scene is at most :data:`SMALL_SCENE_SIZE` pixels a side (the demo's own 1024 px scene stays: its
  batches of 16 tiles need it).

Leave it unset for real work: the results of a scaled-down run mean nothing.
"""

from __future__ import annotations

import os

DOCS_SMALL_ENV = "SARLULC_DOCS_SMALL"
SMALL_TRAIN_STEPS = 2
SMALL_SCENE_SIZE = 1024

__all__ = ["DOCS_SMALL_ENV", "SMALL_SCENE_SIZE", "SMALL_TRAIN_STEPS", "docs_small", "scaled"]


def docs_small() -> bool:
    """Whether ``SARLULC_DOCS_SMALL`` asks for the scaled-down sizes."""
    return os.environ.get(DOCS_SMALL_ENV, "").strip() not in ("", "0")


def scaled(value: int, small: int) -> int:
    """``value``, capped at ``small`` when :func:`docs_small` is on."""
    return min(value, small) if docs_small() else value
