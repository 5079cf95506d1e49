"""Training and evaluation: the Accelerate loop shared by pretraining and fine-tuning, and what the scripts run.

* :mod:`.loop` -- :func:`train` (the loop), :class:`LoopArguments`, :class:`TrainingHooks`, optimizer, schedule,
  checkpoints (``step_N``), resume, determinism helpers;
* :mod:`.pretraining` / :mod:`.finetuning` -- :func:`run_pretraining` / :func:`run_finetuning`, the logic of
  ``scripts/pretrain.py`` and ``scripts/finetune.py``;
* :mod:`.evaluation` -- :func:`run_evaluation` (``scripts/evaluate.py``), counts, rare-class IoU, thin-structure
  boundary F1, report files;
* :mod:`.ablation` -- :func:`run_ablation` (``scripts/ablation.py``);
* :mod:`.augment`, :mod:`.data`, :mod:`.trackers`, :mod:`.configs`, :mod:`.common` -- the pieces they share.

Names are imported on first use, so ``import sarlulc.training`` stays cheap (evaluation pulls in ``evaluate``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .ablation import AblationArguments, run_ablation
    from .augment import AugmentConfig, augment_batch
    from .common import AugmentArguments, TileArguments
    from .data import TileNormalization, UsageError, collate_tiles, load_tile_splits
    from .evaluation import (
        EvaluationArguments,
        SegmentationTally,
        boundary_counts,
        evaluate_tiles,
        load_checkpoint,
        run_evaluation,
        segmentation_report,
        write_report,
    )
    from .finetuning import FinetuningArguments, FinetuningLoopArguments, run_finetuning
    from .loop import (
        EpochShuffleSampler,
        LoopArguments,
        TrainingHooks,
        TrainingProgress,
        TrainResult,
        build_optimizer,
        create_accelerator,
        list_checkpoints,
        parameter_groups,
        resolve_checkpoint,
        sar_mixmae_layer_ids,
        step_generator,
        train,
    )
    from .pretraining import PretrainingArguments, PretrainingLoopArguments, run_pretraining
    from .trackers import JsonlTracker, read_jsonl_log

_LAZY = {
    "AblationArguments": "ablation",
    "run_ablation": "ablation",
    "AugmentConfig": "augment",
    "augment_batch": "augment",
    "AugmentArguments": "common",
    "TileArguments": "common",
    "TileNormalization": "data",
    "UsageError": "data",
    "collate_tiles": "data",
    "load_tile_splits": "data",
    "EvaluationArguments": "evaluation",
    "SegmentationTally": "evaluation",
    "boundary_counts": "evaluation",
    "evaluate_tiles": "evaluation",
    "load_checkpoint": "evaluation",
    "run_evaluation": "evaluation",
    "segmentation_report": "evaluation",
    "write_report": "evaluation",
    "FinetuningArguments": "finetuning",
    "FinetuningLoopArguments": "finetuning",
    "run_finetuning": "finetuning",
    "EpochShuffleSampler": "loop",
    "LoopArguments": "loop",
    "TrainResult": "loop",
    "TrainingHooks": "loop",
    "TrainingProgress": "loop",
    "build_optimizer": "loop",
    "create_accelerator": "loop",
    "list_checkpoints": "loop",
    "parameter_groups": "loop",
    "resolve_checkpoint": "loop",
    "sar_mixmae_layer_ids": "loop",
    "step_generator": "loop",
    "train": "loop",
    "PretrainingArguments": "pretraining",
    "PretrainingLoopArguments": "pretraining",
    "run_pretraining": "pretraining",
    "JsonlTracker": "trackers",
    "read_jsonl_log": "trackers",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


__all__ = [
    "AblationArguments",
    "AugmentArguments",
    "AugmentConfig",
    "EpochShuffleSampler",
    "EvaluationArguments",
    "FinetuningArguments",
    "FinetuningLoopArguments",
    "JsonlTracker",
    "LoopArguments",
    "PretrainingArguments",
    "PretrainingLoopArguments",
    "SegmentationTally",
    "TileArguments",
    "TileNormalization",
    "TrainResult",
    "TrainingHooks",
    "TrainingProgress",
    "UsageError",
    "augment_batch",
    "boundary_counts",
    "build_optimizer",
    "collate_tiles",
    "create_accelerator",
    "evaluate_tiles",
    "list_checkpoints",
    "load_checkpoint",
    "load_tile_splits",
    "parameter_groups",
    "read_jsonl_log",
    "resolve_checkpoint",
    "run_ablation",
    "run_evaluation",
    "run_finetuning",
    "run_pretraining",
    "sar_mixmae_layer_ids",
    "segmentation_report",
    "step_generator",
    "train",
    "write_report",
]
