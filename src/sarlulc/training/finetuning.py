"""LULC or water segmentation fine-tuning (the logic behind ``sarlulc finetune`` and ``scripts/finetune.py``).

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

import functools
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader

from sarlulc_cli.arguments import (
    AugmentArguments,
    FinetuningArguments,
    FinetuningLoopArguments,
    SpatialSplitArguments,
    TileArguments,
)

from ..data.classes import ClassScheme, get_scheme
from ..data.tiles import SpatialSplit, band_statistics
from ..errors import UsageError
from ..metrics import load_metric
from ..models.configuration_sar_lulc import SarLulcConfig
from ..models.image_processing_sar import DEFAULT_CLIP_DB, SarImageProcessor
from ..models.modeling_sar_lulc import SarLulcForSemanticSegmentation
from .augment import AugmentConfig, augment_batch, augment_config
from .batches import (
    TileNormalization,
    check_label_ids,
    check_tile_arguments,
    collate_tiles,
    label_histogram,
    label_id_remap,
    load_training_splits,
    remap_histogram,
    spatial_split,
    training_view,
)
from .common import (
    check_encoder_input_size,
    computed_on_main_process,
    configure_logging,
    library_progress_bars,
    save_arguments,
)
from .configs import build_config, parse_overrides
from .data_record import record_training_data, training_data_record
from .loop import (
    LoopArguments,
    TrainingHooks,
    TrainResult,
    check_loop_arguments,
    create_accelerator,
    sar_mixmae_layer_ids,
    train,
)

__all__ = [
    "TASK_SCHEMES",
    "FinetuningArguments",
    "FinetuningLoopArguments",
    "check_initialization",
    "finetuning_config",
    "finetuning_loss",
    "metric_key",
    "run_finetuning",
    "segmentation_metrics",
    "task_scheme",
]

TASK_SCHEMES = {"lulc": "lulc-9", "water": "water"}
"""Default class scheme of each task (``sarlulc.data.classes``)."""


def task_scheme(args: FinetuningArguments) -> ClassScheme:
    """The class scheme of the task (``--class_scheme``, else the task's); raises :class:`UsageError`."""
    try:
        scheme = get_scheme(args.class_scheme or TASK_SCHEMES[args.task])
    except ValueError as err:
        raise UsageError(f"--class_scheme: {err}") from err
    if args.task == "water" and (scheme.num_classes != 2 or scheme.water_id is None):
        raise UsageError(f"--task water needs a 2-class scheme with a water class; {scheme.name!r} is not one")
    return scheme


def check_initialization(args: FinetuningArguments) -> None:
    """Exactly one of ``--pretrained`` (a complete sar_mixmae checkpoint) and ``--from_scratch``; raises
    :class:`UsageError`."""
    if (args.pretrained is None) == (not args.from_scratch):
        raise UsageError("give exactly one of --pretrained DIR (a `sarlulc pretrain` output) and --from_scratch")
    if args.pretrained is None:
        return
    config_path = Path(args.pretrained) / "config.json"
    if not config_path.is_file():
        raise UsageError(f"--pretrained {args.pretrained}: no config.json there (not a pretraining checkpoint)")
    model_type = json.loads(config_path.read_text()).get("model_type")
    if model_type != "sar_mixmae":
        raise UsageError(f"--pretrained {args.pretrained} holds a {model_type!r} model, not a sar_mixmae one")
    if not any(Path(args.pretrained).glob("*.safetensors")):
        raise UsageError(f"--pretrained {args.pretrained} has no .safetensors weights")


def finetuning_config(args: FinetuningArguments, scheme: ClassScheme) -> SarLulcConfig:
    """The validated config with the task's classes and the chosen refinements (no statistics yet); raises
    :class:`UsageError`."""
    config = build_config(SarLulcConfig, args.config, parse_overrides(args.config_overrides))
    _check_config_classes(config, scheme)
    values = config.to_dict()
    values.update(id2label=scheme.id2label, label2id=scheme.label2id, ignore_index=scheme.ignore_index)
    switches = {
        "use_highres_injection": args.use_highres_injection,
        "use_refine_up_head": args.use_refine_up_head,
        "class_weight_alpha": args.class_weight_alpha,
    }
    values.update({key: value for key, value in switches.items() if value is not None})
    try:
        return SarLulcConfig.from_dict(values)
    except ValueError as err:
        raise UsageError(f"invalid sar_lulc config: {err}") from err


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
    split_args: SpatialSplitArguments | None = None,
) -> TrainResult:
    """Fine-tune a segmentation model as described in the module docstring.

    Args:
        args, tile_args, augment_args, loop_args: the task and model, the data, the augmentation, the loop.
        split_args: how scenes are split in space (default :class:`SpatialSplitArguments`); a saved dataset keeps its
            own splits.

    Raises:
        UsageError, SarLulcDataError: before training starts, for bad options, paths, configs or data.
    """
    split_args = split_args if split_args is not None else SpatialSplitArguments()
    check_loop_arguments(loop_args)
    check_tile_arguments(tile_args)
    check_initialization(args)
    scheme = task_scheme(args)
    split = spatial_split(split_args)
    config = finetuning_config(args, scheme)
    augment = augment_config(augment_args)
    check_encoder_input_size(
        config.backbone_config, augment.crop_size or tile_args.tile_size, "the training input size"
    )
    with library_progress_bars(not loop_args.disable_tqdm):
        return _finetune(args, tile_args, augment_args, loop_args, split_args, scheme, split, config)


