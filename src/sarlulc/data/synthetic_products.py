"""Synthetic scenes written in the exact layouts of JAXA's products, with HRLULC label tiles, for the tests and the demo.

:func:`generate_product` renders the procedural landscape of :mod:`sarlulc.data.synthetic` and writes it the way JAXA
ships real data, so that every reader of :mod:`sarlulc.data.products` and :mod:`sarlulc.data.labels` runs on them:

``"mosaic"`` (a 25 m yearly mosaic tile)
    ``OUT/{tile}_{yy}_MOS_F02DAR.tar.gz``, the archive of the 5 x 5 degree block, named after the block's upper-left
    corner, holding the tile's files; and ``OUT/{tile}_{yy}/``, the same files extracted:
    ``{tile}_{yy}_sl_HH_F02DAR.tif``, ``..._sl_HV_F02DAR.tif`` (uint16 DN, 0 = no data), ``..._sl_mask_F02DAR.tif``
    (uint8: 0 no data, 50 ocean, 100 layover, 150 shadow, 255 land), ``..._sl_date_F02DAR.tif`` (uint16 days since
    2014-05-24), ``..._sl_linci_F02DAR.tif`` (uint8 local incidence angle, degrees) and ``{tile}_{yy}_F02DAR.xml``.
    Years before 2019 are written as raw files with an ENVI ``.hdr`` sidecar instead of GeoTIFFs, as JAXA did. The
    tile is EPSG:4326 at 1/4500 degree, anchored at the tile's upper-left corner (its name); a tile smaller than 4500
    px covers only the upper-left part of its 1 x 1 degree cell. Layover and shadow patches (brightened and darkened
    backscatter, as on real slopes) are marked in the mask. The synthetic model's values stand for gamma0 here.
``"l15"`` (a standard L1.5 GeoTIFF product; ``level="2.1"`` for L2.1)
    ``OUT/{order}_{scene id}/`` with ``IMG-HH-{product id}.tif``, ``IMG-HV-{product id}.tif`` (uint16 DN, UTM at 10
    m, BigTIFF on request) and ``summary.txt`` (``key="value"`` lines: ``Scs_SceneID``, ``Pds_ProductID``,
    ``Lbi_ProcessLevel``, ``Lbi_ObservationDate``, ``Pdi_L15ProductFileName01``, ...). The scene is centred on a
    whole-degree corner, so it straddles four HRLULC tiles: the seams are exercised.

Both also write the labels as HRLULC tiles ``OUT/JAXA_HRLULC_Japan_v{version}/LC_N{lat}E{lon}.tif`` (uint8 codes, 0 =
no data, EPSG:4326 at 1/12000 degree on the 1 x 1 degree cell's grid), covering the scene's footprint only: the
landscape's codes on the scene's grid, warped onto each tile by nearest neighbour. Everything is first written into a
hidden folder inside ``OUT`` and moved into place when complete.

What the layouts cannot reproduce is said in docs/products.md: the exact content of JAXA's XML and summary files
beyond the keys the readers use, and the CEOS format (no synthetic CEOS delivery is written).
"""

from __future__ import annotations

import math
import os
import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.transform import Affine
from rasterio.warp import reproject, transform_bounds
from rasterio.warp import transform as transform_coordinates
from rasterio.windows import Window
from tqdm.auto import tqdm

from .classes import HRLULC_COLORS, hrlulc_scheme
from .products import MOSAIC_DATE_EPOCHS
from .synthetic import _M, SyntheticLandscape, SyntheticSceneConfig, scene_shape

__all__ = [
    "PRODUCT_KINDS",
    "SyntheticProduct",
    "describe_product",
    "generate_product",
    "hrlulc_folder_name",
]

PRODUCT_KINDS = ("mosaic", "l15")
"""The layouts :func:`generate_product` writes."""

