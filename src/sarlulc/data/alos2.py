"""Plain GeoTIFF scenes and label rasters: opening, validation, calibration to dB, windowed reads.

A plain *scene* is one georeferenced raster (usually a GeoTIFF) whose bands are polarizations (band 1 HH and an
optional band 2 HV unless its tags say otherwise). JAXA products made of several files (the 25 m mosaic, L1.5/L2.1
products, CEOS deliveries) are read by :mod:`sarlulc.data.products`; :func:`sarlulc.data.products.open_scene` recognizes both, and every
scene has the interface of :class:`sarlulc.data.scene.SarScene`. A plain scene's pixel values are one of three
*input kinds*:

``"dn"``
    ALOS-2 amplitude digital numbers (uint16, or float holding DNs). Calibrated with
    ``dB = 10 * log10(DN**2) + CF`` where ``CF`` is the calibration factor (-83.0 dB by default).
``"linear"``
    backscatter as linear power (float).
``"db"``
    backscatter in decibels (float).

How the kind is decided, first match wins (see :func:`resolve_input_kind`):

1. the ``input_kind`` argument;
2. the scene's metadata: the GeoTIFF tag ``SARLULC_INPUT_KIND`` (written by :mod:`sarlulc.data.synthetic`), or one of
   ``INPUT_KIND``, ``SAR_INPUT_KIND``, ``SIGMA0_UNIT``, ``UNITS`` in the dataset or band-1 tags, or band 1's unit type;
   values are matched case-insensitively against aliases such as ``"DN"``/``"amplitude"``, ``"linear"``/``"power"``,
   ``"dB"``/``"decibel"``;
3. the data type: an integer raster is ``"dn"``;
4. a float raster without metadata is judged from the median of a decimated read: negative -> ``"db"`` (the
   backscatter of land and water is below 0 dB), above 20 -> ``"dn"`` (no median surface has a linear backscatter of
   20, i.e. +13 dB), otherwise ``"linear"``. Tag your float products to avoid the guess.

The calibration factor follows the same order: argument, then the tag ``SARLULC_CALIBRATION_FACTOR`` (or
``CALIBRATION_FACTOR``), then -83.0 dB. What the values are comes from tags too: ``SARLULC_BACKSCATTER``
(``sigma0``/``gamma0``; unknown without it) and ``SARLULC_POLARIZATIONS`` (one polarization per band, e.g.
``HH,HV``); band descriptions or ``POLARIZATION`` band tags naming a polarization also count, and a raster that
declares nothing has band 1 = HH and band 2 = HV.

Invalid pixels are never turned into ``-inf`` or NaN: a pixel is invalid when it equals the band's declared nodata
value, is masked by GDAL's mask band, is not finite, or (for ``"dn"`` and ``"linear"``) is not positive, so that no
logarithm of zero is ever taken. Calibrated reads return dB as float32 ``(C, h, w)`` with invalid pixels set to 0.0,
plus a boolean ``(h, w)`` mask that is True only where *every* band is valid.

Label rasters (:class:`LabelRaster`) carry integer land-cover source codes with nodata 0; :func:`check_alignment`
verifies that they share the scene's grid, and :func:`open_labels` can warp them onto it with nearest-neighbour
resampling instead (a folder of JAXA HRLULC tiles is opened as one mosaic by :mod:`sarlulc.data.labels`).

Every problem with the data raises :class:`SarLulcDataError` naming the file, the band and what was expected.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import MaskFlags, Resampling
from rasterio.env import get_gdal_config
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
    SAR_POLARIZATIONS,
    SUPPORTED_RASTER_DTYPES,
    backscatter_from_tags,
    calibrate_to_db,
    calibration_factor_from_tags,
    check_raster_dtype,
    input_kind_from_metadata,
    input_kind_from_values,
    merge_raster_tags,
    normalize_input_kind,
    polarizations_from_tags,
)
from .scene import ProductInfo, SarScene, clip_window, data_errors, decimated_shape, window_or_full

__all__ = [
    "CALIBRATION_FACTOR_TAG",
    "DEFAULT_CALIBRATION_FACTOR",
    "INPUT_KINDS",
    "INPUT_KIND_TAG",
    "MAX_CHANNELS",
    "POLARIZATIONS",
    "Alos2Scene",
    "LabelRaster",
    "SarLulcDataError",
    "calibrate",
    "check_alignment",
    "db_to_dn",
    "dn_to_db",
    "linear_to_db",
    "resolve_input_kind",
    "select_polarizations",
    "warp_labels",
]

# INPUT_KIND_TAG and CALIBRATION_FACTOR_TAG (the GeoTIFF tags that declare a scene's input kind and a DN scene's
# calibration factor) are re-exported from the image processor, which defines them together with their parsing.

logger = logging.getLogger(__name__)

POLARIZATIONS = ("HH", "HV")
"""Meaning of band 1 and band 2 of a scene that declares nothing."""

MAX_CHANNELS = 2
"""A scene is read as 1 (HH) or 2 (HH, HV) channels, the inputs the models take."""

# Integer DN products are uint16; the wider/signed integer types appear after reprocessing. 8-bit rasters are images or
# label maps, and complex rasters are SLC products that need multilooking first, so both are rejected.
_SUPPORTED_DTYPES = SUPPORTED_RASTER_DTYPES
_GEOTIFF_SUFFIXES = (".tif", ".tiff")
_VIRTUAL_MEM_IO = "GTIFF_VIRTUAL_MEM_IO"
_GEOTIFF_DRIVERS = ("GTiff", "COG")
_LABEL_DTYPES = ("uint8", "uint16", "int16", "uint32", "int32")

LABEL_WARP_TOLERANCE = 1e-6
"""Error (in source pixels) allowed to GDAL's approximate transformer when labels are warped onto a scene's grid.
GDAL's default (1/8 pixel) picks a neighbour of the nearest label pixel for about 2 % of the pixels of a UTM scene
over a lat/lon label grid; at 1e-6 every pixel gets the label under its centre, for about 10 x the (small) cost."""


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
def is_local_path(path: str) -> bool:
    """Whether ``path`` names a file on the local filesystem (not a URL or a GDAL ``/vsi...`` path)."""
    return "://" not in path and not path.startswith("/vsi")


def open_dataset(
    path: str | Path, role: str, driver: str | None = None, *, memory_map: bool = False
) -> rasterio.io.DatasetReader:
    """Open a raster read-only, checking that it exists, is a raster and (for .tif names) really is a GeoTIFF.

    Args:
        path: a file path or a GDAL path (``/vsitar/...``).
        role: what the file is, for the messages (``"scene"``, ``"mask file"``, ...).
        driver: the GDAL driver to open it with (e.g. ``"SAR_CEOS"``); default: any.
        memory_map: read an uncompressed GeoTIFF memory-mapped (GDAL's ``GTIFF_VIRTUAL_MEM_IO=IF_ENOUGH_RAM``)
            unless that option is already set (in the environment or a ``rasterio.Env``); nothing changes for other
            files (compressed, inside archives). JAXA's extracted product files are read this way: their
            512 x 512 windows (HH, HV and mask of a mosaic tile) then take a quarter to a third of the time that
            reads through GDAL's block cache take (``scripts/benchmark.py data`` prints both). The pages read count
            in the process's resident size while the file is open (they are the page cache, which the system
            reclaims first); a file truncated *while* it is mapped stops the process (SIGBUS) instead of failing a
            read, so set ``GTIFF_VIRTUAL_MEM_IO=NO`` where files can change under a job.
    """
    path = str(path)
    if is_local_path(path) and not Path(path).exists():
        raise SarLulcDataError(f"{role} {path} does not exist")
    if is_local_path(path) and Path(path).is_dir():
        raise SarLulcDataError(f"{role} {path} is a directory, expected a raster file")
    options = {_VIRTUAL_MEM_IO: "IF_ENOUGH_RAM"} if memory_map and get_gdal_config(_VIRTUAL_MEM_IO) is None else {}
    try:
        with warnings.catch_warnings(), rasterio.Env(**options):  # GDAL reads the option when the file is opened
            # Missing georeferencing is reported below as a proper error.
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            dataset = rasterio.open(path, driver=driver)
    except RasterioError as err:
        raise SarLulcDataError(f"{role} {path} cannot be opened as a raster: {err.__cause__ or err}") from err
    if path.lower().endswith(_GEOTIFF_SUFFIXES) and dataset.driver not in _GEOTIFF_DRIVERS:
        driver = dataset.driver
        dataset.close()
        raise SarLulcDataError(f"{role} {path} is named like a GeoTIFF but GDAL reads it as a {driver} file")
    return dataset


def check_georeferencing(dataset: rasterio.io.DatasetReader, path: str, role: str) -> None:
    """Raise :class:`SarLulcDataError` unless the raster has a CRS and a geotransform (not GCPs alone)."""
    if dataset.crs is None:
        raise SarLulcDataError(f"{role} {path} has no CRS; expected a georeferenced raster (e.g. EPSG:4326 or UTM)")
    if dataset.transform == Affine.identity():
        if dataset.gcps[0]:
            raise SarLulcDataError(
                f"{role} {path} is georeferenced only by GCPs; expected a map-projected product with a geotransform "
                "(ALOS-2 L1.5/L2.1)"
            )
        raise SarLulcDataError(f"{role} {path} has no geotransform; expected a map-projected (georeferenced) raster")


def check_dtype(dataset: rasterio.io.DatasetReader, band: int, path: str, role: str = "scene") -> None:
    """Raise :class:`SarLulcDataError` unless the band holds real-valued backscatter (not bytes, not complex)."""
    try:
        check_raster_dtype(dataset.dtypes[band - 1], f"{role} {path} band {band}")
    except ValueError as err:
        raise SarLulcDataError(str(err)) from err


def dataset_tags(dataset: rasterio.io.DatasetReader, band: int) -> dict[str, str]:
    """The dataset's tags merged with band ``band``'s (dataset level wins), keys upper-cased."""
    return merge_raster_tags(dataset.tags(), dataset.tags(band))


def _kind_from_metadata(dataset: rasterio.io.DatasetReader, band: int) -> str | None:
    units = dataset.units[band - 1] if dataset.units else None
    try:
        return input_kind_from_metadata(dataset_tags(dataset, band), units)
    except ValueError as err:
        raise SarLulcDataError(f"scene {dataset.name}: {err}") from err


def resolve_input_kind(dataset: rasterio.io.DatasetReader, band: int = 1, input_kind: str | None = None) -> str:
    """Decide a scene's input kind by the rule of the module docstring (argument, metadata, dtype, data median)."""
    if input_kind is not None:
        return normalize_input_kind(input_kind)
    from_metadata = _kind_from_metadata(dataset, band)
    if from_metadata is not None:
        return from_metadata
    dtype = dataset.dtypes[band - 1]
    sample = None
    if np.dtype(dtype).kind not in "iu":
        sample = dataset.read(
            band, out_shape=decimated_shape(dataset.height, dataset.width), resampling=Resampling.nearest
        )
    return input_kind_from_values(dtype, sample, dataset.nodatavals[band - 1])


