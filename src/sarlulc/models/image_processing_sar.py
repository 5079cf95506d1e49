"""SarImageProcessor: ALOS-2 PALSAR-2 backscatter -> normalized model input, and logits -> class-id maps.

This file is also remote code that every sarlulc checkpoint carries, so its top-level imports are numpy, torch and
transformers only; it never needs rasterio. It is the single home of the SAR input conventions of the package: the
calibration, the default clip range and standardization, and the metadata tags that declare a raster's encoding
(:data:`INPUT_KIND_TAG_KEYS`, :func:`input_kind_from_metadata`, :func:`calibration_factor_from_tags`,
:func:`backscatter_from_tags`, :func:`polarizations_from_tags`).

Preprocessing, in order (the numbers are the defaults; a checkpoint's ``preprocessor_config.json`` holds its own):

1. **Calibrate** each band to sigma0 in dB according to the input kind:

   * ``"dn"``: ALOS-2 L1.5/L2.1 amplitude digital numbers, ``sigma0_dB = 10*log10(DN**2) + CF`` with the calibration
     factor ``CF = -83.0`` dB;
   * ``"linear"``: sigma0 as linear power, ``sigma0_dB = 10*log10(P)``;
   * ``"db"``: sigma0 already in dB.

   A pixel is *invalid* when its value is not finite, equals the ``nodata`` value, is not positive (``"dn"`` and
   ``"linear"`` only: the logarithm of zero is never taken), or is False in the caller's valid mask. A pixel invalid in
   any band is invalid in all bands.
2. **Clip** to ``clip_db`` (``[-35.0, 5.0]`` dB).
3. **Standardize** each band: ``(dB - image_mean[c]) / image_std[c]`` (mean and std in dB).
4. Set invalid pixels to ``0.0`` in every band (the band mean after standardization).
5. **Pad** at the bottom and right with invalid pixels, first to the largest height/width in the batch, then up to a
   multiple of ``pad_to_multiple_of`` (32, the encoder's total stride).

The outputs are ``pixel_values`` (B, C, H, W) float32, ``pixel_mask`` (B, H, W) int64 (1 = valid input pixel, 0 =
invalid or padding), when segmentation maps are given ``labels`` (B, H, W) int64 with ``ignore_index`` (255) on
invalid and padded pixels, and with ``return_backscatter_db=True`` ``backscatter_db`` (B, C, H, W) float32: the
clipped sigma0 in dB of step 2, 0.0 where invalid or padded (what SAR-W-MixMAE pretraining weights its loss with).

The calibration is the ALOS-2 PALSAR-2 one published by JAXA for L1.5/L2.1 amplitude products,
``sigma0_dB = 10*log10(DN**2) + CF``; the clip range and the standardization are this package's choices, recorded in
every checkpoint's ``preprocessor_config.json`` so that inference preprocesses exactly as training did.

The calibration functions (:func:`calibrate_to_db`, :func:`valid_value_mask`, :func:`normalize_input_kind`) are pure
numpy and are the single implementation used by the whole package; ``sarlulc.data.alos2`` delegates to them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import numpy as np
import torch
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

__all__ = [
    "BACKSCATTER_CONVENTIONS",
    "BACKSCATTER_TAG",
    "CALIBRATION_FACTOR_TAG",
    "CALIBRATION_FACTOR_TAG_KEYS",
    "DEFAULT_CALIBRATION_FACTOR",
    "DEFAULT_CLIP_DB",
    "DEFAULT_IMAGE_MEAN_DB",
    "DEFAULT_IMAGE_STD_DB",
    "INPUT_KINDS",
    "INPUT_KIND_ALIASES",
    "INPUT_KIND_TAG",
    "INPUT_KIND_TAG_KEYS",
    "MAX_RASTER_BYTES",
    "POLARIZATIONS_TAG",
    "SAR_POLARIZATIONS",
    "SUPPORTED_RASTER_DTYPES",
    "SarImageProcessor",
    "backscatter_from_tags",
    "calibrate_to_db",
    "calibration_factor_from_tags",
    "check_raster_bands",
    "check_raster_dtype",
    "check_raster_size",
    "default_nodata",
    "dn_to_db",
    "input_kind_from_metadata",
    "input_kind_from_values",
    "input_kind_or_none",
    "merge_raster_tags",
    "normalize_input_kind",
    "polarizations_from_tags",
    "training_data_fields",
    "valid_value_mask",
]

INPUT_KINDS = ("dn", "linear", "db")
"""The pixel encodings the processor understands (see the module docstring)."""

INPUT_KIND_ALIASES: dict[str, str] = {
    "dn": "dn",
    "amplitude": "dn",
    "dn_amplitude": "dn",
    "digital_number": "dn",
    "linear": "linear",
    "power": "linear",
    "linear_power": "linear",
    "sigma0": "linear",
    "sigma0_linear": "linear",
    "db": "db",
    "decibel": "db",
    "decibels": "db",
    "sigma0_db": "db",
}
"""Accepted spellings of the input kinds (matched after lower-casing and turning spaces/hyphens into underscores)."""

DEFAULT_CALIBRATION_FACTOR = -83.0
"""ALOS-2 PALSAR-2 L1.5/L2.1 calibration factor CF in dB (``sigma0_dB = 10*log10(DN**2) + CF``)."""

DEFAULT_CLIP_DB = (-35.0, 5.0)
"""Input clip range for sigma0 in dB: from calm water (about -30 dB in L-band HH) to the brightest built-up areas,
with margin; rarer values (noise floor, corner reflectors) carry no land-cover information and would only stretch the
standardization."""

DEFAULT_IMAGE_MEAN_DB = -12.0
"""Per-band mean (dB) of processors built without dataset statistics; training replaces it with the statistics of the
training tiles (:meth:`SarImageProcessor.from_band_statistics`)."""

DEFAULT_IMAGE_STD_DB = 6.0
"""Per-band standard deviation (dB) of processors built without dataset statistics."""

INPUT_KIND_TAG = "SARLULC_INPUT_KIND"
"""Raster metadata tag that declares the input kind; an unknown value is an error (it was written on purpose)."""

CALIBRATION_FACTOR_TAG = "SARLULC_CALIBRATION_FACTOR"
"""Raster metadata tag that declares a DN raster's calibration factor CF in dB."""

