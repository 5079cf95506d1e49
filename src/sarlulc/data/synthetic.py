"""Synthetic ALOS-2 PALSAR-2 HH scenes with aligned JAXA-style land-cover labels, written as real GeoTIFFs.

The synthetic scene stands in for real data in the demo, the tests and every ablation, so it reproduces the parts of
the real problem that matter to the models:

* **land cover with spatial structure**: a coastline with sea; mountains of forest stands (deciduous/evergreen,
  broad/needle leaf, bamboo); hills; plains with paddy districts in rectangular parcel grids crossed by irrigation
  canals, cropland districts with greenhouses, meadows; cities with a street grid; rivers with grass levees,
  tributaries and roads (1-12 px wide: thin structures); rare small classes (solar farms, bare patches, greenhouses,
  coastal wetland; each well under 2 % of the pixels);
* **backscatter**: each region (parcel, forest stand, city block, river...) draws its mean sigma0 in dB from its
  material's range (:data:`MATERIALS`, inside the literature ranges of :data:`CLASS_SIGMA0_DB`, docs/method.md section 6);
  low-frequency texture and terrain modulate it; cities get double-bounce bright points, solar farms are dark with
  bright frames;
* **speckle**: intensity is multiplied by Gamma(shape=L, scale=1/L) noise (L looks), so the coefficient of variation
  of intensity on a homogeneous area is 1/sqrt(L);
* **encoding**: sigma0 is encoded as uint16 amplitude DN by inverting the ALOS-2 calibration
  (:func:`sarlulc.data.alos2.db_to_dn`), valid pixels are >= 1, and DN 0 marks a nodata wedge beyond a slanted
  scene-footprint edge, as in real map-projected products;
* **georeferencing**: EPSG:4326 with 1/3 arc-second (~10 m) pixels placed in Japan, like the benchmark's tiles, or
  the local UTM zone with 10 m pixels.

Every feature is a procedural function of the global pixel coordinates and the seed (hash-lattice value noise,
analytic river/road curves, hashed parcel grids, counter-based speckle), so the scene is written block by block in
bounded memory and does not depend on the block decomposition. Large-scale features (coast, mountains, cities) scale
with the scene; small ones (parcels, streets, rivers' widths) have fixed sizes in pixels (10 m).

Files written by :func:`generate_scene` into its output folder: :data:`SCENE_FILENAME` (``scene.tif``: uint16 DN,
band 1 = HH, nodata 0) and :data:`LABELS_FILENAME` (``labels.tif``: uint8 JAXA source codes 1..14, nodata 0, with a
colour table). Both are tiled, deflate-compressed GeoTIFFs on the same grid.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import rasterio
import rasterio.errors
from rasterio.crs import CRS
from rasterio.transform import Affine
from rasterio.warp import transform as transform_coordinates
from rasterio.windows import Window
from tqdm.auto import tqdm

from ..errors import OutputWriteError
from ..files import (
    create_temporary,
    output_write_error,
    remove_path,
    sweep_stale_temporaries,
    verify_and_replace,
    verify_raster_complete,
)
from ..models.image_processing_sar import BACKSCATTER_TAG, POLARIZATIONS_TAG
from ..scale import SMALL_SCENE_SIZE, scaled
from .alos2 import CALIBRATION_FACTOR_TAG, DEFAULT_CALIBRATION_FACTOR, INPUT_KIND_TAG, db_to_dn
from .classes import JAXA_SOURCE_CLASSES, JAXA_SOURCE_COLORS

__all__ = [
    "CLASS_SIGMA0_DB",
    "LABELS_FILENAME",
    "MATERIALS",
    "MAX_RARE_ABUNDANCE",
    "SCENE_FILENAME",
    "Material",
    "SyntheticBlock",
    "SyntheticLandscape",
    "SyntheticScene",
    "SyntheticSceneConfig",
    "describe_synthetic",
    "generate_scene",
    "scene_shape",
]

SCENE_FILENAME = "scene.tif"
LABELS_FILENAME = "labels.tif"

CLASS_SIGMA0_DB: dict[int, tuple[float, float]] = {
    1: (-30.0, -20.0),  # Water (calm)
    2: (-6.0, 5.0),  # Built-up (with double-bounce points; roads and streets are darker)
    3: (-22.0, -6.0),  # Paddy: flooded -22..-15, grown -12..-6
    4: (-14.0, -8.0),  # Cropland
    5: (-16.0, -10.0),  # Grassland
    6: (-9.0, -5.0),  # Deciduous broadleaf forest
    7: (-9.0, -5.0),  # Deciduous needleleaf forest
    8: (-9.0, -5.0),  # Evergreen broadleaf forest
    9: (-9.0, -5.0),  # Evergreen needleleaf forest (slightly brighter than broadleaf)
    10: (-20.0, -12.0),  # Bare
    11: (-9.0, -6.0),  # Bamboo forest
    12: (-25.0, -15.0),  # Solar panel (dark, specular; bright frames)
    13: (-18.0, -10.0),  # Wetland
    14: (-4.0, 4.0),  # Greenhouse
}
"""Literature range of each JAXA source class's mean L-band HH sigma0 in dB (docs/method.md, section 6). The generator's
materials draw their region means inside these, so a class's mean sigma0 (a linear mean, in dB) lies in its range."""

HV_DEPOLARIZATION_DB: dict[int, float] = {
    0: 8.0,  # unlabeled far sea
    1: 8.0,
    2: 8.0,
    3: 8.0,
    4: 9.0,
    5: 9.0,
    6: 6.0,
    7: 6.0,
    8: 6.0,
    9: 6.0,
    10: 10.0,
    11: 6.0,
    12: 10.0,
    13: 8.0,
    14: 8.0,
}
"""HH minus HV (dB) of the synthetic HV band per JAXA code: volume scattering in forests depolarizes most (about
6 dB), bare and smooth surfaces least. Synthetic values of the right order for L band, not measurements."""

_HV_RATIO_BY_CODE = np.array([HV_DEPOLARIZATION_DB.get(code, 8.0) for code in range(256)])
_HV_SPECKLE_SEED_OFFSET = 7_919  # HV's speckle comes from another stream than HH's


@dataclass(frozen=True)
class Material:
    """A surface type: its JAXA code, the dB range region means are drawn from, and its texture amplitudes (dB)."""

    name: str
    code: int
    low_db: float
    high_db: float
    texture_db: float = 1.0
    terrain_db: float = 0.0


