"""Predicting a scene at the model's ground sampling distance, and putting the maps back on the scene's grid.

Contract
    :func:`plan_resampling` decides whether a scene needs resampling: GSDs that differ by at most
    :data:`GSD_TOLERANCE` (5 %, relative to the model's) are the same, and so is an unknown model GSD. Otherwise it
    returns a :class:`GridResampling`: the *model grid* has the scene's CRS and upper-left corner, and pixels
    ``model_gsd / scene_gsd`` times the scene's on both axes, enough of them to cover the whole scene.

    :class:`ModelGridScene` presents a scene handle on the model grid with the scene interface the reader threads use
    (``read_db(window)``, ``close()``), so the tiled reader / model / writer pipeline runs unchanged on it. Each
    window is read from the scene with a one-pixel margin, turned into linear power and warped:

    * **coarsening** (model GSD larger, e.g. a 10 m scene on a 25 m model): GDAL's ``average`` of the valid pixels'
      linear power (backscatter is averaged as power, never as dB); a 2x coarsening is the mean of 2 x 2 blocks;
    * **refining** (model GSD smaller, e.g. a 25 m mosaic on a 10 m model): ``bilinear`` interpolation of linear
      power over the valid pixels.

    A model pixel is valid where at least half of it (by the same resampling of the validity mask) is valid.

    :func:`regrid_outputs` puts the maps predicted on the model grid back onto the scene's grid, one row of output
    blocks at a time (memory: a few model rows and one output block row, whatever the scene's size): class ids and
    the water mask by nearest neighbour (a class map is never averaged), probabilities bilinearly over the pixels
    that have a class. The result goes through :class:`~sarlulc.inference.outputs.OutputFiles`, so it is written and
    committed atomically like any map.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.transform import Affine
from rasterio.warp import Resampling, reproject
from rasterio.windows import Window

from .outputs import OUTPUT_BLOCK, OutputFiles, remove_quietly
from .records import NODATA_CLASS, Georeference, OutputSpec

__all__ = ["GSD_TOLERANCE", "OUTPUT_GRIDS", "GridResampling", "ModelGridScene", "plan_resampling", "regrid_outputs"]

GSD_TOLERANCE = 0.05
"""Relative GSD difference under which a scene is predicted at its own GSD: 5 % covers the latitude dependence of a
geographic grid's metres and the rounding of product pixel spacings, while a 10 m model on a 12.5 m or 25 m scene is
resampled."""

OUTPUT_GRIDS = ("scene", "model")
"""Where a resampled scene's maps are written: on the scene's own grid (default) or on the grid the model saw."""

_VALID_SHARE = 0.5  # a resampled pixel is valid where at least this share of it is
_MARGIN = 1  # source pixels read around a window, so that bilinear interpolation has its neighbours


@dataclass(frozen=True)
class GridResampling:
    """A scene grid and the model grid it is predicted on.

    Attributes:
        scene: the scene's grid.
        model: the model grid (same CRS and upper-left corner, pixels ``scale`` times larger on both axes).
        scene_gsd, model_gsd: ground sampling distances in metres.
    """

    scene: Georeference
    model: Georeference
    scene_gsd: float
    model_gsd: float

    @property
    def scale(self) -> float:
        """Model pixel side in scene pixels (> 1: the model grid is coarser)."""
        return self.model_gsd / self.scene_gsd

    @property
    def coarsening(self) -> bool:
        return self.model_gsd > self.scene_gsd

    @property
    def input_resampling(self) -> Resampling:
        return Resampling.average if self.coarsening else Resampling.bilinear

    def describe(self) -> str:
        method = "average of linear power" if self.coarsening else "bilinear in linear power"
        return f"{self.scene_gsd:.2f} m -> {self.model_gsd:.2f} m ({method})"


def plan_resampling(scene: Georeference, scene_gsd: float, model_gsd: float | None) -> GridResampling | None:
    """The model grid of a scene, or ``None`` when the scene is predicted at its own GSD (see the module docstring)."""
    if model_gsd is None or abs(scene_gsd - model_gsd) <= GSD_TOLERANCE * model_gsd:
        return None
    scale = model_gsd / scene_gsd
    model = Georeference(
        height=max(1, math.ceil(scene.height / scale)),
        width=max(1, math.ceil(scene.width / scale)),
        crs=scene.crs,
        transform=scene.transform @ Affine.scale(scale),
    )
    return GridResampling(scene=scene, model=model, scene_gsd=float(scene_gsd), model_gsd=float(model_gsd))


def _source_span(start: int, stop: int, scale: float) -> tuple[int, int]:
    """Scene pixels ``[first, end)`` under model pixels ``[start, stop)``, with the margin."""
    return math.floor(start * scale) - _MARGIN, math.ceil(stop * scale) + _MARGIN


class ModelGridScene:
    """A scene handle seen on the model grid: ``read_db`` of model-grid windows (see the module docstring).

    Args:
        scene: an open scene handle on the scene's grid (anything with ``read_db(window)`` and ``close()``).
        plan: the scene and model grids.
    """

    def __init__(self, scene: Any, plan: GridResampling) -> None:
        self._scene = scene
        self._plan = plan

    @classmethod
    def opener(cls, open_scene: Callable[[], Any], plan: GridResampling) -> Callable[[], ModelGridScene]:
        """What the reader threads call for their handles: a new scene handle, wrapped."""
        return lambda: cls(open_scene(), plan)

    def read_db(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """``(db, valid)`` of a model-grid window (it may reach past the grid: the outside is invalid)."""
        plan = self._plan
        row0, col0 = int(window.row_off), int(window.col_off)
        height, width = int(window.height), int(window.width)
        top, bottom = _source_span(row0, row0 + height, plan.scale)
        left, right = _source_span(col0, col0 + width, plan.scale)
        db, valid = self._scene.read_db(Window(left, top, right - left, bottom - top))
        power = np.where(valid, np.power(np.float32(10.0), db / np.float32(10.0)), np.float32(np.nan))
        source = dict(src_transform=plan.scene.transform @ Affine.translation(left, top), src_crs=plan.scene.crs)
        target = dict(
            dst_transform=plan.model.transform @ Affine.translation(col0, row0),
            dst_crs=plan.model.crs,
            resampling=plan.input_resampling,
        )
        out = np.full((db.shape[0], height, width), np.nan, dtype=np.float32)
        reproject(power.astype(np.float32), out, src_nodata=np.nan, dst_nodata=np.nan, **source, **target)
        share = np.zeros((height, width), dtype=np.float32)
        reproject(valid.astype(np.float32), share, **source, **target)
        out_valid = (share >= _VALID_SHARE) & np.isfinite(out).all(axis=0) & (out > 0).all(axis=0)
        out_db = np.zeros(out.shape, dtype=np.float32)
        np.log10(out, out=out_db, where=out_valid[None])
        out_db *= np.float32(10.0)
        return out_db, out_valid

    def close(self) -> None:
        self._scene.close()


def regrid_outputs(model_paths: dict[str, Path], spec: OutputSpec, plan: GridResampling, overwrite: bool) -> None:
    """Write the maps of ``model_paths`` (on the model grid) as ``spec``'s files on the scene grid, then delete them.

    Raises:
        whatever reading or writing raises; the partial outputs are discarded, the model-grid files removed.
    """
    layout = spec.layout
    datasets = {key: rasterio.open(path) for key, path in model_paths.items()}
    try:
        outputs = OutputFiles(spec, plan.scene)
        try:
            for row in range(0, plan.scene.height, OUTPUT_BLOCK):
                rows = min(OUTPUT_BLOCK, plan.scene.height - row)
                outputs.write(row, _regrid_rows(datasets, layout, plan, row, rows))
            outputs.commit(overwrite)
        except BaseException:
            outputs.discard()
            raise
    finally:
        for dataset in datasets.values():
            dataset.close()
        for path in model_paths.values():
            remove_quietly(path)


def _regrid_rows(datasets: dict[str, Any], layout: Any, plan: GridResampling, row: int, rows: int) -> np.ndarray:
    """The uint8 planes ``(layout.count, rows, width)`` of scene rows ``[row, row + rows)``."""
    # The model rows under these scene rows, with a margin for the bilinear neighbours.
    first = max(0, math.floor(row / plan.scale) - _MARGIN)
    end = min(plan.model.height, math.ceil((row + rows) / plan.scale) + _MARGIN)
    source_window = Window(0, first, plan.model.width, end - first)
    source = dict(src_transform=plan.model.transform @ Affine.translation(0, first), src_crs=plan.model.crs)
    target = dict(dst_transform=plan.scene.transform @ Affine.translation(0, row), dst_crs=plan.scene.crs)
    shape = (rows, plan.scene.width)
    planes = np.empty((layout.count, *shape), dtype=np.uint8)

    def nearest(key: str) -> np.ndarray:
        out = np.full(shape, NODATA_CLASS, dtype=np.uint8)
        reproject(
            datasets[key].read(1, window=source_window),
            out,
            src_nodata=NODATA_CLASS,
            dst_nodata=NODATA_CLASS,
            resampling=Resampling.nearest,
            **source,
            **target,
        )
        return out

    classes_at_model = datasets["classes"].read(1, window=source_window)
    planes[0] = nearest("classes")
    if layout.water_plane is not None:
        planes[layout.water_plane] = nearest("water")
    probability_planes = layout.probability_planes
    if probability_planes is not None:
        key = "probabilities" if layout.probabilities == "classes" else "confidence"
        values = datasets[key].read(window=source_window).astype(np.float32)
        values[:, classes_at_model == NODATA_CLASS] = np.nan  # interpolate over pixels that have a class only
        out = np.full((values.shape[0], *shape), np.nan, dtype=np.float32)
        reproject(values, out, src_nodata=np.nan, dst_nodata=np.nan, resampling=Resampling.bilinear, **source, **target)
        planes[probability_planes] = np.clip(np.rint(np.nan_to_num(out, nan=0.0)), 0, 255).astype(np.uint8)
    return planes