INPUT_KIND_TAG_KEYS = (INPUT_KIND_TAG, "INPUT_KIND", "SAR_INPUT_KIND", "SIGMA0_UNIT", "UNITS", "UNIT")
"""Tags that may declare the input kind, in the order they are consulted (see :func:`input_kind_from_metadata`)."""

CALIBRATION_FACTOR_TAG_KEYS = (CALIBRATION_FACTOR_TAG, "CALIBRATION_FACTOR")
"""Tags that may declare the calibration factor, in the order they are consulted."""

BACKSCATTER_TAG = "SARLULC_BACKSCATTER"
"""Raster metadata tag that declares which backscatter coefficient the calibrated values are (see
:data:`BACKSCATTER_CONVENTIONS`); an unknown value is an error."""

BACKSCATTER_CONVENTIONS = ("sigma0", "gamma0")
"""``"sigma0"``: sigma naught on the ellipsoid (ALOS-2 L1.5/L2.1); ``"gamma0"``: terrain-flattened gamma naught
(the 25 m yearly mosaic, ScanSAR L2.2). The same DN formula gives either, depending on the product."""

POLARIZATIONS_TAG = "SARLULC_POLARIZATIONS"
"""Raster metadata tag that lists the polarization of every band in order, e.g. ``"HH,HV"``."""

SAR_POLARIZATIONS = ("HH", "HV", "VH", "VV")
"""The polarizations a band can carry."""

DEFAULT_PAD_TO_MULTIPLE_OF = 32
DEFAULT_IGNORE_INDEX = 255


class _Unset:
    """Marks an argument the caller did not pass, where ``None`` is itself a meaningful value (``nodata=None``)."""

    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Any = _Unset()


# ----------------------------------------------------------------------------------------------------------------------
# Calibration (pure numpy)
# ----------------------------------------------------------------------------------------------------------------------
def input_kind_or_none(value: object) -> str | None:
    """The canonical input kind (``"dn"``, ``"linear"``, ``"db"``) a spelling such as ``"Amplitude"`` stands for, or
    ``None`` when it names no kind (useful for metadata tags that may hold anything)."""
    key = str(value).strip().lower().replace(" ", "_").replace("-", "_")
    return INPUT_KIND_ALIASES.get(key)


def normalize_input_kind(input_kind: str) -> str:
    """Canonical input kind of ``input_kind``; raises ``ValueError`` (naming the accepted kinds) if it is unknown."""
    kind = input_kind_or_none(input_kind)
    if kind is None:
        raise ValueError(
            f"unknown input kind {input_kind!r}: expected one of {INPUT_KINDS} (or an alias such as 'amplitude')"
        )
    return kind


def merge_raster_tags(dataset_tags: Mapping[str, str], band_tags: Mapping[str, str] | None = None) -> dict[str, str]:
    """One tag mapping for a raster band: keys upper-cased, dataset-level tags winning over the band's own.

    GeoTIFF writers put the same information at either level; the dataset level is the one sarlulc writes.
    """
    merged = {str(key).upper(): value for key, value in (band_tags or {}).items()}
    merged.update({str(key).upper(): value for key, value in dataset_tags.items()})
    return merged


def input_kind_from_metadata(tags: Mapping[str, str], units: str | None = None) -> str | None:
    """The input kind a raster's metadata declares, or ``None`` when it declares none.

    Args:
        tags: the raster's metadata tags (any key case; see :func:`merge_raster_tags` for dataset + band tags).
        units: the band's unit type (GDAL's ``units``), consulted after the tags.

    Returns:
        ``"dn"``, ``"linear"`` or ``"db"`` from :data:`INPUT_KIND_TAG`, else from the first of the other
        :data:`INPUT_KIND_TAG_KEYS` and then ``units`` whose value names a kind (``"dB"``, ``"amplitude"``, ...):
        generic keys such as ``UNITS`` may hold anything (``"m"``, ``"1"``), so only recognised values decide.

    Raises:
        ValueError: :data:`INPUT_KIND_TAG` holds a value that names no kind (the tag is written on purpose, so a
            wrong value is a mistake to report, not a hint to skip); the message names the tag and the value.
    """
    upper = {str(key).upper(): value for key, value in tags.items()}
    if INPUT_KIND_TAG in upper:
        declared = upper[INPUT_KIND_TAG]
        kind = input_kind_or_none(declared)
        if kind is None:
            raise ValueError(
                f"tag {INPUT_KIND_TAG}={declared!r} is not one of {INPUT_KINDS} (or an alias such as 'amplitude', "
                "'power', 'dB')"
            )
        return kind
    candidates = [upper[key] for key in INPUT_KIND_TAG_KEYS[1:] if key in upper]
    if units:
        candidates.append(units)
    return next((kind for kind in map(input_kind_or_none, candidates) if kind is not None), None)


