"""The Accelerate training loop shared by pretraining and fine-tuning.

Shaped like transformers' ``run_semantic_segmentation_no_trainer.py``: an :class:`~accelerate.Accelerator` owns mixed
precision, gradient accumulation, device placement and distribution; AdamW with weight decay only on weight matrices
(and an optional layer-wise learning-rate decay over the encoder), linear warmup then cosine decay, gradient clipping;
``save_state`` every N optimizer steps into ``OUTPUT/step_N`` (keeping the last K), written into a hidden temporary
folder, verified complete and renamed (:func:`sarlulc.files.verify_and_replace`), so a killed save never leaves a
``step_N`` behind; resume with ``load_state`` + ``skip_first_batches`` (``latest``: the newest complete checkpoint); metrics through accelerate trackers; at the end ``save_pretrained`` of the
unwrapped model, the task's extra files (the image processor's config) and ``all_results.json``.

What differs between the tasks is passed in as :class:`TrainingHooks`: how a batch becomes a loss, how to evaluate,
which metric selects the best model, and what else to save next to the weights.

Determinism. With a fixed seed a run is reproducible on CPU, and a run resumed from ``step_N`` ends with the same
weights as an uninterrupted one:

* the data order of epoch ``e`` is a permutation seeded by ``seed + e`` (:class:`EpochShuffleSampler`), the same on
  every process; accelerate shards it, and on resume ``skip_first_batches`` drops what was already consumed;
* every random decision of a training step (augmentation, the MixMAE mixing mask) comes from a generator seeded by
  ``(seed, epoch, batch index, process index)`` (:func:`step_generator`), not from global state, so a resumed step
  draws what the uninterrupted step drew;
* the global RNGs (dropout, drop path) are saved and restored by ``save_state`` / ``load_state``, and DataLoaders get
  their own ``generator`` so that starting an epoch does not consume global random numbers;
* the step count, epoch, position in the epoch and best metric are a checkpointed object (:class:`TrainingProgress`).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, ProjectConfiguration, set_seed
from torch import nn
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from sarlulc_cli.arguments import LoopArguments

from ..errors import UsageError
from ..files import (
    create_temporary,
    output_write_error,
    remove_path,
    sweep_stale_temporaries,
    temporary_name,
    verify_and_replace,
    write_json,
)
from ..scale import SMALL_BATCH_SIZE, SMALL_TRAIN_STEPS, scaled
from .trackers import make_trackers, validate_report_to

__all__ = [
    "ALL_RESULTS_FILENAME",
    "BEST_DIRNAME",
    "EpochShuffleSampler",
    "LoopArguments",
    "TrainResult",
    "TrainingHooks",
    "TrainingProgress",
    "build_optimizer",
    "check_loop_arguments",
    "checkpoint_is_complete",
    "create_accelerator",
    "deterministic_algorithms",
    "list_checkpoints",
    "parameter_groups",
    "resolve_checkpoint",
    "sar_mixmae_layer_ids",
    "step_generator",
    "train",
]

logger = get_logger(__name__)

ALL_RESULTS_FILENAME = "all_results.json"
BEST_DIRNAME = "best"
_STEP_DIR = re.compile(r"^step_(\d+)$")
_LOGGED_EVAL_VALUES = 4  # evaluation values shown in the console log line; trackers get all of them
# Parameters that get no weight decay besides every bias and norm (all 1-D tensors): learned tokens and tables.
_NO_DECAY_NAMES = ("mask_token", "position", "relative_position_bias_table", "bias_table")


# ----------------------------------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------------------------------
def check_loop_arguments(args: LoopArguments) -> None:
    """Check the loop options and the resume path before anything is built; raises :class:`UsageError`."""
    positive = (
        "per_device_train_batch_size",
        "per_device_eval_batch_size",
        "gradient_accumulation_steps",
        "num_train_epochs",
        "checkpointing_steps",
        "logging_steps",
    )
    for name in positive:
        if getattr(args, name) < 1:
            raise UsageError(f"--{name} must be >= 1, got {getattr(args, name)}")
    for name in ("max_train_steps", "eval_steps", "stop_at_step", "checkpoints_total_limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name} must be >= 1 when given, got {value}")
    if not args.learning_rate > 0:
        raise UsageError(f"--learning_rate must be positive, got {args.learning_rate}")
    if not 0 < args.layer_decay <= 1:
        raise UsageError(f"--layer_decay must be in (0, 1], got {args.layer_decay}")
    if not 0 <= args.warmup_ratio < 1:
        raise UsageError(f"--warmup_ratio must be in [0, 1), got {args.warmup_ratio}")
    if args.warmup_steps is not None and args.warmup_steps < 0:
        raise UsageError(f"--warmup_steps must be >= 0, got {args.warmup_steps}")
    if args.weight_decay < 0 or args.max_grad_norm < 0:
        raise UsageError("--weight_decay and --max_grad_norm must be >= 0")
    if args.dataloader_num_workers is not None and args.dataloader_num_workers < 0:
        raise UsageError(f"--dataloader_num_workers must be >= 0, got {args.dataloader_num_workers}")
    try:
        validate_report_to(args.report_to)
    except ValueError as err:
        raise UsageError(str(err)) from err
    output_dir = Path(args.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise UsageError(f"--output_dir {output_dir} exists and is not a folder")
    if args.resume_from_checkpoint is not None:
        resolve_checkpoint(args.output_dir, args.resume_from_checkpoint)
    elif list_checkpoints(args.output_dir) and not args.overwrite_output_dir:
        raise UsageError(
            f"--output_dir {output_dir} already holds checkpoints ({list_checkpoints(output_dir)[-1].name}); "
            "continue with --resume_from_checkpoint latest or start over with --overwrite_output_dir"
        )


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoint folders
# ----------------------------------------------------------------------------------------------------------------------
def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """The ``step_N`` folders of ``output_dir``, oldest (smallest N) first."""
    directory = Path(output_dir)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return [path for _, path in sorted(found)]


def checkpoint_is_complete(path: Path) -> bool:
    """Whether a checkpoint folder holds what ``load_state`` needs, every file whole: an optimizer state, weights,
    no empty file, and safetensors files whose header and data are all there."""
    try:
        files = [entry for entry in path.iterdir() if entry.is_file()]
        if not any(entry.name.startswith("optimizer") for entry in files):
            return False
        if not any(
            entry.suffix in (".safetensors", ".bin") and not entry.name.startswith("optimizer") for entry in files
        ):
            return False
        if any(entry.stat().st_size == 0 for entry in files):
            return False
        for entry in files:
            if entry.suffix == ".safetensors":
                _check_safetensors(entry)
    except (OSError, ValueError):
        return False
    return True


def _check_safetensors(path: Path) -> None:
    """Raise ``ValueError`` unless the header parses and the data it describes are all in the file."""
    with open(path, "rb") as stream:
        header_size = int.from_bytes(stream.read(8), "little")
        header = json.loads(stream.read(header_size))
    end = max((item["data_offsets"][1] for key, item in header.items() if key != "__metadata__"), default=0)
    if path.stat().st_size < 8 + header_size + end:
        raise ValueError(f"{path} is truncated")


def _verify_checkpoint(path: Path) -> None:
    if not checkpoint_is_complete(path):
        raise OSError(f"checkpoint {path} is incomplete (a file is missing, empty or truncated)")


def resolve_checkpoint(output_dir: str | Path, value: str) -> Path:
    """The checkpoint folder that ``--resume_from_checkpoint value`` names; raises :class:`UsageError` if none.

    ``"latest"`` is the newest complete ``output_dir/step_N`` (:func:`checkpoint_is_complete`; an incomplete one, e.g.
    from a save killed before checkpoints were written atomically, is passed over with a warning); anything else is a
    path to a folder written by ``save_state``, refused when incomplete.
    """
    if value == "latest":
        checkpoints = list_checkpoints(output_dir)
        complete = [path for path in checkpoints if checkpoint_is_complete(path)]
        if not complete:
            found = f" ({len(checkpoints)} incomplete)" if checkpoints else ""
            raise UsageError(
                f"--resume_from_checkpoint latest: {output_dir} has no step_N checkpoint folder that is complete, to "
                f"resume from{found}"
            )
        skipped = [path.name for path in checkpoints if path not in complete and path.name > complete[-1].name]
        if skipped:
            warnings.warn(
                f"skipping incomplete checkpoint(s) {', '.join(skipped)}; resuming from {complete[-1]}",
                UserWarning,
                stacklevel=2,
            )
        return complete[-1]
    path = Path(value)
    if not path.is_dir():
        raise UsageError(f"--resume_from_checkpoint {value}: no such checkpoint folder (or use 'latest')")
    if not any(path.glob("optimizer*.bin")):
        raise UsageError(f"--resume_from_checkpoint {value}: not a training checkpoint (it has no optimizer state)")
    if not checkpoint_is_complete(path):
        raise UsageError(
            f"--resume_from_checkpoint {value}: the checkpoint is incomplete (a file is empty or truncated, e.g. "
            "from a save that was killed); resume from an earlier one"
        )
    return path


def _prune_checkpoints(output_dir: Path, keep: int | None) -> None:
    if keep is None:
        return
    for stale in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(stale, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------------------
# Optimizer
# ----------------------------------------------------------------------------------------------------------------------
def _no_weight_decay(name: str, parameter: nn.Parameter) -> bool:
    return parameter.ndim <= 1 or any(key in name for key in _NO_DECAY_NAMES)


def sar_mixmae_layer_ids(model: nn.Module, depths: list[int]) -> tuple[dict[str, int], int]:
    """Layer id of every parameter for layer-wise learning-rate decay over a SAR-W-MixMAE encoder.

    Ids count from the input: the patch embedding is 0, the ``depths`` blocks are ``1..N`` in forward order, the patch
    merging between two stages belongs to the first block it feeds, and everything outside the encoder's blocks (the
    encoder's final norm, backbone norms, decoder, heads) is ``N + 1``.

    Returns:
        ``(ids, N + 1)``: parameter name -> id, and the id of the top (which learns at the full rate).
    """
    first_block = np.concatenate([[0], np.cumsum(depths)]).astype(int) + 1  # id of each stage's first block
    top = int(sum(depths)) + 1
    ids = {}
    for name, _ in model.named_parameters():
        encoder = re.search(r"(?:^|\.)sar_mixmae\.(.*)$", name)
        inner = encoder.group(1) if encoder else ""
        if inner.startswith("embeddings."):
            ids[name] = 0
        elif block := re.match(r"encoder\.stages\.(\d+)\.blocks\.(\d+)\.", inner):
            ids[name] = int(first_block[int(block.group(1))]) + int(block.group(2))
        elif merge := re.match(r"encoder\.downsamples\.(\d+)\.", inner):
            ids[name] = int(first_block[int(merge.group(1)) + 1])
        else:
            ids[name] = top
    return ids, top


def parameter_groups(
    model: nn.Module,
    weight_decay: float,
    layer_decay: float = 1.0,
    layer_ids: tuple[dict[str, int], int] | None = None,
) -> list[dict[str, Any]]:
    """AdamW parameter groups: weight decay only on weight matrices, and an ``lr_scale`` per layer.

    Args:
        model: the model to optimize (frozen parameters are left out).
        weight_decay: decay of the decayed group; biases, norms, mask token and position/bias tables get 0.
        layer_decay: with ``layer_ids``, a parameter of layer ``l`` gets ``lr_scale = layer_decay ** (top - l)``.
        layer_ids: ``(name -> layer id, top id)``, e.g. :func:`sar_mixmae_layer_ids`; ``None``: one scale of 1.

    Returns:
        Groups ``{"params", "weight_decay", "lr_scale", "names"}``, one per (decay, scale) pair, in a fixed order.
    """
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        decay = 0.0 if _no_weight_decay(name, parameter) else weight_decay
        scale = 1.0
        if layer_ids is not None and layer_decay != 1.0:
            ids, top = layer_ids
            scale = layer_decay ** (top - ids[name])
        group = groups.setdefault((decay, scale), {"params": [], "weight_decay": decay, "lr_scale": scale, "names": []})
        group["params"].append(parameter)
        group["names"].append(name)
    return [groups[key] for key in sorted(groups, reverse=True)]


def build_optimizer(
    model: nn.Module,
    args: LoopArguments,
    layer_ids: tuple[dict[str, int], int] | None = None,
) -> torch.optim.AdamW:
    """AdamW over :func:`parameter_groups`, each group at ``learning_rate * lr_scale``; fused on CUDA."""
    groups = parameter_groups(model, args.weight_decay, args.layer_decay, layer_ids)
    for group in groups:
        group["lr"] = args.learning_rate * group["lr_scale"]
        del group["names"]
    on_cuda = next(model.parameters()).device.type == "cuda"
    return torch.optim.AdamW(
        groups,
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
        fused=on_cuda or None,
    )


# ----------------------------------------------------------------------------------------------------------------------
# Randomness
# ----------------------------------------------------------------------------------------------------------------------
class EpochShuffleSampler(Sampler[int]):
    """A permutation of ``range(length)`` seeded by ``seed + epoch``: every process draws the same order.

    Accelerate calls :meth:`set_epoch` at the start of every pass; the loop also calls it, so a resumed run replays the
    order of the epoch it stopped in.
    """

    def __init__(self, length: int, seed: int) -> None:
        self.length = length
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        yield from torch.randperm(self.length, generator=generator).tolist()

    def __len__(self) -> int:
        return self.length


def step_generator(
    seed: int, epoch: int, batch_index: int, process_index: int, device: torch.device | str = "cpu"
) -> torch.Generator:
    """The generator of one training batch: a pure function of its position, so a resumed run redraws the same values.

    The four numbers are hashed together (``numpy.random.SeedSequence``) so that neighbouring steps and processes get
    unrelated streams.
    """
    entropy = np.random.SeedSequence([seed, epoch, batch_index, process_index]).generate_state(2, np.uint32)
    generator = torch.Generator(device=device)
    generator.manual_seed((int(entropy[0]) << 31) ^ int(entropy[1]))
    return generator


@dataclass
class TrainingProgress:
    """Where a run stands; saved in every checkpoint (``register_for_checkpointing``) and restored on resume.

    Attributes:
        completed_steps: optimizer steps done.
        epoch: the epoch of the last completed step.
        batches_in_epoch: batches of that epoch consumed by the last completed step.
        best_metric: best value of the selection metric so far (fine-tuning), and the step that reached it.
    """

    completed_steps: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    best_metric: float | None = None
    best_step: int | None = None

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


# ----------------------------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class TrainingHooks:
    """What a task plugs into :func:`train`.

    Attributes:
        run_name: tracker run name (the JSONL log goes to ``output_dir/logs/<run_name>/``).
        collate_fn: examples -> batch dict of tensors (moved to the device by accelerate).
        compute_loss: ``(model, batch, generator) -> scalar loss``; all randomness must come from ``generator``
            (it lives on the accelerator's device).
        evaluate: ``(model, eval_dataloader, accelerator) -> metrics``, called in ``eval`` mode under
            ``torch.no_grad()`` on every process; metrics must be the same on every process (gather first).
        selection_metric: key of ``evaluate``'s result that picks the best checkpoint (higher is better); the best
            model is saved to ``output_dir/best``.
        save_artifacts: ``(folder) -> None`` on the main process, after each ``save_pretrained`` (processor config...).
        layer_ids: parameter layer ids for ``layer_decay`` (see :func:`sar_mixmae_layer_ids`).
        hyperparameters: logged to the trackers at the start.
    """

    run_name: str
    collate_fn: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]
    compute_loss: Callable[[nn.Module, dict[str, torch.Tensor], torch.Generator], torch.Tensor]
    evaluate: Callable[[nn.Module, DataLoader, Accelerator], dict[str, float]] | None = None
    selection_metric: str | None = None
    save_artifacts: Callable[[Path], None] | None = None
    layer_ids: tuple[dict[str, int], int] | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainResult:
    """What :func:`train` did.

    Attributes:
        completed_steps: optimizer steps done in total (including steps before a resume).
        finished: False when the run stopped at ``stop_at_step`` before ``max_train_steps``.
        metrics: the content of ``all_results.json`` (empty when not finished).
        output_dir: where the model was saved.
    """

    completed_steps: int
    finished: bool
    metrics: dict[str, Any]
    output_dir: Path


def create_accelerator(args: LoopArguments, run_name: str) -> Accelerator:
    """An ``Accelerator`` for ``args``: mixed precision, gradient accumulation, trackers, logs in ``output_dir/logs``."""
    logging_dir = Path(args.output_dir) / "logs"
    project = ProjectConfiguration(project_dir=args.output_dir, logging_dir=str(logging_dir))
    trackers = make_trackers(args.report_to, run_name, logging_dir)
    return Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=trackers or None,
        project_config=project,
        dataloader_config=DataLoaderConfiguration(non_blocking=torch.cuda.is_available()),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=args.ddp_find_unused_parameters)],
        step_scheduler_with_optimizer=True,
    )


def _loader_options(args: LoopArguments, accelerator: Accelerator) -> dict[str, Any]:
    on_cuda = accelerator.device.type == "cuda"
    workers = args.dataloader_num_workers
    if workers is None:
        workers = min(4, os.cpu_count() or 1) if on_cuda else 0
    # A DataLoader without its own generator draws its workers' base seed from the global RNG when an epoch starts,
    # which would shift the RNG stream of a resumed run against an uninterrupted one.
    return {
        "num_workers": workers,
        "pin_memory": on_cuda,
        "generator": torch.Generator().manual_seed(args.seed),
    }


def _scalar_hyperparameters(values: Mapping[str, Any]) -> dict[str, Any]:
    """Tracker-friendly hyperparameters: scalars kept, anything else as its string."""
    return {k: v if isinstance(v, (bool, int, float, str)) or v is None else str(v) for k, v in values.items()}


class _TrainingRun:
    """State of one :func:`train` call, split into small steps (prepare, resume, epochs, evaluate, save)."""

    def __init__(
        self,
        model: nn.Module,
        train_dataset: Any,
        args: LoopArguments,
        hooks: TrainingHooks,
        accelerator: Accelerator,
        eval_dataset: Any | None,
    ) -> None:
        self.args = args
        self.hooks = hooks
        self.accelerator = accelerator
        self.output_dir = Path(args.output_dir)
        self.progress = TrainingProgress()
        self.last_eval: dict[str, float] = {}
        self.last_eval_step: int | None = None
        self.saved_step: int | None = None  # step of the newest checkpoint folder of this run (or the resumed one)
        self.train_time = 0.0
        self.samples_seen = 0
        self._prepare(model, train_dataset, eval_dataset)

    # -- set-up ---------------------------------------------------------------------------------------------------
    def _prepare(self, model: nn.Module, train_dataset: Any, eval_dataset: Any | None) -> None:
        args, accelerator = self.args, self.accelerator
        options = _loader_options(args, accelerator)
        self.train_batch_size = scaled(args.per_device_train_batch_size, SMALL_BATCH_SIZE)  # SARLULC_DOCS_SMALL
        self.sampler = EpochShuffleSampler(len(train_dataset), args.seed)
        # drop_last: a last batch of one tile would break batch statistics (BatchNorm) and MixMAE's mixing.
        train_loader = DataLoader(
            train_dataset,
            batch_size=self.train_batch_size,
            sampler=self.sampler,
            collate_fn=self.hooks.collate_fn,
            drop_last=True,
            **options,
        )
        if len(train_loader) < accelerator.num_processes:
            raise UsageError(
                f"the training split has {len(train_dataset)} tiles: fewer than one batch of "
                f"{self.train_batch_size} per process ({accelerator.num_processes} processes); use more "
                "data or a smaller --per_device_train_batch_size"
            )
        self.train_loader = accelerator.prepare(train_loader)
        self.steps_per_epoch = math.ceil(len(self.train_loader) / args.gradient_accumulation_steps)
        self.max_steps = scaled(args.max_train_steps or args.num_train_epochs * self.steps_per_epoch, SMALL_TRAIN_STEPS)
        self.num_epochs = math.ceil(self.max_steps / self.steps_per_epoch)
        warmup = args.warmup_steps if args.warmup_steps is not None else math.ceil(args.warmup_ratio * self.max_steps)

        model.to(accelerator.device)  # before the optimizer, so that fused AdamW sees CUDA parameters
        optimizer = build_optimizer(model, args, self.hooks.layer_ids)
        # The prepared scheduler steps once per process and optimizer step (accelerate's convention), hence the scaling.
        scheduler = get_cosine_schedule_with_warmup(
            optimizer, warmup * accelerator.num_processes, self.max_steps * accelerator.num_processes
        )
        self.model, self.optimizer, self.scheduler = accelerator.prepare(model, optimizer, scheduler)
        self.eval_loader = None
        if eval_dataset is not None and self.hooks.evaluate is not None:
            eval_loader = DataLoader(
                eval_dataset,
                batch_size=args.per_device_eval_batch_size,
                shuffle=False,
                collate_fn=self.hooks.collate_fn,
                **options,
            )
            self.eval_loader = accelerator.prepare(eval_loader)
        accelerator.register_for_checkpointing(self.progress)

    def _resume(self) -> None:
        path = resolve_checkpoint(self.output_dir, self.args.resume_from_checkpoint)
        logger.info(f"resuming from {path}", main_process_only=True)
        self.accelerator.load_state(str(path))  # also restores self.progress (registered for checkpointing)
        self.saved_step = self.progress.completed_steps
        # The checkpoint's epoch was complete: continue with the next one instead of skipping all of its batches.
        if self.progress.batches_in_epoch >= len(self.train_loader):
            self.progress.epoch += 1
            self.progress.batches_in_epoch = 0

    def _start_trackers(self) -> None:
        values = {**asdict(self.args), **self.hooks.hyperparameters, "max_train_steps_resolved": self.max_steps}
        self.accelerator.init_trackers(self.hooks.run_name, config=_scalar_hyperparameters(values))

    # -- the loop ---------------------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        args, accelerator = self.args, self.accelerator
        if args.overwrite_output_dir and args.resume_from_checkpoint is None and accelerator.is_main_process:
            for stale in list_checkpoints(self.output_dir):
                shutil.rmtree(stale)
        accelerator.wait_for_everyone()
        if args.resume_from_checkpoint is not None:
            self._resume()
        self._start_trackers()
        total_batch = self.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
        logger.info(
            f"training {self.hooks.run_name}: {len(self.sampler)} tiles, {self.num_epochs} epochs, {self.max_steps} "
            f"steps of {total_batch} tiles ({accelerator.num_processes} processes), starting at step "
            f"{self.progress.completed_steps}",
            main_process_only=True,
        )
        self.bar = tqdm(
            total=self.max_steps,
            initial=self.progress.completed_steps,
            desc=self.hooks.run_name,
            unit="step",
            disable=args.disable_tqdm or not accelerator.is_local_main_process,
        )
        stop = min(self.max_steps, args.stop_at_step or self.max_steps)
        start_epoch = self.progress.epoch
        for epoch in range(start_epoch, self.num_epochs):
            if self.progress.completed_steps >= stop:
                break
            self._train_epoch(epoch, skip=self.progress.batches_in_epoch if epoch == start_epoch else 0, stop=stop)
        self.bar.close()

        finished = self.progress.completed_steps >= self.max_steps
        if not finished:
            self._save_checkpoint()
            logger.info(
                f"stopped at step {self.progress.completed_steps} of {self.max_steps}; continue with "
                "--resume_from_checkpoint latest",
                main_process_only=True,
            )
            accelerator.end_training()
            return TrainResult(self.progress.completed_steps, False, {}, self.output_dir)
        metrics = self._finish()
        accelerator.end_training()
        return TrainResult(self.progress.completed_steps, True, metrics, self.output_dir)

    def _train_epoch(self, epoch: int, skip: int, stop: int) -> None:
        args, accelerator = self.args, self.accelerator
        self.model.train()
        self.sampler.set_epoch(epoch)
        self.train_loader.set_epoch(epoch)
        loader = accelerator.skip_first_batches(self.train_loader, skip) if skip else self.train_loader
        window_loss = torch.zeros((), device=accelerator.device)
        window_batches, window_samples, window_time = 0, 0, 0.0
        step_samples = 0
        tick = time.perf_counter()
        for batch_index, batch in enumerate(loader, start=skip):
            generator = step_generator(args.seed, epoch, batch_index, accelerator.process_index, accelerator.device)
            with accelerator.accumulate(self.model):
                loss = self.hooks.compute_loss(self.model, batch, generator)
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(self.model.parameters(), args.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad()
            window_loss += loss.detach().float()
            window_batches += 1
            step_samples += len(next(iter(batch.values()))) * accelerator.num_processes  # equal batches: drop_last
            if not accelerator.sync_gradients:
                continue

            self.progress.completed_steps += 1
            self.progress.epoch, self.progress.batches_in_epoch = epoch, batch_index + 1
            elapsed = time.perf_counter() - tick
            self.train_time += elapsed
            self.samples_seen += step_samples
            window_samples += step_samples
            window_time += elapsed
            step_samples = 0
            self.bar.update(1)
            step = self.progress.completed_steps
            if step % args.logging_steps == 0 or step == stop:
                self._log_training(window_loss / window_batches, window_samples / max(window_time, 1e-9), epoch)
                window_loss.zero_()
                window_batches, window_samples, window_time = 0, 0, 0.0
            if self.eval_loader is not None and args.eval_steps and step % args.eval_steps == 0:
                self._evaluate()
            if step % args.checkpointing_steps == 0:
                self._save_checkpoint()
            if step >= stop:
                return
            tick = time.perf_counter()  # eval, logging and checkpoints do not count towards throughput

    def _log_training(self, mean_loss: torch.Tensor, samples_per_second: float, epoch: int) -> None:
        loss = self.accelerator.reduce(mean_loss, reduction="mean").item()
        learning_rate = self.scheduler.get_last_lr()[0] / self.optimizer.param_groups[0].get("lr_scale", 1.0)
        values = {
            "train_loss": loss,
            "learning_rate": learning_rate,
            "train_samples_per_second": samples_per_second,
            "epoch": epoch,
        }
        self.accelerator.log(values, step=self.progress.completed_steps)
        self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{learning_rate:.2e}", samples_s=f"{samples_per_second:.1f}")

    # -- evaluation and saving ----------------------------------------------------------------------------------------
    def _evaluate(self) -> dict[str, float]:
        self.model.eval()
        with torch.no_grad():
            metrics = self.hooks.evaluate(self.model, self.eval_loader, self.accelerator)
        self.model.train()
        step = self.progress.completed_steps
        self.last_eval = {f"eval_{key}": value for key, value in metrics.items()}
        self.last_eval_step = step
        self.accelerator.log(self.last_eval, step=step)
        shown = list(self.last_eval.items())[:_LOGGED_EVAL_VALUES]
        summary = ", ".join(f"{key} {value:.4f}" for key, value in shown)
        more = len(self.last_eval) - len(shown)
        logger.info(
            f"step {step}: {summary}" + (f" (+{more} more in the logs)" if more else ""), main_process_only=True
        )
        self._maybe_save_best()
        return self.last_eval

    def _maybe_save_best(self) -> None:
        key = self.hooks.selection_metric
        if key is None:
            return
        value = self.last_eval.get(f"eval_{key}")
        if value is None or not math.isfinite(value):
            return
        if self.progress.best_metric is not None and value <= self.progress.best_metric:
            return
        self.progress.best_metric, self.progress.best_step = float(value), self.progress.completed_steps
        best_dir = self.output_dir / BEST_DIRNAME
        self._save_model(best_dir)
        if self.accelerator.is_main_process:
            record = {"step": self.progress.completed_steps, **self.last_eval}
            write_json(best_dir / "eval_results.json", record)

    def _save_model(self, directory: Path) -> None:
        accelerator = self.accelerator
        accelerator.wait_for_everyone()
        unwrapped = accelerator.unwrap_model(self.model)
        unwrapped.save_pretrained(
            directory, is_main_process=accelerator.is_main_process, save_function=accelerator.save
        )
        if accelerator.is_main_process and self.hooks.save_artifacts is not None:
            self.hooks.save_artifacts(directory)
        accelerator.wait_for_everyone()

    def _save_checkpoint(self) -> None:
        # Decided from the run's own state, never from the file system: the main process creates the folder while the
        # others may still be deciding, and processes that disagree here would deadlock in save_state's barriers.
        if self.saved_step == self.progress.completed_steps:
            return
        self.saved_step = self.progress.completed_steps
        path = self.output_dir / f"step_{self.progress.completed_steps}"
        # Written under a hidden temporary name that every process agrees on, verified, then renamed: a save killed
        # half-way leaves no step_N behind (and its temporary is swept by the next save of that step).
        accelerator = self.accelerator
        if accelerator.is_main_process:
            sweep_stale_temporaries(path)
            temporary = create_temporary(path, directory=True)
        else:
            temporary = temporary_name(path)
        names = [str(temporary)]
        if accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(names)
        temporary = Path(names[0])
        try:
            accelerator.save_state(str(temporary))
        except BaseException as err:
            if accelerator.is_main_process:
                remove_path(temporary)
            if isinstance(err, OSError):
                raise output_write_error(path, err, "checkpoint") from err
            raise
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            verify_and_replace(temporary, path, _verify_checkpoint, what="checkpoint")
        accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            _prune_checkpoints(self.output_dir, self.args.checkpoints_total_limit)
        self.accelerator.wait_for_everyone()

    def _finish(self) -> dict[str, Any]:
        if self.eval_loader is not None and self.last_eval_step != self.progress.completed_steps:
            self._evaluate()
        self._save_model(self.output_dir)
        results: dict[str, Any] = {
            "completed_steps": self.progress.completed_steps,
            "epochs": self.num_epochs,
            "num_processes": self.accelerator.num_processes,
            "train_runtime_seconds": round(self.train_time, 3),
            "train_samples_per_second": self.samples_seen / self.train_time if self.train_time else None,
            **self.last_eval,
        }
        if self.hooks.selection_metric is not None:
            results[f"best_{self.hooks.selection_metric}"] = self.progress.best_metric
            results["best_step"] = self.progress.best_step
        if self.accelerator.is_main_process:
            write_json(self.output_dir / ALL_RESULTS_FILENAME, results)
        return results


@contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """Run the block with torch's deterministic algorithms (and cuDNN's), restoring the previous settings after.

    Without them a few CPU kernels accumulate in a thread-dependent order (e.g. the backward of indexing a tensor with
    repeated indices), so two runs agree to about 1e-6 instead of bitwise.
    """
    if not enabled:
        yield
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by deterministic cuBLAS
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = previous[2], previous[3]


def train(
    model: nn.Module,
    train_dataset: Any,
    args: LoopArguments,
    hooks: TrainingHooks,
    accelerator: Accelerator,
    eval_dataset: Any | None = None,
) -> TrainResult:
    """Train ``model`` on ``train_dataset`` with the Accelerate loop described in the module docstring.

    Args:
        model: a transformers ``PreTrainedModel`` (saved with ``save_pretrained`` at the end).
        train_dataset: a map-style dataset of examples for ``hooks.collate_fn`` (e.g. a formatted ``datasets.Dataset``).
        args: loop options; call :func:`check_loop_arguments` first to fail early on bad ones.
        hooks: the task (loss, evaluation, artifacts).
        accelerator: from :func:`create_accelerator` (created first so that data preparation can use
            ``main_process_first``).
        eval_dataset: examples for ``hooks.evaluate`` (optional).

    Returns:
        A :class:`TrainResult`; with ``finished`` the final model is in ``args.output_dir`` (and the best one in
        ``args.output_dir/best`` when ``hooks.selection_metric`` is set).
    """
    set_seed(args.seed)
    with deterministic_algorithms(args.full_determinism):
        return _TrainingRun(model, train_dataset, args, hooks, accelerator, eval_dataset).run()
