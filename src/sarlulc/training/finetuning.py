"""LULC or water segmentation fine-tuning (the logic behind ``scripts/finetune.py``).

Steps: validate every option (paths, the pretraining checkpoint, the config against the task's class table) before
anything heavy; tile or load the train/validation splits and check that their label ids belong to the class scheme;
count the training pixels per class (written into ``config.class_frequencies``, from which the model derives its loss
weights); take the input normalization from the pretraining checkpoint's processor (the encoder was trained on it) or,
from scratch, from the band statistics of the training tiles; build the model with the chosen refinements and train
with the shared loop, evaluating on the validation split with the ``sar_lulc_iou`` metric (predictions gathered across
processes with ``gather_for_metrics``). The best model by mIoU (LULC) or IoU_water (water) is kept in
``OUTPUT/best``; the final one in ``OUTPUT``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader

from ..data.classes import ClassScheme, get_scheme
from ..data.tiles import SpatialSplit, band_statistics
from ..metrics import load_metric
from ..models.configuration_sar_lulc import SarLulcConfig
from ..models.image_processing_sar import DEFAULT_CLIP_DB, SarImageProcessor
from ..models.modeling_sar_lulc import SarLulcForSemanticSegmentation
from .augment import AugmentConfig, augment_batch
from .common import (
    AugmentArguments,
    TileArguments,
    check_input_size,
    computed_on_main_process,
    configure_logging,
    library_progress_bars,
    save_arguments,
)
from .configs import build_config, parse_overrides
from .data import (
    TileNormalization,
    UsageError,
    check_label_ids,
    collate_tiles,
    label_histogram,
    training_view,
)
from .loop import LoopArguments, TrainingHooks, TrainResult, create_accelerator, sar_mixmae_layer_ids, train

__all__ = [
    "TASK_SCHEMES",
    "FinetuningArguments",
    "FinetuningLoopArguments",
    "finetuning_loss",
    "metric_key",
    "run_finetuning",
    "segmentation_metrics",
]

TASK_SCHEMES = {"lulc": "lulc-9", "water": "water"}
"""Default class scheme of each task (``sarlulc.data.classes``)."""


@dataclass
class FinetuningArguments:
    """Task, model and split options of fine-tuning (data: :class:`TileArguments`, augmentation:
    :class:`AugmentArguments`, the loop: :class:`LoopArguments`)."""

    _argument_group_name = "task and model"

    task: Literal["lulc", "water"] = field(
        default="lulc", metadata={"help": "lulc: the 9 LULC classes; water: water vs not water (from the same labels)."}
    )
    class_scheme: str | None = field(
        default=None,
        metadata={
            "help": "Class scheme name (lulc-9, water, jaxa-14) or JSON file; default: the task's (lulc-9/water)."
        },
    )
    pretrained: str | None = field(
        default=None, metadata={"help": "Output folder of scripts/pretrain.py: its encoder weights initialize ours."}
    )
    from_scratch: bool = field(
        default=False, metadata={"help": "Random initialization instead of --pretrained (the no-pretraining baseline)."}
    )
    config: str | None = field(
        default=None,
        metadata={
            "help": "Folder with a sar_lulc config.json (hub_configs/sar-lulc-tiny, ...); with --pretrained its encoder "
            "part is replaced by the checkpoint's. Default: the package defaults."
        },
    )
    config_overrides: list[str] | None = field(
        default=None,
        metadata={
            "help": "Config fields to change, KEY=VALUE (JSON values); nested: backbone_config.embed_dim=16. "
            "id2label=null drops a config's classes in favour of the task's."
        },
    )
    use_highres_injection: bool | None = field(
        default=None, metadata={"help": "Refinement (i), true/false (default: the config's)."}
    )
    use_refine_up_head: bool | None = field(
        default=None, metadata={"help": "Refinement (ii), true/false (default: the config's)."}
    )
    class_weight_alpha: float | None = field(
        default=None,
        metadata={"help": "Refinement (iii): alpha in [0, 1] of the class re-weighting; 0 = none (default: config's)."},
    )
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    eval_split: str = field(default="validation", metadata={"help": "Split to evaluate on (model selection)."})
    split_fractions: list[float] = field(
        default_factory=lambda: [0.8, 0.1, 0.1],
        metadata={"help": "Scenes only: shares of train, validation and test in the spatial split."},
    )
    split_group_size: int = field(
        default=4, metadata={"help": "Scenes only: the spatial split assigns groups of N x N tiles to one split."}
    )
    split_seed: int = field(default=0, metadata={"help": "Scenes only: seed of the spatial split."})

    def scheme(self) -> ClassScheme:
        try:
            scheme = get_scheme(self.class_scheme or TASK_SCHEMES[self.task])
        except ValueError as err:
            raise UsageError(f"--class_scheme: {err}") from err
        if self.task == "water" and (scheme.num_classes != 2 or scheme.water_id is None):
            raise UsageError(f"--task water needs a 2-class scheme with a water class; {scheme.name!r} is not one")
        return scheme

    def spatial_split(self) -> SpatialSplit:
        if len(self.split_fractions) != 3:
            raise UsageError(f"--split_fractions needs 3 values (train validation test), got {self.split_fractions}")
        fractions = dict(zip(("train", "validation", "test"), self.split_fractions))
        try:
            return SpatialSplit(fractions=fractions, group_size=self.split_group_size, seed=self.split_seed)
        except ValueError as err:
            raise UsageError(str(err)) from err

    def check_initialization(self) -> None:
        if (self.pretrained is None) == (not self.from_scratch):
            raise UsageError("give exactly one of --pretrained DIR (a scripts/pretrain.py output) and --from_scratch")
        if self.pretrained is None:
            return
        config_path = Path(self.pretrained) / "config.json"
        if not config_path.is_file():
            raise UsageError(f"--pretrained {self.pretrained}: no config.json there (not a pretraining checkpoint)")
        model_type = json.loads(config_path.read_text()).get("model_type")
        if model_type != "sar_mixmae":
            raise UsageError(f"--pretrained {self.pretrained} holds a {model_type!r} model, not a sar_mixmae one")
        if not any(Path(self.pretrained).glob("*.safetensors")):
            raise UsageError(f"--pretrained {self.pretrained} has no .safetensors weights")

    def model_config(self, scheme: ClassScheme) -> SarLulcConfig:
        """The validated config with the task's classes and the chosen refinements (no statistics yet)."""
        config = build_config(SarLulcConfig, self.config, parse_overrides(self.config_overrides))
        _check_config_classes(config, scheme)
        values = config.to_dict()
        values.update(id2label=scheme.id2label, label2id=scheme.label2id, ignore_index=scheme.ignore_index)
        switches = {
            "use_highres_injection": self.use_highres_injection,
            "use_refine_up_head": self.use_refine_up_head,
            "class_weight_alpha": self.class_weight_alpha,
        }
        values.update({key: value for key, value in switches.items() if value is not None})
        try:
            return SarLulcConfig.from_dict(values)
        except ValueError as err:
            raise UsageError(f"invalid sar_lulc config: {err}") from err


