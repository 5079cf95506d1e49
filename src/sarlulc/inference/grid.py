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

    A *column strip* (:class:`ColumnStrip`, :meth:`TileGrid.strip`, :meth:`TileGrid.strips`) is the part of the grid
    that finishes the scene columns ``[left, right)`` (its *core*): every tile column touching the core, widened to
    whole batches (so a strip's batches are the whole scene's batches). Its tiles are the global grid's tiles, read at
    the same places with the same reflection at the scene's edges, and each core pixel gets the same contributions in
    the same order as in the whole scene, so a scene predicted strip by strip is byte-identical to one predicted in a
    single band, while the blending band only spans the strip. Cores are consecutive, cut at multiples of the output
    block (so each output block is written once).

    :func:`check_tiling` is the one check of ``tile``/``overlap``/``batch_size``: a ``ValueError`` naming the value.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

__all__ = ["MIN_TILE", "ColumnStrip", "TileGrid", "check_tiling", "reflect", "taper", "tile_starts"]

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
class ColumnStrip:
    """The tile columns that finish the scene columns ``[left, right)``; see the module docstring.

    Attributes:
        cols: the tile columns run: every one that touches the core, widened to whole batches.
        left, right: the core: the scene columns this strip finishes and writes.
        band_left, band_right: the scene columns its tiles reach (clipped to the scene): what its blending band holds.
    """

    cols: range
    left: int
    right: int
    band_left: int
    band_right: int

    @property
    def width(self) -> int:
        """Columns of the blending band."""
        return self.band_right - self.band_left

    @property
    def core(self) -> slice:
        """The core's columns within the band."""
        return slice(self.left - self.band_left, self.right - self.band_left)


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

    def batches(self, rows: range, batch_size: int, cols: range | None = None) -> Iterator[tuple[int, range]]:
        """``(tile row, tile columns)`` of every batch of the tile rows ``rows``, in order; see the module docstring.

        ``cols`` (default: all) limits them to a strip's tile columns, which start on a batch boundary
        (:meth:`strip`), so that they are the very batches of the whole scene.
        """
        cols = range(self.num_cols) if cols is None else cols
        for row in rows:
            for first in range(cols.start, cols.stop, batch_size):
                yield row, range(first, min(first + batch_size, cols.stop))

    def strip(self, left: int, right: int, batch_size: int) -> ColumnStrip:
        """The :class:`ColumnStrip` that finishes the scene columns ``[left, right)`` (``0 <= left < right <=
        width``) with batches of ``batch_size`` tiles."""
        if not 0 <= left < right <= self.width:
            raise ValueError(f"a strip's columns must lie in [0, {self.width}), got [{left}, {right})")
        ends = [start + self.tile for start in self.col_starts]  # both increase with the tile column
        first = bisect.bisect_right(ends, left)  # the first tile ending after `left`
        stop = bisect.bisect_left(self.col_starts, right)  # past the last tile starting before `right`
        first = first // batch_size * batch_size
        stop = min(-(-stop // batch_size) * batch_size, self.num_cols)
        return ColumnStrip(
            cols=range(first, stop),
            left=left,
            right=right,
            band_left=max(self.col_starts[first], 0),
            band_right=min(ends[stop - 1], self.width),
        )

    def strips(self, max_width: int, batch_size: int, block: int) -> tuple[ColumnStrip, ...]:
        """The scene cut into consecutive strips whose cores are cut at multiples of ``block`` px, each as wide as
        its band may be (``<= max_width`` columns) but with a core of at least one block; one strip for the whole
        scene when its band fits."""
        strips: list[ColumnStrip] = []
        left = 0
        while left < self.width:
            right = min(left + block, self.width)
            strip = self.strip(left, right, batch_size)
            while right < self.width:
                wider = self.strip(left, min(right + block, self.width), batch_size)
                if wider.width > max_width:
                    break
                strip, right = wider, wider.right
            strips.append(strip)
            left = right
        return tuple(strips)

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