def _finetune(
    args: FinetuningArguments,
    tile_args: TileArguments,
    augment_args: AugmentArguments,
    loop_args: LoopArguments,
    split_args: SpatialSplitArguments,
    scheme: ClassScheme,
    split: SpatialSplit,
    config: SarLulcConfig,
) -> TrainResult:
    augment = augment_config(augment_args)
    accelerator = create_accelerator(loop_args, f"finetune-{args.task}")
    configure_logging(accelerator)
    progress = not loop_args.disable_tqdm and accelerator.is_local_main_process
    with accelerator.main_process_first():
        splits = load_training_splits(tile_args, scheme, split, progress)
        metric = load_metric()
    for name in (args.train_split, args.eval_split):
        if name not in splits or len(splits[name]) == 0:
            raise UsageError(f"the data has no tile in split {name!r} (splits: {dict(splits.num_rows)})")
    train_tiles, eval_tiles = splits[args.train_split], splits[args.eval_split]
    tile_side = augment.crop_size or train_tiles.features["image"].shape[-1]
    check_encoder_input_size(config.backbone_config, tile_side, "the tile size")

    def statistics() -> tuple[np.ndarray, np.ndarray, SarImageProcessor]:
        histograms = label_histogram(train_tiles, progress=progress), label_histogram(eval_tiles, progress=progress)
        return *histograms, _processor(args, train_tiles, progress)

    train_where = f"split {args.train_split!r} of {tile_args.train_data}"
    # Tiles made for another task serve this one when its scheme derives from theirs (water from lulc-9 tiles).
    label_remap = label_id_remap(train_tiles, scheme, train_where)
    train_histogram, eval_histogram, processor = computed_on_main_process(accelerator, statistics)
    train_histogram = remap_histogram(train_histogram, label_remap)
    eval_where = f"split {args.eval_split!r} of {tile_args.train_data}"
    eval_histogram = remap_histogram(eval_histogram, label_id_remap(eval_tiles, scheme, eval_where))
    # The fine-tuning data is what the finished model predicts: its record replaces a pretraining checkpoint's.
    record_training_data(processor, training_data_record(tile_args.train_data, tile_args.labels))
    check_label_ids(train_histogram, scheme, train_where)
    check_label_ids(eval_histogram, scheme, eval_where)
    config.class_frequencies = train_histogram[: scheme.num_classes].tolist()
    if config.backbone_config.num_channels != processor.num_channels:
        raise UsageError(
            f"the encoder expects {config.backbone_config.num_channels} bands but the data/processor has "
            f"{processor.num_channels}"
        )
    normalization = TileNormalization.from_processor(processor)

    set_seed(loop_args.seed)
    model = _build_model(args, config)
    save_arguments(accelerator, loop_args.output_dir, args, tile_args, augment_args, loop_args, split_args)
    hooks = TrainingHooks(
        run_name=f"finetune-{args.task}",
        collate_fn=collate_tiles if label_remap is None else functools.partial(collate_tiles, label_remap=label_remap),
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