def calibration_factor_from_tags(tags: Mapping[str, str]) -> float | None:
    """The calibration factor CF (dB) that a raster's tags declare (first of :data:`CALIBRATION_FACTOR_TAG_KEYS`),
    or ``None`` when they declare none.

    Raises:
        ValueError: the tag's value is not a finite number; the message names the tag and the value.
    """
    upper = {str(key).upper(): value for key, value in tags.items()}
    for key in CALIBRATION_FACTOR_TAG_KEYS:
        if key in upper:
            try:
                factor = float(upper[key])
            except (TypeError, ValueError):
                factor = math.nan
            if not math.isfinite(factor):
                raise ValueError(f"tag {key}={upper[key]!r} is not a number (the calibration factor in dB)")
            return factor
    return None


def backscatter_from_tags(tags: Mapping[str, str]) -> str | None:
    """The backscatter convention (``"sigma0"`` or ``"gamma0"``) that :data:`BACKSCATTER_TAG` declares, or ``None``.

    Raises:
        ValueError: the tag holds another value; the message names the tag and the value.
    """
    upper = {str(key).upper(): value for key, value in tags.items()}
    if BACKSCATTER_TAG not in upper:
        return None
    declared = str(upper[BACKSCATTER_TAG]).strip().lower().replace("_", "").replace("-", "")
    aliases = {"sigma0": "sigma0", "sigmanought": "sigma0", "gamma0": "gamma0", "gammanought": "gamma0"}
    if declared not in aliases:
        raise ValueError(f"tag {BACKSCATTER_TAG}={upper[BACKSCATTER_TAG]!r} is not one of {BACKSCATTER_CONVENTIONS}")
    return aliases[declared]


def polarizations_from_tags(tags: Mapping[str, str]) -> tuple[str, ...] | None:
    """The band polarizations that :data:`POLARIZATIONS_TAG` lists (``"HH,HV"``, ``"HH HV"``), or ``None``.

    Raises:
        ValueError: a listed polarization is not one of :data:`SAR_POLARIZATIONS`, or one is listed twice.
    """
    upper = {str(key).upper(): value for key, value in tags.items()}
    if POLARIZATIONS_TAG not in upper:
        return None
    listed = tuple(part.upper() for part in str(upper[POLARIZATIONS_TAG]).replace(",", " ").split())
    if not listed or any(p not in SAR_POLARIZATIONS for p in listed) or len(set(listed)) != len(listed):
        raise ValueError(
            f"tag {POLARIZATIONS_TAG}={upper[POLARIZATIONS_TAG]!r} must list distinct polarizations of "
            f"{SAR_POLARIZATIONS}, one per band"
        )
    return listed


def default_nodata(input_kind: str) -> float | None:
    """The nodata value assumed for an input kind when none is declared: DN 0 for ``"dn"``, none otherwise."""
    return 0.0 if normalize_input_kind(input_kind) == "dn" else None


def valid_value_mask(values: np.ndarray, input_kind: str, nodata: float | None = None) -> np.ndarray:
    """Boolean mask of the pixels that carry a usable measurement.

    Args:
        values: raw pixel values of any shape and numeric dtype, in ``input_kind`` units.
        input_kind: ``"dn"``, ``"linear"`` or ``"db"`` (or an alias).
        nodata: the value that marks missing data; ``None`` (or NaN) for none.

    Returns:
        A bool array of ``values``' shape: False where the value is not finite or equals ``nodata``, and, for
        ``"dn"``/``"linear"``, where it is not positive (negative dB values are normal and stay valid).
    """
    kind = normalize_input_kind(input_kind)
    array = np.asarray(values)
    valid = np.isfinite(array)
    if nodata is not None and not math.isnan(nodata):
        valid &= array != nodata
    if kind in ("dn", "linear"):
        valid &= array > 0
    return valid


# ----------------------------------------------------------------------------------------------------------------------
# Raster validation: the one set of rules every entry point applies (sarlulc.data's readers for the command line and
# predict_scene, and the "sar-segmentation" pipeline, which can import only this folder).
# ----------------------------------------------------------------------------------------------------------------------
SUPPORTED_RASTER_DTYPES = ("uint16", "int16", "uint32", "int32", "float32", "float64")
"""Band dtypes that can hold backscatter: DN (16/32-bit integers), linear power or dB (floats). 8-bit rasters (RGB
pictures, JPEG) and complex single-look data are refused."""

MAX_RASTER_BYTES = 4 * 2**30
"""The most a raster read whole into memory may take (the pipeline reads its input whole): 4 GiB of float32."""

_MAX_SAR_BANDS = 2  # HH, HV


def check_raster_dtype(dtype: str, where: str) -> None:
    """Raise ``ValueError`` unless ``dtype`` can hold backscatter (:data:`SUPPORTED_RASTER_DTYPES`); ``where`` names
    the raster and band in the message."""
    if dtype in SUPPORTED_RASTER_DTYPES:
        return
    if "complex" in dtype:
        hint = " (complex single-look data, e.g. ALOS-2 L1.1, must be detected and multilooked first)"
    elif dtype in ("uint8", "int8"):
        hint = " (8-bit rasters are pictures, e.g. RGB or JPEG, not backscatter)"
    else:
        hint = ""
    raise ValueError(f"{where} has dtype {dtype}; expected one of {', '.join(SUPPORTED_RASTER_DTYPES)}{hint}")