def has_mask_band(dataset: rasterio.io.DatasetReader, band: int) -> bool:
    """Whether a band's validity needs GDAL's mask band read (a nodata-derived mask is handled by value)."""
    flags = dataset.mask_flag_enums[band - 1]
    return MaskFlags.all_valid not in flags and MaskFlags.nodata not in flags


def select_polarizations(
    available: Sequence[str],
    bands: Sequence[int] | None,
    polarizations: Sequence[str] | None,
    where: str,
    default: Sequence[int] | None = None,
) -> tuple[int, ...]:
    """The 1-based positions in ``available`` to read, chosen by ``bands`` or by ``polarizations`` (not both).

    Args:
        available: the polarization of every band (or file) of the input, in order.
        bands: 1-based positions to read, in the order they become channels.
        polarizations: the polarizations to read, in channel order (``("HH",)``, ``("HH", "HV")``).
        where: the input, for the messages.
        default: the positions read when neither is given (default: all of them).

    Raises:
        ValueError: both are given and disagree, or the choice has no band or more than :data:`MAX_CHANNELS`.
        SarLulcDataError: a band or a polarization is not in the input (the message lists what is).
    """
    if polarizations is not None:
        wanted = tuple(str(p).upper() for p in polarizations)
        unknown = [p for p in wanted if p not in SAR_POLARIZATIONS]
        if unknown:
            raise ValueError(f"polarizations must be among {SAR_POLARIZATIONS}, got {list(polarizations)}")
        if not 1 <= len(wanted) <= MAX_CHANNELS or len(set(wanted)) != len(wanted):
            raise ValueError(f"polarizations must name 1 or {MAX_CHANNELS} distinct polarizations, got {wanted}")
        missing = [p for p in wanted if p not in available]
        if missing:
            raise SarLulcDataError(
                f"{where} has no {' or '.join(missing)} band: {'/'.join(missing)} requested but missing "
                f"(it has {', '.join(available) or 'no band'})"
            )
        chosen = tuple(list(available).index(p) + 1 for p in wanted)
        if bands is not None and tuple(int(b) for b in bands) != chosen:
            raise ValueError(f"bands={tuple(bands)} and polarizations={wanted} name different bands of {where}")
        return chosen
    if bands is None:
        chosen = tuple(default) if default is not None else tuple(range(1, len(available) + 1))
        if len(chosen) > MAX_CHANNELS:
            raise SarLulcDataError(
                f"{where} has {len(available)} bands ({', '.join(available)}); expected 1 (HH) or 2 (HH, HV). "
                "Pass bands=(...) or polarizations=(...) to choose which to read"
            )
        return chosen
    chosen = tuple(int(b) for b in bands)
    if not 1 <= len(chosen) <= MAX_CHANNELS:
        raise ValueError(f"bands must name 1 (HH) or 2 (HH, HV) bands, got {chosen}")
    for band in chosen:
        if not 1 <= band <= len(available):
            raise SarLulcDataError(f"{where} has no band {band}; it has bands 1..{len(available)}")
    return chosen