_MOSAIC_PIXEL = 1.0 / 4500.0  # degrees: 25 m mosaic tiles are 4500 x 4500 px per degree
_HRLULC_PIXEL = 1.0 / 12000.0  # degrees: HRLULC tiles are 12000 x 12000 px per degree
_L15_PIXEL = 10.0  # metres
# Upper-left corners (longitude, latitude) of synthetic mosaic tiles, and centres of synthetic L1.5 scenes (whole-degree
# corners, so that they straddle label tiles), chosen by the seed.
_MOSAIC_CORNERS = ((139, 36), (135, 35), (140, 39), (136, 36), (130, 34))
_L15_CENTRES = ((140.0, 36.0), (136.0, 35.0), (141.0, 39.0), (139.0, 35.0), (131.0, 34.0))
_LAYOVER_DB, _SHADOW_DB = 8.0, -12.0  # what the slopes do to the backscatter there
_MASK_NODATA, _MASK_OCEAN, _MASK_LAYOVER, _MASK_SHADOW, _MASK_LAND = 0, 50, 100, 150, 255


def hrlulc_folder_name(version: str) -> str:
    """``JAXA_HRLULC_Japan_v23.12``: the folder JAXA's tiles come in."""
    return f"JAXA_HRLULC_Japan_v{version}"


@dataclass(frozen=True)
class SyntheticProduct:
    """What :func:`generate_product` wrote.

    Attributes:
        kind: ``"mosaic"`` or ``"l15"``.
        path: the product as JAXA ships it: the mosaic archive, or the L1.5/L2.1 product folder.
        extracted: the mosaic tile's extracted folder (None for L1.5).
        labels: the HRLULC tile folder.
        product_id: the tile and year (``N36E139_19``) or the standard product id.
        crs, transform, shape: the scene's grid.
        label_tiles: the label tiles written.
        class_pixels: pixel count per label code on the scene's grid.
        layover_pixels, shadow_pixels: pixels the mosaic's mask marks as layover / shadow (0 for L1.5).
    """

    kind: str
    path: Path
    extracted: Path | None
    labels: Path
    product_id: str
    crs: CRS
    transform: Affine
    shape: tuple[int, int]
    label_tiles: tuple[Path, ...]
    class_pixels: dict[int, int]
    layover_pixels: int = 0
    shadow_pixels: int = 0


@dataclass
class _Rendered:
    codes: np.ndarray
    material: np.ndarray
    hh: np.ndarray
    hv: np.ndarray
    valid: np.ndarray


def _render(config: SyntheticSceneConfig, progress: bool) -> _Rendered:
    """The whole scene in memory (products are test-sized): codes, materials, HH and HV DNs, footprint."""
    landscape = SyntheticLandscape(config)
    shape = (config.height, config.width)
    out = _Rendered(
        codes=np.zeros(shape, np.uint8),
        material=np.zeros(shape, np.uint8),
        hh=np.zeros(shape, np.uint16),
        hv=np.zeros(shape, np.uint16),
        valid=np.zeros(shape, bool),
    )
    size = config.block_size
    windows = [
        Window(col, row, min(size, config.width - col), min(size, config.height - row))
        for row in range(0, config.height, size)
        for col in range(0, config.width, size)
    ]
    for window in tqdm(windows, desc="synthetic product", unit="block", disable=not progress):
        block = landscape.render(window)
        material, _, _ = landscape.materials(window)
        rows, cols = window.toslices()
        out.codes[rows, cols] = block.codes
        out.material[rows, cols] = material
        out.hh[rows, cols] = block.dn
        out.hv[rows, cols] = landscape.render_hv(window, block)
        out.valid[rows, cols] = block.valid
    return out