@dataclass
class FinetuningLoopArguments(LoopArguments):
    """The loop's options with fine-tuning defaults (layer-wise lr decay 0.9, evaluation every 100 steps)."""

    _argument_group_name = "training loop"

    layer_decay: float = field(
        default=0.9,
        metadata={"help": "Layer-wise lr decay: encoder block i from the top learns at lr * decay**i; 1.0 = off."},
    )
    eval_steps: int | None = field(
        default=100, metadata={"help": "Evaluate on the eval split every N steps (and always at the end)."}
    )
    # Every parameter of the segmentation model gets a gradient (the backbone has no final LayerNorm), so
    # DistributedDataParallel need not search for unused ones; turn it on for custom configs that leave some unused.
    ddp_find_unused_parameters: bool = field(
        default=False,
        metadata={"help": "Multi-process only: let DistributedDataParallel skip parameters without gradient."},
    )


def _is_default_labels(config: SarLulcConfig) -> bool:
    """transformers' placeholder classes (``LABEL_0``, ``LABEL_1``): the config names no classes of its own."""
    return config.num_labels == 2 and all(name == f"LABEL_{i}" for i, name in config.id2label.items())


def _check_config_classes(config: SarLulcConfig, scheme: ClassScheme) -> None:
    if _is_default_labels(config):
        return
    names = [config.id2label[i] for i in range(config.num_labels)]
    if config.num_labels != scheme.num_classes:
        raise UsageError(
            f"the config has num_labels={config.num_labels} ({names}) but the class scheme {scheme.name!r} has "
            f"{scheme.num_classes} classes; use a config for this task (e.g. hub_configs/sar-water-base for water) or "
            "--config_overrides id2label=null"
        )
    if names != scheme.names and not all(name == f"LABEL_{i}" for i, name in enumerate(names)):
        raise UsageError(
            f"the config's classes {names} differ from the class scheme {scheme.name!r}: {scheme.names}; use a config "
            "for this task or --config_overrides id2label=null"
        )


