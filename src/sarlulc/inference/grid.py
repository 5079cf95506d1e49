"""The tile grid over a scene: where tiles start, how they reach past the scene, how they are weighted and batched.

Contract (pure numpy; no I/O, no torch)
    Square tiles of ``tile`` px step by ``stride = tile - overlap``. The grid starts ``margin = overlap // 2`` px
    before the scene's first row/column, so the scene's border pixels see ``margin`` px of context like every other
    tile edge; the last tile of each axis is moved back to end ``margin`` px past the scene, so no tile is spent on
    padding alone (:func:`tile_starts`). Pixels outside the scene are read by mirror reflection about the edge pixels
    (row -1 is row 1, numpy's ``"reflect"``; :func:`reflect`).

    Each tile's prediction is weighted by a separable window (:func:`taper`): 1 in the core, a raised-cosine ramp
    ``0.5 - 0.5 cos(pi (d + 0.5) / overlap)`` over the ``overlap`` px at each edge (``d`` = distance to the edge).
    The weights never reach 0, and across a regular overlap two neighbours' ramps sum to exactly 1. With
    ``overlap=0`` the window is all ones.

    A *batch* is ``batch_size`` neighbouring tiles of one tile row (:meth:`TileGrid.batches`), never tiles of two
    rows: the same batches whichever caller or process runs the row, so a tile's logits never depend on how the
    scene was split or on the entry point (:func:`sarlulc.inference.predict_scene` or
    :func:`sarlulc.inference.predict_tiled`).

    :func:`check_tiling` is the one check of ``tile``/``overlap``/``batch_size``: a ``ValueError`` naming the value.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

__all__ = ["MIN_TILE", "TileGrid", "check_tiling", "reflect", "taper", "tile_starts"]

MIN_TILE = 32
"""Tiles are positive multiples of this (the encoder stride of every sarlulc model)."""


def check_tiling(tile: int, overlap: int, batch_size: int | None = None) -> None:
    """Raise ``ValueError`` for a tile that is not a positive multiple of 32, an overlap outside ``[0, tile/2)`` or a
    batch size below 1 (None = the caller's default)."""
    for name, value in (("tile", tile), ("overlap", overlap), ("batch_size", 1 if batch_size is None else batch_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if tile < MIN_TILE or tile % MIN_TILE:
        raise ValueError(f"tile must be a positive multiple of {MIN_TILE} px (the encoder stride), got {tile}")
    if not 0 <= overlap < tile / 2:
        raise ValueError(
            f"overlap must be in [0, tile/2) px: 0 <= overlap < {tile / 2:g} for tile {tile}, got {overlap} "
            "(each scene row must be reached by tiles of at most two consecutive tile rows)"
        )
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")


def tile_starts(size: int, tile: int, overlap: int) -> tuple[int, ...]:
    """First pixel (may be negative) of each tile along an axis of ``size`` px; see the module docstring."""
    margin, stride = overlap // 2, tile - overlap
    span = size + 2 * margin
    if span <= tile:
        return (-margin,)
    count = math.ceil((span - tile) / stride) + 1
    return (*(-margin + k * stride for k in range(count - 1)), size + margin - tile)


def reflect(indices: np.ndarray, size: int) -> np.ndarray:
    """Map pixel indices outside ``[0, size)`` back inside by mirror reflection about the edge pixels."""
    if size == 1:
        return np.zeros_like(indices)
    period = 2 * (size - 1)
    folded = np.mod(indices, period)
    return np.where(folded >= size, period - folded, folded)


def taper(tile: int, overlap: int) -> np.ndarray:
    """The 1-D blending weights of a tile (float64, ``(tile,)``): 1 in the core, raised-cosine ramps at both ends."""
    weights = np.ones(tile)
    if overlap:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap) + 0.5) / overlap)
        weights[:overlap] = ramp
        weights[-overlap:] = ramp[::-1]
    return weights


@dataclass(frozen=True)
class TileGrid:
    """Tile positions over a ``height`` x ``width`` scene, the blending window and the summed weights it gives every
    pixel.

    Attributes:
        height, width: the scene in px.
        tile, overlap: tile side and the px neighbouring tiles share (checked by :func:`check_tiling`).
        row_starts, col_starts: first scene row/column of each tile row/column (:func:`tile_starts`), derived.
    """

    height: int
    width: int
    tile: int
    overlap: int
    row_starts: tuple[int, ...] = field(init=False)
    col_starts: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "row_starts", tile_starts(self.height, self.tile, self.overlap))
        object.__setattr__(self, "col_starts", tile_starts(self.width, self.tile, self.overlap))

    @property
    def num_rows(self) -> int:
        """Tile rows."""
        return len(self.row_starts)

    @property
    def num_cols(self) -> int:
        """Tiles per tile row."""
        return len(self.col_starts)

    @property
    def num_tiles(self) -> int:
        return self.num_rows * self.num_cols

    def top(self, row: int) -> int:
        """First scene row that is final once tile rows ``< row`` are done (``height`` for ``row == num_rows``).

        Tile row ``row`` finishes the scene rows ``[top(row), top(row + 1))``: no later tile row reaches them.
        """
        return self.height if row >= self.num_rows else min(max(self.row_starts[row], 0), self.height)

    def first_row_reaching(self, scene_row: int) -> int:
        """The first tile row that contributes to ``scene_row`` or later rows (a process starts there)."""
        return next(i for i, start in enumerate(self.row_starts) if start + self.tile > scene_row)

    def source_rows(self, row: int) -> np.ndarray:
        """Scene rows (reflected into the scene) that tile row ``row`` reads, ``(tile,)`` int."""
        return reflect(np.arange(self.row_starts[row], self.row_starts[row] + self.tile), self.height)

    def source_cols(self, col: int) -> np.ndarray:
        """Scene columns (reflected into the scene) that tile column ``col`` reads, ``(tile,)`` int."""
        return reflect(np.arange(self.col_starts[col], self.col_starts[col] + self.tile), self.width)

    def batches(self, rows: range, batch_size: int) -> Iterator[tuple[int, range]]:
        """``(tile row, tile columns)`` of every batch of the tile rows ``rows``, in order; see the module docstring."""
        for row in rows:
            for first in range(0, self.num_cols, batch_size):
                yield row, range(first, min(first + batch_size, self.num_cols))

    def window(self) -> np.ndarray:
        """The 2-D blending weights ``(tile, tile)`` float32."""
        weights = taper(self.tile, self.overlap)
        return np.outer(weights, weights).astype(np.float32)

    def weight_sums(self) -> tuple[np.ndarray, np.ndarray]:
        """Summed window weights of every scene row ``(height,)`` and column ``(width,)``, float32.

        The window is separable and the grid is a product of row and column positions, so the total weight of pixel
        ``(r, c)`` over all tiles is ``rows[r] * cols[c]`` and needs no per-pixel accumulation. (A tile that is not run
        has no valid pixel, so no valid pixel misses its weight.)
        """
        weights = taper(self.tile, self.overlap)
        sums = []
        for size, starts in ((self.height, self.row_starts), (self.width, self.col_starts)):
            total = np.zeros(size)
            for start in starts:
                first, last = max(start, 0), min(start + self.tile, size)
                total[first:last] += weights[first - start : last - start]
            sums.append(total.astype(np.float32))
        return sums[0], sums[1]