def _slope_patches(rendered: _Rendered, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Layover and shadow patches (discs) on valid land, at least one of each: ``(layover, shadow)`` masks."""
    height, width = rendered.codes.shape
    rng = np.random.default_rng([seed, 0x51_09E])
    land = rendered.valid & (rendered.material != _M["sea"])
    rows, cols = np.mgrid[0:height, 0:width]
    layover, shadow = np.zeros((height, width), bool), np.zeros((height, width), bool)
    candidates = np.flatnonzero(land.ravel())
    if candidates.size == 0:
        return layover, shadow
    count = max(4, (height * width) // (128 * 128))
    for i, centre in enumerate(rng.choice(candidates, size=count, replace=False)):
        radius = rng.uniform(3.0, 9.0)
        disc = (rows - centre // width) ** 2 + (cols - centre % width) ** 2 <= radius**2
        (layover if i % 2 == 0 else shadow)[disc & land] = True
    shadow &= ~layover
    return layover, shadow


def _with_gain(dn: np.ndarray, where: np.ndarray, gain_db: float) -> np.ndarray:
    out = dn.astype(np.float64)
    out[where] *= 10.0 ** (gain_db / 20.0)  # DN is amplitude: dB/20
    return np.clip(np.rint(out), 1, 65535).astype(np.uint16) * (dn > 0)


# ----------------------------------------------------------------------------------------------------------------------
# Writing rasters
# ----------------------------------------------------------------------------------------------------------------------
def _write_geotiff(
    path: Path,
    data: np.ndarray,
    crs: CRS,
    transform: Affine,
    *,
    nodata: float | None = None,
    tags: dict[str, str] | None = None,
    bigtiff: bool = False,
    tiled: bool = False,
    compress: str | None = None,
    colormap: dict[int, tuple[int, int, int, int]] | None = None,
) -> None:
    profile = dict(
        driver="GTiff",
        height=data.shape[0],
        width=data.shape[1],
        count=1,
        dtype=data.dtype,
        crs=crs,
        transform=transform,
        BIGTIFF="YES" if bigtiff else "NO",
    )
    if nodata is not None:
        profile["nodata"] = nodata
    if tiled:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    if compress:
        profile["compress"] = compress
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
        if tags:
            dst.update_tags(**tags)
        if colormap:
            dst.write_colormap(1, colormap)


_ENVI_TYPES = {np.dtype("uint8"): 1, np.dtype("int16"): 2, np.dtype("uint16"): 12}


def _write_envi(path: Path, data: np.ndarray, transform: Affine) -> None:
    """A raw little-endian band and its ENVI header (the pre-2019 mosaic layout): ``path`` and ``path.hdr``."""
    data.astype(data.dtype.newbyteorder("<")).tofile(path)
    header = (
        "ENVI\n"
        f"description = {{{path.name}}}\n"
        f"samples = {data.shape[1]}\n"
        f"lines = {data.shape[0]}\n"
        "bands = 1\n"
        "header offset = 0\n"
        "file type = ENVI Standard\n"
        f"data type = {_ENVI_TYPES[data.dtype]}\n"
        "interleave = bsq\n"
        "byte order = 0\n"
        f"map info = {{Geographic Lat/Lon, 1.0, 1.0, {transform.c!r}, {transform.f!r}, {transform.a!r}, "
        f"{-transform.e!r}, WGS-84, units=Degrees}}\n"
    )
    path.with_name(path.name + ".hdr").write_text(header)


# ----------------------------------------------------------------------------------------------------------------------
# HRLULC label tiles
# ----------------------------------------------------------------------------------------------------------------------
def _write_label_tiles(folder: Path, codes: np.ndarray, crs: CRS, transform: Affine, version: str) -> tuple[Path, ...]:
    """The codes of the scene grid, warped by nearest neighbour onto every HRLULC tile the scene overlaps."""
    folder.mkdir(parents=True, exist_ok=True)
    height, width = codes.shape
    west, south, east, north = transform_bounds(
        crs, "EPSG:4326", *rasterio.transform.array_bounds(height, width, transform), densify_pts=21
    )
    scheme = hrlulc_scheme(version)
    colormap = {code: (*HRLULC_COLORS[code], 255) for code in scheme.code_to_id()} | {0: (0, 0, 0, 0)}
    written = []
    for lat in range(math.floor(south), math.floor(north) + 1):
        for lon in range(math.floor(west), math.floor(east) + 1):
            # Pixel rows and columns of the cell's 12000 x 12000 grid (from its north-west corner) that the scene covers.
            col0 = max(0, math.floor((west - lon) / _HRLULC_PIXEL) - 1)
            col1 = min(12000, math.ceil((east - lon) / _HRLULC_PIXEL) + 1)
            row0 = max(0, math.floor((lat + 1 - north) / _HRLULC_PIXEL) - 1)
            row1 = min(12000, math.ceil((lat + 1 - south) / _HRLULC_PIXEL) + 1)
            if col0 >= col1 or row0 >= row1:
                continue
            tile_transform = Affine(
                _HRLULC_PIXEL, 0.0, lon + col0 * _HRLULC_PIXEL, 0.0, -_HRLULC_PIXEL, lat + 1 - row0 * _HRLULC_PIXEL
            )
            tile = np.zeros((row1 - row0, col1 - col0), np.uint8)
            reproject(
                codes,
                tile,
                src_transform=transform,
                src_crs=crs,
                dst_transform=tile_transform,
                dst_crs="EPSG:4326",
                resampling=Resampling.nearest,
                src_nodata=0,
                dst_nodata=0,
            )
            if not tile.any():
                continue
            path = folder / f"LC_{'N' if lat >= 0 else 'S'}{abs(lat)}{'E' if lon >= 0 else 'W'}{abs(lon)}.tif"
            _write_geotiff(
                path, tile, CRS.from_epsg(4326), tile_transform, nodata=0, tiled=True, compress="lzw", colormap=colormap
            )
            written.append(path)
    return tuple(written)


# ----------------------------------------------------------------------------------------------------------------------
# The two layouts
# ----------------------------------------------------------------------------------------------------------------------
def _tile_name(lon: int, lat: int) -> str:
    return f"{'N' if lat >= 0 else 'S'}{abs(lat):02d}{'E' if lon >= 0 else 'W'}{abs(lon):03d}"


def _write_mosaic(
    staging: Path, out_dir: Path, config: SyntheticSceneConfig, rendered: _Rendered, year: int, cf_tag: dict[str, str]
) -> tuple[Path, Path, str, Affine, int, int, list[tuple[Path, Path]]]:
    lon, lat = _MOSAIC_CORNERS[config.seed % len(_MOSAIC_CORNERS)]
    tile, yy = _tile_name(lon, lat), f"{year % 100:02d}"
    transform = Affine(_MOSAIC_PIXEL, 0.0, float(lon), 0.0, -_MOSAIC_PIXEL, float(lat))
    crs = CRS.from_epsg(4326)
    layover, shadow = _slope_patches(rendered, config.seed)
    slopes = layover | shadow
    hh = _with_gain(_with_gain(rendered.hh, layover, _LAYOVER_DB), shadow, _SHADOW_DB)
    hv = _with_gain(_with_gain(rendered.hv, layover, _LAYOVER_DB), shadow, _SHADOW_DB)
    mask = np.full(hh.shape, _MASK_LAND, np.uint8)
    mask[rendered.material == _M["sea"]] = _MASK_OCEAN
    mask[layover] = _MASK_LAYOVER
    mask[shadow] = _MASK_SHADOW
    mask[~rendered.valid] = _MASK_NODATA
    # Two acquisitions in the year: the western and the eastern part of the tile, 46 days (a few repeat cycles) apart.
    first = date(year, 7, 1) - MOSAIC_DATE_EPOCHS["PALSAR-2"]
    days = np.where(np.arange(hh.shape[1])[None, :] < hh.shape[1] // 2, first.days, first.days + 46)
    days = np.broadcast_to(days, hh.shape).astype(np.uint16) * rendered.valid
    rows, cols = np.mgrid[0 : hh.shape[0], 0 : hh.shape[1]]
    linci = (30 + 20 * (rows + cols) / max(1, sum(hh.shape))).astype(np.uint8) * rendered.valid
    linci[slopes] = np.where(layover[slopes], 5, 80)  # facing the radar, or away from it
    folder = staging / f"{tile}_{yy}"
    folder.mkdir()
    layers = {"HH": hh, "HV": hv, "mask": mask, "date": days.astype(np.uint16), "linci": linci.astype(np.uint8)}
    for layer, data in layers.items():
        stem = f"{tile}_{yy}_sl_{layer}_F02DAR"
        if year >= 2019:
            _write_geotiff(folder / f"{stem}.tif", data, crs, transform, tags=cf_tag if layer in ("HH", "HV") else None)
        else:
            _write_envi(folder / stem, data, transform)
    (folder / f"{tile}_{yy}_F02DAR.xml").write_text(
        f'<?xml version="1.0" encoding="UTF-8"?>\n<mosaic tile="{tile}" year="{year}" sensor="PALSAR-2" '
        f'synthetic="true" pixels="{hh.shape[1]}" lines="{hh.shape[0]}"/>\n'
    )
    block = _tile_name(lon - lon % 5, lat + (-lat) % 5)  # the 5 x 5 degree block's upper-left corner
    archive = staging / f"{block}_{yy}_MOS_F02DAR.tar.gz"
    with tarfile.open(archive, "w:gz") as handle:
        for file in sorted(folder.iterdir()):
            handle.add(file, arcname=file.name)
    moved = [(folder, out_dir / folder.name), (archive, out_dir / archive.name)]
    return archive, folder, f"{tile}_{yy}", transform, int(layover.sum()), int(shadow.sum()), moved


def _utm(lon: float, lat: float) -> CRS:
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + int((lon + 180.0) // 6.0) + 1)


def _write_standard(
    staging: Path,
    out_dir: Path,
    config: SyntheticSceneConfig,
    rendered: _Rendered,
    level: str,
    polarizations: Sequence[str],
    bigtiff: bool,
    cf_tag: dict[str, str],
) -> tuple[Path, str, CRS, Affine, list[tuple[Path, Path]]]:
    lon, lat = _L15_CENTRES[config.seed % len(_L15_CENTRES)]
    crs = _utm(lon, lat)
    xs, ys = transform_coordinates("EPSG:4326", crs, [lon], [lat])
    west = round(xs[0] - config.width / 2 * _L15_PIXEL, -1)
    north = round(ys[0] + config.height / 2 * _L15_PIXEL, -1)
    transform = Affine(_L15_PIXEL, 0.0, west, 0.0, -_L15_PIXEL, north)
    observed = date(2017, 2, 9) + timedelta(days=14 * config.seed)
    orbit, frame = 14668 + config.seed, 6640
    mode = "FBD" if len(polarizations) > 1 else "FBS"
    scene_id = f"ALOS2{orbit:05d}{frame:04d}-{observed:%y%m%d}"
    product_code = f"{mode}R{level}GUA"
    product_id = f"{scene_id}-{product_code}"
    folder = staging / f"0000000000_001001_{scene_id}"
    folder.mkdir()
    names = []
    for pol in polarizations:
        name = f"IMG-{pol}-{product_id}.tif"
        _write_geotiff(
            folder / name, rendered.hh if pol == "HH" else rendered.hv, crs, transform, tags=cf_tag, bigtiff=bigtiff
        )
        names.append(name)
    summary = {
        "Odi_SiteDateTime": f"{observed:%Y%m%d} 120000",
        "Scs_SceneID": scene_id,
        "Scs_SceneShift": "0",
        "Pds_ProductID": product_code,
        "Pds_PixelSpacing": f"{_L15_PIXEL:g}",
        "Pds_UTM_ZoneNo": str(crs.to_epsg() % 100),
        "Pdi_ProductFormat": "GEOTIFF",
        f"Pdi_CntOfL{level.replace('.', '')}ProductFileName": str(len(names)),
        **{f"Pdi_L{level.replace('.', '')}ProductFileName{i:02d}": name for i, name in enumerate(names, start=1)},
        "Img_SceneCenterDateTime": f"{observed:%Y%m%d} 03:15:42.000",
        "Lbi_Satellite": "ALOS2",
        "Lbi_Sensor": "SAR",
        "Lbi_ProcessLevel": level,
        "Lbi_ObservationDate": f"{observed:%Y%m%d}",
    }
    (folder / "summary.txt").write_text("".join(f'{key}="{value}"\n' for key, value in summary.items()))
    return folder, product_id, crs, transform, [(folder, out_dir / folder.name)]


def _move_into_place(moves: list[tuple[Path, Path]]) -> None:
    for source, target in moves:
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(source, target)


def generate_product(
    out_dir: str | Path,
    kind: str = "mosaic",
    size: int | Sequence[int] = 512,
    seed: int = 0,
    looks: float = 4.0,
    *,
    year: int = 2019,
    level: str = "1.5",
    polarizations: Sequence[str] = ("HH", "HV"),
    bigtiff: bool = False,
    calibration_factor: float = -83.0,
    hrlulc_version: str = "23.12",
    block_size: int = 256,
    progress: bool = True,
) -> SyntheticProduct:
    """Write a synthetic product in JAXA's layout and its HRLULC label tiles into ``out_dir`` (module docstring).

    Args:
        out_dir: the output folder (created if missing; entries of the same name are replaced).
        kind: ``"mosaic"`` or ``"l15"``.
        size: ``N`` or ``(height, width)`` in pixels; the whole scene is rendered in memory (keep it test-sized).
        seed: landscape, noise and placement.
        looks: speckle looks.
        year: the mosaic's year; before 2019 the files are raw + ENVI ``.hdr``.
        level: ``"1.5"`` or ``"2.1"`` for ``kind="l15"``.
        polarizations: ``("HH",)`` or ``("HH", "HV")`` (the L1.5 product's image files; a mosaic always has both).
        bigtiff: write the L1.5 image files as BigTIFF.
        calibration_factor: CF (dB) of the DN encoding; any other value than -83.0 is also written as the image
            files' ``CALIBRATION_FACTOR`` tag, so the readers find it.
        hrlulc_version: the label folder's version (``"21.11"`` keeps codes 1-12 only: 13 and 14 become no data).
        block_size: rendering block (a multiple of 16).
        progress: show a progress bar.
    """
    if kind not in PRODUCT_KINDS:
        raise ValueError(f"kind must be one of {PRODUCT_KINDS}, got {kind!r}")
    if level not in ("1.5", "2.1"):
        raise ValueError(f"level must be '1.5' or '2.1', got {level!r}")
    if kind == "mosaic" and not 2015 <= year <= 2099:
        raise ValueError(f"year must be 2015 or later (PALSAR-2 yearly mosaics), got {year}")
    if tuple(polarizations) not in (("HH",), ("HH", "HV")):
        raise ValueError(f"polarizations must be ('HH',) or ('HH', 'HV'), got {tuple(polarizations)}")
    scheme = hrlulc_scheme(hrlulc_version)
    height, width = scene_shape(size)
    config = SyntheticSceneConfig(
        height=height,
        width=width,
        seed=seed,
        looks=looks,
        calibration_factor=calibration_factor,
        block_size=block_size,
    )
    rendered = _render(config, progress)
    known = np.zeros(256, bool)
    known[list(scheme.code_to_id())] = True
    codes = np.where(known[rendered.codes], rendered.codes, 0).astype(np.uint8)
    cf_tag = {} if calibration_factor == -83.0 else {"CALIBRATION_FACTOR": repr(float(calibration_factor))}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".sarlulc-synth-", dir=out_dir))
    try:
        layover = shadow = 0
        extracted = None
        if kind == "mosaic":
            path, extracted, product_id, transform, layover, shadow, moves = _write_mosaic(
                staging, out_dir, config, rendered, year, cf_tag
            )
            crs = CRS.from_epsg(4326)
        else:
            path, product_id, crs, transform, moves = _write_standard(
                staging, out_dir, config, rendered, level, polarizations, bigtiff, cf_tag
            )
        labels = staging / hrlulc_folder_name(scheme.name.rsplit("v", 1)[1])
        tiles = _write_label_tiles(labels, codes, crs, transform, hrlulc_version)
        moves.append((labels, out_dir / labels.name))
        _move_into_place(moves)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    final = {source: target for source, target in moves}
    counts = np.bincount(codes.ravel(), minlength=256)
    return SyntheticProduct(
        kind=kind,
        path=final.get(path, out_dir / path.name),
        extracted=None if extracted is None else final[extracted],
        labels=final[labels],
        product_id=product_id,
        crs=crs,
        transform=transform,
        shape=(height, width),
        label_tiles=tuple(final[labels] / tile.name for tile in tiles),
        class_pixels={code: int(n) for code, n in enumerate(counts) if n},
        layover_pixels=layover,
        shadow_pixels=shadow,
    )


def describe_product(result: SyntheticProduct, echo=print) -> None:
    """Say what :func:`generate_product` wrote."""
    height, width = result.shape
    what = "25 m mosaic tile" if result.kind == "mosaic" else "L1.5/L2.1 GeoTIFF product"
    echo(f"wrote {result.path}: synthetic {what} {result.product_id}, {height} x {width} px, {result.crs.to_string()}")
    if result.extracted is not None:
        echo(f"wrote {result.extracted}: the same tile's files, extracted")
    if result.kind == "mosaic":
        echo(f"  mask: {result.layover_pixels} layover px, {result.shadow_pixels} shadow px")
    echo(
        f"wrote {result.labels}: {len(result.label_tiles)} HRLULC label tile(s): {', '.join(p.name for p in result.label_tiles)}"
    )
