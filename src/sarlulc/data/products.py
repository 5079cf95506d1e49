"""JAXA products as scenes: recognize what a user downloaded and open it with the scene interface.

:func:`open_scene` is the one entry point of the package for backscatter inputs. It looks at a path and opens

* a **25 m yearly mosaic tile** (:data:`MOSAIC_LAYERS`): the tile's folder, any one of its files
  (``N35E139_19_sl_HH_F02DAR.tif``), or the ``.tar.gz`` archive JAXA ships (``N40E135_19_MOS_F02DAR.tar.gz``), read
  *in place* through GDAL's ``/vsitar/`` (a ``.zip`` through ``/vsizip/``), never extracted. A path through an archive
  (``ARCHIVE.tar.gz/N35E139_19_sl_HH_F02DAR.tif``) or ``tile="N35E139"`` picks one tile of an archive that holds
  several. GeoTIFF members (2019 on) and raw members with an ENVI ``.hdr`` sidecar (before 2019) both work. HH and HV
  come from their own files and are stacked as bands once their grids are checked to agree; the ``_mask_`` file turns
  into validity (:data:`MOSAIC_MASK_CODES`: no data, layover and shadow invalid by default, ocean valid; the
  ``mask_invalid`` option says which categories to drop); ``_date_`` and ``_linci_`` are auxiliary rasters
  (:meth:`ProductScene.read_auxiliary`). Values are terrain-flattened **gamma0**;
* a **standard L1.5 / L2.1 GeoTIFF product**: its folder, its ``summary.txt``, one of its
  ``IMG-{POL}-ALOS2...`` files (that polarization only, unless asked otherwise), or the delivery's ``.zip``. The
  product id (``ALOS2146686640-170209-FBDR1.5GUA``) gives orbit, frame, date, mode, look side, level and orbit
  direction (:func:`parse_standard_product_id`); BigTIFF files read like any GeoTIFF. Values are **sigma0**. L1.1
  (single-look complex) products are refused: they need detection and multilooking first;
* a **CEOS delivery** (``VOL-``/``LED-``/``IMG-{POL}-...`` without an extension), read through GDAL's ``SAR_CEOS``
  driver where the installed GDAL has it. A CEOS image georeferenced only by GCPs is warped onto a north-up grid
  in the GCPs' CRS (nearest neighbour);
* anything else as a **plain GeoTIFF** (:class:`~sarlulc.data.alos2.Alos2Scene`).

ScanSAR L2.2 (gamma0, bands HH, HV, LIN, MSK) is not recognized: its on-disk file layout as JAXA distributes it could
not be established from public sources (see docs/products.md); :data:`SCANSAR_MASK_CODES` records its mask codes.

Every product scene calibrates with ``10*log10(DN**2) + CF``: CF from the argument, else a ``CALIBRATION_FACTOR``
tag of the image file, else the sensor's published factor (:data:`SENSOR_CALIBRATION_FACTORS`, -83.0 dB for
PALSAR-2). DN 0 is no data. Every problem raises :class:`SarLulcDataError` naming the file and what is wrong.
"""

from __future__ import annotations

import functools
import re
import tarfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.transform import Affine
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from ..errors import SarLulcDataError
from ..models.image_processing_sar import calibration_factor_from_tags, normalize_input_kind
from .alos2 import (
    Alos2Scene,
    check_dtype,
    check_georeferencing,
    dataset_tags,
    is_local_path,
    open_dataset,
    select_polarizations,
)
from .scene import ProductInfo, SarScene, ScratchArrays, clip_window, data_errors, decimated_shape, window_or_full

__all__ = [
    "ARCHIVE_SUFFIXES",
    "DEFAULT_MASK_INVALID",
    "MASK_CATEGORIES",
    "MOSAIC_DATE_EPOCHS",
    "MOSAIC_LAYERS",
    "MOSAIC_MASK_CODES",
    "SCANSAR_MASK_CODES",
    "SENSOR_CALIBRATION_FACTORS",
    "ProductLayout",
    "ProductScene",
    "StandardProductId",
    "ceos_available",
    "find_products",
    "is_product_folder",
    "mosaic_sensor",
    "open_scene",
    "parse_standard_product_id",
    "recognize",
]

# ----------------------------------------------------------------------------------------------------------------------
# What the products are (docs/products.md cites the sources)
# ----------------------------------------------------------------------------------------------------------------------
MOSAIC_LAYERS = ("HH", "HV", "linci", "date", "mask")
"""The files of a mosaic tile: ``{tile}_{yy}_sl_{layer}_F02DAR`` (PALSAR-2; older sensors have other suffixes or
none). ``linci`` is the local incidence angle in degrees, ``date`` the acquisition day of every pixel."""

MASK_CATEGORIES = ("nodata", "ocean", "layover", "shadow", "land")
"""What a mask code can mean."""

MOSAIC_MASK_CODES: dict[int, str] = {0: "nodata", 50: "ocean", 100: "layover", 150: "shadow", 255: "land"}
"""Codes of the mosaic's ``_mask_`` file. Layover and shadow pixels carry no usable backscatter."""

SCANSAR_MASK_CODES: dict[int, str] = {1: "land", 2: "layover", 3: "shadow", 4: "ocean", 5: "nodata"}
"""Codes of ScanSAR L2.2's ``MSK`` band (recorded for when its file layout is known; not read yet)."""

DEFAULT_MASK_INVALID = ("nodata", "layover", "shadow")
"""Mask categories that make a pixel invalid unless ``mask_invalid`` says otherwise. Ocean stays valid: water is a
class the models learn, and its backscatter is real."""

MOSAIC_DATE_EPOCHS: dict[str, date] = {
    "PALSAR-2": date(2014, 5, 24),
    "PALSAR": date(2006, 1, 24),
    "JERS-1": date(1992, 2, 11),
}
"""Day 0 of a mosaic's ``_date_`` raster: the satellite's launch date."""

