"""SAR-W-MixMAE pretraining on unlabeled tiles (the logic behind ``sarlulc pretrain`` and ``scripts/pretrain.py``).

Steps: validate every option (before anything heavy), tile or load the training data, compute the band statistics of
the training tiles and build the image processor from them (the one home of the input normalization), then run the
shared loop (:func:`sarlulc.training.loop.train`) with a loss that augments the batch, normalizes it, hands the
clipped dB to the backscatter-weighted loss and draws the mixing mask from the step's generator.

The output folder is a ``SarMixMAEForPreTraining`` checkpoint (``config.json``, ``model.safetensors``, remote code)
with ``preprocessor_config.json``, ``band_statistics.json``, ``training_args.json`` and ``all_results.json``; it is
what ``sarlulc finetune --pretrained`` expects.
"""

from __future__ import annotations

from pathlib import Path

import torch
from accelerate.utils import set_seed
from torch import nn

from sarlulc_cli.arguments import AugmentArguments, PretrainingArguments, PretrainingLoopArguments, TileArguments

from ..data.classes import get_scheme
from ..data.tiles import band_statistics
from ..errors import UsageError
from ..models.configuration_sar_mixmae import SarMixMAEConfig
from ..models.image_processing_sar import DEFAULT_CLIP_DB, SarImageProcessor
from ..models.modeling_sar_mixmae import SarMixMAEForPreTraining
from .augment import AugmentConfig, augment_batch, augment_config
from .batches import (
    TileNormalization,
    check_tile_arguments,
    collate_tiles,
    load_training_splits,
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
from .loop import LoopArguments, TrainingHooks, TrainResult, check_loop_arguments, create_accelerator, train

__all__ = [
    "BAND_STATISTICS_FILENAME",
    "PretrainingArguments",
    "PretrainingLoopArguments",
    "pretraining_config",
    "pretraining_loss",
    "run_pretraining",
]

BAND_STATISTICS_FILENAME = "band_statistics.json"


def pretraining_config(args: PretrainingArguments) -> SarMixMAEConfig:
    """The validated model config of the model options (band statistics not yet filled in); raises
    :class:`UsageError`."""
    return build_config(SarMixMAEConfig, args.config, parse_overrides(args.config_overrides))


def pretraining_loss(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    generator: torch.Generator,
    normalization: TileNormalization,
    augment: AugmentConfig,
) -> torch.Tensor:
    """Augment in dB, normalize like the image processor, and return the SAR-W-MixMAE loss (weighted by the
    augmented images' clipped dB, as the processor's ``backscatter_db``).

    The mixing mask is drawn from ``generator`` inside the model, so a resumed step mixes exactly as the original did.
    """
    images, valid, _ = augment_batch(batch["images"], batch["valid"], None, augment, generator)
    pixel_values = normalization(images, valid)
    backscatter_db = normalization.clip(images, valid)
    return model(pixel_values=pixel_values, pixel_mask=valid, backscatter_db=backscatter_db, generator=generator).loss


def run_pretraining(
    args: PretrainingArguments,
    tile_args: TileArguments,
    augment_args: AugmentArguments,
    loop_args: LoopArguments,
) -> TrainResult:
    """Pretrain SAR-W-MixMAE as described in the module docstring.

    Raises:
        UsageError, SarLulcDataError: before training starts, for bad options, paths, configs or data.
    """
    check_loop_arguments(loop_args)
    check_tile_arguments(tile_args)
    config = pretraining_config(args)
    augment = augment_config(augment_args)
    check_encoder_input_size(config, augment.crop_size or tile_args.tile_size, "the training input size")
    with library_progress_bars(not loop_args.disable_tqdm):
        return _pretrain(args, tile_args, loop_args, augment_args, config)


def _pretrain(
    args: PretrainingArguments,
    tile_args: TileArguments,
    loop_args: LoopArguments,
    augment_args: AugmentArguments,
    config: SarMixMAEConfig,
) -> TrainResult:
    augment = augment_config(augment_args)
    accelerator = create_accelerator(loop_args, "pretrain")
    configure_logging(accelerator)
    progress = not loop_args.disable_tqdm and accelerator.is_local_main_process
    with accelerator.main_process_first():
        splits = load_training_splits(tile_args, get_scheme(None), None, progress)
    if args.dataset_split not in splits:
        raise UsageError(f"--dataset_split {args.dataset_split!r} is not in the data (splits: {list(splits)})")
    tiles = splits[args.dataset_split]
    if len(tiles) == 0:
        raise UsageError(f"no training tile in {tile_args.train_data} (split {args.dataset_split!r})")
    check_encoder_input_size(config, augment.crop_size or tiles.features["image"].shape[-1], "the tile size")
    statistics = computed_on_main_process(
        accelerator, lambda: band_statistics(tiles, DEFAULT_CLIP_DB, progress=progress)
    )
    if len(statistics.mean) != config.num_channels:
        raise UsageError(
            f"the training tiles have {len(statistics.mean)} bands but the config expects num_channels="
            f"{config.num_channels}"
        )
    processor = SarImageProcessor.from_band_statistics(statistics)
    record_training_data(processor, training_data_record(tile_args.train_data, tile_args.labels))
    normalization = TileNormalization.from_processor(processor)

    set_seed(loop_args.seed)
    model = SarMixMAEForPreTraining(config)
    save_arguments(accelerator, loop_args.output_dir, args, tile_args, augment_args, loop_args)

    def save_artifacts(directory: Path) -> None:
        processor.save_pretrained(directory)
        statistics.save_json(directory / BAND_STATISTICS_FILENAME)

    hooks = TrainingHooks(
        run_name="pretrain",
        collate_fn=collate_tiles,
        compute_loss=lambda m, batch, gen: pretraining_loss(m, batch, gen, normalization, augment),
        save_artifacts=save_artifacts,
        hyperparameters={"train_tiles": len(tiles), "input_db_mean": statistics.mean, "input_db_std": statistics.std},
    )
    return train(model, training_view(tiles, with_labels=False), loop_args, hooks, accelerator)
