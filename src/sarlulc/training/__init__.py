"""Training and evaluation: the Accelerate loop shared by pretraining and fine-tuning, and what the scripts run.

* :mod:`.loop` -- :func:`train` (the loop), :class:`LoopArguments`, :class:`TrainingHooks`, optimizer, schedule,
  checkpoints (``step_N``), resume, determinism helpers;
* :mod:`.pretraining` / :mod:`.finetuning` -- :func:`run_pretraining` / :func:`run_finetuning`, the logic of
  ``sarlulc pretrain`` and ``sarlulc finetune``;
* :mod:`.evaluation` -- :func:`run_evaluation` (``sarlulc evaluate``), counts, scoring a written map
  (:func:`score_map`), rare-class IoU, thin-structure boundary F1, report files;
* :mod:`.ablation` -- :func:`run_ablation` (``sarlulc ablation``);
* :mod:`.augment`, :mod:`.batches`, :mod:`.trackers`, :mod:`.configs`, :mod:`.common` -- the pieces they share.

The functions take the argument records of the command line (``TileArguments``, ``LoopArguments``, ...), which live
in the torch-free :mod:`sarlulc_cli.arguments` and are re-exported here.

Names are imported on first use, so ``import sarlulc.training`` stays cheap (evaluation pulls in ``evaluate``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sarlulc_cli.arguments import (
        AblationArguments,
        AblationSplitArguments,
        AugmentArguments,
        EvaluationArguments,
        FinetuningArguments,
        FinetuningLoopArguments,
        InferenceArguments,
        LoopArguments,
        PretrainingArguments,
        PretrainingLoopArguments,
        SpatialSplitArguments,
        TileArguments,
    )

    from ..errors import UsageError
    from .ablation import run_ablation
    from .augment import AugmentConfig, augment_batch
    from .batches import TileNormalization, collate_tiles, load_tile_splits, spatial_split
    from .evaluation import (
        SegmentationTally,
        boundary_counts,
        evaluate_tiles,
        load_checkpoint,
        run_evaluation,
        score_map,
        segmentation_report,
        write_report,
    )
    from .finetuning import run_finetuning
    from .loop import (
        EpochShuffleSampler,
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
    from .pretraining import run_pretraining
    from .trackers import JsonlTracker, read_jsonl_log

_ARGUMENTS = "sarlulc_cli.arguments"
_LAZY = {
    "AblationArguments": _ARGUMENTS,
    "AblationSplitArguments": _ARGUMENTS,
    "AugmentArguments": _ARGUMENTS,
    "EvaluationArguments": _ARGUMENTS,
    "FinetuningArguments": _ARGUMENTS,
    "FinetuningLoopArguments": _ARGUMENTS,
    "InferenceArguments": _ARGUMENTS,
    "LoopArguments": _ARGUMENTS,
    "PretrainingArguments": _ARGUMENTS,
    "PretrainingLoopArguments": _ARGUMENTS,
    "SpatialSplitArguments": _ARGUMENTS,
    "TileArguments": _ARGUMENTS,
    "UsageError": "sarlulc.errors",
    "run_ablation": ".ablation",
    "AugmentConfig": ".augment",
    "augment_batch": ".augment",
    "TileNormalization": ".batches",
    "collate_tiles": ".batches",
    "load_tile_splits": ".batches",
    "spatial_split": ".batches",
    "SegmentationTally": ".evaluation",
    "boundary_counts": ".evaluation",
    "evaluate_tiles": ".evaluation",
    "load_checkpoint": ".evaluation",
    "run_evaluation": ".evaluation",
    "score_map": ".evaluation",
    "segmentation_report": ".evaluation",
    "write_report": ".evaluation",
    "run_finetuning": ".finetuning",
    "EpochShuffleSampler": ".loop",
    "TrainResult": ".loop",
    "TrainingHooks": ".loop",
    "TrainingProgress": ".loop",
    "build_optimizer": ".loop",
    "create_accelerator": ".loop",
    "list_checkpoints": ".loop",
    "parameter_groups": ".loop",
    "resolve_checkpoint": ".loop",
    "sar_mixmae_layer_ids": ".loop",
    "step_generator": ".loop",
    "train": ".loop",
    "run_pretraining": ".pretraining",
    "JsonlTracker": ".trackers",
    "read_jsonl_log": ".trackers",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)


__all__ = [
    "AblationArguments",
    "AblationSplitArguments",
    "AugmentArguments",
    "AugmentConfig",
    "EpochShuffleSampler",
    "EvaluationArguments",
    "FinetuningArguments",
    "FinetuningLoopArguments",
    "InferenceArguments",
    "JsonlTracker",
    "LoopArguments",
    "PretrainingArguments",
    "PretrainingLoopArguments",
    "SegmentationTally",
    "SpatialSplitArguments",
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
    "score_map",
    "segmentation_report",
    "spatial_split",
    "step_generator",
    "train",
    "write_report",
]