def _declared_polarizations(dataset: rasterio.io.DatasetReader, path: str) -> tuple[str, ...] | None:
    """The polarization of every band as the raster declares it (tag, else band descriptions/tags), or None."""
    try:
        tagged = polarizations_from_tags(dataset.tags())
    except ValueError as err:
        raise SarLulcDataError(f"scene {path}: {err}") from err
    if tagged is not None:
        if len(tagged) == dataset.count:
            return tagged
        # Tags copied from a one-band file into a stack (HH's tags on an HH + HV file) say less than the bands do:
        # the tag is set aside and the bands are read by position, as when nothing is declared.
        logger.warning(
            "scene %s: tag SARLULC_POLARIZATIONS lists %d polarization(s) (%s) for %d bands; reading the bands by "
            "position (band 1 HH, band 2 HV)",
            path,
            len(tagged),
            ",".join(tagged),
            dataset.count,
        )
        return None
    per_band = []
    for band in range(1, dataset.count + 1):
        names = [dataset.descriptions[band - 1], dataset.tags(band).get("POLARIZATION")]
        named = [str(n).strip().upper() for n in names if n and str(n).strip().upper() in SAR_POLARIZATIONS]
        per_band.append(named[0] if named else None)
    if all(per_band) and len(set(per_band)) == len(per_band):
        return tuple(per_band)
    return None


