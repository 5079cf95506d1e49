"""The scene interface: what every input the package reads offers, whatever files it came from.

A *scene* is what :func:`sarlulc.data.open_scene` returns: a plain GeoTIFF (:class:`~sarlulc.data.alos2.Alos2Scene`),
a JAXA product made of several files on one grid (:class:`~sarlulc.data.products.ProductScene`: the 25 m mosaic,
L1.5/L2.1 GeoTIFF products, CEOS deliveries). All of them are :class:`SarScene` subclasses and offer the same
contract, so training, inference and ``sarlulc info`` never ask what kind of input they hold:

* **windowed calibrated reads**: :meth:`SarScene.read_db` returns ``(db, valid)``: float32 ``(C, h, w)`` backscatter
  in dB (0.0 where invalid) and a bool ``(h, w)`` mask that is True only where *every* band is valid (and, for
  products with a mask file, where the mask says the pixel is usable). Windows may reach past the raster; the outside
  is invalid. :meth:`SarScene.read_raw` gives the stored values of a window inside the raster;
* **georeferencing**: ``crs``, ``transform``, ``shape`` (``height``, ``width``), ``bounds``, ``res``,
  :meth:`SarScene.window_transform`, and :attr:`SarScene.gsd`, the ground sampling distance in metres;
* **encoding**: ``bands`` (1-based, of the underlying raster or of the product's polarizations), ``count``,
  ``input_kind``, ``calibration_factor`` and ``calibration_factor_source``, ``nodata``, ``dtype``, ``block_shapes``;
* **what the values are**: :attr:`SarScene.backscatter` (``"sigma0"``, ``"gamma0"`` or ``None`` when unknown),
  :attr:`SarScene.polarizations` (of the bands read, in order) and :attr:`SarScene.product` (a :class:`ProductInfo`);
* **handles**: :meth:`SarScene.reopen` returns a new, independent handle with the same settings and no checks (one
  per reader thread), :meth:`SarScene.provenance` the tags an output map records about its input, and every scene is
  a context manager.

A subclass provides the georeferencing properties, ``tags()``, ``close()``/``closed``, ``reopen()`` and three reads
of a window *inside* the raster: the raw values (:meth:`SarScene._read_inside`), an extra validity mask
(:meth:`SarScene._validity_inside`, e.g. from a mask file) and the decimated whole-scene read of the integrity check.
Calibration, window clipping, padding and the checks are written once, here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import rasterio
from rasterio.coords import BoundingBox
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rasterio.transform import Affine
from rasterio.windows import Window

from ..errors import SarLulcDataError
from ..models.image_processing_sar import BACKSCATTER_CONVENTIONS, calibrate_to_db, dn_to_db

__all__ = [
    "PRODUCT_TYPES",
    "PROVENANCE_PREFIX",
    "ProductInfo",
    "SarScene",
    "ScratchArrays",
    "clip_window",
    "data_errors",
    "decimated_shape",
    "ground_sampling_distance",
    "window_or_full",
]

PRODUCT_TYPES = ("mosaic", "l1.5", "l2.1", "l2.2", "ceos", "geotiff")
"""What :attr:`ProductInfo.product_type` can say: the 25 m yearly mosaic tile, a standard L1.5 or L2.1 GeoTIFF
product, ScanSAR L2.2, a CEOS delivery, or a GeoTIFF the package knows nothing more about."""

PROVENANCE_PREFIX = "SARLULC_SOURCE_"
"""Prefix of the tags :meth:`SarScene.provenance` returns (they describe the input of a map, not the map)."""

CHECK_READ_SIZE = 256  # longest side of the decimated read used for cheap whole-scene checks
CHECK_SCAN_PIXELS = 2**20  # pixels per row band of the forward scan of files read through an archive
SCRATCH_MAX_PIXELS = 2**22  # largest window whose temporaries a scene handle keeps for the next read (ScratchArrays)

# WGS84 ellipsoid: metres per degree of a geographic grid follow from its radii of curvature.
_WGS84_A = 6378137.0
_WGS84_E2 = 6.69437999014e-3


@dataclass(frozen=True)
class ProductInfo:
    """What a scene's files say about the product they belong to (``None`` where the files do not say).

    Attributes:
        product_type: one of :data:`PRODUCT_TYPES`.
        product_id: the product's own id: ``ALOS2146686640-170209-FBDR1.5GUA`` (standard products), ``N35E139_19``
            (a mosaic tile and its year), or the file name of a plain GeoTIFF.
        acquisition_date: the observation date of a single acquisition (standard products).
        acquisition_period: first and last acquisition date of a composite (mosaic tiles: from the ``_date_`` raster).
        sensor: ``"PALSAR-2"``, ``"PALSAR"`` or ``"JERS-1"``.
        orbit, frame: the ALOS-2 orbit (total revolution number) and scene frame number.
        mode: observation mode (``FBD``, ``HBS``, ``WBD``, ...).
        level: processing level (``"1.5"``, ``"2.1"``).
        look_side: ``"right"`` or ``"left"``.
        orbit_direction: ``"ascending"`` or ``"descending"``.
        tile: mosaic tile name (its upper-left corner, e.g. ``N35E139``).
        year: the mosaic's year.
        files: the files the scene reads (bands, then the mask), as GDAL paths.
        calibration_factor_source: where the scene's CF came from (see :attr:`SarScene.calibration_factor_source`).
    """

    product_type: str
    product_id: str | None = None
    acquisition_date: date | None = None
    acquisition_period: tuple[date, date] | None = None
    sensor: str | None = None
    orbit: int | None = None
    frame: int | None = None
    mode: str | None = None
    level: str | None = None
    look_side: str | None = None
    orbit_direction: str | None = None
    tile: str | None = None
    year: int | None = None
    files: tuple[str, ...] = field(default_factory=tuple)
    calibration_factor_source: str = "default"

    def __post_init__(self) -> None:
        if self.product_type not in PRODUCT_TYPES:
            raise ValueError(f"product_type must be one of {PRODUCT_TYPES}, got {self.product_type!r}")

    def describe_date(self) -> str | None:
        """The acquisition date (``2017-02-09``) or period (``2019-01-05/2019-12-20``) as text, or ``None``."""
        if self.acquisition_date is not None:
            return self.acquisition_date.isoformat()
        if self.acquisition_period is not None:
            first, last = self.acquisition_period
            return first.isoformat() if first == last else f"{first.isoformat()}/{last.isoformat()}"
        return None


# ----------------------------------------------------------------------------------------------------------------------
# Window and error helpers shared by every reader
# ----------------------------------------------------------------------------------------------------------------------
@contextmanager
def data_errors(path: str, what: str) -> Iterator[None]:
    """Turn GDAL/rasterio failures into SarLulcDataError naming the file and what was being done."""
    try:
        yield
    except SarLulcDataError:
        raise
    except RasterioError as err:
        detail = str(err.__cause__ or err)
        raise SarLulcDataError(f"{path}: {what} failed; the file is truncated or corrupt ({detail})") from err


def window_or_full(window: Window | None, height: int, width: int) -> Window:
    return Window(0, 0, width, height) if window is None else window


def clip_window(window: Window, height: int, width: int) -> tuple[Window, tuple[slice, slice]] | None:
    """Intersect a (possibly out-of-bounds) integer window with the raster; return the part inside and where it goes."""
    row0, col0 = int(window.row_off), int(window.col_off)
    row1, col1 = row0 + int(window.height), col0 + int(window.width)
    r0, c0, r1, c1 = max(row0, 0), max(col0, 0), min(row1, height), min(col1, width)
    if r0 >= r1 or c0 >= c1:
        return None
    inside = Window(c0, r0, c1 - c0, r1 - r0)
    return inside, (slice(r0 - row0, r1 - row0), slice(c0 - col0, c1 - col0))


def decimated_shape(height: int, width: int, size: int = CHECK_READ_SIZE) -> tuple[int, int]:
    """The shape of a decimated read whose longest side is at most ``size``."""
    scale = max(height, width) / size
    if scale <= 1:
        return height, width
    return max(1, round(height / scale)), max(1, round(width / scale))


def ground_sampling_distance(crs: CRS, transform: Affine, shape: tuple[int, int]) -> tuple[float, float]:
    """Pixel spacing ``(across columns, across rows)`` in metres of a grid.

    Projected CRSs: the transform's pixel size times the CRS's linear unit. Geographic CRSs: degrees turned into
    metres at the grid's centre with the WGS84 radii of curvature (meridian for rows, prime vertical times the cosine
    of the latitude for columns), so a 1/4500 degree mosaic pixel at 35 N is about 20.3 m x 24.7 m.
    """
    col_step = math.hypot(transform.a, transform.d)
    row_step = math.hypot(transform.b, transform.e)
    if crs is None:
        raise ValueError("a grid without a CRS has no ground sampling distance")
    if crs.is_geographic:
        height, width = shape
        _, latitude = transform @ (width / 2.0, height / 2.0)
        phi = math.radians(max(-90.0, min(90.0, latitude)))
        w = 1.0 - _WGS84_E2 * math.sin(phi) ** 2
        meridian = _WGS84_A * (1.0 - _WGS84_E2) / w**1.5
        prime_vertical = _WGS84_A / math.sqrt(w)
        radians_per_unit = math.radians(1.0)
        return (
            col_step * radians_per_unit * prime_vertical * math.cos(phi),
            row_step * radians_per_unit * meridian,
        )
    factor = crs.linear_units_factor[1]
    return col_step * factor, row_step * factor


class ScratchArrays:
    """Arrays one scene handle reuses from read to read for a window's temporaries (raw DNs, mask codes).

    Why: freeing a window's few megabytes of temporaries lets the C library hand that memory back to the system, and
    the next window then pays a page fault for every 4 KB it touches. Reading the extracted files of a 4500 x 4500
    mosaic tile window by window (memory-mapped, 512 x 512 windows, faults counted with ``getrusage``) cost about 240
    page faults per window and a third of the read's time; with the temporaries reused, about 10. What a read
    returns is never one of these arrays. A scene handle is used by one thread at a time (GDAL handles must not be shared), so neither are they.
    Reads larger than :data:`SCRATCH_MAX_PIXELS` (a whole scene at once) get fresh arrays, so that a handle never
    keeps more than a few windows' worth of memory.
    """

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, int], dtype: Any) -> np.ndarray:
        """An uninitialized ``shape`` array of ``dtype`` under ``name``; its contents change at the next ``get``."""
        size = shape[0] * shape[1]
        if size > SCRATCH_MAX_PIXELS:
            return np.empty(shape, dtype=dtype)
        array = self._arrays.get(name)
        if array is None or array.size < size or array.dtype != np.dtype(dtype):
            array = self._arrays[name] = np.empty(size, dtype=dtype)
        return array[:size].reshape(shape)


# ----------------------------------------------------------------------------------------------------------------------
# The base class
# ----------------------------------------------------------------------------------------------------------------------
class SarScene:
    """The common interface and machinery of every scene (see the module docstring for the contract).

    Subclasses set, in their constructor: ``path``, ``bands``, ``input_kind``, ``calibration_factor``,
    ``_calibration_factor_source``, ``_nodata`` (one value per band read), ``polarizations``, ``backscatter`` and
    ``product``; and implement the abstract members below.
    """

    path: str
    bands: tuple[int, ...]
    input_kind: str
    calibration_factor: float
    polarizations: tuple[str, ...]
    backscatter: str | None
    product: ProductInfo
    _calibration_factor_source: str
    _nodata: list[float | None]

    # -- what a subclass provides ----------------------------------------------------------------------------------
    @property
    def crs(self) -> CRS:
        raise NotImplementedError

    @property
    def transform(self) -> Affine:
        raise NotImplementedError

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` in pixels."""
        raise NotImplementedError

    @property
    def dtype(self) -> str:
        raise NotImplementedError

    @property
    def block_shapes(self) -> list[tuple[int, int]]:
        """Internal block ``(rows, cols)`` of each band read; windows aligned to these are cheapest."""
        raise NotImplementedError

    @property
    def closed(self) -> bool:
        raise NotImplementedError

    def tags(self) -> dict[str, str]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def reopen(self) -> SarScene:
        """A new, independent handle on the same files with the same settings (bands, input kind, CF, mask rule),
        without the integrity checks already done: for reader threads, which each need their own GDAL handles."""
        raise NotImplementedError

    def _read_inside(self, window: Window) -> np.ndarray:
        """The stored values ``(C, h, w)`` of a window inside the raster."""
        raise NotImplementedError

    def _read_bands_inside(self, window: Window) -> np.ndarray | list[np.ndarray]:
        """The same values as :meth:`_read_inside`, as ``(C, h, w)`` or as a list of ``(h, w)`` bands: what
        :meth:`read_db` calibrates, so that a reader with one file per band need not stack them first. They may be
        arrays of the handle's :class:`ScratchArrays`, which the next read overwrites: only :meth:`read_db` calls this.
        """
        return self._read_inside(window)

    def _validity_inside(self, window: Window) -> np.ndarray | None:
        """Validity ``(h, w)`` beyond the values themselves (GDAL mask bands, a product's mask file), or ``None``.
        It may be an array of the handle's :class:`ScratchArrays`, which the next read overwrites: :meth:`_calibrate`
        only reads it."""
        raise NotImplementedError

    def _read_decimated(self, out_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
        """A decimated read of the whole scene: raw values ``(C, *out_shape)`` and the extra validity (or None)."""
        raise NotImplementedError

    def _read_last_blocks(self) -> None:
        """Read the last block of every file in file order (a truncated file fails there first)."""
        raise NotImplementedError

    def _scan_windows(self) -> Iterable[Window]:
        """The windows of a full block-by-block scan (the last resort of the all-nodata check)."""
        raise NotImplementedError

    def _reads_through_a_stream(self) -> bool:
        """Whether the files are read through a compressed archive (``/vsitar/`` of a ``.tar.gz``, ``/vsizip/``),
        where going back to a file's start means decompressing it again (see :meth:`_check_integrity`)."""
        return False

    def _row_bands(self) -> Iterator[Window]:
        """Full-width windows of about :data:`CHECK_SCAN_PIXELS` pixels, top to bottom: a forward scan."""
        height, width = self.shape
        rows = max(1, CHECK_SCAN_PIXELS // width)
        return (Window(0, top, width, min(rows, height - top)) for top in range(0, height, rows))

    # -- metadata ----------------------------------------------------------------------------------------------------
    @property
    def calibration_factor_source(self) -> str:
        """Where :attr:`calibration_factor` came from: ``"argument"`` (given to :func:`open_scene`), ``"tag"`` (the
        raster's ``SARLULC_CALIBRATION_FACTOR``/``CALIBRATION_FACTOR`` tag), ``"metadata"`` (a product's own
        metadata files) or ``"default"`` (the sensor's published CF: -83.0 dB for PALSAR/PALSAR-2), so that a caller
        with a fallback of its own (a checkpoint's processor) can rank them."""
        return self._calibration_factor_source

    @property
    def height(self) -> int:
        return self.shape[0]

    @property
    def width(self) -> int:
        return self.shape[1]

    @property
    def count(self) -> int:
        """Number of channels returned by reads."""
        return len(self.bands)

    @property
    def band_names(self) -> tuple[str, ...]:
        """The polarization of every channel read, in order (the same as :attr:`polarizations`)."""
        return self.polarizations

    @property
    def nodata(self) -> float | None:
        """Declared (or, for JAXA products, documented) nodata value of the first band read."""
        return self._nodata[0]

    @property
    def bounds(self) -> BoundingBox:
        return BoundingBox(*rasterio.transform.array_bounds(self.height, self.width, self.transform)[:4])

    @property
    def res(self) -> tuple[float, float]:
        transform = self.transform
        return math.hypot(transform.a, transform.d), math.hypot(transform.b, transform.e)

    @property
    def pixel_size_m(self) -> tuple[float, float]:
        """Pixel spacing in metres ``(across columns, across rows)`` (:func:`ground_sampling_distance`)."""
        return ground_sampling_distance(self.crs, self.transform, self.shape)

    @property
    def gsd(self) -> float:
        """Ground sampling distance in metres: the side of a square pixel of the same ground area,
        ``sqrt(dx * dy)`` of :attr:`pixel_size_m` (10.0 for a 10 m UTM grid; about 22.4 for a 25 m mosaic tile at
        35 N, whose pixels are 1/4500 degree on each side)."""
        dx, dy = self.pixel_size_m
        return math.sqrt(dx * dy)

    def window_transform(self, window: Window) -> Affine:
        """The affine transform of a window's top-left pixel corner (the window's own georeferencing)."""
        return self.transform @ Affine.translation(window.col_off, window.row_off)

    def provenance(self) -> dict[str, str]:
        """Tags that describe this input, for the maps made from it (keys start with :data:`PROVENANCE_PREFIX`):
        product type and id(s), backscatter convention, polarizations, calibration factor and its source,
        acquisition date (or period) and ground sampling distance. Unknown values are left out."""
        product = self.product
        values = {
            "PRODUCT_TYPE": product.product_type,
            "PRODUCT_ID": product.product_id,
            "BACKSCATTER": self.backscatter,
            "POLARIZATIONS": ",".join(self.polarizations),
            "INPUT_KIND": self.input_kind,
            "CALIBRATION_FACTOR": repr(float(self.calibration_factor)) if self.input_kind == "dn" else None,
            "CALIBRATION_FACTOR_FROM": self.calibration_factor_source if self.input_kind == "dn" else None,
            "ACQUISITION_DATE": product.describe_date(),
            "SENSOR": product.sensor,
            "GSD_M": f"{self.gsd:.2f}",
        }
        return {f"{PROVENANCE_PREFIX}{key}": value for key, value in values.items() if value}

    # -- reads -----------------------------------------------------------------------------------------------------
    def _calibrate(
        self, raw: np.ndarray | list[np.ndarray], extra_valid: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(db, valid)`` of raw values ``(C, h, w)`` (or a list of ``(h, w)`` bands, see :meth:`_read_bands_inside`):
        every band calibrated, valid where all bands and ``extra_valid`` are, 0.0 elsewhere in every band."""
        if self.input_kind == "dn" and raw[0].dtype in (np.uint8, np.uint16):
            # JAXA's DNs: the validity of all bands first, then one float32 pass per band that leaves the invalid
            # pixels at 0.0 (dn_to_db), instead of a calibration per band and a zeroing pass afterwards. The validity
            # is built in place (a DN is true where it is not 0): the returned mask is the one array allocated.
            valid = np.not_equal(raw[0], 0)
            if extra_valid is not None:
                np.logical_and(valid, extra_valid, out=valid)
            for i, (band, nodata) in enumerate(zip(raw, self._nodata)):
                if i:
                    np.logical_and(valid, band, out=valid)
                if nodata is not None and not math.isnan(nodata) and nodata != 0:
                    valid &= band != nodata
            return dn_to_db(raw, valid, float(self.calibration_factor)), valid
        raw = np.asarray(raw)
        db = np.empty(raw.shape, dtype=np.float32)
        valid = np.ones(raw.shape[1:], dtype=bool) if extra_valid is None else extra_valid.copy()
        for i, nodata in enumerate(self._nodata):
            db[i], band_valid = calibrate_to_db(raw[i], self.input_kind, self.calibration_factor, nodata)
            valid &= band_valid
        # 0.0 wherever a pixel is invalid: multiplying by the mask is ten times faster than a masked assignment, and
        # adding +0.0 turns the -0.0 of negative values into +0.0 (the values are finite: calibration zeroes the rest).
        np.multiply(db, valid, out=db)
        np.add(db, np.float32(0.0), out=db)
        return db, valid

    def read_raw(self, window: Window | None = None) -> np.ndarray:
        """The stored pixel values ``(C, h, w)`` of a window inside the raster (``None``: the whole raster)."""
        return self._read_inside(window_or_full(window, *self.shape))

    def read_db(self, window: Window | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated backscatter of a window.

        Args:
            window: a rasterio window in pixel coordinates; it may extend past the raster, in which case the outside
                pixels are invalid. ``None`` reads the whole raster (only do this for small scenes).

        Returns:
            ``(db, valid)``: float32 ``(C, h, w)`` backscatter in dB (of :attr:`backscatter`) with invalid pixels 0.0,
            and a bool ``(h, w)`` mask.
        """
        window = window_or_full(window, *self.shape)
        out_h, out_w = int(window.height), int(window.width)
        clipped = clip_window(window, *self.shape)
        if clipped is not None and clipped[0].height == out_h and clipped[0].width == out_w:
            return self._calibrate(self._read_bands_inside(window), self._validity_inside(window))  # no padding
        db = np.zeros((self.count, out_h, out_w), dtype=np.float32)
        valid = np.zeros((out_h, out_w), dtype=bool)
        if clipped is None:
            return db, valid
        inside, (rows, cols) = clipped
        raw = self._read_bands_inside(inside)
        db[:, rows, cols], valid[rows, cols] = self._calibrate(raw, self._validity_inside(inside))
        return db, valid

    def valid_fraction(self, size: int = CHECK_READ_SIZE) -> float:
        """The share of valid pixels, from a decimated read of the whole scene (longest side ``size`` px)."""
        raw, extra_valid = self._read_decimated(decimated_shape(*self.shape, size))
        return float(self._calibrate(raw, extra_valid)[1].mean())

    def _check_integrity(self) -> None:
        """Cheap whole-scene checks: the last blocks decode and some pixel is valid.

        A truncated tiled GeoTIFF opens fine and only fails when a missing block is read; the last block in file order
        is the first casualty. The decimated read touches blocks across the whole scene at a fraction of the cost of a
        full read; only when it finds no valid pixel is the scene scanned block by block before it is declared empty.

        Files read through a compressed archive (:meth:`_reads_through_a_stream`) are instead scanned forward in bands
        of rows until a valid pixel turns up. There a decimated read costs a whole decompression pass over every file
        (reading the last blocks has already decompressed them all, so it checks nothing more), while the first rows
        sit where each file's stream starts: on a 4500 x 4500 mosaic tile in its ``.tar.gz``, opening and one read of
        every window went from 0.68x to 0.96x the throughput of opening the three files with rasterio and reading
        them the same way (``scripts/benchmark.py data``).
        """
        self._read_last_blocks()
        if self._reads_through_a_stream():
            for window in self._row_bands():
                if self.read_db(window)[1].any():
                    return
        else:
            raw, extra_valid = self._read_decimated(decimated_shape(*self.shape))
            if self._calibrate(raw, extra_valid)[1].any():
                return
            for window in self._scan_windows():
                if self.read_db(window)[1].any():
                    return
        raise SarLulcDataError(
            f"scene {self.path} has no valid pixel in bands {list(self.polarizations)} (all nodata={self._nodata}, "
            "masked, non-finite or, for DN/linear input, non-positive)"
        )

    def _check_backscatter(self) -> None:
        if self.backscatter is not None and self.backscatter not in BACKSCATTER_CONVENTIONS:
            raise ValueError(f"backscatter must be one of {BACKSCATTER_CONVENTIONS} or None, got {self.backscatter!r}")

    # -- lifetime --------------------------------------------------------------------------------------------------
    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        product = getattr(self, "_product", None) or self.product  # a product's lazily read metadata stays unread
        return (
            f"{type(self).__name__}({self.path!r}, product={product.product_type!r}, shape={self.shape}, "
            f"polarizations={self.polarizations}, input_kind={self.input_kind!r}, backscatter={self.backscatter!r}, "
            f"crs={self.crs.to_string() if self.crs else None})"
        )