def check_raster_bands(count: int, num_channels: int, declared: bool, where: str) -> None:
    """Raise ``ValueError`` for a raster whose band count cannot be read as the model's ``num_channels`` bands: more
    than two bands that do not say their polarizations (``declared``: e.g. a 4-band RGBA or multispectral image), or
    fewer bands than the model takes."""
    if count > _MAX_SAR_BANDS and not declared:
        raise ValueError(
            f"{where} has {count} bands and does not say which polarization each holds (tag {POLARIZATIONS_TAG} or "
            f"band descriptions); a SAR scene has 1 (HH) or 2 (HH, HV)"
        )
    if count < num_channels:
        raise ValueError(f"{where} has {count} band(s); the model expects {num_channels} (band 1 HH, band 2 HV)")


def input_kind_from_values(dtype: str, sample: np.ndarray | None, nodata: float | None) -> str:
    """The input kind of a raster whose metadata declare none: integers are DN; floats are dB when the median of the
    usable values of ``sample`` (e.g. a decimated read) is negative, DN above 20, else linear power."""
    if np.dtype(dtype).kind in "iu":
        return "dn"
    if sample is None:
        return "db"
    usable = valid_value_mask(sample, "db", nodata)  # finite and not nodata, any sign
    if not usable.any():
        return "db"  # nothing to judge by; the all-nodata check reports the real problem
    median = float(np.median(sample[usable]))
    if median < 0:
        return "db"
    return "dn" if median > 20 else "linear"


def check_raster_size(height: int, width: int, channels: int, where: str, limit: int = MAX_RASTER_BYTES) -> None:
    """Raise ``ValueError`` when reading the raster whole (float32 features and their masks) would need more than
    ``limit`` bytes; the message gives the size it would need."""
    needed = height * width * (8 * channels + 2)  # raw values, float32 features, masks: a generous estimate
    if needed > limit:
        raise ValueError(
            f"{where} is {height} x {width} px: preprocessing it whole would need about {needed / 2**30:.1f} GiB "
            f"(limit {limit / 2**30:.0f} GiB); predict large scenes tile by tile with sarlulc.inference.predict_scene "
            "(`sarlulc predict`)"
        )


def dn_to_db(dn: np.ndarray | Sequence[np.ndarray], valid: np.ndarray, calibration_factor: float) -> np.ndarray:
    """``10*log10(DN**2) + CF`` of integer DNs where ``valid``, 0.0 elsewhere, as a new float32 array.

    Args:
        dn: integer DNs: an array of any shape, or a sequence of ``(H, W)`` bands.
        valid: bool, either ``dn``'s shape or one ``(H, W)`` mask shared by the bands of a ``(C, H, W)`` array or
            sequence; it must be False wherever a DN is 0.
        calibration_factor: CF in dB.

    Returns:
        float32 of ``dn``'s shape (``(C, H, W)`` for a sequence of bands); invalid pixels are exactly +0.0.

    Computed band by band as ``20 * log10(DN) + CF`` in float32 (every uint16 DN is exact in float32), then the
    invalid pixels set to 0.0 (DN 0 gives -inf there first). Within 2e-5 dB of the float64 computation for every DN
    up to 65535 (tests/test_image_processing.py checks all of them), far below a sensor's calibration accuracy.

    Why this form (measured on a 2-core CPU, two 512 x 512 bands): NumPy's vectorized float32 logarithm and two
    in-place passes take 0.27 ms where looking every DN up in a 65536-entry table (``np.take``, which reads an index
    per pixel) took 0.55 ms, and nothing is allocated but the result. ``scripts/benchmark.py data`` times whole reads.
    """
    valid = np.asarray(valid, dtype=bool)
    invalid = None if valid.all() else np.logical_not(valid)
    if isinstance(dn, np.ndarray) and dn.shape == valid.shape:
        out = np.empty(dn.shape, dtype=np.float32)
        pairs: Any = [(dn, out)]
    else:
        out = np.empty((len(dn), *valid.shape), dtype=np.float32)
        pairs = zip(dn, out)
    with np.errstate(divide="ignore"):  # DN 0: log10 gives -inf, replaced by 0.0 below
        for band, target in pairs:
            np.log10(band, out=target, dtype=np.float32)
            np.multiply(target, np.float32(20.0), out=target)
            np.add(target, np.float32(calibration_factor), out=target)
            if invalid is not None:
                np.copyto(target, np.float32(0.0), where=invalid)
    return out