MATERIALS: tuple[Material, ...] = (
    Material("sea", 1, -27.0, -23.0, texture_db=2.0),  # wind streaks
    Material("river", 1, -26.0, -22.0, texture_db=0.8),
    Material("canal", 1, -23.0, -21.0, texture_db=0.5),  # 1 px channels: mixed with their banks, brighter
    Material("paddy_flooded", 3, -21.0, -16.0, texture_db=0.8),
    Material("paddy_grown", 3, -11.0, -7.0, texture_db=0.8),
    Material("cropland", 4, -13.0, -9.0, texture_db=1.0),
    Material("grassland", 5, -15.0, -11.0, texture_db=1.0),
    Material("deciduous_broadleaf", 6, -8.0, -7.0, texture_db=0.6, terrain_db=1.2),
    Material("deciduous_needleleaf", 7, -7.5, -6.5, texture_db=0.6, terrain_db=1.2),
    Material("evergreen_broadleaf", 8, -8.0, -7.0, texture_db=0.6, terrain_db=1.2),
    Material("evergreen_needleleaf", 9, -7.0, -6.0, texture_db=0.6, terrain_db=1.2),
    Material("bare", 10, -19.0, -14.0, texture_db=1.0),
    Material("bamboo", 11, -8.0, -7.0, texture_db=0.5, terrain_db=0.5),
    Material("solar_panel", 12, -24.0, -20.0, texture_db=0.3),
    Material("solar_gap", 12, -18.0, -16.0, texture_db=0.3),  # ground between panel rows
    Material("solar_frame", 12, -14.0, -12.0, texture_db=0.3),
    Material("wetland", 13, -16.0, -12.0, texture_db=1.2),
    Material("greenhouse", 14, -1.0, 2.0, texture_db=0.8),
    Material("greenhouse_gap", 14, -10.0, -8.0, texture_db=0.5),
    Material("building", 2, -4.0, 0.0, texture_db=1.2),
    Material("double_bounce", 2, 5.0, 8.0, texture_db=0.0),
    Material("street", 2, -14.0, -10.0, texture_db=0.5),
    Material("road", 2, -14.0, -10.0, texture_db=0.5),
)
"""Every surface the generator paints; several materials may share a class code (e.g. flooded and grown paddy)."""

_M = {m.name: i for i, m in enumerate(MATERIALS)}
_MAT_CODE = np.array([m.code for m in MATERIALS], dtype=np.uint8)
_MAT_LOW = np.array([m.low_db for m in MATERIALS])
_MAT_SPAN = np.array([m.high_db - m.low_db for m in MATERIALS])
_MAT_TEXTURE = np.array([m.texture_db for m in MATERIALS])
_MAT_TERRAIN = np.array([m.terrain_db for m in MATERIALS])

# Zones of the macro layout.
_SEA, _MOUNTAIN, _HILL, _URBAN, _FARMLAND = range(5)

# Target area fractions of the macro layout, calibrated on a coarse grid of each scene.
_SEA_FRACTION = 0.10
_FAR_SEA_FRACTION = 0.015  # beyond the label product's coverage: label nodata (0) over valid sea backscatter
_MOUNTAIN_FRACTION = 0.38  # of the land
_HILL_FRACTION = 0.12  # of the land
_URBAN_FRACTION = 0.22  # of the plain
_CALIBRATION_GRID = 193

# Fixed sizes in pixels (10 m).
_DISTRICT_SPACING = 160.0
_STAND_SPACING = {_MOUNTAIN: 120.0, _HILL: 80.0}
_PADDY_PARCEL = (8.0, 20.0)  # across, along the parcel grid
_CROP_PARCEL = (16.0, 28.0)
_CITY_BLOCK = (24.0, 30.0)
_STREET_WIDTH = 2.0
_AVENUE_EVERY, _AVENUE_WIDTH = 5, 3.5
_CANAL_PROBABILITY = 0.2  # share of paddy parcel boundaries that are canals
_SOLAR_CELL, _SOLAR_PROBABILITY = 96, 0.12
_BARE_CELL, _BARE_PROBABILITY = 128, 0.12
MAX_RARE_ABUNDANCE = 1.0 / max(_SOLAR_PROBABILITY, _BARE_PROBABILITY)
"""The largest ``rare_abundance`` of :class:`SyntheticSceneConfig`: a solar farm or bare patch in every grid cell."""
_GREENHOUSE_PARCELS = 0.07  # share of cropland parcels under greenhouses
_DOUBLE_BOUNCE_PROBABILITY = 0.05
_WETLAND_BAND = 0.02  # of the scene size, landward of the shoreline
_NODATA_EDGE_FRACTION = 0.06
_DEGREE_PIXEL = 1.0 / 10800.0  # 1/3 arc-second, ~10 m north-south

# Forest stand types of each zone with cumulative probabilities.
_STAND_TYPES = {
    _MOUNTAIN: (
        ("evergreen_needleleaf", 0.45),  # cedar and cypress plantations
        ("deciduous_broadleaf", 0.75),
        ("evergreen_broadleaf", 0.86),
        ("deciduous_needleleaf", 0.96),  # larch
        ("bamboo", 1.0),
    ),
    _HILL: (
        ("bamboo", 0.15),
        ("deciduous_broadleaf", 0.45),
        ("evergreen_broadleaf", 0.65),
        ("evergreen_needleleaf", 0.75),
        ("grassland", 0.88),
        ("cropland", 1.0),
    ),
}

# Top-left corners (longitude, latitude) of synthetic scenes: coastal plains of Japan, chosen by the seed.
_JAPAN_ORIGINS = ((139.80, 35.80), (135.35, 34.80), (140.85, 38.35), (136.75, 35.20), (130.30, 33.70))

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


# ----------------------------------------------------------------------------------------------------------------------
# Counter-based randomness: every random number is a hash of (seed, stream, integer coordinates)
# ----------------------------------------------------------------------------------------------------------------------
def _stream_key(seed: int, name: str) -> np.uint64:
    digest = hashlib.blake2b(f"sarlulc-synthetic/{seed}/{name}".encode(), digest_size=8).digest()
    return np.uint64(int.from_bytes(digest, "little"))