# ----------------------------------------------------------------------------------------------------------------------
# Scenes
# ----------------------------------------------------------------------------------------------------------------------
class Alos2Scene(SarScene):
    """An open plain raster scene: georeferencing, metadata and calibrated windowed reads.

    Use :func:`sarlulc.data.open_scene` to create one, preferably as a context manager::

        with open_scene("scene.tif") as scene:
            db, valid = scene.read_db(Window(0, 0, 256, 256))   # (C, 256, 256) float32 dB, (256, 256) bool

    Attributes:
        path: the file as given.
        bands: 1-based band indexes read, in order (HH first, then HV if present).
        polarizations: the polarization of every band read.
        input_kind: ``"dn"``, ``"linear"`` or ``"db"``.
        calibration_factor: CF in dB used for ``"dn"`` scenes.
        backscatter: ``"sigma0"``/``"gamma0"`` as the ``SARLULC_BACKSCATTER`` tag says, else ``None``.
        product: a :class:`~sarlulc.data.scene.ProductInfo` of type ``"geotiff"``.
    """

    def __init__(
        self,
        path: str | Path,
        input_kind: str | None = None,
        calibration_factor: float | None = None,
        bands: Sequence[int] | None = None,
        check: bool = True,
        polarizations: Sequence[str] | None = None,
    ) -> None:
        self.path = str(path)
        self._dataset = open_dataset(self.path, "scene")
        try:
            declared = _declared_polarizations(self._dataset, self.path)
            file_polarizations = declared or POLARIZATIONS[: self._dataset.count]
            if polarizations is not None and declared is None and self._dataset.count > len(POLARIZATIONS):
                raise SarLulcDataError(
                    f"scene {self.path} has {self._dataset.count} bands and does not say which polarization each "
                    "holds (tag SARLULC_POLARIZATIONS or band descriptions); pass bands=(...) instead"
                )
            known = declared is not None or self._dataset.count <= len(POLARIZATIONS)
            available = file_polarizations if known else [f"band {i}" for i in range(1, self._dataset.count + 1)]
            self.bands = select_polarizations(available, bands, polarizations, f"scene {self.path}")
            # Undeclared bands are named by position in the order they are read: the first channel is HH.
            self.polarizations = (
                tuple(declared[b - 1] for b in self.bands) if declared else POLARIZATIONS[: len(self.bands)]
            )
            for band in self.bands:
                check_dtype(self._dataset, band, self.path)
            check_georeferencing(self._dataset, self.path, "scene")
            with data_errors(self.path, "reading the scene metadata"):
                self.input_kind = resolve_input_kind(self._dataset, self.bands[0], input_kind)
            self.calibration_factor, self._calibration_factor_source = self._resolve_calibration_factor(
                calibration_factor
            )
            try:
                self.backscatter = backscatter_from_tags(dataset_tags(self._dataset, self.bands[0]))
            except ValueError as err:
                raise SarLulcDataError(f"scene {self.path}: {err}") from err
            self._nodata = [self._dataset.nodatavals[b - 1] for b in self.bands]
            self._uses_mask_band = [has_mask_band(self._dataset, b) for b in self.bands]
            self.product = ProductInfo(
                product_type="geotiff",
                product_id=Path(self.path).name,
                files=(self.path,),
                calibration_factor_source=self._calibration_factor_source,
            )
            if check:
                self._check_integrity()
        except BaseException:
            self._dataset.close()
            raise

    def _resolve_calibration_factor(self, calibration_factor: float | None) -> tuple[float, str]:
        """The factor and where it came from: the argument, else the scene's tag, else the default."""
        if calibration_factor is not None:
            return float(calibration_factor), "argument"
        try:
            tagged = calibration_factor_from_tags(dataset_tags(self._dataset, self.bands[0]))
        except ValueError as err:
            raise SarLulcDataError(f"scene {self.path}: {err}") from err
        if tagged is not None:
            return tagged, "tag"
        return DEFAULT_CALIBRATION_FACTOR, "default"

    def reopen(self) -> Alos2Scene:
        scene = Alos2Scene(
            self.path,
            input_kind=self.input_kind,
            calibration_factor=self.calibration_factor,
            bands=self.bands,
            check=False,
        )
        # The same settings, including where they came from (the argument above is only how they are passed on).
        scene._calibration_factor_source = self._calibration_factor_source
        scene.polarizations = self.polarizations
        scene.product = self.product
        return scene

    # -- georeferencing and metadata -------------------------------------------------------------------------------
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
    def dtype(self) -> str:
        return self._dataset.dtypes[self.bands[0] - 1]

    @property
    def block_shapes(self) -> list[tuple[int, int]]:
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

    # -- reads -----------------------------------------------------------------------------------------------------
    def _read_inside(self, window: Window) -> np.ndarray:
        with data_errors(self.path, f"reading bands {list(self.bands)} at {window}"):
            return self._dataset.read(list(self.bands), window=window)

    def _validity_inside(self, window: Window) -> np.ndarray | None:
        if not any(self._uses_mask_band):
            return None
        with data_errors(self.path, f"reading the mask of bands {list(self.bands)} at {window}"):
            return (self._dataset.read_masks(list(self.bands), window=window) > 0).all(axis=0)

    def _read_decimated(self, out_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
        with data_errors(self.path, f"a decimated read of bands {list(self.bands)}"):
            raw = self._dataset.read(list(self.bands), out_shape=(len(self.bands), *out_shape))
        return raw, None

    def _read_last_blocks(self) -> None:
        height, width = self.shape
        block_h, block_w = self._dataset.block_shapes[self.bands[0] - 1]
        last_block = Window(
            (width - 1) // block_w * block_w,
            (height - 1) // block_h * block_h,
            width - (width - 1) // block_w * block_w,
            height - (height - 1) // block_h * block_h,
        )
        with data_errors(self.path, f"reading the last block of bands {list(self.bands)}"):
            self._dataset.read(list(self.bands), window=last_block)

    def _scan_windows(self) -> Iterable[Window]:
        return (window for _, window in self._dataset.block_windows(self.bands[0]))

    # -- lifetime --------------------------------------------------------------------------------------------------
    def close(self) -> None:
        self._dataset.close()

    @property
    def closed(self) -> bool:
        return self._dataset.closed


# ----------------------------------------------------------------------------------------------------------------------
# Label rasters
# ----------------------------------------------------------------------------------------------------------------------
def warp_labels(source: rasterio.io.DatasetReader, like: SarScene, fill_code: int) -> WarpedVRT:
    """Labels of ``source`` seen on ``like``'s grid: nearest neighbour (a code is never averaged), read window by
    window through a ``WarpedVRT``; ``fill_code`` marks what the source does not cover."""
    return WarpedVRT(
        source,
        crs=like.crs,
        transform=like.transform,
        width=like.width,
        height=like.height,
        resampling=Resampling.nearest,
        src_nodata=fill_code,
        nodata=fill_code,
        tolerance=LABEL_WARP_TOLERANCE,  # the label under every target pixel's centre
    )


class LabelRaster:
    """An open land-cover label raster of integer source codes (nodata 0 unless declared otherwise).

    Created by :func:`open_labels`. When opened with ``reproject=True`` against a scene, reads come from a
    nearest-neighbour warp onto the scene's grid, so every attribute (crs, transform, shape) is the scene's.
    """

    def __init__(self, path: str | Path, like: SarScene | None = None, reproject: bool = False) -> None:
        self.path = str(path)
        self._source = open_dataset(self.path, "label raster")
        self._dataset: rasterio.io.DatasetReader | WarpedVRT = self._source
        try:
            self._validate()
            self.fill_code = self._fill_code()
            self.reprojected = False
            if like is not None:
                if reproject and not _grids_match(like, self):
                    self._dataset = warp_labels(self._source, like, self.fill_code)
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
        check_georeferencing(source, self.path, "label raster")

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
        window = window_or_full(window, *self.shape)
        out = np.full((int(window.height), int(window.width)), self.fill_code, dtype=np.dtype(self.dtype))
        clipped = clip_window(window, *self.shape)
        if clipped is None:
            return out
        inside, (rows, cols) = clipped
        with data_errors(self.path, f"reading label band 1 at {inside}"):
            out[rows, cols] = self._dataset.read(1, window=inside)
        return out

    def read_decimated(self, size: int = 256) -> np.ndarray:
        """The codes of the whole raster, decimated by nearest neighbour to a longest side of at most ``size`` px."""
        with data_errors(self.path, "a decimated read of the labels"):
            return self._dataset.read(1, out_shape=decimated_shape(*self.shape, size), resampling=Resampling.nearest)

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


def _transform_tolerance(transform: Affine) -> float:
    # A ten-thousandth of a pixel: far below any real misregistration, far above float round-off.
    return 1e-4 * min(abs(transform.a) or 1.0, abs(transform.e) or 1.0)


def _grids_match(scene: SarScene, labels: LabelRaster) -> bool:
    tolerance = _transform_tolerance(scene.transform)
    same_transform = all(abs(x - y) <= tolerance for x, y in zip(scene.transform[:6], labels.transform[:6]))
    return scene.crs == labels.crs and scene.shape == labels.shape and same_transform


def check_alignment(scene: SarScene, labels: LabelRaster) -> None:
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