SENSOR_CALIBRATION_FACTORS: dict[str, float] = {"PALSAR-2": -83.0, "PALSAR": -83.0, "JERS-1": -84.66}
"""Published calibration factor CF (dB) of each sensor's DN products."""

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
"""Archives read in place (``/vsitar/``, ``/vsizip/``)."""

STANDARD_LEVELS = {"1.5": "l1.5", "2.1": "l2.1"}
_REFUSED_LEVELS = {
    "1.1": "it is single-look complex (SLC) data in slant range: detect and multilook it (e.g. into an L1.5 product) "
    "first",
    "1.0": "it is raw signal data, not an image",
    "3.1": "level 3.1 products are not supported; use the L1.5 product",
}

_TILE = r"[NS]\d{2}[EW]\d{3}"
_MOSAIC_FILE = re.compile(
    rf"^(?P<tile>{_TILE})_(?P<yy>\d{{2}})_sl_(?P<layer>HH|HV|linci|date|mask)(?:_(?P<suffix>F\w{{2}}DAR))?"
    r"(?P<ext>\.tiff?|\.hdr)?$",
    re.IGNORECASE,
)
_MOSAIC_ARCHIVE = re.compile(rf"^(?P<tile>{_TILE})_(?P<yy>\d{{2}})_MOS", re.IGNORECASE)
_MODES = "SBS|UBS|UBD|HBS|HBD|HBQ|FBS|FBD|FBQ|WBS|WBD|WWS|WWD|VBS|VBD"
_STANDARD_ID = re.compile(
    rf"ALOS2(?P<orbit>\d{{5}})(?P<frame>\d{{4}})-(?P<date>\d{{6}})-(?P<mode>{_MODES})(?P<look>[LR])"
    r"(?P<level>\d\.\d)(?P<processing>[GR_])(?P<projection>[UPML_])(?P<direction>[AD])"
)
_STANDARD_IMAGE = re.compile(r"^IMG-(?P<pol>HH|HV|VH|VV)-(?P<rest>ALOS2.*?)(?P<ext>\.tiff?)?$", re.IGNORECASE)
_CEOS_MARKERS = ("VOL-ALOS2", "LED-ALOS2")
_SUMMARY = "summary.txt"
_POLARIZATION_ORDER = ("HH", "HV", "VH", "VV")


def mosaic_sensor(year: int) -> str:
    """The sensor of a mosaic year: JERS-1 (1990s), PALSAR (2006-2011), PALSAR-2 (2014 on)."""
    if year < 2000:
        return "JERS-1"
    return "PALSAR" if year < 2014 else "PALSAR-2"


def _mosaic_year(yy: str) -> int:
    value = int(yy)
    return 1900 + value if value >= 90 else 2000 + value


@dataclass(frozen=True)
class StandardProductId:
    """The fields of an ALOS-2 standard product id such as ``ALOS2146686640-170209-FBDR1.5GUA``."""

    text: str
    orbit: int
    frame: int
    acquisition_date: date
    mode: str
    look_side: str  # "right" / "left"
    level: str  # "1.5"
    processing: str  # G (geo-coded), R (geo-referenced), _ (none)
    projection: str  # U (UTM), P (polar stereo), M (MCS), L (lat/lon), _ (none)
    orbit_direction: str  # "ascending" / "descending"

    @property
    def scene_id(self) -> str:
        """``ALOS2{orbit}{frame}-{yymmdd}``, what ``summary.txt`` calls ``Scs_SceneID``."""
        return self.text.rsplit("-", 1)[0]

    @property
    def product_code(self) -> str:
        """``{mode}{look}{level}{processing}{projection}{direction}``, ``summary.txt``'s ``Pds_ProductID``."""
        return self.text.rsplit("-", 1)[1]


def parse_standard_product_id(text: str) -> StandardProductId | None:
    """The fields of the first ALOS-2 standard product id in ``text`` (a file name, a folder name), or ``None``."""
    match = _STANDARD_ID.search(text)
    if match is None:
        return None
    yymmdd = match["date"]
    try:
        observed = date(2000 + int(yymmdd[:2]), int(yymmdd[2:4]), int(yymmdd[4:]))
    except ValueError:
        return None
    return StandardProductId(
        text=match.group(0),
        orbit=int(match["orbit"]),
        frame=int(match["frame"]),
        acquisition_date=observed,
        mode=match["mode"],
        look_side="right" if match["look"] == "R" else "left",
        level=match["level"],
        processing=match["processing"],
        projection=match["projection"],
        orbit_direction="ascending" if match["direction"] == "A" else "descending",
    )


def ceos_available() -> bool:
    """Whether the installed GDAL has the ``SAR_CEOS`` driver."""
    with rasterio.Env() as env:
        return "SAR_CEOS" in env.drivers()


# ----------------------------------------------------------------------------------------------------------------------
# Files: local folders and archives alike
# ----------------------------------------------------------------------------------------------------------------------
@contextmanager
def _archive_env(archive: str | None) -> Iterator[None]:
    """GDAL settings for reading through an archive: never write a ``.properties`` index next to a ``.gz`` file (GDAL
    does by default after a full scan), so reading leaves nothing behind."""
    if archive is None:
        yield
        return
    with rasterio.Env(CPL_VSIL_GZIP_WRITE_PROPERTIES="NO"):
        yield


def _is_archive(path: str | Path) -> bool:
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


def _archive_members(archive: Path) -> list[str]:
    """The file members of an archive, in archive order; a corrupt archive is a SarLulcDataError naming it.

    Listing a ``.tar.gz`` decompresses all of it, so the listing is remembered for the process (keyed by the file's
    size and modification time): reopening a product, or opening it again to tile it, lists it once, as GDAL does
    for its own reads through ``/vsitar/``.
    """
    if not archive.is_file():
        raise SarLulcDataError(f"archive {archive} does not exist")
    stat = archive.stat()
    return list(_cached_members(str(archive.resolve()), stat.st_size, stat.st_mtime_ns))


@functools.lru_cache(maxsize=64)
def _cached_members(archive: str, size: int, mtime_ns: int) -> tuple[str, ...]:
    del size, mtime_ns  # part of the cache key only: a rewritten archive is listed again
    return tuple(_list_archive(Path(archive)))