def _pack(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Two integer coordinate arrays (|value| < 2**31, broadcastable) as one uint64 index."""
    high = (np.asarray(rows, dtype=np.int64) + 2**31).astype(np.uint64) << np.uint64(32)
    return high | (np.asarray(cols, dtype=np.int64) + 2**31).astype(np.uint64)


def _hash(key: np.uint64 | np.ndarray, index: np.ndarray) -> np.ndarray:
    """SplitMix64 of ``index`` in stream ``key``: a statistically strong uint64 per element."""
    with np.errstate(over="ignore"):
        x = np.asarray(index, dtype=np.uint64) * _GOLDEN + key
        x ^= x >> np.uint64(30)
        x *= _MIX1
        x ^= x >> np.uint64(27)
        x *= _MIX2
        x ^= x >> np.uint64(31)
    return x


def _uniform(key: np.uint64 | np.ndarray, index: np.ndarray) -> np.ndarray:
    """Uniform floats in the open interval (0, 1), one per element of ``index``."""
    return ((_hash(key, index) >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


def _value_noise(rows: np.ndarray, cols: np.ndarray, spacing: float, key: np.uint64) -> np.ndarray:
    """Smooth value noise in [-1, 1] (float32) with lattice spacing ``spacing`` pixels at (row, col) coordinates.

    ``rows``/``cols`` broadcast to the output shape. For a grid (rows ``(h, 1)``, cols ``(1, w)``) the interpolation
    is separable: along columns on the few lattice rows first, then along rows. Both paths do the same arithmetic in
    the same order, so a pixel's value does not depend on how it was asked for.
    """
    fy, fx = np.asarray(rows, dtype=np.float64) / spacing, np.asarray(cols, dtype=np.float64) / spacing
    iy, ix = np.floor(fy), np.floor(fx)
    ty, tx = (fy - iy).astype(np.float32), (fx - ix).astype(np.float32)
    ty, tx = ty * ty * (3 - 2 * ty), tx * tx * (3 - 2 * tx)  # smoothstep: no creases at lattice lines
    iy, ix = iy.astype(np.int64), ix.astype(np.int64)
    y0, x0 = iy.min(), ix.min()
    lattice_rows = np.arange(y0, iy.max() + 2)[:, None]
    lattice_cols = np.arange(x0, ix.max() + 2)[None, :]
    lattice = (2.0 * _uniform(key, _pack(lattice_rows, lattice_cols)) - 1.0).astype(np.float32)
    iy, ix = iy - y0, ix - x0
    if iy.ndim == 2 and iy.shape[1] == 1 and ix.ndim == 2 and ix.shape[0] == 1:
        ix1, tx1 = ix[0], tx[0]
        along = lattice[:, ix1] * (1 - tx1) + lattice[:, ix1 + 1] * tx1
        iy1 = iy[:, 0]
        return along[iy1] * (1 - ty) + along[iy1 + 1] * ty
    top = lattice[iy, ix] * (1 - tx) + lattice[iy, ix + 1] * tx
    bottom = lattice[iy + 1, ix] * (1 - tx) + lattice[iy + 1, ix + 1] * tx
    return top * (1 - ty) + bottom * ty


def _gamma_unit_mean(index: np.ndarray, looks: float, seed: int) -> np.ndarray:
    """Gamma(shape=looks, scale=1/looks) samples (mean 1, CV 1/sqrt(looks)), one per element of ``index``.

    Marsaglia and Tsang's method with per-pixel hashed uniforms: each pixel's attempts use its own counters, so the
    sample is a function of the pixel alone. About 2-5 % of pixels need a second attempt.
    """
    shape = looks if looks >= 1 else looks + 1.0
    d = shape - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    flat = np.asarray(index).ravel()
    out = np.empty(flat.shape, dtype=np.float64)
    todo = np.arange(flat.size)
    attempt = 0
    while todo.size:
        idx = flat[todo]
        u1 = _uniform(_stream_key(seed, f"speckle/{attempt}/radius"), idx)
        u2 = _uniform(_stream_key(seed, f"speckle/{attempt}/angle"), idx)
        u3 = _uniform(_stream_key(seed, f"speckle/{attempt}/accept"), idx)
        z = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
        v = (1.0 + c * z) ** 3
        positive = v > 0
        log_v = np.log(np.where(positive, v, 1.0))
        accepted = positive & (np.log(u3) < 0.5 * z * z + d - d * v + d * log_v)
        out[todo[accepted]] = d * v[accepted]
        todo = todo[~accepted]
        attempt += 1
    if looks < 1:
        out *= _uniform(_stream_key(seed, "speckle/boost"), flat) ** (1.0 / looks)
    return (out / looks).reshape(np.shape(index))


# ----------------------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SyntheticSceneConfig:
    """Everything that determines a synthetic scene; equal configs give identical files.

    Attributes:
        height, width: scene size in pixels (>= 64).
        seed: the landscape, backscatter and speckle all derive from it.
        looks: equivalent number of looks L of the speckle (> 0).
        crs: ``"EPSG:4326"`` (1/3 arc-second pixels), ``"utm"`` (the local WGS84 UTM zone, 10 m pixels) or any
            projected CRS in metres (10 m pixels).
        calibration_factor: CF in dB used to encode DNs (and written to the scene's tags).
        block_size: internal GeoTIFF tile size and generation window (multiple of 16).
        texture: add low-frequency texture and terrain modulation to the region means.
        speckle: multiply intensity by Gamma speckle; without it the DNs encode the noise-free sigma0.
        nodata_edge: cut a slanted nodata wedge (DN 0) as at the edge of a real scene footprint.
        rare_abundance: multiplies the probability that a grid cell holds a solar farm or a bare patch (1 = the
            default landscape, where each covers about 0.2-0.3 % of the pixels). Cells are drawn by thresholding one
            hash per cell, so a larger value keeps every farm and patch of the default scene and adds more; the
            ablation uses 2 so that these classes stay rare (about 1 % each) yet appear in enough training and test
            tiles to be measured. At most :data:`MAX_RARE_ABUNDANCE` (every cell occupied).
    """

    height: int = 2048
    width: int = 2048
    seed: int = 0
    looks: float = 4.0
    crs: str = "EPSG:4326"
    calibration_factor: float = DEFAULT_CALIBRATION_FACTOR
    block_size: int = 512
    texture: bool = True
    speckle: bool = True
    nodata_edge: bool = True
    rare_abundance: float = 1.0

    def __post_init__(self) -> None:
        if self.height < 64 or self.width < 64:
            raise ValueError(f"synthetic scenes need at least 64 x 64 pixels, got {self.height} x {self.width}")
        if self.height >= 2**31 or self.width >= 2**31:
            raise ValueError("synthetic scenes must be smaller than 2**31 pixels a side")
        if self.height * self.width > MAX_SYNTHETIC_PIXELS:
            raise ValueError(
                f"a {self.height} x {self.width} px synthetic scene ({self.height * self.width / 1e9:.1f} Gpx) is over "
                f"the {MAX_SYNTHETIC_PIXELS / 1e9:g} Gpx limit (it would take up to "
                f"{_bytes_needed(self.height, self.width) / 2**30:.0f} GiB); choose a smaller size"
            )
        if not (math.isfinite(self.looks) and self.looks > 0):
            raise ValueError(f"looks must be a positive number, got {self.looks}")
        if not math.isfinite(self.calibration_factor):
            raise ValueError(f"calibration_factor must be a finite number of dB, got {self.calibration_factor}")
        if self.seed < 0:
            raise ValueError(f"seed must be 0 or positive, got {self.seed}")
        if not 0.0 < self.rare_abundance <= MAX_RARE_ABUNDANCE:
            raise ValueError(f"rare_abundance must be in (0, {MAX_RARE_ABUNDANCE:g}], got {self.rare_abundance}")
        if self.block_size < 16 or self.block_size % 16:
            raise ValueError(f"block_size must be a positive multiple of 16 (GeoTIFF tiles), got {self.block_size}")

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width


MAX_SYNTHETIC_PIXELS = 2**34
"""The largest synthetic scene (pixels): 16 Gpx, about 48 GiB uncompressed; larger sizes are typing mistakes."""


def _bytes_needed(height: int, width: int) -> int:
    """An upper bound on the bytes of the scene (uint16) and labels (uint8) files: deflate only makes them smaller."""
    return 3 * height * width


def _grid(crs: str, seed: int) -> tuple[CRS, Affine]:
    """The scene's CRS and the transform of its top-left pixel corner, placed in Japan."""
    lon, lat = _JAPAN_ORIGINS[seed % len(_JAPAN_ORIGINS)]
    if crs.lower() in ("utm", "auto-utm"):
        crs = f"EPSG:{32600 + int((lon + 180.0) // 6.0) + 1}"
    try:
        target = CRS.from_user_input("EPSG:4326" if crs.lower() == "wgs84" else crs)
    except rasterio.errors.CRSError as err:
        raise ValueError(f"crs {crs!r} is not a CRS that GDAL knows (e.g. EPSG:4326, utm, EPSG:32654): {err}") from err
    if target.is_geographic:
        return target, Affine(_DEGREE_PIXEL, 0.0, lon, 0.0, -_DEGREE_PIXEL, lat)
    units = target.linear_units_factor
    if units[1] != 1.0:
        raise ValueError(f"synthetic scenes need a geographic CRS or a projected CRS in metres, got {crs} ({units[0]})")
    xs, ys = transform_coordinates("EPSG:4326", target, [lon], [lat])
    return target, Affine(10.0, 0.0, round(xs[0], -1), 0.0, -10.0, round(ys[0], -1))


# ----------------------------------------------------------------------------------------------------------------------
# The procedural landscape
# ----------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Curve:
    """A meandering line ``b = offset + sum A sin(2 pi a / wavelength + phase)`` in a frame rotated by ``angle``."""

    angle: float
    offset: float
    amplitudes: tuple[float, ...]
    wavelengths: tuple[float, ...]
    phases: tuple[float, ...]
    width: float
    side: int = 0  # tributaries exist only on this side (+1/-1) of the main river; 0: everywhere

    def signed_distance(
        self, rows: np.ndarray, cols: np.ndarray, center: tuple[float, float], reach: float
    ) -> np.ndarray | float:
        """Approximate perpendicular distance in pixels from the centre line (positive on its left).

        ``rows`` ``(h, 1)`` and ``cols`` ``(1, w)`` are a window's pixel coordinates. Only pixels that may lie within
        ``reach`` of the line get an exact value; the others get +-inf with the correct side, which is all callers
        need there. A window entirely out of reach gets a single +-inf, without any per-pixel work.
        """
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        band = sum(abs(a) for a in self.amplitudes) + reach
        corners = [
            (r - center[0]) * cos - (c - center[1]) * sin - self.offset
            for r in (rows.min(), rows.max())
            for c in (cols.min(), cols.max())
        ]
        if min(corners) > band or max(corners) < -band:  # the across-coordinate is linear: corners bound it
            return math.copysign(math.inf, corners[0])
        dr, dc = rows - center[0], cols - center[1]
        across = (dr * cos - dc * sin) - self.offset
        distance = np.where(across > 0, np.inf, -np.inf)
        near = np.abs(across) < band
        along = np.broadcast_to(dc, near.shape)[near] * cos + np.broadcast_to(dr, near.shape)[near] * sin
        line = np.zeros_like(along)
        slope = np.zeros_like(along)
        for amplitude, wavelength, phase in zip(self.amplitudes, self.wavelengths, self.phases):
            theta = 2.0 * np.pi * along / wavelength + phase
            line += amplitude * np.sin(theta)
            slope += amplitude * 2.0 * np.pi / wavelength * np.cos(theta)
        distance[near] = (across[near] - line) / np.sqrt(1.0 + slope * slope)
        return distance


class SyntheticBlock(NamedTuple):
    """One rendered window: JAXA codes, noise-free sigma0 and the encoded DNs, all ``(h, w)``."""

    codes: np.ndarray  # uint8 source codes, 0 = label nodata
    clean_db: np.ndarray  # float32 noise-free sigma0 in dB (what the speckle multiplies)
    dn: np.ndarray  # uint16 DN, 0 = scene nodata
    valid: np.ndarray  # bool, inside the scene footprint


@dataclass
class SyntheticLandscape:
    """The procedural model of one scene: call :meth:`render` on any window, in any order.

    Scene-wide constants (coast direction, rivers, roads, zone thresholds) are fixed at construction from the seed
    and the scene size; everything else is computed per pixel from global coordinates.
    """

    config: SyntheticSceneConfig
    _keys: dict[str, np.uint64] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, 0x5A12])
        self._size = float(max(cfg.height, cfg.width))
        self._center = ((cfg.height - 1) / 2.0, (cfg.width - 1) / 2.0)
        self._coast_angle = rng.uniform(0.0, 2.0 * np.pi)
        self._farm_angle = rng.uniform(-0.35, 0.35)
        self._urban_angle = rng.uniform(-0.6, 0.6)
        self._edge_angle = rng.choice([-1.0, 1.0]) * rng.uniform(0.12, 0.22)
        self._solar_offset = rng.integers(0, _SOLAR_CELL, size=2)
        self._bare_offset = rng.integers(0, _BARE_CELL, size=2)
        self._main_river, self._tributaries = self._make_rivers(rng)
        self._roads = self._make_roads(rng)
        self._calibrate_zones()

    # -- scene constants -----------------------------------------------------------------------------------------
    def _key(self, name: str) -> np.uint64:
        # Filled lazily, also from render threads: a racing insert stores the same value, so no lock is needed.
        if name not in self._keys:
            self._keys[name] = _stream_key(self.config.seed, name)
        return self._keys[name]

    def _make_rivers(self, rng: np.random.Generator) -> tuple[_Curve, list[_Curve]]:
        size = self._size
        main = _Curve(
            angle=self._coast_angle,  # flows towards the sea
            offset=rng.uniform(-0.25, 0.25) * size,
            amplitudes=(rng.uniform(0.03, 0.08) * size, rng.uniform(8.0, 20.0)),
            wavelengths=(rng.uniform(0.6, 1.2) * size, rng.uniform(120.0, 220.0)),
            phases=tuple(rng.uniform(0, 2 * np.pi, size=2)),
            width=rng.uniform(7.0, 11.0),
        )
        tributaries = []
        for _ in range(2 + int(size) // 2048):
            angle = self._coast_angle + rng.choice([-1.0, 1.0]) * rng.uniform(0.6, 1.2)
            # Through a point of the main river's upstream half, so that it ends at the confluence.
            along = rng.uniform(-0.45, 0.1) * size
            junction_row = self._center[0] + along * math.sin(main.angle) + main.offset * math.cos(main.angle)
            junction_col = self._center[1] + along * math.cos(main.angle) - main.offset * math.sin(main.angle)
            offset = (junction_row - self._center[0]) * math.cos(angle) - (junction_col - self._center[1]) * math.sin(
                angle
            )
            tributaries.append(
                _Curve(
                    angle=angle,
                    offset=offset,
                    amplitudes=(rng.uniform(20.0, 60.0), rng.uniform(2.0, 5.0)),
                    wavelengths=(rng.uniform(400.0, 900.0), rng.uniform(80.0, 160.0)),
                    phases=tuple(rng.uniform(0, 2 * np.pi, size=2)),
                    width=rng.uniform(2.0, 4.0),
                    side=int(rng.choice([-1, 1])),
                )
            )
        return main, tributaries

    def _make_roads(self, rng: np.random.Generator) -> list[_Curve]:
        return [
            _Curve(
                angle=rng.uniform(0, np.pi),
                offset=rng.uniform(-0.4, 0.4) * self._size,
                amplitudes=(rng.uniform(20.0, 70.0),),
                wavelengths=(rng.uniform(1200.0, 2500.0),),
                phases=(rng.uniform(0, 2 * np.pi),),
                width=float(rng.choice([2.0, 3.0])),
            )
            for _ in range(3 + int(self._size) // 512)
        ]

    def _calibrate_zones(self) -> None:
        """Set the zone thresholds from quantiles of the macro fields on a coarse grid over the whole scene."""
        cfg = self.config
        rows = np.linspace(0, cfg.height - 1, _CALIBRATION_GRID)[:, None]
        cols = np.linspace(0, cfg.width - 1, _CALIBRATION_GRID)[None, :]
        coast = self._coast(rows, cols)
        self._sea_level = float(np.quantile(coast, 1.0 - _SEA_FRACTION))
        self._far_sea_level = float(np.quantile(coast, 1.0 - _FAR_SEA_FRACTION))
        land = coast <= self._sea_level
        elevation = self._elevation(rows, cols, coast)
        self._mountain_level = float(np.quantile(elevation[land], 1.0 - _MOUNTAIN_FRACTION))
        self._hill_level = float(np.quantile(elevation[land], 1.0 - _MOUNTAIN_FRACTION - _HILL_FRACTION))
        plain = land & (elevation <= self._hill_level)
        self._urban_level = float(np.quantile(self._urbanness(rows, cols, coast)[plain], 1.0 - _URBAN_FRACTION))

    # -- macro fields (smooth functions of position) -------------------------------------------------------------
    def _fbm(self, rows: np.ndarray, cols: np.ndarray, spacing: float, name: str, octaves: int) -> np.ndarray:
        """Fractal sum of value noise, halving the spacing per octave; roughly in [-1, 1]."""
        total, weight, amplitude = 0.0, 0.0, 1.0
        for octave in range(octaves):
            total = total + amplitude * _value_noise(rows, cols, spacing / 2**octave, self._key(f"{name}/{octave}"))
            weight += amplitude
            amplitude *= 0.5
        return total / weight

    def _coast(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Distance-like coordinate towards the sea, in pixels: the sea is where it exceeds the sea level."""
        seaward = (cols - self._center[1]) * math.cos(self._coast_angle) + (rows - self._center[0]) * math.sin(
            self._coast_angle
        )
        size = self._size
        return (
            seaward
            + 0.15 * size * self._fbm(rows, cols, size / 3.0, "coast", 4)
            + 12.0 * self._fbm(rows, cols, 48.0, "coast/fine", 2)
        )

    def _elevation(self, rows: np.ndarray, cols: np.ndarray, coast: np.ndarray) -> np.ndarray:
        return self._fbm(rows, cols, self._size / 2.5, "elevation", 4) - 0.4 * coast / self._size

    def _urbanness(self, rows: np.ndarray, cols: np.ndarray, coast: np.ndarray) -> np.ndarray:
        # Cities grow near the coast.
        return self._fbm(rows, cols, self._size / 5.0, "urban", 3) + 0.5 * coast / self._size

    def _zones(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        coast = self._coast(rows, cols)
        elevation = self._elevation(rows, cols, coast)
        urbanness = self._urbanness(rows, cols, coast)
        zone = np.full(np.broadcast_shapes(np.shape(rows), np.shape(cols)), _FARMLAND, dtype=np.uint8)
        zone[urbanness > self._urban_level] = _URBAN
        zone[elevation > self._hill_level] = _HILL
        zone[elevation > self._mountain_level] = _MOUNTAIN
        zone[coast > self._sea_level] = _SEA
        return zone, coast

    # -- painting layers -----------------------------------------------------------------------------------------
    def _rotated(self, rows: np.ndarray, cols: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
        cos, sin = math.cos(angle), math.sin(angle)
        return cols * cos + rows * sin, rows * cos - cols * sin

    def _warped_cells(self, rows: np.ndarray, cols: np.ndarray, spacing: float, name: str) -> np.ndarray:
        """Ids of organically shaped cells: a square grid seen through a smooth displacement field."""
        warp_rows = 0.4 * spacing * self._fbm(rows, cols, spacing, f"{name}/warp-rows", 2)
        warp_cols = 0.4 * spacing * self._fbm(rows, cols, spacing, f"{name}/warp-cols", 2)
        return _pack(np.floor((rows + warp_rows) / spacing), np.floor((cols + warp_cols) / spacing))

    def _paint_farmland(
        self, rows: np.ndarray, cols: np.ndarray, material: np.ndarray, region: np.ndarray, where: np.ndarray
    ) -> None:
        if not where.any():
            return
        district = self._warped_cells(rows, cols, _DISTRICT_SPACING, "district")
        district_use = _uniform(self._key("district/use"), district)
        flooded_share = _uniform(self._key("district/flooded"), district)
        along, across = self._rotated(rows, cols, self._farm_angle)

        paddy_row = np.floor(across / _PADDY_PARCEL[0])
        paddy = _pack(paddy_row, np.floor(along / _PADDY_PARCEL[1]))
        flooded = _uniform(self._key("paddy/state"), paddy) < flooded_share
        paddy_material = np.where(flooded, _M["paddy_flooded"], _M["paddy_grown"])
        # Irrigation canals run along whole parcel rows: 1 px wide, hundreds of px long.
        canal = (across - paddy_row * _PADDY_PARCEL[0] < 1.0) & (
            _uniform(self._key("paddy/canal"), paddy_row) < _CANAL_PROBABILITY
        )
        paddy_material = np.where(canal, _M["canal"], paddy_material)

        crop = _pack(np.floor(across / _CROP_PARCEL[0]), np.floor(along / _CROP_PARCEL[1]))
        crop_use = _uniform(self._key("crop/use"), crop)
        greenhouse_material = np.where(np.mod(along, 4.0) < 1.0, _M["greenhouse_gap"], _M["greenhouse"])
        crop_material = np.where(
            crop_use < _GREENHOUSE_PARCELS,
            greenhouse_material,
            np.where(crop_use < 0.16, _M["grassland"], _M["cropland"]),
        )
        meadow_material = np.where(crop_use < 0.3, _M["cropland"], _M["grassland"])

        is_paddy = district_use < 0.6
        is_crop = ~is_paddy & (district_use < 0.88)
        painted = np.where(is_paddy, paddy_material, np.where(is_crop, crop_material, meadow_material))
        material[where] = painted[where]
        region[where] = np.where(is_paddy, paddy, crop)[where]

    def _paint_forest(
        self,
        rows: np.ndarray,
        cols: np.ndarray,
        zone: np.ndarray,
        material: np.ndarray,
        region: np.ndarray,
    ) -> None:
        for zone_id, types in _STAND_TYPES.items():
            where = zone == zone_id
            if not where.any():
                continue
            stand = self._warped_cells(rows, cols, _STAND_SPACING[zone_id], f"stand/{zone_id}")
            draw = _uniform(self._key(f"stand/{zone_id}/type"), stand)
            thresholds = np.array([p for _, p in types])
            table = np.array([_M[name] for name, _ in types], dtype=np.uint8)
            chosen = table[np.minimum(np.searchsorted(thresholds, draw), len(table) - 1)]
            material[where] = chosen[where]
            region[where] = stand[where]

    def _paint_urban(
        self, rows: np.ndarray, cols: np.ndarray, where: np.ndarray, material: np.ndarray, region: np.ndarray
    ) -> None:
        if not where.any():
            return
        along, across = self._rotated(rows, cols, self._urban_angle)
        block_h, block_w = _CITY_BLOCK
        street = (np.mod(across, block_h) < _STREET_WIDTH) | (np.mod(along, block_w) < _STREET_WIDTH)
        street |= np.mod(along, block_w * _AVENUE_EVERY) < _AVENUE_WIDTH
        block = _pack(np.floor(across / block_h), np.floor(along / block_w))
        use = _uniform(self._key("urban/block"), block)
        painted = np.where(use < 0.05, _M["grassland"], np.where(use < 0.07, _M["bare"], _M["building"]))
        # Double bounce: 2 x 2 px dihedral reflectors at building corners.
        bright = _uniform(self._key("urban/double-bounce"), _pack(rows // 2, cols // 2)) < _DOUBLE_BOUNCE_PROBABILITY
        painted = np.where((painted == _M["building"]) & bright, _M["double_bounce"], painted)
        painted = np.where(street, _M["street"], painted)
        material[where] = painted[where]
        region[where] = block[where]

    def _paint_wetland(
        self,
        rows: np.ndarray,
        cols: np.ndarray,
        zone: np.ndarray,
        coast: np.ndarray,
        material: np.ndarray,
        region: np.ndarray,
    ) -> None:
        band = (coast > self._sea_level - _WETLAND_BAND * self._size) & (zone == _FARMLAND)
        if not band.any():
            return
        wet = band & (self._fbm(rows, cols, 40.0, "wetland", 2) > 0.0)
        material[wet] = _M["wetland"]
        region[wet] = _pack(rows // 64, cols // 64)[wet]

    def _cells(self, window: Window, cell: int, offset: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ids and top-left pixel of the cells of a square grid (pitch ``cell``, shifted by ``offset``) in a window."""
        row0, col0 = int(window.row_off), int(window.col_off)
        first_r, first_c = (row0 - offset[0]) // cell, (col0 - offset[1]) // cell
        last_r = (row0 + int(window.height) - 1 - offset[0]) // cell
        last_c = (col0 + int(window.width) - 1 - offset[1]) // cell
        cell_rows = np.arange(first_r, last_r + 1)[:, None]
        cell_cols = np.arange(first_c, last_c + 1)[None, :]
        ids = _pack(cell_rows, cell_cols)
        origin_r, origin_c = np.broadcast_arrays(cell_rows * cell + offset[0], cell_cols * cell + offset[1])
        return ids.ravel(), origin_r.ravel(), origin_c.ravel()

    @staticmethod
    def _local(window: Window, top: int, left: int, bottom: int, right: int) -> tuple[slice, slice] | None:
        """Slices of the window covered by the global pixel box [top, bottom) x [left, right)."""
        row0, col0 = int(window.row_off), int(window.col_off)
        r0, r1 = max(top - row0, 0), min(bottom - row0, int(window.height))
        c0, c1 = max(left - col0, 0), min(right - col0, int(window.width))
        if r0 >= r1 or c0 >= c1:
            return None
        return slice(r0, r1), slice(c0, c1)

    def _paint_solar(self, window: Window, material: np.ndarray, region: np.ndarray, land: np.ndarray) -> None:
        """Rectangular solar farms, at most one per grid cell: dark panel rows, bright frame, ground between rows."""
        ids, origin_r, origin_c = self._cells(window, _SOLAR_CELL, self._solar_offset)
        present = _uniform(self._key("solar/present"), ids) < _SOLAR_PROBABILITY * self.config.rare_abundance
        if not present.any():
            return
        ids, origin_r, origin_c = ids[present], origin_r[present], origin_c[present]
        height = np.floor(18 + 30 * _uniform(self._key("solar/height"), ids)).astype(np.int64)
        width = np.floor(18 + 42 * _uniform(self._key("solar/width"), ids)).astype(np.int64)
        top = origin_r + np.floor(6 + (_SOLAR_CELL - 12 - height) * _uniform(self._key("solar/top"), ids)).astype(int)
        left = origin_c + np.floor(6 + (_SOLAR_CELL - 12 - width) * _uniform(self._key("solar/left"), ids)).astype(int)
        # Solar farms are built on farmland and hills; the zone at a farm's centre decides for the whole farm.
        zone_at_center, _ = self._zones((top + height / 2).astype(np.float64), (left + width / 2).astype(np.float64))
        for i in np.flatnonzero((zone_at_center == _FARMLAND) | (zone_at_center == _HILL)):
            box = self._local(window, top[i], left[i], top[i] + height[i], left[i] + width[i])
            if box is None:
                continue
            rows = np.arange(box[0].start, box[0].stop)[:, None] + int(window.row_off) - top[i]
            cols = np.arange(box[1].start, box[1].stop)[None, :] + int(window.col_off) - left[i]
            frame = (rows < 1) | (rows >= height[i] - 1) | (cols < 1) | (cols >= width[i] - 1)
            gap = np.broadcast_to(rows % 5 == 4, frame.shape)
            farm = np.where(frame, _M["solar_frame"], np.where(gap, _M["solar_gap"], _M["solar_panel"]))
            on_land = land[box]
            material[box][on_land] = farm[on_land]
            region[box][on_land] = ids[i]

    def _paint_bare(self, window: Window, zone: np.ndarray, material: np.ndarray, region: np.ndarray) -> None:
        """Ragged bare patches (construction sites, quarries, landslides), at most one per grid cell."""
        ids, origin_r, origin_c = self._cells(window, _BARE_CELL, self._bare_offset)
        margin = 24
        radius = 7 + 12 * _uniform(self._key("bare/radius"), ids)
        center_r = origin_r + margin + (_BARE_CELL - 2 * margin) * _uniform(self._key("bare/row"), ids)
        center_c = origin_c + margin + (_BARE_CELL - 2 * margin) * _uniform(self._key("bare/col"), ids)
        probability = _BARE_PROBABILITY * self.config.rare_abundance
        for i in np.flatnonzero(_uniform(self._key("bare/present"), ids) < probability):
            reach = math.ceil(1.4 * radius[i])  # the ragged edge reaches at most 1.35 radii
            top, left = int(center_r[i]) - reach, int(center_c[i]) - reach
            box = self._local(window, top, left, top + 2 * reach + 1, left + 2 * reach + 1)
            if box is None:
                continue
            rows = np.arange(box[0].start, box[0].stop, dtype=np.float64)[:, None] + int(window.row_off)
            cols = np.arange(box[1].start, box[1].stop, dtype=np.float64)[None, :] + int(window.col_off)
            ragged = 1.0 + 0.35 * self._fbm(rows, cols, 10.0, "bare/edge", 2)
            bare = np.hypot(rows - center_r[i], cols - center_c[i]) < radius[i] * ragged
            bare &= (zone[box] != _SEA) & (zone[box] != _URBAN)
            material[box][bare] = _M["bare"]
            region[box][bare] = ids[i]

    def _paint_lines(
        self, rows: np.ndarray, cols: np.ndarray, material: np.ndarray, region: np.ndarray, land: np.ndarray
    ) -> None:
        """Rivers (with grass levees along the main one), tributaries that end at the main river, then roads."""
        half = self._main_river.width / 2
        main_distance = self._main_river.signed_distance(rows, cols, self._center, reach=half + 4.0)
        curves = [(self._main_river, main_distance)]
        curves += [(c, c.signed_distance(rows, cols, self._center, c.width)) for c in self._tributaries]
        for index, (curve, distance) in enumerate(curves):
            if np.isscalar(distance):
                continue  # out of reach of this window
            if index == 0:
                levee = land & (np.abs(distance) < half + 3.0)
                material[levee] = _M["grassland"]
                region[levee] = 1
            river = land & (np.abs(distance) < curve.width / 2)
            if curve.side:
                river &= np.sign(main_distance) == curve.side
            material[river] = _M["river"]
            region[river] = index
        for index, curve in enumerate(self._roads):
            distance = curve.signed_distance(rows, cols, self._center, curve.width)
            if np.isscalar(distance):
                continue
            road = land & (np.abs(distance) < curve.width / 2)
            material[road] = _M["road"]
            region[road] = index

    # -- rendering -----------------------------------------------------------------------------------------------
    def _footprint(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Pixels inside the SAR footprint: left of a slanted edge near the scene's right side."""
        cfg = self.config
        shape = np.broadcast_shapes(rows.shape, cols.shape)
        if not cfg.nodata_edge:
            return np.ones(shape, dtype=bool)
        edge_col = cfg.width * (1.0 - _NODATA_EDGE_FRACTION) + (rows - self._center[0]) * math.tan(self._edge_angle)
        return np.broadcast_to(cols < edge_col, shape).copy()

    def materials(self, window: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Material index, region id (uint64) and label-coverage mask of every pixel of ``window``."""
        row0, col0 = int(window.row_off), int(window.col_off)
        rows = np.arange(row0, row0 + int(window.height), dtype=np.float64)[:, None]
        cols = np.arange(col0, col0 + int(window.width), dtype=np.float64)[None, :]
        zone, coast = self._zones(rows, cols)
        shape = zone.shape
        material = np.zeros(shape, dtype=np.uint8)
        region = np.zeros(shape, dtype=np.uint64)
        land = zone != _SEA
        self._paint_farmland(rows, cols, material, region, zone == _FARMLAND)
        self._paint_forest(rows, cols, zone, material, region)
        self._paint_urban(rows, cols, zone == _URBAN, material, region)
        self._paint_wetland(rows, cols, zone, coast, material, region)
        self._paint_bare(window, zone, material, region)
        self._paint_solar(window, material, region, land)
        self._paint_lines(rows, cols, material, region, land)
        material[~land] = _M["sea"]
        region[~land] = 0
        labeled = coast <= self._far_sea_level
        return material, region, labeled

    def clean_db(self, rows: np.ndarray, cols: np.ndarray, material: np.ndarray, region: np.ndarray) -> np.ndarray:
        """Noise-free sigma0 in dB: each region's mean drawn in its material's range, plus texture."""
        keys = np.array([self._key(f"mean/{m.name}") for m in MATERIALS], dtype=np.uint64)
        db = _MAT_LOW[material] + _MAT_SPAN[material] * _uniform(keys[material], region)
        if self.config.texture:
            db += _MAT_TEXTURE[material] * self._fbm(rows, cols, 40.0, "texture", 3)
            db += _MAT_TERRAIN[material] * self._fbm(rows, cols, 120.0, "terrain", 2)
        return db

    def render(self, window: Window) -> SyntheticBlock:
        """Labels, noise-free sigma0 and speckled DNs of a window (any window; results do not depend on tiling)."""
        cfg = self.config
        row0, col0 = int(window.row_off), int(window.col_off)
        rows = np.arange(row0, row0 + int(window.height), dtype=np.float64)[:, None]
        cols = np.arange(col0, col0 + int(window.width), dtype=np.float64)[None, :]
        material, region, labeled = self.materials(window)
        codes = np.where(labeled, _MAT_CODE[material], 0).astype(np.uint8)
        db = self.clean_db(rows, cols, material, region)
        intensity = np.power(10.0, db / 10.0)
        if cfg.speckle:
            pixel = _pack(rows.astype(np.int64), cols.astype(np.int64))
            intensity *= _gamma_unit_mean(pixel, cfg.looks, cfg.seed)
        valid = self._footprint(rows, cols)
        dn = db_to_dn(10.0 * np.log10(intensity), cfg.calibration_factor)
        dn[~valid] = 0
        return SyntheticBlock(codes=codes, clean_db=db.astype(np.float32), dn=dn, valid=valid)

    def render_hv(self, window: Window, block: SyntheticBlock) -> np.ndarray:
        """Cross-polarized (HV) DNs of a window rendered by :meth:`render`: the noise-free HH backscatter lowered by
        its class's depolarization ratio (:data:`HV_DEPOLARIZATION_DB`), with speckle independent of HH's."""
        cfg = self.config
        row0, col0 = int(window.row_off), int(window.col_off)
        rows = np.arange(row0, row0 + int(window.height), dtype=np.int64)[:, None]
        cols = np.arange(col0, col0 + int(window.width), dtype=np.int64)[None, :]
        ratio = _HV_RATIO_BY_CODE[block.codes]
        intensity = np.power(10.0, (block.clean_db.astype(np.float64) - ratio) / 10.0)
        if cfg.speckle:
            intensity *= _gamma_unit_mean(_pack(rows, cols), cfg.looks, cfg.seed + _HV_SPECKLE_SEED_OFFSET)
        dn = db_to_dn(10.0 * np.log10(intensity), cfg.calibration_factor)
        dn[~block.valid] = 0
        return dn


# ----------------------------------------------------------------------------------------------------------------------
# Writing the GeoTIFFs
# ----------------------------------------------------------------------------------------------------------------------
class SyntheticScene(NamedTuple):
    """What :func:`generate_scene` wrote."""

    scene: Path
    labels: Path
    config: SyntheticSceneConfig
    class_pixels: dict[int, int]  # pixel count per label code (0 = label nodata) over the whole raster


def _profiles(config: SyntheticSceneConfig) -> tuple[dict, dict]:
    crs, transform = _grid(config.crs, config.seed)
    common = dict(
        driver="GTiff",
        height=config.height,
        width=config.width,
        count=1,
        crs=crs,
        transform=transform,
        nodata=0,
        tiled=True,
        blockxsize=config.block_size,
        blockysize=config.block_size,
        compress="deflate",
        predictor=2,
        BIGTIFF="IF_SAFER",
    )
    return {**common, "dtype": "uint16"}, {**common, "dtype": "uint8"}


def _scene_tags(config: SyntheticSceneConfig) -> dict[str, str]:
    return {
        INPUT_KIND_TAG: "dn",
        CALIBRATION_FACTOR_TAG: repr(float(config.calibration_factor)),
        POLARIZATIONS_TAG: "HH",
        BACKSCATTER_TAG: "sigma0",
        "SARLULC_SYNTHETIC": "1",
        "SARLULC_SYNTHETIC_SEED": str(config.seed),
        "SARLULC_SYNTHETIC_LOOKS": repr(float(config.looks)),
        "SARLULC_SYNTHETIC_RARE_ABUNDANCE": repr(float(config.rare_abundance)),
        "SENSOR": "ALOS-2 PALSAR-2 (synthetic)",
    }


def _label_tags() -> dict[str, str]:
    tags = {f"CLASS_{code}": name for code, name in JAXA_SOURCE_CLASSES.items()}
    tags.update({"CLASS_0": "No data", "SARLULC_LABEL_CODES": "jaxa-14"})
    return tags


def _block_windows(config: SyntheticSceneConfig) -> list[Window]:
    size = config.block_size
    return [
        Window(col, row, min(size, config.width - col), min(size, config.height - row))
        for row in range(0, config.height, size)
        for col in range(0, config.width, size)
    ]


def _rendered_blocks(
    landscape: SyntheticLandscape, windows: list[Window], workers: int
) -> Iterator[tuple[Window, SyntheticBlock]]:
    """Render windows in order on ``workers`` threads (numpy releases the GIL), at most ``2 * workers`` in flight."""
    if workers <= 1:
        for window in windows:
            yield window, landscape.render(window)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[tuple[Window, Future[SyntheticBlock]]] = deque()
        for window in windows:
            pending.append((window, pool.submit(landscape.render, window)))
            if len(pending) >= 2 * workers:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()


def scene_shape(size: int | tuple[int, int]) -> tuple[int, int]:
    """``(height, width)`` of a synthetic scene or product of ``size`` (a side, or height and width), with the
    documentation run's cap (``SARLULC_DOCS_SMALL``, :mod:`sarlulc.scale`) applied."""
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    return scaled(height, SMALL_SCENE_SIZE), scaled(width, SMALL_SCENE_SIZE)


def generate_scene(
    out_dir: str | Path,
    size: int | Sequence[int] = 2048,
    seed: int = 0,
    crs: str = "EPSG:4326",
    looks: float = 4.0,
    *,
    calibration_factor: float = DEFAULT_CALIBRATION_FACTOR,
    block_size: int = 512,
    texture: bool = True,
    speckle: bool = True,
    nodata_edge: bool = True,
    rare_abundance: float = 1.0,
    workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> SyntheticScene:
    """Write a synthetic ALOS-2 HH scene and its aligned label raster into ``out_dir``.

    Both files are written under temporary names (:mod:`sarlulc.files`), verified complete and only then renamed, so
    an interruption or a full disk never leaves a readable but incomplete scene; existing files are replaced only
    with ``overwrite``.

    Args:
        out_dir: folder to write ``scene.tif`` and ``labels.tif`` into (created if missing).
        size: ``N`` for an N x N scene or ``(height, width)`` in pixels.
        seed: determines the landscape and the noise; the same arguments give byte-identical arrays.
        crs: ``"EPSG:4326"`` (default, like the benchmark tiles), ``"utm"`` or a projected CRS in metres.
        looks: speckle looks L.
        calibration_factor: CF in dB for the DN encoding (tagged in the scene).
        block_size: GeoTIFF tile size and generation window; memory use is proportional to its square.
        texture, speckle, nodata_edge: switch parts of the model off (see :class:`SyntheticSceneConfig`).
        rare_abundance: more (or fewer) solar farms and bare patches (see :class:`SyntheticSceneConfig`).
        workers: threads rendering blocks (default: up to 4, bounded by the CPU count); the output does not depend
            on it.
        progress: show a progress bar over the blocks.
        overwrite: replace existing ``scene.tif`` / ``labels.tif``.

    Returns:
        The written paths, the config and the pixel count per label code.

    Raises:
        ValueError: a bad size, looks, seed, CRS, block size or calibration factor.
        FileExistsError: an output exists and ``overwrite`` is False.
        PermissionError: the folder cannot be written.
        OutputWriteError: the files could not be written completely (a full disk); nothing was replaced.
    """
    height, width = scene_shape(size)
    config = SyntheticSceneConfig(
        height=height,
        width=width,
        seed=seed,
        looks=looks,
        crs=crs,
        calibration_factor=calibration_factor,
        block_size=block_size,
        texture=texture,
        speckle=speckle,
        nodata_edge=nodata_edge,
        rare_abundance=rare_abundance,
    )
    landscape = SyntheticLandscape(config)
    out_dir = Path(out_dir)
    scene_path, labels_path = out_dir / SCENE_FILENAME, out_dir / LABELS_FILENAME
    _profiles(config)  # checks the CRS before any file exists
    _check_destination(out_dir, (scene_path, labels_path), overwrite, _bytes_needed(height, width))
    temporaries = {}
    try:
        for final in (scene_path, labels_path):
            sweep_stale_temporaries(final)
            temporaries[final] = create_temporary(final)
        counts = _write_scene(config, landscape, temporaries[scene_path], temporaries[labels_path], workers, progress)
        for final, temporary in temporaries.items():
            try:
                verify_raster_complete(temporary)
            except Exception as err:  # GDAL only logs a block it could not write: the check finds it
                raise output_write_error(final, err, "synthetic raster") from err
        if not overwrite:
            _refuse_existing((scene_path, labels_path))
        # Labels first: a scene.tif that exists always has its labels next to it.
        verify_and_replace(temporaries[labels_path], labels_path, what="synthetic raster")
        verify_and_replace(temporaries[scene_path], scene_path, what="synthetic raster")
    except (OSError, rasterio.errors.RasterioError) as err:
        if isinstance(err, (OutputWriteError, FileExistsError, PermissionError)):
            raise
        raise output_write_error(scene_path, err, "synthetic raster") from err
    finally:
        for temporary in temporaries.values():
            remove_path(temporary)  # gone already when renamed
    class_pixels = {code: int(n) for code, n in enumerate(counts) if n}
    return SyntheticScene(scene=scene_path, labels=labels_path, config=config, class_pixels=class_pixels)


def _refuse_existing(paths: Sequence[Path]) -> None:
    existing = [str(path) for path in paths if path.exists() or path.is_symlink()]
    if existing:
        raise FileExistsError(f"output {', '.join(existing)} already exists; pass overwrite=True (--overwrite)")


def _check_destination(out_dir: Path, paths: Sequence[Path], overwrite: bool, bytes_needed: int) -> None:
    """Refuse, before anything is written: existing outputs (without ``overwrite``), a folder that cannot be created
    or written, and a size that cannot fit in the free space."""
    if not overwrite:
        _refuse_existing(paths)
    existing = out_dir
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"output folder {out_dir} cannot be created: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"output folder {existing} is not writable")
    free = shutil.disk_usage(existing).free
    if bytes_needed > free:
        raise ValueError(
            f"the synthetic scene would need up to {bytes_needed / 2**20:.1f} MiB in {existing} but only "
            f"{free / 2**20:.1f} MiB are free; choose a smaller size or another folder"
        )
    out_dir.mkdir(parents=True, exist_ok=True)


def _write_scene(
    config: SyntheticSceneConfig,
    landscape: SyntheticLandscape,
    scene_path: Path,
    labels_path: Path,
    workers: int | None,
    progress: bool,
) -> np.ndarray:
    """Render and write every block into ``scene_path`` and ``labels_path``; return the pixel count per code."""
    scene_profile, labels_profile = _profiles(config)
    counts = np.zeros(256, dtype=np.int64)
    # A small GDAL cache keeps memory bounded: every block is written exactly once, nothing is re-read.
    with (
        rasterio.Env(GDAL_CACHEMAX=64),
        rasterio.open(scene_path, "w", **scene_profile) as scene,
        rasterio.open(labels_path, "w", **labels_profile) as labels,
    ):
        scene.update_tags(**_scene_tags(config))
        scene.set_band_description(1, "HH")
        scene.update_tags(1, POLARIZATION="HH", UNITS="DN")
        labels.update_tags(**_label_tags())
        labels.set_band_description(1, "JAXA LULC code")
        labels.write_colormap(1, {code: (*rgb, 255) for code, rgb in JAXA_SOURCE_COLORS.items()} | {0: (0, 0, 0, 0)})
        windows = _block_windows(config)
        workers = min(4, os.cpu_count() or 1) if workers is None else workers
        blocks = _rendered_blocks(landscape, windows, workers)
        for window, block in tqdm(
            blocks, total=len(windows), desc="synthetic scene", unit="block", disable=not progress
        ):
            scene.write(block.dn, 1, window=window)
            labels.write(block.codes, 1, window=window)
            counts += np.bincount(block.codes.ravel(), minlength=256)
    return counts


def describe_synthetic(result: SyntheticScene, echo: Callable[[str], None] = print) -> None:
    """Say what :func:`generate_scene` wrote: the scene's grid and encoding, and the pixels of every label code."""
    with rasterio.open(result.scene) as scene:
        units = "deg" if scene.crs.is_geographic else "m"
        echo(
            f"wrote {result.scene}: {scene.height} x {scene.width} px, {scene.dtypes[0]} DN (band 1 = HH), "
            f"nodata {scene.nodata:g}, {scene.crs.to_string()}, pixel {scene.res[0]:.6g} {units}, "
            f"calibration factor {result.config.calibration_factor:g} dB, {result.config.looks:g} looks"
        )
    echo(f"wrote {result.labels}: uint8 JAXA land-cover codes 1..14 (0 = no data), same grid")
    total = sum(result.class_pixels.values())
    for code, count in sorted(result.class_pixels.items()):
        name = JAXA_SOURCE_CLASSES.get(code, "No data")
        echo(f"  {code:>2} {name:<28} {count:>11} px {100 * count / total:6.2f} %")
