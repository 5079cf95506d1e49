"""Blending tile predictions on the model's device, in a band of rows that slides down a column strip of the scene.

Contract
    :class:`RowBlender` sums the window-weighted class probabilities of the tiles of consecutive tile rows into a
    band of ``tile`` scene rows x strip width x K float32 on the model's device: the only rows later tiles can still
    reach. Tile row ``i`` touches scene rows ``[top(i), top(i) + tile)`` (:meth:`TileGrid.top`); once it is done, the
    rows ``[top(i), top(i + 1))`` are final, :meth:`RowBlender.finish` hands the strip's core columns of them to the
    caller as :class:`BlendedRows` (views, valid until the band slides) and moves the band down past them. Memory is
    therefore bounded by the strip's width, never by the scene's height.

    The strip (:class:`~sarlulc.inference.grid.ColumnStrip`) is the whole scene when its band fits
    :data:`STRIP_BAND_BYTES`; a wider scene is cut into column strips (:func:`plan_strips`), predicted one after
    the other with the very tiles, batches and summation order of the whole scene (the grid module's contract), so
    the outputs are byte-identical whichever way it is cut. Only what no strip can bound is refused before anything
    runs (:func:`check_band_memory`): a band of the narrowest strip (one output block of core, plus the tiles reaching
    it) over :data:`MAX_BAND_BYTES`, e.g. a huge tile with many classes, naming the size it would need.

    The blended probability of class k at a pixel is ``sums[k] / (row_weight * col_weight)`` (the grid's summed window
    weights, :meth:`TileGrid.weight_sums`). The class map is the *first* argmax of the sums (:func:`first_argmax`:
    ties go to the lower class id, like ``torch.argmax``): dividing by a positive weight keeps the order of the
    classes, so it is the argmax of the probabilities too, short of two sums within a float32 rounding of each other.
    Pixels whose input is invalid are nodata in every output (:func:`encode_planes`).

    A tile that is added overwrites the band's validity where it lies; tiles without any valid pixel are never added,
    so the band's validity is the input's validity on every finished row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from .grid import ColumnStrip, TileGrid
from .records import NODATA_CLASS, PlaneLayout

__all__ = [
    "MAX_BAND_BYTES",
    "STRIP_BAND_BYTES",
    "BlendedRows",
    "RowBlender",
    "band_bytes",
    "check_band_memory",
    "encode_planes",
    "first_argmax",
    "plan_strips",
]

STRIP_BAND_BYTES = 512 * 2**20
"""The blending band a scene's column strips are cut to fit (bytes): a scene whose band fits is one strip."""

MAX_BAND_BYTES = 2 * 2**30
"""The most the band of the narrowest column strip may take (bytes): a larger tile x classes is refused up front."""

T = TypeVar("T")

_ENCODE_ROWS = 64  # rows turned into output planes at a time


def band_bytes(num_labels: int, tile: int, width: int, planes: int = 1) -> int:
    """Bytes of a blending band: K float32 sums, the validity, and the uint8 planes of one finished band."""
    return tile * width * (4 * num_labels + 1 + planes)


def check_band_memory(num_labels: int, tile: int, width: int, planes: int = 1, limit: int = MAX_BAND_BYTES) -> None:
    """Raise ``ValueError`` when the blending band of a strip ``width`` px wide (the narrowest a scene can be cut
    into) would need more than ``limit`` bytes; the message gives the size it would need and what to change."""
    needed = band_bytes(num_labels, tile, width, planes)
    if needed > limit:
        raise ValueError(
            f"{tile} px tiles with {num_labels} classes need a blending band of {needed / 2**30:.1f} GiB even in the "
            f"narrowest column strip ({width} px wide; limit {limit / 2**30:.1f} GiB); use a smaller tile"
        )


