"""Batch augmentation of SAR tiles, driven by an explicit ``torch.Generator``.

Augmentation runs on the batch inside the training step (on the accelerator's device) instead of in DataLoader
workers, so that its randomness comes from the per-step generator of :func:`sarlulc.training.loop.step_generator`:
a run resumed from a checkpoint draws exactly the crops, flips and gains of an uninterrupted run, whatever the number
of workers.

Tiles are sigma0 in dB with invalid pixels at 0.0 (the data layer's convention), so the intensity jitter is applied
before normalization, on valid pixels only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sarlulc_cli.arguments import AugmentArguments

from ..errors import as_usage_error

__all__ = ["AugmentArguments", "AugmentConfig", "augment_batch", "augment_config"]

_DRAWS_PER_SAMPLE = 6


@dataclass(frozen=True)
class AugmentConfig:
    """What :func:`augment_batch` does to every tile.

    Attributes:
        crop_size: side in pixels of a random square crop (``None``: keep the whole tile). Must not exceed the tile.
        flip: random horizontal and vertical flips, each with probability 0.5.
        rotate90: random rotation by a multiple of 90 degrees.
        gain_db: largest absolute dB offset of the intensity jitter (0 disables it). A gain ``g`` multiplies the
            linear backscatter power, which adds ``10 log10 g`` dB to every pixel: the multiplicative speckle keeps its
            distribution (its coefficient of variation does not change), unlike additive noise. One offset per tile,
            shared by its bands, as a calibration or incidence-angle difference would be.
    """

    crop_size: int | None = None
    flip: bool = True
    rotate90: bool = True
    gain_db: float = 0.0

    def __post_init__(self) -> None:
        if self.crop_size is not None and self.crop_size < 1:
            raise ValueError(f"crop_size must be positive, got {self.crop_size}")
        if self.gain_db < 0:
            raise ValueError(f"gain_db must be >= 0, got {self.gain_db}")


def augment_config(args: AugmentArguments) -> AugmentConfig:
    """The :class:`AugmentConfig` of the augmentation options; raises ``UsageError`` for bad ones."""
    with as_usage_error():
        return AugmentConfig(
            crop_size=args.crop_size, flip=args.flip, rotate90=args.rotate90, gain_db=args.gain_jitter_db
        )


def augment_batch(
    images: torch.Tensor,
    valid: torch.Tensor,
    labels: torch.Tensor | None,
    config: AugmentConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Apply the same random geometry to each tile's image, valid mask and labels, and jitter its intensity.

    Args:
        images: ``(B, C, T, T)`` float sigma0 in dB, 0.0 where invalid.
        valid: ``(B, T, T)`` bool, True where the pixel is valid.
        labels: ``(B, T, T)`` class ids, or ``None`` (pretraining).
        config: what to do.
        generator: source of all randomness; it must live on the tensors' device.

    Returns:
        ``(images, valid, labels)`` of side ``config.crop_size`` (or ``T``), new tensors.
    """
    batch, _, height, width = images.shape
    if height != width:
        raise ValueError(f"tiles must be square, got {height}x{width}")
    crop = config.crop_size or height
    if crop > height:
        raise ValueError(f"crop_size {crop} exceeds the tile size {height}")
    # One draw per decision and tile, all at once and in a fixed order, so the stream does not depend on the options.
    draws = torch.rand(batch, _DRAWS_PER_SAMPLE, generator=generator, device=generator.device).cpu().tolist()
    out_images, out_valid, out_labels = [], [], []
    for index, (u_row, u_col, u_hflip, u_vflip, u_rot, u_gain) in enumerate(draws):
        top, left = int(u_row * (height - crop + 1)), int(u_col * (height - crop + 1))
        window = (slice(top, top + crop), slice(left, left + crop))
        image, mask = images[index][(slice(None), *window)], valid[index][window]
        label = labels[index][window] if labels is not None else None
        dims = []
        if config.flip and u_hflip < 0.5:
            dims.append(-1)
        if config.flip and u_vflip < 0.5:
            dims.append(-2)
        if dims:
            image, mask = image.flip(dims), mask.flip(dims)
            label = label.flip(dims) if label is not None else None
        turns = int(u_rot * 4) if config.rotate90 else 0
        if turns:
            image, mask = image.rot90(turns, (-2, -1)), mask.rot90(turns, (-2, -1))
            label = label.rot90(turns, (-2, -1)) if label is not None else None
        if config.gain_db > 0:
            offset = (2.0 * u_gain - 1.0) * config.gain_db
            image = torch.where(mask, image + offset, image)
        out_images.append(image)
        out_valid.append(mask)
        if label is not None:
            out_labels.append(label)
    stacked_labels = torch.stack(out_labels).contiguous() if labels is not None else None
    return torch.stack(out_images).contiguous(), torch.stack(out_valid).contiguous(), stacked_labels
