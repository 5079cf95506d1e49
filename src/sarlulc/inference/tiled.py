"""Tiled inference on tensors: the model over overlapping tiles of an image in memory, blended, with no file I/O.

:func:`predict_tiled` is the pure tensor counterpart of :func:`sarlulc.inference.predict_scene`::

    features = processor(db, input_kind="db", return_tensors="pt")
    probabilities = predict_tiled(model.eval(), features["pixel_values"][0], features["pixel_mask"][0], tile=512)
    class_map = probabilities.argmax(dim=0)

Contract
    Both are built from the same pieces, so they cannot drift: the tile grid and its batches
    (:class:`~sarlulc.inference.grid.TileGrid`: reflected borders, raised-cosine window), the same model step
    (:func:`run_batch`) and the same blender (:class:`~sarlulc.inference.blending.RowBlender`). On the same
    preprocessed input, :func:`predict_tiled`'s probabilities x 255 rounded are the probability file's values, and
    their argmax is the class map ``predict_scene`` writes (which takes the argmax of the weighted sums before the
    division by the summed weights: the same class short of two sums within a float32 rounding of each other).

    Nodata: a tile without a valid pixel is not run; the probabilities of every invalid pixel are 0 in every class
    (so a pixel is valid exactly where the probabilities sum to 1). ``valid`` is the caller's mask; ``pixel_values``
    should already be 0 there, as the image processor leaves them.

:class:`ModelClock` times the forward passes of the scene pipeline.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from .blending import BlendedRows, RowBlender
from .grid import TileGrid, check_tiling

__all__ = ["ModelClock", "check_tile_fits_model", "predict_tiled", "run_batch"]


class ModelClock:
    """Seconds spent in the model: CUDA events on a GPU (no synchronization per batch), wall time otherwise."""

    def __init__(self, device: torch.device) -> None:
        self._device = device
        self._cuda = device.type == "cuda"
        self._events: list[tuple[Any, Any]] = []
        self._seconds = 0.0
        self._started: Any = None

    def start(self) -> None:
        if self._cuda:
            self._started = torch.cuda.Event(enable_timing=True)
            self._started.record()
        else:
            self._started = time.perf_counter()

    def stop(self) -> None:
        if self._cuda:
            ended = torch.cuda.Event(enable_timing=True)
            ended.record()
            self._events.append((self._started, ended))
        else:
            self._seconds += time.perf_counter() - self._started

    def total(self) -> float:
        if self._cuda:
            torch.cuda.synchronize(self._device)
            return self._seconds + sum(start.elapsed_time(end) for start, end in self._events) / 1000.0
        return self._seconds


def check_tile_fits_model(config: Any, tile: int) -> None:
    """Raise ``ValueError`` unless ``tile`` x ``tile`` inputs fit the model's encoder.

    The encoder config decides (``SarMixMAEConfig.check_input_size``: multiples of its encoder stride). A model
    without a sarlulc encoder config (any ``(B, C, H, W) -> (B, K, H, W)`` model) has no such rule beyond the grid's
    own (:func:`~sarlulc.inference.grid.check_tiling`: multiples of 32).
    """
    encoder = getattr(config, "backbone_config", None)
    if hasattr(encoder, "check_input_size"):
        encoder.check_input_size(tile, tile, what="tile")


def run_batch(
    model: torch.nn.Module,
    blender: RowBlender,
    pixel_values: torch.Tensor,
    valid: torch.Tensor,
    row: int,
    cols: list[int],
    *,
    device: torch.device,
    dtype: torch.dtype,
    clock: ModelClock | None = None,
) -> None:
    """Run the model on the tiles ``cols`` of tile row ``row`` (``pixel_values (B, C, tile, tile)``, ``valid (B, tile,
    tile)``) and blend them in.

    A function of its own, so that the batch's logits are freed before the next batch's activations are allocated.

    Raises:
        ValueError: the model's logits do not have the shape ``(B, K, tile, tile)``.
    """
    pixel_values = pixel_values.to(device, dtype=dtype, non_blocking=True)
    valid = valid.to(device, non_blocking=True)
    if clock is not None:
        clock.start()
    logits = model(pixel_values=pixel_values).logits
    if clock is not None:
        clock.stop()
    expected = (len(cols), blender.num_labels, blender.tile, blender.tile)
    if tuple(logits.shape) != expected:
        raise ValueError(
            f"the model returned logits of shape {tuple(logits.shape)} for tiles of shape "
            f"{tuple(pixel_values.shape)}; expected {expected}"
        )
    weighted = blender.weighted_probabilities(logits)
    for index, col in enumerate(cols):
        blender.add(weighted[index], valid[index], row, col)


def predict_tiled(
    model: torch.nn.Module,
    pixel_values: torch.Tensor,
    valid: torch.Tensor,
    *,
    tile: int = 512,
    overlap: int = 64,
    batch_size: int = 2,
    num_labels: int | None = None,
) -> torch.Tensor:
    """Blended class probabilities of an image of any size, from overlapping tiles; see the module docstring.

    Args:
        model: a segmentation model (``model(pixel_values=x).logits`` maps ``(B, C, h, w)`` to ``(B, K, h, w)``),
            run as it is (put it in eval mode first) under ``torch.inference_mode``.
        pixel_values: ``(C, H, W)`` preprocessed input (the image processor's ``pixel_values`` of one image).
        valid: ``(H, W)`` bool (or 0/1), True where the input pixel is valid.
        tile: tile side in px, a multiple of 32.
        overlap: px shared by neighbouring tiles, ``0 <= overlap < tile / 2``.
        batch_size: tiles per model call.
        num_labels: K; default ``model.config.num_labels``.

    Returns:
        ``(K, H, W)`` float32 probabilities on the model's device, 0 on every invalid pixel.

    Raises:
        ValueError: a bad tile/overlap/batch size, shapes that do not match, or a model without ``config`` and no
            ``num_labels``.
    """
    check_tiling(tile, overlap, batch_size)
    if pixel_values.ndim != 3:
        raise ValueError(f"pixel_values must be (C, H, W), got shape {tuple(pixel_values.shape)}")
    if tuple(valid.shape) != tuple(pixel_values.shape[1:]):
        raise ValueError(
            f"valid must be (H, W) {tuple(pixel_values.shape[1:])} like pixel_values, got {tuple(valid.shape)}"
        )
    if num_labels is None:
        config = getattr(model, "config", None)
        if config is None:
            raise ValueError("the model has no config to take num_labels from; pass num_labels=")
        num_labels = int(config.num_labels)
    check_tile_fits_model(getattr(model, "config", None), tile)
    parameter = next(model.parameters())
    device, dtype = parameter.device, parameter.dtype
    valid = valid.to(torch.bool)
    height, width = valid.shape
    grid = TileGrid(height, width, tile, overlap)
    blender = RowBlender(grid, num_labels, first_row=0, device=device)
    probabilities = torch.zeros((num_labels, height, width), dtype=torch.float32, device=device)

    def keep(rows: BlendedRows) -> None:
        stop = rows.first_row + rows.num_rows
        probabilities[:, rows.first_row : stop] = rows.probabilities().masked_fill_(~rows.valid, 0.0)

    source_cols = [torch.from_numpy(grid.source_cols(col)).to(valid.device) for col in range(grid.num_cols)]
    with torch.inference_mode():
        finished = 0  # tile rows whose scene rows have been handed over
        for row, cols in grid.batches(range(grid.num_rows), batch_size):
            while finished < row:
                blender.finish(finished, keep)
                finished += 1
            source_rows = torch.from_numpy(grid.source_rows(row)).to(valid.device)
            run, values, masks = [], [], []
            for col in cols:
                index = (source_rows[:, None], source_cols[col][None, :])
                tile_valid = valid[index]
                if not tile_valid.any():  # like the scene pipeline: a tile without a valid pixel is not run
                    continue
                run.append(col)
                values.append(pixel_values[:, index[0], index[1]])
                masks.append(tile_valid)
            if run:
                run_batch(model, blender, torch.stack(values), torch.stack(masks), row, run, device=device, dtype=dtype)
        while finished < grid.num_rows:
            blender.finish(finished, keep)
            finished += 1
    return probabilities