def plan_strips(
    grid: TileGrid,
    num_labels: int,
    batch_size: int,
    block: int,
    planes: int = 1,
    budget: int = STRIP_BAND_BYTES,
    limit: int = MAX_BAND_BYTES,
) -> tuple[ColumnStrip, ...]:
    """The column strips a scene is predicted in: the whole scene when its band fits ``budget`` bytes, else strips
    whose bands fit it (cores cut at multiples of ``block`` px, at least one block each); see the module docstring.

    Raises:
        ValueError: even a strip of one block's core needs a band over ``limit`` (:func:`check_band_memory`).
    """
    per_column = band_bytes(num_labels, grid.tile, 1, planes)
    strips = grid.strips(max(budget // per_column, 1), batch_size, block)
    check_band_memory(num_labels, grid.tile, max(strip.width for strip in strips), planes, limit)
    return strips


def first_argmax(planes: torch.Tensor) -> torch.Tensor:
    """Index (uint8) of the largest of K planes ``(K, ...)`` at each position, the first one on ties like
    ``torch.argmax(dim=0)``; a running maximum over the planes is several times faster on the CPU than ``argmax``,
    which reduces across the non-contiguous plane dimension element by element."""
    best = planes[0].clone()
    index = torch.zeros(best.shape, dtype=torch.uint8, device=planes.device)
    for k in range(1, planes.shape[0]):
        index.masked_fill_(planes[k] > best, k)
        torch.maximum(best, planes[k], out=best)
    return index


@dataclass(frozen=True)
class BlendedRows:
    """Finished scene rows ``[first_row, first_row + num_rows)`` of a blending band.

    The tensors are views into the band: read them before the band slides on (inside the ``read`` callback of
    :meth:`RowBlender.finish`).

    Attributes:
        first_row: first scene row.
        sums: ``(K, n, width)`` float32 window-weighted probability sums of the strip's core columns.
        valid: ``(n, width)`` bool, True where the input pixel is valid.
        row_weights: ``(n,)`` summed window weights of these rows.
        col_weights: ``(width,)`` summed window weights of these columns.
        first_col: the scene column of the first of them.
    """

    first_row: int
    sums: torch.Tensor
    valid: torch.Tensor
    row_weights: torch.Tensor
    col_weights: torch.Tensor
    first_col: int = 0

    @property
    def num_rows(self) -> int:
        return self.valid.shape[0]

    def probabilities(self, rows: slice = slice(None)) -> torch.Tensor:
        """The blended class probabilities ``(K, n, width)`` of the rows ``rows`` (a new tensor; invalid pixels hold
        whatever the tiles predicted there)."""
        return self.sums[:, rows] / (self.row_weights[rows, None] * self.col_weights[None, :])


class RowBlender:
    """Weighted class probabilities of a band of ``tile`` scene rows of a column strip, on ``device``; see the
    module docstring.

    Args:
        grid: the tile grid.
        num_labels: K, the classes of the model's logits.
        first_row: the first tile row that will be added (the band starts at scene row ``grid.top(first_row)``).
        device: where the band lives (the model's device).
        strip: the column strip whose tiles are added (default: the whole scene).
    """

    def __init__(
        self,
        grid: TileGrid,
        num_labels: int,
        first_row: int,
        device: torch.device,
        strip: ColumnStrip | None = None,
    ) -> None:
        self._grid = grid
        self._strip = strip = strip or ColumnStrip(range(grid.num_cols), 0, grid.width, 0, grid.width)
        self.num_labels = num_labels
        tile, width = grid.tile, strip.width
        self._sums = torch.zeros((num_labels, tile, width), dtype=torch.float32, device=device)
        self._valid = torch.zeros((tile, width), dtype=torch.bool, device=device)
        self._window = torch.from_numpy(grid.window()).to(device)
        row_weights, col_weights = grid.weight_sums()
        self._row_weights = torch.from_numpy(row_weights).to(device)
        self._col_weights = torch.from_numpy(col_weights[strip.left : strip.right]).to(device)
        self._top = grid.top(first_row)

    @property
    def tile(self) -> int:
        return self._grid.tile

    def weighted_probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """``(B, K, tile, tile)`` logits -> softmax probabilities times the blending window, float32.

        Computed in place on the logits (which are not used again): on the CPU, filling a freshly allocated tensor
        of this size costs more than the arithmetic itself.
        """
        probabilities = logits.float()  # a copy only for a model that does not return float32
        probabilities.sub_(probabilities.amax(dim=1, keepdim=True)).exp_()
        return probabilities.mul_(self._window / probabilities.sum(dim=1, keepdim=True))

    def add(self, weighted: torch.Tensor, valid: torch.Tensor, row: int, col: int) -> None:
        """Add one tile's weighted probabilities ``(K, tile, tile)`` and validity ``(tile, tile)`` into the band."""
        grid, offset = self._grid, self._strip.band_left
        row0, col0 = grid.row_starts[row], grid.col_starts[col]
        first, last = max(row0, 0), min(row0 + grid.tile, grid.height)
        left, right = max(col0, 0), min(col0 + grid.tile, grid.width)
        band, columns = slice(first - self._top, last - self._top), slice(left - offset, right - offset)
        tile_rows, tile_cols = slice(first - row0, last - row0), slice(left - col0, right - col0)
        self._sums[:, band, columns] += weighted[:, tile_rows, tile_cols]
        self._valid[band, columns] = valid[tile_rows, tile_cols]

    def finish(self, row: int, read: Callable[[BlendedRows], T] | None = None) -> T | None:
        """Close tile row ``row``: pass the scene rows it finished (the strip's core columns) to ``read`` (when given
        and there are any) and return what it returns, then slide the band down past them."""
        end = self._grid.top(row + 1)
        count = end - self._top
        if count <= 0:
            return None
        result = None
        if read is not None:
            core = self._strip.core
            rows = BlendedRows(
                first_row=self._top,
                sums=self._sums[:, :count, core],
                valid=self._valid[:count, core],
                row_weights=self._row_weights[self._top : end],
                col_weights=self._col_weights,
                first_col=self._strip.left,
            )
            result = read(rows)
        keep = self._grid.tile - count
        # Move the kept rows up in pieces of at most `count` rows, each copied from below where it lands, so that no
        # piece overlaps its destination: a copy of all kept rows at once would need a temporary as large as them.
        for first in range(0, keep, count):
            rows_moved = min(count, keep - first)
            self._sums[:, first : first + rows_moved] = self._sums[:, first + count : first + count + rows_moved]
            self._valid[first : first + rows_moved] = self._valid[first + count : first + count + rows_moved]
        self._sums[:, keep:] = 0.0
        self._valid[keep:] = False
        self._top = end
        return result


def encode_planes(rows: BlendedRows, layout: PlaneLayout) -> np.ndarray:
    """The uint8 planes ``(layout.count, n, width)`` of finished rows, on the host: class ids (:data:`NODATA_CLASS`
    where invalid), the water mask (1 water, 0 other, nodata), probabilities x 255 rounded (0 where invalid).

    Encoded on the device in chunks of rows, so that only bytes cross to the host and the float and int64
    temporaries of a whole band (several times its uint8 size) never exist at once.
    """
    planes = np.empty((layout.count, rows.num_rows, rows.valid.shape[1]), dtype=np.uint8)
    for first in range(0, rows.num_rows, _ENCODE_ROWS):
        chunk = slice(first, min(first + _ENCODE_ROWS, rows.num_rows))
        planes[:, chunk] = _encode_chunk(rows, chunk, layout).cpu().numpy()
    return planes


def _encode_chunk(rows: BlendedRows, chunk: slice, layout: PlaneLayout) -> torch.Tensor:
    sums, valid = rows.sums[:, chunk], rows.valid[chunk]
    classes = first_argmax(sums)
    planes = [torch.where(valid, classes, NODATA_CLASS)]
    if layout.water_id is not None:
        planes.append(torch.where(valid, (classes == layout.water_id).to(torch.uint8), NODATA_CLASS))
    if layout.probabilities is not None:
        probabilities = rows.probabilities(chunk)
        if layout.probabilities == "confidence":
            probabilities = probabilities.amax(dim=0, keepdim=True)
        planes.extend(probabilities.mul_(255.0).round_().clamp_(0, 255).masked_fill_(~valid, 0))
    return torch.stack([plane.to(torch.uint8) for plane in planes])
