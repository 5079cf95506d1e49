"""Small raster builders for the data-layer tests (imported by the test modules, not a conftest)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import Affine
from rasterio.windows import Window


def north_up(west: float, north: float, pixel: float) -> Affine:
    """A north-up transform with square pixels (rasterio's ``from_origin`` without its deprecation warning)."""
    return Affine(pixel, 0.0, west, 0.0, -pixel, north)


WGS84_TRANSFORM = north_up(139.5, 36.0, 1 / 10800)
UTM_CRS = "EPSG:32654"
UTM_TRANSFORM = north_up(400000.0, 3990000.0, 10.0)


def write_raster(
    path: str | Path,
    data: np.ndarray,
    *,
    crs: str | None = "EPSG:4326",
    transform: Affine | None = WGS84_TRANSFORM,
    nodata: float | None = None,
    tags: dict[str, str] | None = None,
    tiled: bool = False,
    block: int = 256,
    compress: str | None = None,
) -> Path:
    """Write a ``(bands, h, w)`` or ``(h, w)`` array as a GeoTIFF; ``crs``/``transform`` None leave them out."""
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    profile = dict(driver="GTiff", count=data.shape[0], height=data.shape[1], width=data.shape[2], dtype=data.dtype)
    if crs is not None:
        profile["crs"] = crs
    if transform is not None:
        profile["transform"] = transform
    if nodata is not None:
        profile["nodata"] = nodata
    if tiled:
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    if compress:
        profile["compress"] = compress
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if tags:
            dst.update_tags(**tags)
    return Path(path)


def read_window(path: str | Path, window: Window, band: int = 1) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(band, window=window)


def _square_filter(mask: np.ndarray, size: int, reduce: str, before: int, after: int) -> np.ndarray:
    """Erosion (``reduce="all"``) or dilation (``"any"``) with a square, done separably along rows then columns."""
    from numpy.lib.stride_tricks import sliding_window_view

    out = mask
    for axis in (0, 1):
        padding = [(0, 0), (0, 0)]
        padding[axis] = (before, after)
        windows = sliding_window_view(np.pad(out, padding), size, axis=axis)
        out = getattr(windows, reduce)(axis=-1)
    return out


def binary_opening(mask: np.ndarray, size: int) -> np.ndarray:
    """Morphological opening with a ``size`` x ``size`` square: keeps only parts at least ``size`` px wide."""
    before, after = (size - 1) // 2, size // 2
    eroded = _square_filter(mask, size, "all", before, after)
    # Dilation uses the mirrored square: a pixel is kept if some eroded centre's square covers it.
    return _square_filter(eroded, size, "any", after, before)