def _list_archive(archive: Path) -> list[str]:
    try:
        if str(archive).lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as handle:
                return [info.filename for info in handle.infolist() if not info.is_dir()]
        with tarfile.open(archive) as handle:
            return [member.name for member in handle.getmembers() if member.isfile()]
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as err:
        raise SarLulcDataError(f"archive {archive} is corrupt or truncated and cannot be listed: {err}") from err


def _gdal_member(archive: Path, member: str) -> str:
    prefix = "/vsizip/" if str(archive).lower().endswith(".zip") else "/vsitar/"
    return f"{prefix}{archive.resolve()}/{member}"


@dataclass(frozen=True)
class _Listing:
    """The files of one place (a folder or an archive): names -> GDAL paths."""

    where: str  # the folder or archive, for messages
    files: dict[str, str]  # base name -> GDAL path
    archive: str | None = None  # the archive, if the files are inside one

    @classmethod
    def of_folder(cls, folder: Path) -> _Listing:
        files = {p.name: str(p) for p in sorted(folder.iterdir()) if p.is_file()}
        return cls(str(folder), files)

    @classmethod
    def of_archive(cls, archive: Path, members: Sequence[str] | None = None) -> _Listing:
        members = _archive_members(archive) if members is None else members
        files: dict[str, str] = {}
        for member in members:
            files.setdefault(Path(member).name, _gdal_member(archive, member))
        return cls(str(archive), files, archive=str(archive))


# ----------------------------------------------------------------------------------------------------------------------
# Recognition
# ----------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProductLayout:
    """Where a product's files are and what they are: the result of :func:`recognize`, enough to open the product
    (again) without looking at the disk.

    Attributes:
        product_type: ``"mosaic"``, ``"l1.5"``, ``"l2.1"`` or ``"ceos"``.
        where: the path the user gave (for messages).
        band_files: ``(polarization, GDAL path)`` of every image file, in product order (HH, HV, VH, VV).
        mask_file: the mask file (mosaics), or None.
        auxiliary_files: ``(name, GDAL path)`` of auxiliary rasters (``date``, ``linci``).
        info: what the names and metadata say about the product (files and CF source are filled in on opening).
        backscatter: ``"sigma0"`` or ``"gamma0"``.
        calibration_factor: the sensor's published CF (dB).
        calibration_factor_source: ``"default"`` (published) or ``"metadata"`` (the product's metadata files).
        default_polarizations: read when neither bands nor polarizations are given (None: every band file).
        archive: the archive the files are in, if any.
        driver: the GDAL driver to open the image files with (``"SAR_CEOS"`` for CEOS), or None (any).
    """

    product_type: str
    where: str
    band_files: tuple[tuple[str, str], ...]
    info: ProductInfo
    backscatter: str
    calibration_factor: float
    calibration_factor_source: str = "default"
    mask_file: str | None = None
    auxiliary_files: tuple[tuple[str, str], ...] = ()
    default_polarizations: tuple[str, ...] | None = None
    archive: str | None = None
    driver: str | None = None

    @property
    def polarizations(self) -> tuple[str, ...]:
        return tuple(pol for pol, _ in self.band_files)


def _mosaic_layout(listing: _Listing, tile: str | None, where: str) -> ProductLayout | None:
    """The mosaic tile among ``listing``'s files (``tile`` picks one when there are several), or None if none."""
    found: dict[tuple[str, str], dict[str, str]] = {}
    suffixes: dict[tuple[str, str], str | None] = {}
    for name, gdal_path in listing.files.items():
        match = _MOSAIC_FILE.match(name)
        if match is None or (match["ext"] or "").lower() == ".hdr":
            continue
        key = (match["tile"].upper(), match["yy"])
        layer = match["layer"] if match["layer"] in ("HH", "HV") else match["layer"].lower()
        found.setdefault(key, {})[layer] = gdal_path
        suffixes[key] = match["suffix"]
    if not found:
        return None
    keys = sorted(found)
    if tile is not None:
        keys = [key for key in keys if key[0] == tile.upper() or f"{key[0]}_{key[1]}" == tile.upper()]
        if not keys:
            raise SarLulcDataError(
                f"{where} has no mosaic tile {tile}; it has {', '.join(f'{t}_{y}' for t, y in sorted(found))}"
            )
    if len(keys) > 1:
        raise SarLulcDataError(
            f"{where} holds {len(keys)} mosaic tiles ({', '.join(f'{t}_{y}' for t, y in keys)}); choose one with "
            "tile='N35E139' (Python) or give the path of one of its files, e.g. ARCHIVE/N35E139_19_sl_HH_F02DAR.tif"
        )
    key = keys[0]
    layers = found[key]
    if "HH" not in layers and "HV" not in layers:
        raise SarLulcDataError(
            f"{where}: mosaic tile {key[0]}_{key[1]} has no HH or HV file (found {', '.join(sorted(layers))})"
        )
    year = _mosaic_year(key[1])
    sensor = mosaic_sensor(year)
    band_files = tuple((pol, layers[pol]) for pol in ("HH", "HV") if pol in layers)
    auxiliary = tuple((name, layers[name]) for name in ("date", "linci") if name in layers)
    files = [path for _, path in band_files] + ([layers["mask"]] if "mask" in layers else [])
    info = ProductInfo(
        product_type="mosaic",
        product_id=f"{key[0]}_{key[1]}" + (f"_{suffixes[key]}" if suffixes[key] else ""),
        sensor=sensor,
        tile=key[0],
        year=year,
        files=tuple(files),
    )
    return ProductLayout(
        product_type="mosaic",
        where=where,
        band_files=band_files,
        info=info,
        backscatter="gamma0",
        calibration_factor=SENSOR_CALIBRATION_FACTORS[sensor],
        mask_file=layers.get("mask"),
        auxiliary_files=auxiliary,
        archive=listing.archive,
    )