def metric_key(name: str) -> str:
    """A class name as a metric key suffix: ``"Deciduous forest"`` -> ``"deciduous_forest"``."""
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def segmentation_metrics(result: dict[str, Any], scheme: ClassScheme) -> dict[str, float]:
    """The scalars of a ``sar_lulc_iou`` result worth logging: means, accuracy, water metrics, IoU per class."""
    keys = ("mean_iou", "mean_accuracy", "overall_accuracy", "iou_water", "f1_water", "precision_water", "recall_water")
    metrics = {key: float(result[key]) for key in keys if key in result}
    for name, value in zip(scheme.names, result["per_category_iou"]):
        metrics[f"iou_{metric_key(name)}"] = float(value)
    return metrics


def finetuning_loss(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    generator: torch.Generator,
    normalization: TileNormalization,
    augment: AugmentConfig,
) -> torch.Tensor:
    """Augment image, mask and labels together, normalize like the image processor, return the segmentation loss."""
    images, valid, labels = augment_batch(batch["images"], batch["valid"], batch["labels"], augment, generator)
    return model(pixel_values=normalization(images, valid), labels=labels, pixel_mask=valid).loss


def _evaluation(
    metric: Any, normalization: TileNormalization, scheme: ClassScheme
) -> Callable[[nn.Module, DataLoader, Accelerator], dict[str, float]]:
    """The ``evaluate`` hook: predictions of every process gathered, folded into ``metric``, computed everywhere."""

    def evaluate(model: nn.Module, loader: DataLoader, accelerator: Accelerator) -> dict[str, float]:
        for batch in loader:
            logits = model(
                pixel_values=normalization(batch["images"], batch["valid"]), pixel_mask=batch["valid"]
            ).logits
            predictions = logits.argmax(dim=1).to(torch.uint8)
            labels = batch["labels"].to(torch.uint8)
            predictions, labels = accelerator.gather_for_metrics((predictions, labels))
            metric.add_batch(predictions=predictions.cpu().numpy(), references=labels.cpu().numpy())
        result = metric.compute(
            num_labels=scheme.num_classes,
            ignore_index=scheme.ignore_index,
            task="water" if scheme.water_id is not None else "lulc",
            water_id=scheme.water_id,
        )
        return segmentation_metrics(result, scheme)

    return evaluate


def _processor(args: FinetuningArguments, tiles: Any, progress: bool) -> SarImageProcessor:
    """The pretraining checkpoint's processor (its encoder learned on that normalization), else the tiles' statistics."""
    if args.pretrained is not None:
        if (Path(args.pretrained) / "preprocessor_config.json").is_file():
            return SarImageProcessor.from_pretrained(args.pretrained)
        raise UsageError(
            f"the pretraining checkpoint {args.pretrained} has no preprocessor_config.json: it records the input "
            "normalization its encoder learned on, which fine-tuning must reuse; copy it from the pretraining run's "
            "output folder (scripts/pretrain.py writes it)"
        )
    return SarImageProcessor.from_band_statistics(band_statistics(tiles, DEFAULT_CLIP_DB, progress=progress))


