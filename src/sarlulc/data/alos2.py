"""ALOS-2 PALSAR-2 scenes and label rasters: opening, validation, calibration to sigma0 (dB), windowed reads.

A *scene* is a georeferenced raster (usually a GeoTIFF) whose band 1 is HH and whose optional band 2 is HV. Its
pixel values are one of three *input kinds*:

``"dn"``
    ALOS-2 L1.5/L2.1 amplitude digital numbers (uint16, or float holding DNs). Calibrated with
    ``sigma0_dB = 10 * log10(DN**2) + CF`` where ``CF`` is the calibration factor (-83.0 dB by default).
``"linear"``
    sigma0 as linear power (float).
``"db"``
    sigma0 in decibels (float).

How the kind is decided, first match wins (see :func:`resolve_input_kind`):

1. the ``input_kind`` argument;
2. the scene's metadata: the GeoTIFF tag ``SARLULC_INPUT_KIND`` (written by :mod:`sarlulc.data.synthetic`), or one of
   ``INPUT_KIND``, ``SAR_INPUT_KIND``, ``SIGMA0_UNIT``, ``UNITS`` in the dataset or band-1 tags, or band 1's unit type;
   values are matched case-insensitively against aliases such as ``"DN"``/``"amplitude"``, ``"linear"``/``"power"``,
   ``"dB"``/``"decibel"``;
3. the data type: an integer raster is ``"dn"``;
4. a float raster without metadata is judged from the median of a decimated read: negative -> ``"db"`` (sigma0 of
   land and water is below 0 dB), above 20 -> ``"dn"`` (no median surface has a linear sigma0 of 20, i.e. +13 dB),
   otherwise ``"linear"``. Tag your float products to avoid the guess.

The calibration factor follows the same order: argument, then the tag ``SARLULC_CALIBRATION_FACTOR`` (or
``CALIBRATION_FACTOR``), then -83.0 dB.

Invalid pixels are never turned into ``-inf`` or NaN: a pixel is invalid when it equals the band's declared nodata
value, is masked by GDAL's mask band, is not finite, or (for ``"dn"`` and ``"linear"``) is not positive, so that no
logarithm of zero is ever taken. Calibrated reads return sigma0 in dB as float32 ``(C, h, w)`` with invalid pixels
set to 0.0, plus a boolean ``(h, w)`` mask that is True only where *every* band is valid.

Label rasters (:class:`LabelRaster`) carry integer land-cover source codes with nodata 0; :func:`check_alignment`
verifies that they share the scene's grid, and :func:`open_labels` can warp them onto it with nearest-neighbour
resampling instead.

Every problem with the data raises :class:`SarLulcDataError` naming the file, the band and what was expected.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.transform import Affine
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

# The calibration lives with the image processor (remote code that every checkpoint carries), so that training data and
# inference preprocessing can never drift apart.
from ..errors import SarLulcDataError
from ..models.image_processing_sar import (
    CALIBRATION_FACTOR_TAG,
    DEFAULT_CALIBRATION_FACTOR,
    INPUT_KIND_TAG,
    INPUT_KINDS,
    calibrate_to_db,
    calibration_factor_from_tags,
    input_kind_from_metadata,
    merge_raster_tags,
    normalize_input_kind,
    valid_value_mask,
)

__all__ = [
    "CALIBRATION_FACTOR_TAG",
    "DEFAULT_CALIBRATION_FACTOR",
    "INPUT_KINDS",
    "INPUT_KIND_TAG",
    "POLARIZATIONS",
    "Alos2Scene",
    "LabelRaster",
    "SarLulcDataError",
    "calibrate",
    "check_alignment",
    "db_to_dn",
    "dn_to_db",
    "linear_to_db",
    "open_labels",
    "open_scene",
    "resolve_input_kind",
]

# INPUT_KIND_TAG and CALIBRATION_FACTOR_TAG (the GeoTIFF tags that declare a scene's input kind and a DN scene's
# calibration factor) are re-exported from the image processor, which defines them together with their parsing.

POLARIZATIONS = ("HH", "HV")
"""Meaning of band 1 and band 2 of a scene."""

# Integer DN products are uint16; the wider/signed integer types appear after reprocessing. 8-bit rasters are images or
# label maps, and complex rasters are SLC products that need multilooking first, so both are rejected.
_SUPPORTED_DTYPES = ("uint16", "int16", "uint32", "int32", "float32", "float64")
_GEOTIFF_SUFFIXES = (".tif", ".tiff")
_GEOTIFF_DRIVERS = ("GTiff", "COG")
_LABEL_DTYPES = ("uint8", "uint16", "int16", "uint32", "int32")
_CHECK_READ_SIZE = 256  # longest side of the decimated read used for cheap whole-scene checks


# ----------------------------------------------------------------------------------------------------------------------
# Calibration (pure numpy; usable on arrays from any source)
# ----------------------------------------------------------------------------------------------------------------------
def dn_to_db(
    dn: np.ndarray, calibration_factor: float = DEFAULT_CALIBRATION_FACTOR, nodata: float | None = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Calibrate amplitude DNs to sigma0 in dB: ``10*log10(DN**2) + calibration_factor``.

    Args:
        dn: DN array of any shape and numeric dtype.
        calibration_factor: CF in dB.
        nodata: DN value that marks missing data (0 for ALOS-2 products); ``None`` for none.

    Returns:
        ``(db, valid)``: float32 sigma0 in dB (0.0 where invalid) and a boolean mask of the same shape. Nodata,
        non-positive and non-finite DNs are invalid.
    """
    return calibrate_to_db(dn, "dn", calibration_factor, nodata)