def _read_summary(listing: _Listing) -> dict[str, str]:
    """``summary.txt`` as a dict (``key="value"`` lines), or {} if the product has none."""
    path = listing.files.get(_SUMMARY)
    if path is None:
        return {}
    try:
        if listing.archive is not None:
            text = _read_archive_text(Path(listing.archive), path)
        else:
            text = Path(path).read_text(errors="replace")
    except OSError as err:
        raise SarLulcDataError(f"{path} cannot be read: {err}") from err
    summary = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            summary[key.strip()] = value.strip().strip('"')
    return summary


def _read_archive_text(archive: Path, gdal_path: str) -> str:
    member = gdal_path.split(f"{archive.resolve()}/", 1)[1]
    try:
        if str(archive).lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as handle:
                return handle.read(member).decode(errors="replace")
        with tarfile.open(archive) as handle:
            extracted = handle.extractfile(member)
            return "" if extracted is None else extracted.read().decode(errors="replace")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, KeyError) as err:
        raise SarLulcDataError(f"archive {archive} is corrupt: {member} cannot be read ({err})") from err


def _standard_layout(listing: _Listing, where: str, only: str | None = None) -> ProductLayout | None:
    """The standard (GeoTIFF or CEOS) product among ``listing``'s files, or None if there is none."""
    images: dict[str, tuple[str, str, bool]] = {}  # pol -> (name, gdal path, has extension)
    for name, gdal_path in listing.files.items():
        match = _STANDARD_IMAGE.match(name)
        if match is None:
            continue
        images[match["pol"].upper()] = (name, gdal_path, bool(match["ext"]))
    summary = _read_summary(listing)
    if not images:
        if summary:
            listed = [v for k, v in summary.items() if re.fullmatch(r"Pdi_L\d{2}ProductFileName\d+", k)]
            raise SarLulcDataError(
                f"{where}: summary.txt lists {', '.join(listed) or 'no file'} but no IMG-{{POL}}-ALOS2... image file "
                "is there"
            )
        return None
    ids = {parse_standard_product_id(name) for name, _, _ in images.values()}
    ids.discard(None)
    if len(ids) != 1:
        names = ", ".join(sorted(name for name, _, _ in images.values()))
        raise SarLulcDataError(
            f"{where}: the image files ({names}) do not carry one ALOS-2 product id "
            "(ALOS2{orbit}{frame}-{yymmdd}-{mode}{L|R}{level}{G|R|_}{U|P|M|L|_}{A|D})"
        )
    product_id = ids.pop()
    if product_id.level in _REFUSED_LEVELS:
        raise SarLulcDataError(
            f"{where}: {product_id.text} is a level {product_id.level} product; {_REFUSED_LEVELS[product_id.level]}"
        )
    if product_id.level not in STANDARD_LEVELS:
        raise SarLulcDataError(
            f"{where}: {product_id.text} has processing level {product_id.level}; expected 1.5 or 2.1"
        )
    listed = {v for k, v in summary.items() if re.fullmatch(r"Pdi_L\d{2}ProductFileName\d+", k)}
    for name in sorted(listed):
        match = _STANDARD_IMAGE.match(name)
        if match and match["pol"].upper() not in images:
            raise SarLulcDataError(f"{where}: summary.txt lists {name} but the file is missing")
    if summary.get("Lbi_ProcessLevel") and summary["Lbi_ProcessLevel"] != product_id.level:
        raise SarLulcDataError(
            f"{where}: summary.txt says Lbi_ProcessLevel={summary['Lbi_ProcessLevel']!r} but the image files are "
            f"level {product_id.level} ({product_id.text})"
        )
    ceos = not any(has_extension for _, _, has_extension in images.values())
    if ceos and not ceos_available():
        raise SarLulcDataError(
            f"{where} is a CEOS delivery, which needs GDAL's SAR_CEOS driver; the installed GDAL "
            f"({rasterio.__gdal_version__}) does not have it: order the GeoTIFF product or install a GDAL with SAR_CEOS"
        )
    observed = product_id.acquisition_date
    if summary.get("Lbi_ObservationDate", "").isdigit() and len(summary["Lbi_ObservationDate"]) == 8:
        text = summary["Lbi_ObservationDate"]
        observed = date(int(text[:4]), int(text[4:6]), int(text[6:]))
    band_files = tuple((pol, images[pol][1]) for pol in _POLARIZATION_ORDER if pol in images)
    info = ProductInfo(
        product_type="ceos" if ceos else STANDARD_LEVELS[product_id.level],
        product_id=product_id.text,
        acquisition_date=observed,
        sensor="PALSAR-2",
        orbit=product_id.orbit,
        frame=product_id.frame,
        mode=product_id.mode,
        level=product_id.level,
        look_side=product_id.look_side,
        orbit_direction=product_id.orbit_direction,
        files=tuple(path for _, path in band_files),
    )
    return ProductLayout(
        product_type=info.product_type,
        where=where,
        band_files=band_files,
        info=info,
        backscatter="sigma0",
        calibration_factor=SENSOR_CALIBRATION_FACTORS["PALSAR-2"],
        default_polarizations=(only,) if only else None,
        archive=listing.archive,
        driver="SAR_CEOS" if ceos else None,
    )


def _layout_of_listing(listing: _Listing, where: str, tile: str | None, only: str | None = None) -> ProductLayout:
    layout = _mosaic_layout(listing, tile, where) or _standard_layout(listing, where, only)
    if layout is None:
        shown = ", ".join(list(listing.files)[:8]) + (", ..." if len(listing.files) > 8 else "")
        raise SarLulcDataError(
            f"{where} holds no product sarlulc recognizes (unknown file naming: {shown or 'no files'}); expected a "
            "mosaic tile ({tile}_{yy}_sl_HH_F02DAR...), an L1.5/L2.1 product (IMG-{POL}-ALOS2....tif with "
            "summary.txt) or a CEOS delivery (VOL-/LED-/IMG-...)"
        )
    return layout