def calibrate_to_db(
    values: np.ndarray,
    input_kind: str,
    calibration_factor: float = DEFAULT_CALIBRATION_FACTOR,
    nodata: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Turn raw pixel values into sigma0 in dB and a validity mask; never takes the logarithm of zero.

    Args:
        values: raw pixel values of any shape and numeric dtype (e.g. one band ``(H, W)`` or bands ``(C, H, W)``).
        input_kind: ``"dn"`` (``10*log10(DN**2) + calibration_factor``), ``"linear"`` (``10*log10(P)``) or ``"db"``.
        calibration_factor: CF in dB, used for ``"dn"`` only.
        nodata: the value that marks missing data (see :func:`valid_value_mask`).

    Returns:
        ``(db, valid)``: float32 sigma0 in dB with 0.0 where invalid, and the bool mask of :func:`valid_value_mask`,
        both of ``values``' shape. uint8/uint16 DNs go through :func:`dn_to_db` (float32, within 2e-5 dB of float64);
        other inputs are computed in float64 before the cast.
    """
    kind = normalize_input_kind(input_kind)
    raw = np.asarray(values)
    if kind == "dn" and raw.dtype in (np.uint8, np.uint16):
        # The DNs of ALOS-2 products, in float32 (see dn_to_db); the general path below works in float64.
        valid = raw > 0
        if nodata is not None and not math.isnan(nodata) and nodata != 0:
            valid &= raw != nodata
        return dn_to_db(raw, valid, float(calibration_factor)), valid
    array = np.asarray(raw, dtype=np.float64)
    valid = valid_value_mask(array, kind, nodata)
    db = np.zeros(array.shape, dtype=np.float32)
    if kind == "dn":
        db[valid] = 20.0 * np.log10(array[valid]) + calibration_factor
    elif kind == "linear":
        db[valid] = 10.0 * np.log10(array[valid])
    else:
        db[valid] = array[valid]
    return db, valid


# ----------------------------------------------------------------------------------------------------------------------
# The image processor
# ----------------------------------------------------------------------------------------------------------------------
class SarImageProcessorKwargs(TypedDict, total=False):
    """The configuration fields of :class:`SarImageProcessor`; ``from_pretrained(dir, **overrides)`` accepts these."""

    input_kind: str
    calibration_factor: float
    clip_db: list[float]
    image_mean: list[float]
    image_std: list[float]
    nodata: float | None
    num_channels: int
    do_normalize: bool
    pad_to_multiple_of: int | None
    ignore_index: int
    backscatter: str | None
    polarizations: list[str] | None
    gsd: float | None


_CONFIG_FIELDS = tuple(SarImageProcessorKwargs.__annotations__)


def training_data_fields(
    backscatter: str | None, polarizations: Sequence[str] | None, gsd: float | None, num_channels: int
) -> tuple[str | None, list[str] | None, float | None]:
    """Checked ``(backscatter, polarizations, gsd)`` of a processor's training-data record (``None`` = unknown).

    Raises:
        ValueError: an unknown convention or polarization, a polarization count other than ``num_channels``, a
            repeated polarization, or a GSD that is not a positive finite number.
    """
    if backscatter is not None:
        backscatter = str(backscatter).strip().lower()
        if backscatter not in BACKSCATTER_CONVENTIONS:
            raise ValueError(f"backscatter must be one of {BACKSCATTER_CONVENTIONS} or None, got {backscatter!r}")
    if polarizations is not None:
        if isinstance(polarizations, str):
            polarizations = polarizations.replace(",", " ").split()
        polarizations = [str(p).strip().upper() for p in polarizations]
        if any(p not in SAR_POLARIZATIONS for p in polarizations) or len(set(polarizations)) != len(polarizations):
            raise ValueError(f"polarizations must be distinct values of {SAR_POLARIZATIONS}, got {polarizations}")
        if len(polarizations) != num_channels:
            raise ValueError(
                f"polarizations lists {len(polarizations)} band(s) ({polarizations}) but num_channels is {num_channels}"
            )
    if gsd is not None:
        gsd = float(gsd)
        if not (math.isfinite(gsd) and gsd > 0):
            raise ValueError(f"gsd must be a positive number of metres or None, got {gsd}")
    return backscatter, polarizations, gsd


def _per_band(value: float | Sequence[float] | None, default: float, num_channels: int, name: str) -> list[float]:
    if value is None:
        return [default] * num_channels
    values = [float(value)] if np.isscalar(value) else [float(v) for v in value]
    if len(values) != num_channels:
        raise ValueError(f"{name} has {len(values)} values but num_channels is {num_channels}: give one per band")
    return values


def _as_list(items: Any, what: str) -> list[Any]:
    """A single item or a batch (list/tuple, or an array with one more dimension than a single item) as a list."""
    if isinstance(items, (list, tuple)):
        return list(items)
    array = items if isinstance(items, (np.ndarray, torch.Tensor)) else np.asarray(items)
    single_ndim = {"images": (2, 3), "valid_masks": (2,), "segmentation_maps": (2,)}[what]
    if array.ndim in single_ndim:
        return [array]
    if array.ndim == max(single_ndim) + 1:
        return list(array)
    raise ValueError(
        f"{what} must be one array of {' or '.join(f'{n}' for n in single_ndim)} dimensions, a batch with one more "
        f"dimension, or a list of arrays; got an array of shape {tuple(array.shape)}"
    )


def _to_numpy(array: Any) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


class SarImageProcessor(BaseImageProcessor):
    r"""Image processor for ALOS-2 PALSAR-2 SAR backscatter (HH, optionally HH+HV) as sarlulc models expect it.

    It replaces transformers' RGB image processors: no RGB conversion, no division by 255, no PIL; inputs are numpy
    arrays (or CPU tensors) of raw backscatter. The module docstring lists the steps.

    Args:
        input_kind (`str`, defaults to `"dn"`):
            What the input values are: `"dn"` (amplitude DN), `"linear"` (sigma0 power) or `"db"` (sigma0 dB).
            Each `preprocess` call may override it (the data layer's tiles are `"db"`).
        calibration_factor (`float`, defaults to -83.0):
            CF in dB of `sigma0_dB = 10*log10(DN**2) + CF` (`"dn"` input only).
        clip_db (`list[float]`, defaults to `[-35.0, 5.0]`):
            `[low, high]` range in dB that sigma0 is clipped to before standardization.
        image_mean (`list[float]`, *optional*):
            Per-band mean in dB (HH first, then HV), defaults to -12.0 per band.
        image_std (`list[float]`, *optional*):
            Per-band standard deviation in dB, defaults to 6.0 per band.
        nodata (`float`, *optional*):
            Input value (in `input_kind` units) that marks missing pixels. Defaults to 0 for `"dn"` and to none
            otherwise; the resolved value is saved, so give it again when loading with another `input_kind`.
            NaN/inf, and non-positive `"dn"`/`"linear"` values, are invalid regardless.
        num_channels (`int`, *optional*):
            Bands per image: 1 (HH) or 2 (HH, HV). Defaults to the length of `image_mean`, else 1.
        do_normalize (`bool`, defaults to `True`):
            Standardize with `image_mean`/`image_std`; if False, `pixel_values` are clipped dB.
        pad_to_multiple_of (`int`, *optional*, defaults to 32):
            Pad height and width (bottom/right) up to a multiple of this; `None` pads only to the batch's largest size.
        ignore_index (`int`, defaults to 255):
            Label value of invalid and padded pixels.
        backscatter (`str`, *optional*):
            The backscatter convention of the training data, `"sigma0"` or `"gamma0"` (:data:`BACKSCATTER_CONVENTIONS`).
            `None` = unknown (checkpoints saved before it was recorded): prediction then checks nothing.
        polarizations (`list[str]`, *optional*):
            The polarization of every input band of the training data, in band order (`["HH"]`, `["HH", "HV"]`);
            one per channel. `None` = unknown.
        gsd (`float`, *optional*):
            Ground sampling distance of the training data in metres (e.g. 10.0). Scenes at another GSD are resampled
            to it at prediction time. `None` = unknown: scenes are predicted at their own GSD.

    Example:

    ```python
    >>> processor = SarImageProcessor(input_kind="dn")
    >>> batch = processor(dn_tile, return_tensors="pt")          # dn_tile: (H, W) uint16 DN
    >>> batch["pixel_values"].shape, batch["pixel_mask"].shape   # (1, 1, H', W'), (1, H', W'): H, W padded to 32
    >>> outputs = model(pixel_values=batch["pixel_values"])
    >>> class_map = processor.post_process_semantic_segmentation(outputs, target_sizes=[dn_tile.shape])[0]
    ```
    """

    model_input_names = ["pixel_values", "pixel_mask"]
    valid_kwargs = SarImageProcessorKwargs

    def __init__(
        self,
        input_kind: str = "dn",
        calibration_factor: float = DEFAULT_CALIBRATION_FACTOR,
        clip_db: Sequence[float] = DEFAULT_CLIP_DB,
        image_mean: float | Sequence[float] | None = None,
        image_std: float | Sequence[float] | None = None,
        nodata: float | None = _UNSET,
        num_channels: int | None = None,
        do_normalize: bool = True,
        pad_to_multiple_of: int | None = DEFAULT_PAD_TO_MULTIPLE_OF,
        ignore_index: int = DEFAULT_IGNORE_INDEX,
        backscatter: str | None = None,
        polarizations: Sequence[str] | None = None,
        gsd: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.input_kind = normalize_input_kind(input_kind)
        self.calibration_factor = float(calibration_factor)
        if not math.isfinite(self.calibration_factor):
            raise ValueError(f"calibration_factor must be a finite number of dB, got {calibration_factor}")
        if len(clip_db) != 2 or not math.isfinite(float(clip_db[0])) or not math.isfinite(float(clip_db[1])):
            raise ValueError(f"clip_db must be two finite numbers of dB, got {clip_db}")
        if not float(clip_db[0]) < float(clip_db[1]):
            raise ValueError(f"clip_db must be [low, high] in dB with low < high, got {clip_db}")
        self.clip_db = [float(clip_db[0]), float(clip_db[1])]
        if num_channels is None:
            num_channels = 1 if image_mean is None or np.isscalar(image_mean) else len(image_mean)
        if num_channels not in (1, 2):
            raise ValueError(f"num_channels must be 1 (HH) or 2 (HH, HV), got {num_channels}")
        self.num_channels = int(num_channels)
        self.image_mean = _per_band(image_mean, DEFAULT_IMAGE_MEAN_DB, self.num_channels, "image_mean")
        self.image_std = _per_band(image_std, DEFAULT_IMAGE_STD_DB, self.num_channels, "image_std")
        # A NaN or infinite statistic would turn every pixel into NaN or 0: every prediction would be garbage.
        if not all(math.isfinite(m) for m in self.image_mean):
            raise ValueError(f"image_mean must be a finite number of dB for every band, got {self.image_mean}")
        if not all(math.isfinite(s) and s > 0 for s in self.image_std):
            raise ValueError(f"image_std must be positive and finite for every band, got {self.image_std}")
        self.nodata = (
            default_nodata(self.input_kind) if nodata is _UNSET else (None if nodata is None else float(nodata))
        )
        self.do_normalize = bool(do_normalize)
        if pad_to_multiple_of is not None and int(pad_to_multiple_of) < 1:
            raise ValueError(f"pad_to_multiple_of must be a positive integer or None, got {pad_to_multiple_of}")
        self.pad_to_multiple_of = None if pad_to_multiple_of is None else int(pad_to_multiple_of)
        self.ignore_index = int(ignore_index)
        self.backscatter, self.polarizations, self.gsd = training_data_fields(
            backscatter, polarizations, gsd, self.num_channels
        )

    @classmethod
    def from_band_statistics(cls, stats: Any, **kwargs: Any) -> SarImageProcessor:
        """A processor that standardizes with dataset statistics.

        Args:
            stats: a ``sarlulc.data.tiles.BandStatistics`` (attributes ``mean``, ``std``, ``clip_range``: per-band dB
                values of clipped sigma0 over valid pixels) or its ``to_dict()`` mapping.
            kwargs: any other constructor argument (e.g. ``input_kind="dn"``); they cannot override the statistics.
        """
        if isinstance(stats, Mapping):
            mean, std, clip_range = stats["mean"], stats["std"], stats["clip_range"]
        else:
            mean, std, clip_range = stats.mean, stats.std, stats.clip_range
        clashing = sorted({"image_mean", "image_std", "clip_db", "num_channels"} & kwargs.keys())
        if clashing:
            raise ValueError(f"{clashing} come from the band statistics; do not pass them as well")
        return cls(
            image_mean=list(mean), image_std=list(std), clip_db=list(clip_range), num_channels=len(mean), **kwargs
        )

    def to_dict(self) -> dict[str, Any]:
        """The configuration saved as ``preprocessor_config.json``; every field is written, ``None`` included."""
        output = super().to_dict()
        output.update({name: getattr(self, name) for name in _CONFIG_FIELDS})
        return output

    # -- preprocessing ---------------------------------------------------------------------------------------------
    def _image_to_db(
        self,
        image: Any,
        valid_mask: Any | None,
        input_kind: str,
        calibration_factor: float,
        nodata: float | None,
        index: int,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One image -> (clipped, standardized values (C, H, W) float32, clipped dB (C, H, W) float32, valid mask
        (H, W)); both value arrays are 0.0 on invalid pixels."""
        array = _to_numpy(image)
        if array.ndim == 2:
            array = array[None]
        if array.ndim != 3:
            raise ValueError(f"image {index} has shape {array.shape}; expected (H, W) or channels-first (C, H, W)")
        if array.shape[0] != self.num_channels:
            raise ValueError(
                f"image {index} has {array.shape[0]} bands (shape {array.shape}); this processor expects "
                f"num_channels={self.num_channels} ({', '.join(('HH', 'HV')[: self.num_channels])}) as a "
                "channels-first (C, H, W) array"
            )
        db, band_valid = calibrate_to_db(array, input_kind, calibration_factor, nodata)
        valid = band_valid.all(axis=0)
        if valid_mask is not None:
            mask = _to_numpy(valid_mask)
            if mask.shape != valid.shape:
                raise ValueError(
                    f"valid mask {index} has shape {mask.shape}; expected the image's (H, W) {valid.shape}"
                )
            valid &= mask.astype(bool)
        clipped = np.clip(db, *self.clip_db)
        values = clipped
        if self.do_normalize:
            mean = np.asarray(self.image_mean, dtype=np.float32)[:, None, None]
            std = np.asarray(self.image_std, dtype=np.float32)[:, None, None]
            values = (clipped - mean) / std
        values[:, ~valid] = 0.0
        clipped[:, ~valid] = 0.0  # a no-op when values is clipped itself (do_normalize=False)
        return values.astype(np.float32, copy=False), clipped.astype(np.float32, copy=False), valid

    def preprocess(
        self,
        images: Any,
        segmentation_maps: Any | None = None,
        valid_masks: Any | None = None,
        input_kind: str | None = None,
        nodata: float | None = _UNSET,
        calibration_factor: float | None = None,
        pad_to_multiple_of: int | None = _UNSET,
        return_tensors: str | None = None,
        return_backscatter_db: bool = False,
    ) -> BatchFeature:
        """Calibrate, clip, standardize, mask and pad a batch of SAR images.

        Args:
            images: one array or a list of arrays, each ``(H, W)`` (HH) or channels-first ``(C, H, W)`` with
                ``C == num_channels``, in ``input_kind`` units (any numeric dtype; numpy or CPU torch). A 4-D array
                ``(B, C, H, W)`` is a batch. Sizes may differ within a batch (see ``pad_to_multiple_of``).
            segmentation_maps: class ids ``(H, W)`` per image (uint8; ``ignore_index`` = unlabeled), same structure
                as ``images``; a 3-D array ``(B, H, W)`` is a batch.
            valid_masks: bool/0-1 ``(H, W)`` per image, False = invalid pixel (e.g. the data layer's ``valid_mask``).
            input_kind: units of ``images`` for this call; defaults to the processor's ``input_kind``.
            nodata: value marking missing pixels, in ``input_kind`` units. Defaults to the processor's ``nodata`` when
                the call's kind is the processor's kind, else to the kind's default (0 for DN, none otherwise), so a
                processor configured for DN with nodata 0 never treats a legitimate 0 dB as missing.
            calibration_factor: CF in dB for DN input; defaults to the processor's.
            pad_to_multiple_of: overrides the processor's setting for this call (``None``: pad to the batch's
                largest size only).
            return_tensors: ``"pt"`` for torch tensors, ``"np"`` or ``None`` for numpy arrays.
            return_backscatter_db: also return ``backscatter_db``, the input of SAR-W-MixMAE's loss weight, so that
                ``model(**processor(images, return_tensors="pt", return_backscatter_db=True)).loss`` works with a
                ``SarMixMAEForPreTraining``.

        Returns:
            `BatchFeature` with ``pixel_values`` (B, C, H', W') float32, ``pixel_mask`` (B, H', W') int64 (1 = valid
            pixel; invalid and padded pixels 0), with ``segmentation_maps`` ``labels`` (B, H', W') int64
            (``ignore_index`` on invalid and padded pixels) and with ``return_backscatter_db`` ``backscatter_db``
            (B, C, H', W') float32, the calibrated sigma0 in dB clipped to ``clip_db`` that ``pixel_values``
            standardizes (0.0 on invalid and padded pixels). ``H'``/``W'`` are the batch's largest height/width
            rounded up to ``pad_to_multiple_of``; each image sits at the top-left, so cropping ``[:H, :W]`` recovers
            it.

        Raises:
            ValueError: wrong number of dimensions or bands, masks or maps whose count or shape does not match the
                images, or an unknown input kind.
        """
        kind = self.input_kind if input_kind is None else normalize_input_kind(input_kind)
        if nodata is _UNSET:
            nodata = self.nodata if kind == self.input_kind else default_nodata(kind)
        factor = self.calibration_factor if calibration_factor is None else float(calibration_factor)
        multiple = self.pad_to_multiple_of if pad_to_multiple_of is _UNSET else pad_to_multiple_of

        image_list = _as_list(images, "images")
        if not image_list:
            raise ValueError("images is empty; give at least one (H, W) or (C, H, W) array")
        masks = [None] * len(image_list) if valid_masks is None else _as_list(valid_masks, "valid_masks")
        maps = None if segmentation_maps is None else _as_list(segmentation_maps, "segmentation_maps")
        for name, items in (("valid_masks", masks), ("segmentation_maps", maps)):
            if items is not None and len(items) != len(image_list):
                raise ValueError(f"got {len(image_list)} images but {len(items)} {name}")

        processed = [
            self._image_to_db(image, mask, kind, factor, nodata, i)
            for i, (image, mask) in enumerate(zip(image_list, masks))
        ]
        height = max(valid.shape[0] for _, _, valid in processed)
        width = max(valid.shape[1] for _, _, valid in processed)
        if multiple:
            height, width = -(-height // multiple) * multiple, -(-width // multiple) * multiple

        batch = len(processed)
        pixel_values = np.zeros((batch, self.num_channels, height, width), dtype=np.float32)
        pixel_mask = np.zeros((batch, height, width), dtype=np.int64)
        backscatter_db = np.zeros_like(pixel_values) if return_backscatter_db else None
        for i, (values, clipped_db, valid) in enumerate(processed):
            h, w = valid.shape
            pixel_values[i, :, :h, :w] = values
            pixel_mask[i, :h, :w] = valid
            if backscatter_db is not None:
                backscatter_db[i, :, :h, :w] = clipped_db
        data = {"pixel_values": pixel_values, "pixel_mask": pixel_mask}
        if backscatter_db is not None:
            data["backscatter_db"] = backscatter_db

        if maps is not None:
            labels = np.full((batch, height, width), self.ignore_index, dtype=np.int64)
            for i, (label, (_, _, valid)) in enumerate(zip(maps, processed)):
                label = _to_numpy(label)
                if label.shape != valid.shape:
                    raise ValueError(
                        f"segmentation map {i} has shape {label.shape}; expected its image's (H, W) {valid.shape}"
                    )
                h, w = valid.shape
                labels[i, :h, :w] = np.where(valid, label, self.ignore_index)
            data["labels"] = labels
        return BatchFeature(data=data, tensor_type=return_tensors)

    # -- postprocessing --------------------------------------------------------------------------------------------
    def post_process_semantic_segmentation(
        self, outputs: Any, target_sizes: Sequence[tuple[int, int]] | torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """Class-id maps from a segmentation model's logits.

        Args:
            outputs: the model output (anything with ``logits`` of shape (B, K, H, W), at the padded input resolution,
                as sarlulc models produce).
            target_sizes: ``(height, width)`` per image, typically the unpadded input sizes; ``None`` keeps the logits'
                size. A target no larger than the logits in both dimensions is the **top-left crop** of the logits,
                which exactly undoes the processor's bottom/right padding (no resampling, so no blurred edges). Any
                other target size is reached by bilinear resizing of the logits, transformers' usual semantics.

        Returns:
            One (height, width) int64 tensor of class ids (argmax over K) per image.
        """
        logits = outputs.logits if hasattr(outputs, "logits") else outputs["logits"]
        if logits.ndim != 4:
            raise ValueError(f"expected logits of shape (B, K, H, W), got {tuple(logits.shape)}")
        if target_sizes is None:
            return list(logits.argmax(dim=1))
        if len(target_sizes) != len(logits):
            raise ValueError(f"got {len(target_sizes)} target sizes for a batch of {len(logits)} logits")
        height, width = logits.shape[-2:]
        maps = []
        for image_logits, size in zip(logits, target_sizes):
            h, w = (int(v) for v in size)
            if h <= height and w <= width:
                image_logits = image_logits[:, :h, :w]
            else:
                image_logits = torch.nn.functional.interpolate(
                    image_logits[None], size=(h, w), mode="bilinear", align_corners=False
                )[0]
            maps.append(image_logits.argmax(dim=0))
        return maps