def linear_to_db(power: np.ndarray, nodata: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Convert sigma0 linear power to dB (``10*log10``); non-positive, non-finite and nodata values are invalid.

    Returns ``(db, valid)`` like :func:`dn_to_db`.
    """
    return calibrate_to_db(power, "linear", nodata=nodata)


def calibrate(
    values: np.ndarray,
    input_kind: str,
    calibration_factor: float = DEFAULT_CALIBRATION_FACTOR,
    nodata: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Turn raw pixel values of the given input kind into sigma0 dB (float32) and a validity mask of the same shape.

    For ``"db"`` input only non-finite and nodata values are invalid (negative dB values are normal).
    """
    return calibrate_to_db(values, input_kind, calibration_factor, nodata)


def db_to_dn(db: np.ndarray, calibration_factor: float = DEFAULT_CALIBRATION_FACTOR) -> np.ndarray:
    """Invert the calibration: ``DN = sqrt(10**((dB - CF) / 10))``, rounded and clipped to 1..65535 (uint16).

    The lower clip keeps every encoded pixel distinguishable from the nodata DN 0.
    """
    amplitude = np.sqrt(np.power(10.0, (np.asarray(db, dtype=np.float64) - calibration_factor) / 10.0))
    return np.clip(np.rint(amplitude), 1, 65535).astype(np.uint16)


# ----------------------------------------------------------------------------------------------------------------------
# Opening rasters with clear errors
# ----------------------------------------------------------------------------------------------------------------------
def _is_local_path(path: str) -> bool:
    return "://" not in path and not path.startswith("/vsi")


@contextmanager
def _data_errors(path: str, what: str) -> Iterator[None]:
    """Turn GDAL/rasterio failures into SarLulcDataError naming the file and what was being done."""
    try:
        yield
    except SarLulcDataError:
        raise
    except RasterioError as err:
        detail = str(err.__cause__ or err)
        raise SarLulcDataError(f"{path}: {what} failed; the file is truncated or corrupt ({detail})") from err


def _open_dataset(path: str | Path, role: str) -> rasterio.io.DatasetReader:
    """Open a raster read-only, checking that it exists, is a raster and (for .tif names) really is a GeoTIFF."""
    path = str(path)
    if _is_local_path(path) and not Path(path).exists():
        raise SarLulcDataError(f"{role} {path} does not exist")
    if _is_local_path(path) and Path(path).is_dir():
        raise SarLulcDataError(f"{role} {path} is a directory, expected a raster file")
    try:
        with warnings.catch_warnings():
            # Missing georeferencing is reported below as a proper error.
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            dataset = rasterio.open(path)
    except RasterioError as err:
        raise SarLulcDataError(f"{role} {path} cannot be opened as a raster: {err.__cause__ or err}") from err
    if path.lower().endswith(_GEOTIFF_SUFFIXES) and dataset.driver not in _GEOTIFF_DRIVERS:
        driver = dataset.driver
        dataset.close()
        raise SarLulcDataError(f"{role} {path} is named like a GeoTIFF but GDAL reads it as a {driver} file")
    return dataset


def _check_georeferencing(dataset: rasterio.io.DatasetReader, path: str, role: str) -> None:
    if dataset.crs is None:
        raise SarLulcDataError(f"{role} {path} has no CRS; expected a georeferenced raster (e.g. EPSG:4326 or UTM)")
    if dataset.transform == Affine.identity():
        if dataset.gcps[0]:
            raise SarLulcDataError(
                f"{role} {path} is georeferenced only by GCPs; expected a map-projected product with a geotransform "
                "(ALOS-2 L1.5/L2.1)"
            )
        raise SarLulcDataError(f"{role} {path} has no geotransform; expected a map-projected (georeferenced) raster")


def _dataset_tags(dataset: rasterio.io.DatasetReader, band: int) -> dict[str, str]:
    return merge_raster_tags(dataset.tags(), dataset.tags(band))


def _kind_from_metadata(dataset: rasterio.io.DatasetReader, band: int) -> str | None:
    units = dataset.units[band - 1] if dataset.units else None
    try:
        return input_kind_from_metadata(_dataset_tags(dataset, band), units)
    except ValueError as err:
        raise SarLulcDataError(f"scene {dataset.name}: {err}") from err


def _decimated_shape(height: int, width: int) -> tuple[int, int]:
    scale = max(height, width) / _CHECK_READ_SIZE
    if scale <= 1:
        return height, width
    return max(1, round(height / scale)), max(1, round(width / scale))


def resolve_input_kind(dataset: rasterio.io.DatasetReader, band: int = 1, input_kind: str | None = None) -> str:
    """Decide a scene's input kind by the rule of the module docstring (argument, metadata, dtype, data median)."""
    if input_kind is not None:
        return normalize_input_kind(input_kind)
    from_metadata = _kind_from_metadata(dataset, band)
    if from_metadata is not None:
        return from_metadata
    if np.dtype(dataset.dtypes[band - 1]).kind in "iu":
        return "dn"
    sample = dataset.read(
        band, out_shape=_decimated_shape(dataset.height, dataset.width), resampling=Resampling.nearest
    )
    usable = valid_value_mask(sample, "db", dataset.nodatavals[band - 1])  # finite and not nodata, any sign
    if not usable.any():
        return "db"  # nothing to judge by; the all-nodata check reports the real problem
    median = float(np.median(sample[usable]))
    if median < 0:
        return "db"
    return "dn" if median > 20 else "linear"


def _window_or_full(window: Window | None, height: int, width: int) -> Window:
    return Window(0, 0, width, height) if window is None else window


def _clip_window(window: Window, height: int, width: int) -> tuple[Window, tuple[slice, slice]] | None:
    """Intersect a (possibly out-of-bounds) integer window with the raster; return the part inside and where it goes."""
    row0, col0 = int(window.row_off), int(window.col_off)
    row1, col1 = row0 + int(window.height), col0 + int(window.width)
    r0, c0, r1, c1 = max(row0, 0), max(col0, 0), min(row1, height), min(col1, width)
    if r0 >= r1 or c0 >= c1:
        return None
    inside = Window(c0, r0, c1 - c0, r1 - r0)
    return inside, (slice(r0 - row0, r1 - row0), slice(c0 - col0, c1 - col0))


# ----------------------------------------------------------------------------------------------------------------------
# Scenes
# ----------------------------------------------------------------------------------------------------------------------
class Alos2Scene:
    """An open ALOS-2 scene: georeferencing, metadata and calibrated windowed reads.

    Use :func:`open_scene` to create one, preferably as a context manager::

        with open_scene("scene.tif") as scene:
            db, valid = scene.read_db(Window(0, 0, 256, 256))   # (C, 256, 256) float32 dB, (256, 256) bool

    Attributes:
        path: the file as given.
        bands: 1-based band indexes read, in order (HH first, then HV if present).
        input_kind: ``"dn"``, ``"linear"`` or ``"db"``.
        calibration_factor: CF in dB used for ``"dn"`` scenes.
        calibration_factor_source: where ``calibration_factor`` came from: ``"argument"``, ``"tag"`` or
            ``"default"``.
    """

    def __init__(
        self,
        path: str | Path,
        input_kind: str | None = None,
        calibration_factor: float | None = None,
        bands: Sequence[int] | None = None,
        check: bool = True,
    ) -> None:
        self.path = str(path)
        self._dataset = _open_dataset(self.path, "scene")
        try:
            self.bands = self._select_bands(bands)
            self._check_dtype()
            _check_georeferencing(self._dataset, self.path, "scene")
            with _data_errors(self.path, "reading the scene metadata"):
                self.input_kind = resolve_input_kind(self._dataset, self.bands[0], input_kind)
            self.calibration_factor, self._calibration_factor_source = self._resolve_calibration_factor(
                calibration_factor
            )
            self._nodata = [self._dataset.nodatavals[b - 1] for b in self.bands]
            self._uses_mask_band = [self._has_mask_band(b) for b in self.bands]
            if check:
                self._check_integrity()
        except BaseException:
            self._dataset.close()
            raise

    # -- construction helpers ------------------------------------------------------------------------------------
    def _select_bands(self, bands: Sequence[int] | None) -> tuple[int, ...]:
        count = self._dataset.count
        if bands is None:
            if count > len(POLARIZATIONS):
                raise SarLulcDataError(
                    f"scene {self.path} has {count} bands ({', '.join(self._dataset.dtypes)}); expected 1 (HH) or "
                    "2 (HH, HV). Pass bands=(...) to choose which bands hold HH (and HV)"
                )
            return tuple(range(1, count + 1))
        chosen = tuple(int(b) for b in bands)
        if not 1 <= len(chosen) <= len(POLARIZATIONS):
            raise ValueError(f"bands must name 1 (HH) or 2 (HH, HV) bands, got {chosen}")
        for band in chosen:
            if not 1 <= band <= count:
                raise SarLulcDataError(f"scene {self.path} has no band {band}; it has bands 1..{count}")
        return chosen

    def _check_dtype(self) -> None:
        for band in self.bands:
            dtype = self._dataset.dtypes[band - 1]
            if dtype not in _SUPPORTED_DTYPES:
                hint = " (complex SLC data must be detected and multilooked first)" if "complex" in dtype else ""
                raise SarLulcDataError(
                    f"scene {self.path} band {band} has dtype {dtype}; expected one of {', '.join(_SUPPORTED_DTYPES)}"
                    f"{hint}"
                )

    def _resolve_calibration_factor(self, calibration_factor: float | None) -> tuple[float, str]:
        """The factor and where it came from: the argument, else the scene's tag, else the default."""
        if calibration_factor is not None:
            return float(calibration_factor), "argument"
        try:
            tagged = calibration_factor_from_tags(_dataset_tags(self._dataset, self.bands[0]))
        except ValueError as err:
            raise SarLulcDataError(f"scene {self.path}: {err}") from err
        if tagged is not None:
            return tagged, "tag"
        return DEFAULT_CALIBRATION_FACTOR, "default"

    def _has_mask_band(self, band: int) -> bool:
        # A nodata-derived mask is handled by value; only a real mask band (internal/.msk, alpha) needs reading.
        flags = self._dataset.mask_flag_enums[band - 1]
        return MaskFlags.all_valid not in flags and MaskFlags.nodata not in flags

    def _check_integrity(self) -> None:
        """Cheap whole-file checks: the last block decodes and some pixel is valid.

        A truncated tiled GeoTIFF opens fine and only fails when a missing block is read; the last block in file order
        is the first casualty. The decimated read touches blocks across the whole scene at a fraction of the cost of a
        full read; only when it finds no valid pixel is the scene scanned block by block before it is declared empty.
        """
        height, width = self.shape
        block_h, block_w = self._dataset.block_shapes[self.bands[0] - 1]
        last_block = Window(
            (width - 1) // block_w * block_w,
            (height - 1) // block_h * block_h,
            width - (width - 1) // block_w * block_w,
            height - (height - 1) // block_h * block_h,
        )
        with _data_errors(self.path, f"reading the last block of bands {list(self.bands)}"):
            self._dataset.read(list(self.bands), window=last_block)
        out_shape = _decimated_shape(height, width)
        with _data_errors(self.path, f"a decimated read of bands {list(self.bands)}"):
            sample = self._dataset.read(list(self.bands), out_shape=(len(self.bands), *out_shape))
        if self._calibrate(sample, None)[1].any():
            return
        for _, window in self._dataset.block_windows(self.bands[0]):
            if self.read_db(window)[1].any():
                return
        raise SarLulcDataError(
            f"scene {self.path} has no valid pixel in bands {list(self.bands)} (all nodata={self._nodata}, "
            "non-finite or, for DN/linear input, non-positive)"
        )

    # -- metadata ------------------------------------------------------------------------------------------------
    @property
    def calibration_factor_source(self) -> str:
        """Where :attr:`calibration_factor` came from: ``"argument"`` (given to :func:`open_scene`), ``"tag"`` (the
        scene's ``SARLULC_CALIBRATION_FACTOR``/``CALIBRATION_FACTOR`` tag) or ``"default"`` (-83.0 dB), so that a
        caller with a fallback of its own (a checkpoint's processor) can rank them: argument > scene tag > processor.
        """
        return self._calibration_factor_source

    @property
    def crs(self) -> CRS:
        return self._dataset.crs

    @property
    def transform(self) -> Affine:
        return self._dataset.transform

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` in pixels."""
        return self._dataset.height, self._dataset.width

    @property
    def height(self) -> int:
        return self._dataset.height

    @property
    def width(self) -> int:
        return self._dataset.width

    @property
    def count(self) -> int:
        """Number of channels returned by reads (1 for HH, 2 for HH+HV)."""
        return len(self.bands)

    @property
    def band_names(self) -> tuple[str, ...]:
        return POLARIZATIONS[: self.count]

    @property
    def nodata(self) -> float | None:
        """Declared nodata value of the first band read (``None`` if undeclared)."""
        return self._nodata[0]

    @property
    def dtype(self) -> str:
        return self._dataset.dtypes[self.bands[0] - 1]

    @property
    def block_shapes(self) -> list[tuple[int, int]]:
        """Internal block ``(rows, cols)`` of each band read; windows aligned to these are cheapest."""
        return [self._dataset.block_shapes[b - 1] for b in self.bands]

    @property
    def bounds(self) -> rasterio.coords.BoundingBox:
        return self._dataset.bounds

    @property
    def res(self) -> tuple[float, float]:
        return self._dataset.res

    @property
    def profile(self) -> dict[str, Any]:
        """A copy of rasterio's profile (driver, dtype, size, CRS, transform, nodata, tiling, compression)."""
        return dict(self._dataset.profile)

    def tags(self) -> dict[str, str]:
        return self._dataset.tags()

    # -- reads ---------------------------------------------------------------------------------------------------
    def _calibrate(self, raw: np.ndarray, masks: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        db = np.empty(raw.shape, dtype=np.float32)
        valid = np.ones(raw.shape[1:], dtype=bool)
        for i, nodata in enumerate(self._nodata):
            db[i], band_valid = calibrate(raw[i], self.input_kind, self.calibration_factor, nodata)
            valid &= band_valid
        if masks is not None:
            valid &= masks.all(axis=0)
        db[:, ~valid] = 0.0
        return db, valid

    def read_raw(self, window: Window | None = None) -> np.ndarray:
        """The stored pixel values ``(C, h, w)`` of a window inside the raster (``None``: the whole raster)."""
        window = _window_or_full(window, *self.shape)
        with _data_errors(self.path, f"reading bands {list(self.bands)} at {window}"):
            return self._dataset.read(list(self.bands), window=window)

    def read_db(self, window: Window | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated sigma0 of a window.

        Args:
            window: a rasterio window in pixel coordinates; it may extend past the raster, in which case the outside
                pixels are invalid. ``None`` reads the whole raster (only do this for small scenes).

        Returns:
            ``(db, valid)``: float32 ``(C, h, w)`` sigma0 in dB with invalid pixels 0.0, and a bool ``(h, w)`` mask.
        """
        window = _window_or_full(window, *self.shape)
        out_h, out_w = int(window.height), int(window.width)
        db = np.zeros((self.count, out_h, out_w), dtype=np.float32)
        valid = np.zeros((out_h, out_w), dtype=bool)
        clipped = _clip_window(window, *self.shape)
        if clipped is None:
            return db, valid
        inside, (rows, cols) = clipped
        raw = self.read_raw(inside)
        masks = None
        if any(self._uses_mask_band):
            with _data_errors(self.path, f"reading the mask of bands {list(self.bands)} at {inside}"):
                masks = self._dataset.read_masks(list(self.bands), window=inside) > 0
        db[:, rows, cols], valid[rows, cols] = self._calibrate(raw, masks)
        return db, valid

    def window_transform(self, window: Window) -> Affine:
        """The affine transform of a window's top-left pixel corner (the window's own georeferencing)."""
        return self.transform @ Affine.translation(window.col_off, window.row_off)

    # -- lifetime ------------------------------------------------------------------------------------------------
    def close(self) -> None:
        self._dataset.close()

    @property
    def closed(self) -> bool:
        return self._dataset.closed

    def __enter__(self) -> Alos2Scene:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Alos2Scene({self.path!r}, shape={self.shape}, bands={self.band_names}, input_kind={self.input_kind!r}, "
            f"crs={self.crs.to_string() if self.crs else None})"
        )


def open_scene(
    path: str | Path,
    input_kind: str | None = None,
    calibration_factor: float | None = None,
    bands: Sequence[int] | None = None,
    check: bool = True,
) -> Alos2Scene:
    """Open and validate an ALOS-2 scene raster.

    Args:
        path: GeoTIFF (or any GDAL raster) with band 1 = HH and optional band 2 = HV.
        input_kind: ``"dn"``, ``"linear"`` or ``"db"``; ``None`` decides by the rule in the module docstring.
        calibration_factor: CF in dB for DN input; ``None`` uses the scene's tag, else -83.0.
        bands: 1-based bands to read as (HH,) or (HH, HV); needed when the file has more than two bands.
        check: run the cheap integrity and all-nodata checks (last block, decimated read).

    Raises:
        SarLulcDataError: the file is missing, not a raster, truncated, has the wrong band count or dtype, lacks a
            CRS or geotransform, or holds no valid pixel.
    """
    return Alos2Scene(path, input_kind=input_kind, calibration_factor=calibration_factor, bands=bands, check=check)


# ----------------------------------------------------------------------------------------------------------------------
# Label rasters
# ----------------------------------------------------------------------------------------------------------------------
class LabelRaster:
    """An open land-cover label raster of integer source codes (nodata 0 unless declared otherwise).

    Created by :func:`open_labels`. When opened with ``reproject=True`` against a scene, reads come from a
    nearest-neighbour warp onto the scene's grid, so every attribute (crs, transform, shape) is the scene's.
    """

    def __init__(self, path: str | Path, like: Alos2Scene | None = None, reproject: bool = False) -> None:
        self.path = str(path)
        self._source = _open_dataset(self.path, "label raster")
        self._dataset: rasterio.io.DatasetReader | WarpedVRT = self._source
        try:
            self._validate()
            self.fill_code = self._fill_code()
            self.reprojected = False
            if like is not None:
                if reproject and not _grids_match(like, self):
                    self._dataset = WarpedVRT(
                        self._source,
                        crs=like.crs,
                        transform=like.transform,
                        width=like.width,
                        height=like.height,
                        resampling=Resampling.nearest,
                        src_nodata=self.fill_code,
                        nodata=self.fill_code,
                    )
                    self.reprojected = True
                else:
                    check_alignment(like, self)
        except BaseException:
            self.close()
            raise

    def _validate(self) -> None:
        source = self._source
        if source.count != 1:
            raise SarLulcDataError(
                f"label raster {self.path} has {source.count} bands; expected 1 band of integer land-cover codes"
            )
        if source.dtypes[0] not in _LABEL_DTYPES:
            raise SarLulcDataError(
                f"label raster {self.path} band 1 has dtype {source.dtypes[0]}; expected integer codes "
                f"({', '.join(_LABEL_DTYPES)})"
            )
        _check_georeferencing(source, self.path, "label raster")

    def _fill_code(self) -> int:
        nodata = self._source.nodata
        if nodata is None:
            return 0
        if not float(nodata).is_integer():
            raise SarLulcDataError(f"label raster {self.path} declares a non-integer nodata value {nodata}")
        return int(nodata)

    @property
    def crs(self) -> CRS:
        return self._dataset.crs

    @property
    def transform(self) -> Affine:
        return self._dataset.transform

    @property
    def shape(self) -> tuple[int, int]:
        return self._dataset.height, self._dataset.width

    @property
    def height(self) -> int:
        return self._dataset.height

    @property
    def width(self) -> int:
        return self._dataset.width

    @property
    def dtype(self) -> str:
        return self._dataset.dtypes[0]

    @property
    def nodata(self) -> int:
        """The code of unlabeled pixels: the declared nodata value, else 0."""
        return self.fill_code

    def tags(self) -> dict[str, str]:
        return self._source.tags()

    def read_labels(self, window: Window | None = None) -> np.ndarray:
        """Source codes ``(h, w)`` of a window (``None``: whole raster); pixels outside the raster get :attr:`nodata`."""
        window = _window_or_full(window, *self.shape)
        out = np.full((int(window.height), int(window.width)), self.fill_code, dtype=np.dtype(self.dtype))
        clipped = _clip_window(window, *self.shape)
        if clipped is None:
            return out
        inside, (rows, cols) = clipped
        with _data_errors(self.path, f"reading label band 1 at {inside}"):
            out[rows, cols] = self._dataset.read(1, window=inside)
        return out

    def close(self) -> None:
        if self._dataset is not self._source:
            self._dataset.close()
        self._source.close()

    def __enter__(self) -> LabelRaster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LabelRaster({self.path!r}, shape={self.shape}, reprojected={self.reprojected})"


def open_labels(path: str | Path, like: Alos2Scene | None = None, reproject: bool = False) -> LabelRaster:
    """Open a label raster of source codes; with ``like``, make sure it is on that scene's grid.

    Args:
        path: single-band integer raster (uint8 or uint16 JAXA-style codes, nodata 0).
        like: a scene the labels must match. Without ``reproject``, a different CRS, transform or shape raises.
        reproject: warp the labels onto ``like``'s grid with nearest-neighbour resampling (windowed, via a
            ``WarpedVRT``) when they are not already aligned.
    """
    return LabelRaster(path, like=like, reproject=reproject)


def _transform_tolerance(transform: Affine) -> float:
    # A ten-thousandth of a pixel: far below any real misregistration, far above float round-off.
    return 1e-4 * min(abs(transform.a) or 1.0, abs(transform.e) or 1.0)


def _grids_match(scene: Alos2Scene, labels: LabelRaster) -> bool:
    tolerance = _transform_tolerance(scene.transform)
    same_transform = all(abs(x - y) <= tolerance for x, y in zip(scene.transform[:6], labels.transform[:6]))
    return scene.crs == labels.crs and scene.shape == labels.shape and same_transform


def check_alignment(scene: Alos2Scene, labels: LabelRaster) -> None:
    """Raise :class:`SarLulcDataError` unless the label raster has the scene's CRS, transform and shape."""
    problems = []
    if scene.crs != labels.crs:
        problems.append(f"CRS {labels.crs.to_string()} differs from the scene's {scene.crs.to_string()}")
    if scene.shape != labels.shape:
        problems.append(f"shape {labels.shape} differs from the scene's {scene.shape}")
    tolerance = _transform_tolerance(scene.transform)
    if any(abs(x - y) > tolerance for x, y in zip(scene.transform[:6], labels.transform[:6])):
        problems.append(
            f"transform {tuple(labels.transform[:6])} differs from the scene's {tuple(scene.transform[:6])}"
        )
    if problems:
        raise SarLulcDataError(
            f"label raster {labels.path} is not aligned with scene {scene.path}: {'; '.join(problems)}. "
            "Reproject the labels onto the scene grid (reproject_labels=True / open_labels(..., reproject=True))"
        )