def is_product_folder(folder: str | Path) -> bool:
    """Whether a folder directly holds one product's files (a mosaic tile's, or an L1.5/L2.1/CEOS product's)."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    names = [p.name for p in folder.iterdir() if p.is_file()]
    return any(_MOSAIC_FILE.match(n) or _STANDARD_IMAGE.match(n) or n.lower() == _SUMMARY for n in names)


def _split_archive_path(path: Path) -> tuple[Path, str] | None:
    """``ARCHIVE.tar.gz/member/path`` -> (archive, member) when ``path`` does not exist but a parent archive does."""
    for parent in path.parents:
        if _is_archive(parent) and parent.is_file():
            return parent, str(path.relative_to(parent))
    return None


def recognize(path: str | Path, *, tile: str | None = None) -> ProductLayout | None:
    """What a path is: the :class:`ProductLayout` of a JAXA product, or ``None`` for a plain raster.

    Raises:
        SarLulcDataError: the path does not exist, an archive is corrupt, a folder holds no recognized product or
            several mosaic tiles (without ``tile``), a product is L1.1/SLC or incomplete.
    """
    text = str(path)
    if not is_local_path(text):
        member_match = _MOSAIC_FILE.match(Path(text).name)
        for prefix in ("/vsitar/", "/vsizip/"):
            if text.startswith(prefix) and member_match:
                archive, member = _split_vsi(text, prefix)
                listing = _Listing.of_archive(archive)
                return _layout_of_listing(listing, text, member_match["tile"] + "_" + member_match["yy"])
        return None
    local = Path(text)
    if not local.exists():
        split = _split_archive_path(local)
        if split is None:
            raise SarLulcDataError(f"scene {text} does not exist")
        archive, member = split
        members = _archive_members(archive)
        if member not in members:
            raise SarLulcDataError(f"archive {archive} has no member {member}")
        name = Path(member).name
        listing = _Listing.of_archive(archive, members)
        mosaic = _MOSAIC_FILE.match(name)
        image = _STANDARD_IMAGE.match(name)
        return _layout_of_listing(
            listing,
            text,
            f"{mosaic['tile']}_{mosaic['yy']}" if mosaic else tile,
            image["pol"].upper() if image else None,
        )
    if local.is_dir():
        return _layout_of_listing(_Listing.of_folder(local), text, tile)
    name = local.name
    if _is_archive(local):
        return _layout_of_listing(_Listing.of_archive(local), text, tile)
    if name.lower() == _SUMMARY:
        return _layout_of_listing(_Listing.of_folder(local.parent), text, tile)
    mosaic = _MOSAIC_FILE.match(name)
    if mosaic is not None:
        return _layout_of_listing(_Listing.of_folder(local.parent), text, f"{mosaic['tile']}_{mosaic['yy']}")
    image = _STANDARD_IMAGE.match(name)
    if image is not None:
        return _layout_of_listing(_Listing.of_folder(local.parent), text, tile, image["pol"].upper())
    if name.upper().startswith(_CEOS_MARKERS):
        return _layout_of_listing(_Listing.of_folder(local.parent), text, tile)
    return None


def _split_vsi(text: str, prefix: str) -> tuple[Path, str]:
    rest = text[len(prefix) :]
    for suffix in ARCHIVE_SUFFIXES:
        index = rest.lower().find(suffix + "/")
        if index >= 0:
            return Path(rest[: index + len(suffix)]), rest[index + len(suffix) + 1 :]
    raise SarLulcDataError(f"{text}: cannot tell the archive from the member in this GDAL path")


# ----------------------------------------------------------------------------------------------------------------------
# Product scenes
# ----------------------------------------------------------------------------------------------------------------------
def _transform_tolerance(transform: Affine) -> float:
    # A ten-thousandth of a pixel: far below any real misregistration, far above float round-off.
    return 1e-4 * min(abs(transform.a) or 1.0, abs(transform.e) or 1.0)


def _grid_problems(reference: Any, other: Any) -> list[str]:
    problems = []
    if reference.crs != other.crs:
        problems.append(f"CRS {other.crs} differs from {reference.crs}")
    if (reference.height, reference.width) != (other.height, other.width):
        problems.append(f"shape {(other.height, other.width)} differs from {(reference.height, reference.width)}")
    tolerance = _transform_tolerance(reference.transform)
    if any(abs(x - y) > tolerance for x, y in zip(reference.transform[:6], other.transform[:6])):
        problems.append(f"transform {tuple(other.transform[:6])} differs from {tuple(reference.transform[:6])}")
    return problems


def _usable_codes(codes: Mapping[int, str], invalid: Sequence[str]) -> tuple[int, ...]:
    """The mask codes whose category is usable; every other code (unknown ones included) is invalid."""
    return tuple(code for code, category in codes.items() if category not in invalid)


def _usable(
    mask: np.ndarray, codes: tuple[int, ...], out: np.ndarray | None = None, scratch: np.ndarray | None = None
) -> np.ndarray:
    """Where a mask holds one of ``codes`` (into ``out`` if given; ``scratch``, of the mask's shape, takes each
    comparison): a comparison per code, ten times faster than a table lookup."""
    usable = np.zeros(mask.shape, dtype=bool) if out is None else out
    usable.fill(False)
    scratch = np.empty(mask.shape, dtype=bool) if scratch is None else scratch
    for code in codes:
        np.logical_or(usable, np.equal(mask, code, out=scratch), out=usable)
    return usable


@dataclass
class _Handles:
    """The open GDAL datasets of one product scene handle."""

    bands: list[Any]
    mask: Any | None = None
    auxiliary: dict[str, Any] = field(default_factory=dict)
    sources: list[Any] = field(default_factory=list)  # datasets under a WarpedVRT (closed with it)

    def all(self) -> Iterator[Any]:
        yield from self.bands
        if self.mask is not None:
            yield self.mask
        yield from self.auxiliary.values()
        yield from self.sources


class ProductScene(SarScene):
    """A JAXA product (several single-band files on one grid, a mask file, auxiliary rasters) as a scene.

    Create one with :func:`open_scene`. Besides the interface of :class:`~sarlulc.data.scene.SarScene`:

    Attributes:
        layout: the :class:`ProductLayout` it was opened from.
        mask_invalid: the mask categories that make a pixel invalid.
        auxiliary_names: the auxiliary rasters :meth:`read_auxiliary` can read (``"date"``, ``"linci"``).
    """

    def __init__(
        self,
        layout: ProductLayout,
        input_kind: str | None = None,
        calibration_factor: float | None = None,
        bands: Sequence[int] | None = None,
        check: bool = True,
        *,
        polarizations: Sequence[str] | None = None,
        mask_invalid: Sequence[str] | None = None,
    ) -> None:
        self.layout = layout
        self.path = layout.where
        self.mask_invalid = _check_mask_invalid(mask_invalid)
        where = f"{layout.product_type} product {layout.where}"
        if layout.default_polarizations is not None and bands is None and polarizations is None:
            polarizations = layout.default_polarizations  # an image file was named: its polarization alone
        self.bands = select_polarizations(layout.polarizations, bands, polarizations, where)
        self.polarizations = tuple(layout.polarizations[b - 1] for b in self.bands)
        self.input_kind = "dn" if input_kind is None else normalize_input_kind(input_kind)
        self.backscatter = layout.backscatter
        self._handles = _Handles(bands=[])
        self._scratch = ScratchArrays()
        self._usable_codes = _usable_codes(MOSAIC_MASK_CODES, self.mask_invalid)
        try:
            with _archive_env(layout.archive):
                self._open_bands(check)
                self._open_mask(check)
            self.calibration_factor, self._calibration_factor_source = self._resolve_calibration_factor(
                calibration_factor
            )
            self._nodata = [0.0 if ds.nodata is None else float(ds.nodata) for ds in self._handles.bands]
            files = tuple(layout.band_files[b - 1][1] for b in self.bands)
            if layout.mask_file is not None:
                files += (layout.mask_file,)
            self._product = replace(layout.info, files=files, calibration_factor_source=self._calibration_factor_source)
            # A mosaic's acquisition period needs a pass over its date raster: done when first asked for.
            self._period_known = "date" not in self.auxiliary_names
            if check:
                with _archive_env(layout.archive):
                    self._check_integrity()
        except BaseException:
            self.close()
            raise

    # -- opening ---------------------------------------------------------------------------------------------------
    def _open_image(self, path: str, role: str) -> Any:
        dataset = open_dataset(path, role, self.layout.driver, memory_map=True)
        if dataset.transform == Affine.identity() and dataset.gcps[0] and self.layout.product_type == "ceos":
            # A CEOS image with GCPs only: a north-up view in the GCPs' CRS, the DN of the nearest source pixel.
            self._handles.sources.append(dataset)
            return WarpedVRT(dataset, crs=dataset.gcps[1], resampling=Resampling.nearest, src_nodata=0, nodata=0)
        return dataset

    def _open_bands(self, check: bool) -> None:
        for band in self.bands:
            pol, path = self.layout.band_files[band - 1]
            dataset = self._open_image(path, f"{pol} image file")
            self._handles.bands.append(dataset)
            if not check:
                continue
            if dataset.count != 1:
                raise SarLulcDataError(f"{pol} image file {path} has {dataset.count} bands; expected 1")
            check_dtype(dataset, 1, path, f"{pol} image file")
            check_georeferencing(dataset, path, f"{pol} image file")
            reference = self._handles.bands[0]
            problems = _grid_problems(reference, dataset)
            if problems:
                first = self.layout.band_files[self.bands[0] - 1][1]
                raise SarLulcDataError(
                    f"{pol} image file {path} is not on the grid of {first}: {'; '.join(problems)} (the "
                    "polarizations of one product must share their grid)"
                )

    def _open_mask(self, check: bool) -> None:
        if self.layout.mask_file is None:
            return
        path = self.layout.mask_file
        self._handles.mask = mask = open_dataset(path, "mask file", memory_map=True)
        if not check:
            return
        if mask.count != 1 or mask.dtypes[0] != "uint8":
            raise SarLulcDataError(f"mask file {path} has {mask.count} band(s) of {mask.dtypes[0]}; expected 1 uint8")
        check_georeferencing(mask, path, "mask file")
        problems = _grid_problems(self._handles.bands[0], mask)
        if problems:
            raise SarLulcDataError(f"mask file {path} is on another grid than the image files: {'; '.join(problems)}")

    def _resolve_calibration_factor(self, calibration_factor: float | None) -> tuple[float, str]:
        if calibration_factor is not None:
            return float(calibration_factor), "argument"
        first = self._handles.bands[0]
        source = first.src_dataset if isinstance(first, WarpedVRT) else first
        try:
            tagged = calibration_factor_from_tags(dataset_tags(source, 1))
        except ValueError as err:
            raise SarLulcDataError(f"{self.layout.band_files[self.bands[0] - 1][1]}: {err}") from err
        if tagged is not None:
            return tagged, "tag"
        return self.layout.calibration_factor, self.layout.calibration_factor_source

    def reopen(self) -> ProductScene:
        scene = ProductScene(
            self.layout,
            input_kind=self.input_kind,
            calibration_factor=self.calibration_factor,
            bands=self.bands,
            check=False,
            mask_invalid=self.mask_invalid,
        )
        scene._calibration_factor_source = self._calibration_factor_source
        scene._product, scene._period_known = self._product, self._period_known
        return scene

    # -- georeferencing and metadata -------------------------------------------------------------------------------
    @property
    def crs(self) -> CRS:
        return self._handles.bands[0].crs

    @property
    def transform(self) -> Affine:
        return self._handles.bands[0].transform

    @property
    def shape(self) -> tuple[int, int]:
        first = self._handles.bands[0]
        return first.height, first.width

    @property
    def dtype(self) -> str:
        return self._handles.bands[0].dtypes[0]

    @property
    def block_shapes(self) -> list[tuple[int, int]]:
        return [ds.block_shapes[0] for ds in self._handles.bands]

    @property
    def product(self) -> ProductInfo:  # type: ignore[override]  # an attribute in plain scenes
        """What the files say about the product; a mosaic's ``acquisition_period`` is read from its date raster (a
        decimated read) the first time this is asked for."""
        if not self._period_known:
            with _archive_env(self.layout.archive):
                self._product = replace(self._product, acquisition_period=self._acquisition_period())
            self._period_known = True
        return self._product

    @property
    def auxiliary_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.layout.auxiliary_files)

    @property
    def has_mask(self) -> bool:
        return self.layout.mask_file is not None

    def tags(self) -> dict[str, str]:
        first = self._handles.bands[0]
        return (first.src_dataset if isinstance(first, WarpedVRT) else first).tags()

    # -- reads -----------------------------------------------------------------------------------------------------
    def _read_inside(self, window: Window) -> np.ndarray:
        return np.stack(self._read_bands_inside(window))  # a copy: the bands are scratch arrays

    def _read_bands_inside(self, window: Window) -> list[np.ndarray]:
        shape = (int(window.height), int(window.width))
        bands = []
        for i, dataset in enumerate(self._handles.bands):
            with data_errors(dataset.name, f"reading {self.polarizations[i]}"):
                out = self._scratch.get(f"band{i}", shape, dataset.dtypes[0])
                bands.append(dataset.read(1, window=window, out=out))
        return bands

    def _validity_inside(self, window: Window) -> np.ndarray | None:
        mask = self._handles.mask
        if mask is None:
            return None
        shape = (int(window.height), int(window.width))
        with data_errors(mask.name, "reading the mask"):
            codes = mask.read(1, window=window, out=self._scratch.get("mask", shape, mask.dtypes[0]))
        usable = self._scratch.get("usable", shape, bool)
        return _usable(codes, self._usable_codes, out=usable, scratch=self._scratch.get("usable_code", shape, bool))

    def _read_decimated(self, out_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
        raw = np.empty((self.count, *out_shape), dtype=np.dtype(self.dtype))
        for i, dataset in enumerate(self._handles.bands):
            with data_errors(dataset.name, f"a decimated read of {self.polarizations[i]}"):
                raw[i] = dataset.read(1, out_shape=out_shape, resampling=Resampling.nearest)
        mask = self._handles.mask
        if mask is None:
            return raw, None
        with data_errors(mask.name, "a decimated read of the mask"):
            return raw, _usable(mask.read(1, out_shape=out_shape, resampling=Resampling.nearest), self._usable_codes)

    def _read_last_blocks(self) -> None:
        height, width = self.shape
        for dataset in [*self._handles.bands, *([self._handles.mask] if self._handles.mask is not None else [])]:
            block_h, block_w = dataset.block_shapes[0]
            row0, col0 = (height - 1) // block_h * block_h, (width - 1) // block_w * block_w
            with data_errors(dataset.name, "reading the last block"):
                dataset.read(1, window=Window(col0, row0, width - col0, height - row0))

    def _scan_windows(self) -> Iterable[Window]:
        first = self._handles.bands[0]
        return (window for _, window in first.block_windows(1))

    def _reads_through_a_stream(self) -> bool:
        archive = self.layout.archive
        return archive is not None and not archive.lower().endswith(".tar")  # .tar.gz, .tgz, .zip: compressed

    def _auxiliary(self, name: str) -> Any:
        if name not in self.auxiliary_names:
            raise SarLulcDataError(
                f"{self.layout.where} has no {name!r} raster; it has {', '.join(self.auxiliary_names) or 'none'}"
            )
        if name not in self._handles.auxiliary:
            path = dict(self.layout.auxiliary_files)[name]
            with _archive_env(self.layout.archive):
                dataset = open_dataset(path, f"{name} file")
            self._handles.auxiliary[name] = dataset
            problems = _grid_problems(self._handles.bands[0], dataset)
            if problems:
                raise SarLulcDataError(
                    f"{name} file {path} is on another grid than the image files: {'; '.join(problems)}"
                )
        return self._handles.auxiliary[name]

    def read_auxiliary(self, name: str, window: Window | None = None, *, raw: bool = False) -> np.ndarray:
        """An auxiliary raster of a window (``None``: the whole scene); outside the raster it reads as 0 / NaT.

        Args:
            name: ``"date"`` (decoded to ``datetime64[D]``, NaT where 0: days since the sensor's launch, e.g.
                2014-05-24 for PALSAR-2) or ``"linci"`` (the local incidence angle in degrees, as stored).
            window: pixel window; it may reach past the raster.
            raw: return the stored values (days for ``"date"``) instead.
        """
        dataset = self._auxiliary(name)
        window = window_or_full(window, *self.shape)
        out = np.zeros((int(window.height), int(window.width)), dtype=np.dtype(dataset.dtypes[0]))
        clipped = clip_window(window, *self.shape)
        if clipped is not None:
            inside, (rows, cols) = clipped
            with data_errors(dataset.name, f"reading {name} at {inside}"):
                out[rows, cols] = dataset.read(1, window=inside)
        if raw or name != "date":
            return out
        return self._decode_dates(out)

    def _decode_dates(self, days: np.ndarray) -> np.ndarray:
        epoch = np.datetime64(MOSAIC_DATE_EPOCHS[self._product.sensor or "PALSAR-2"], "D")
        dates = epoch + days.astype("timedelta64[D]")
        dates[days == 0] = np.datetime64("NaT")
        return dates

    def _acquisition_period(self) -> tuple[date, date] | None:
        dataset = self._auxiliary("date")
        with data_errors(dataset.name, "a decimated read of the date raster"):
            days = dataset.read(1, out_shape=decimated_shape(*self.shape), resampling=Resampling.nearest)
        days = days[days > 0]
        if days.size == 0:
            return None
        epoch = MOSAIC_DATE_EPOCHS[self._product.sensor or "PALSAR-2"]
        return epoch + timedelta(days=int(days.min())), epoch + timedelta(days=int(days.max()))

    # -- lifetime --------------------------------------------------------------------------------------------------
    def close(self) -> None:
        with _archive_env(self.layout.archive):
            for dataset in self._handles.all():
                dataset.close()

    @property
    def closed(self) -> bool:
        return not self._handles.bands or self._handles.bands[0].closed


def _check_mask_invalid(mask_invalid: Sequence[str] | None) -> tuple[str, ...]:
    if mask_invalid is None:
        return DEFAULT_MASK_INVALID
    chosen = tuple(str(c).lower() for c in mask_invalid)
    unknown = [c for c in chosen if c not in MASK_CATEGORIES]
    if unknown:
        raise ValueError(f"mask_invalid must name categories among {MASK_CATEGORIES}, got {list(mask_invalid)}")
    return chosen


# ----------------------------------------------------------------------------------------------------------------------
# The entry points
# ----------------------------------------------------------------------------------------------------------------------
def open_scene(
    path: str | Path,
    input_kind: str | None = None,
    calibration_factor: float | None = None,
    bands: Sequence[int] | None = None,
    check: bool = True,
    *,
    polarizations: Sequence[str] | None = None,
    mask_invalid: Sequence[str] | None = None,
    tile: str | None = None,
) -> SarScene:
    """Open and validate any scene the package reads (see the module docstring for what is recognized).

    Args:
        path: a GeoTIFF, a mosaic tile (folder, file or archive), an L1.5/L2.1 product (folder, ``summary.txt``,
            image file or ``.zip``), or a CEOS delivery.
        input_kind: ``"dn"``, ``"linear"`` or ``"db"``; ``None``: products are DN, a GeoTIFF decides by
            :func:`sarlulc.data.alos2.resolve_input_kind`.
        calibration_factor: CF in dB for DN input; ``None`` uses the file's tag, else the sensor's published factor.
        bands: 1-based bands to read as (HH,) or (HH, HV): of the raster for a GeoTIFF, of the product's
            polarizations (in the order HH, HV, VH, VV) for a product.
        check: run the cheap integrity and all-nodata checks (last blocks; a decimated read, or a forward scan
            of the files inside a compressed archive: :meth:`~sarlulc.data.scene.SarScene._check_integrity`).
        polarizations: the polarizations to read, in channel order, e.g. ``("HH",)`` or ``("HH", "HV")``; an
            alternative to ``bands``.
        mask_invalid: the mask categories (:data:`MASK_CATEGORIES`) that make a pixel invalid (products with a mask
            file; default :data:`DEFAULT_MASK_INVALID`: no data, layover, shadow).
        tile: the mosaic tile to open (``"N35E139"``) when the archive or folder holds several.

    Raises:
        SarLulcDataError: the path does not exist or is not a scene, an archive is corrupt, a product is L1.1/SLC,
            incomplete or its files disagree on the grid, a requested polarization is missing, the data is truncated
            or holds no valid pixel.
        ValueError: the options contradict each other or name unknown values.

    Examples:
        >>> from rasterio.windows import Window
        >>> from sarlulc.data import open_scene
        >>> from sarlulc.data.synthetic import generate_scene
        >>> _ = generate_scene("synth", size=256, progress=False, overwrite=True)  # scene.tif (DN), labels.tif
        >>> with open_scene("synth/scene.tif") as scene:
        ...     db, valid = scene.read_db(Window(0, 0, 64, 64))  # sigma0 in dB (C, h, w) and the validity mask
        ...     print(scene.input_kind, scene.backscatter, scene.polarizations, scene.calibration_factor)
        dn sigma0 ('HH',) -83.0
        >>> db.shape, db.dtype, valid.shape
        ((1, 64, 64), dtype('float32'), (64, 64))
    """
    layout = recognize(path, tile=tile)
    if layout is None:
        if mask_invalid is not None:
            raise ValueError(f"mask_invalid applies to products with a mask file; {path} is a plain raster")
        return Alos2Scene(
            path,
            input_kind=input_kind,
            calibration_factor=calibration_factor,
            bands=bands,
            check=check,
            polarizations=polarizations,
        )
    return ProductScene(
        layout,
        input_kind=input_kind,
        calibration_factor=calibration_factor,
        bands=bands,
        check=check,
        polarizations=polarizations,
        mask_invalid=mask_invalid,
    )


def find_products(folder: str | Path) -> list[str]:
    """The products in a folder tree, one path per product (sorted): mosaic tiles (one per tile and year, whether
    loose files or inside archives), L1.5/L2.1 product folders and CEOS deliveries. Plain GeoTIFFs are not listed.

    A mosaic archive holding several tiles contributes one ``ARCHIVE/MEMBER`` path per tile (its HH file).
    """
    folder = Path(folder)
    found: list[str] = []
    for directory in sorted({p.parent for p in folder.rglob("*") if p.is_file()} | {folder}):
        files = sorted(p for p in directory.iterdir() if p.is_file())
        tiles: dict[str, Path] = {}
        for file in files:
            match = _MOSAIC_FILE.match(file.name)
            if match and (match["ext"] or "").lower() != ".hdr" and match["layer"] in ("HH", "HV"):
                tiles.setdefault(f"{match['tile'].upper()}_{match['yy']}", file)
        found.extend(str(path) for _, path in sorted(tiles.items()))
        if any(_STANDARD_IMAGE.match(f.name) for f in files):
            found.append(str(directory))
        for file in files:
            if _is_archive(file):
                found.extend(_archive_products(file))
    return sorted(set(found))


def _archive_products(archive: Path) -> list[str]:
    members = _archive_members(archive)
    tiles: dict[str, str] = {}
    has_standard = False
    for member in members:
        name = Path(member).name
        match = _MOSAIC_FILE.match(name)
        if match and (match["ext"] or "").lower() != ".hdr" and match["layer"] in ("HH", "HV"):
            tiles.setdefault(f"{match['tile'].upper()}_{match['yy']}", member)
        has_standard |= bool(_STANDARD_IMAGE.match(name))
    if has_standard:
        return [str(archive)]
    if len(tiles) == 1:
        return [str(archive)]
    return [str(archive / member) for _, member in sorted(tiles.items())]