def _build_model(args: FinetuningArguments, config: SarLulcConfig) -> SarLulcForSemanticSegmentation:
    if args.pretrained is not None:
        try:
            return SarLulcForSemanticSegmentation.from_pretrained_encoder(args.pretrained, config)
        except ValueError as err:
            raise UsageError(f"--pretrained {args.pretrained}: {err}") from err
    return SarLulcForSemanticSegmentation(config)


def run_finetuning(
    args: FinetuningArguments,
    tile_args: TileArguments,
    augment_args: AugmentArguments,
    loop_args: LoopArguments,
) -> TrainResult:
    """Fine-tune a segmentation model as described in the module docstring.

    Raises:
        UsageError, SarLulcDataError: before training starts, for bad options, paths, configs or data.
    """
    loop_args.validate()
    tile_args.validate()
    args.check_initialization()
    scheme = args.scheme()
    split = args.spatial_split()
    config = args.model_config(scheme)
    augment = augment_args.augment_config()
    stride = config.backbone_config.encoder_stride
    check_input_size(augment.crop_size or tile_args.tile_size, stride, "the training input size")
    with library_progress_bars(not loop_args.disable_tqdm):
        return _finetune(args, tile_args, augment_args, loop_args, scheme, split, config)


def _finetune(
    args: FinetuningArguments,
    tile_args: TileArguments,
    augment_args: AugmentArguments,
    loop_args: LoopArguments,
    scheme: ClassScheme,
    split: SpatialSplit,
    config: SarLulcConfig,
) -> TrainResult:
    augment = augment_args.augment_config()
    stride = config.backbone_config.encoder_stride
    accelerator = create_accelerator(loop_args, f"finetune-{args.task}")
    configure_logging(accelerator)
    progress = not loop_args.disable_tqdm and accelerator.is_local_main_process
    with accelerator.main_process_first():
        splits = tile_args.load_splits(scheme, split, progress)
        metric = load_metric()
    for name in (args.train_split, args.eval_split):
        if name not in splits or len(splits[name]) == 0:
            raise UsageError(f"the data has no tile in split {name!r} (splits: {dict(splits.num_rows)})")
    train_tiles, eval_tiles = splits[args.train_split], splits[args.eval_split]
    check_input_size(augment.crop_size or train_tiles.features["image"].shape[-1], stride, "the tile size")

    def statistics() -> tuple[np.ndarray, np.ndarray, SarImageProcessor]:
        histograms = label_histogram(train_tiles, progress=progress), label_histogram(eval_tiles, progress=progress)
        return *histograms, _processor(args, train_tiles, progress)

    train_histogram, eval_histogram, processor = computed_on_main_process(accelerator, statistics)
    check_label_ids(train_histogram, scheme, f"split {args.train_split!r} of {tile_args.train_data}")
    check_label_ids(eval_histogram, scheme, f"split {args.eval_split!r} of {tile_args.train_data}")
    config.class_frequencies = train_histogram[: scheme.num_classes].tolist()
    if config.backbone_config.num_channels != processor.num_channels:
        raise UsageError(
            f"the encoder expects {config.backbone_config.num_channels} bands but the data/processor has "
            f"{processor.num_channels}"
        )
    normalization = TileNormalization.from_processor(processor)

    set_seed(loop_args.seed)
    model = _build_model(args, config)
    save_arguments(accelerator, loop_args.output_dir, args, tile_args, augment_args, loop_args)
    hooks = TrainingHooks(
        run_name=f"finetune-{args.task}",
        collate_fn=collate_tiles,
        compute_loss=lambda m, batch, gen: finetuning_loss(m, batch, gen, normalization, augment),
        evaluate=_evaluation(metric, normalization, scheme),
        selection_metric="iou_water" if args.task == "water" else "mean_iou",
        save_artifacts=processor.save_pretrained,
        layer_ids=sar_mixmae_layer_ids(model, model.config.backbone_config.depths),
        hyperparameters={"train_tiles": len(train_tiles), "eval_tiles": len(eval_tiles), "scheme": scheme.name},
    )
    return train(
        model,
        training_view(train_tiles, with_labels=True),
        loop_args,
        hooks,
        accelerator,
        eval_dataset=training_view(eval_tiles, with_labels=True),
    )
