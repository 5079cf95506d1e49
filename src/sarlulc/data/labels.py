"""JAXA's High-Resolution Land Use and Land Cover map (HRLULC) as labels: a folder of 1 x 1 degree tiles, one mosaic.

JAXA ships the map of Japan as GeoTIFF tiles ``LC_N{lat}E{lon}.tif`` (uint8 codes, 0 = no data, EPSG:4326 at 1/12000
degree) in a versioned folder such as ``JAXA_HRLULC_Japan_v23.12/``; a tile is named after its south-west corner
(``LC_N36E140`` covers 36-37 N, 140-141 E). :func:`open_label_tiles` opens such a folder as *one* label raster:

1. it reads the georeferencing of every tile (not the names: they only serve discovery and messages) and keeps the
   tiles that overlap the scene's footprint (all of them without a scene);
2. it builds a GDAL VRT over those tiles, in memory (``/vsimem/``, nothing is written to disk), after checking that
   they share one CRS, pixel size and pixel grid, so that every tile lands on whole pixels of the mosaic;
3. with a scene, it warps the VRT onto the scene's grid by nearest neighbour, window by window (a ``WarpedVRT`` with
   an exact transformer), so a scene that straddles two tiles gets the right code on both sides of the seam.

The version (``"21.11"``: 12 classes, ``"23.12"``: 14 classes) is read from the folder name (``..._v23.12``) or given;
:attr:`LabelMosaic.scheme` is then the version's :class:`~sarlulc.data.classes.ClassScheme`. The result has the
interface of :class:`~sarlulc.data.alos2.LabelRaster` (``read_labels(window)``, ``crs``, ``transform``, ``shape``,
``nodata``), so tiling and evaluation use it unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.io import MemoryFile
from rasterio.transform import Affine
from rasterio.warp import transform_bounds

from ..errors import SarLulcDataError
from .alos2 import LabelRaster, _grids_match, check_georeferencing, open_dataset, warp_labels
from .classes import ClassScheme, hrlulc_scheme
from .scene import SarScene

__all__ = [
    "HRLULC_FOLDER_VERSION",
    "HRLULC_TILE_NAME",
    "LabelMosaic",
    "LabelTile",
    "detect_hrlulc_version",
    "find_label_tiles",
    "is_label_folder",
    "open_label_tiles",
    "open_labels",
]

HRLULC_TILE_NAME = re.compile(r"^LC_(?P<ns>[NS])(?P<lat>\d{1,2})(?P<ew>[EW])(?P<lon>\d{1,3})\.tiff?$", re.IGNORECASE)
"""The file name of an HRLULC tile; ``lat``/``lon`` are its south-west corner in whole degrees."""

HRLULC_FOLDER_VERSION = re.compile(r"v(?P<version>\d{2}\.\d{2})(?!\d)", re.IGNORECASE)
"""The version in a folder name such as ``JAXA_HRLULC_Japan_v23.12``."""

_GRID_TOLERANCE = 1e-3  # of a pixel: tiles whose origins are off the mosaic's pixel grid by more are refused


@dataclass(frozen=True)
class LabelTile:
    """One tile: its file, name, grid and footprint (from its own georeferencing)."""

    path: Path
    crs: CRS
    transform: Affine
    width: int
    height: int
    dtype: str
    nodata: float | None
    block: tuple[int, int]

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(west, south, east, north)`` in the tile's CRS."""
        return rasterio.transform.array_bounds(self.height, self.width, self.transform)[:4]


def find_label_tiles(folder: str | Path) -> list[Path]:
    """The HRLULC tiles (``LC_N{lat}E{lon}.tif``) directly in ``folder``, sorted by name."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and HRLULC_TILE_NAME.match(p.name))


def is_label_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding HRLULC tiles."""
    path = Path(path)
    return path.is_dir() and bool(find_label_tiles(path))


def detect_hrlulc_version(folder: str | Path) -> str | None:
    """The HRLULC version a folder's name carries (``"23.12"`` for ``JAXA_HRLULC_Japan_v23.12``), or ``None``."""
    match = HRLULC_FOLDER_VERSION.search(Path(folder).resolve().name)
    return None if match is None else match["version"]


def _read_tile(path: Path) -> LabelTile:
    with open_dataset(path, "label tile") as dataset:
        if dataset.count != 1 or np.dtype(dataset.dtypes[0]).kind not in "iu":
            raise SarLulcDataError(
                f"label tile {path} has {dataset.count} band(s) of {dataset.dtypes[0]}; expected 1 band of integer codes"
            )
        check_georeferencing(dataset, str(path), "label tile")
        return LabelTile(
            path=path,
            crs=dataset.crs,
            transform=dataset.transform,
            width=dataset.width,
            height=dataset.height,
            dtype=dataset.dtypes[0],
            nodata=dataset.nodata,
            block=dataset.block_shapes[0],
        )


def _overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


_VRT_DTYPES = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32", "int32": "Int32"}


def _mosaic_vrt(tiles: list[LabelTile], folder: Path) -> str:
    """The VRT XML of the tiles as one raster; every tile must sit on whole pixels of one grid."""
    first = tiles[0]
    res_x, res_y = first.transform.a, first.transform.e
    for tile in tiles:
        problems = []
        if tile.crs != first.crs:
            problems.append(f"CRS {tile.crs} differs from {first.crs}")
        if not (np.isclose(tile.transform.a, res_x, rtol=1e-9) and np.isclose(tile.transform.e, res_y, rtol=1e-9)):
            problems.append(f"pixel size {(tile.transform.a, tile.transform.e)} differs from {(res_x, res_y)}")
        if tile.transform.b or tile.transform.d:
            problems.append("the grid is rotated")
        if tile.dtype != first.dtype or tile.nodata != first.nodata:
            problems.append(f"dtype/nodata {tile.dtype}/{tile.nodata} differ from {first.dtype}/{first.nodata}")
        if problems:
            raise SarLulcDataError(
                f"label tile {tile.path} cannot join {first.path.name} in one mosaic: {'; '.join(problems)}"
            )
    west = min(tile.transform.c for tile in tiles)
    north = max(tile.transform.f for tile in tiles)
    placements = []
    for tile in tiles:
        col = (tile.transform.c - west) / res_x
        row = (tile.transform.f - north) / res_y
        if abs(col - round(col)) > _GRID_TOLERANCE or abs(row - round(row)) > _GRID_TOLERANCE:
            raise SarLulcDataError(
                f"label tile {tile.path} is off the pixel grid of {first.path.name} by ({col % 1:.4f}, {row % 1:.4f}) "
                "pixels; the tiles of one folder must share one grid"
            )
        placements.append((tile, round(col), round(row)))
    width = max(col + tile.width for tile, col, _ in placements)
    height = max(row + tile.height for tile, _, row in placements)
    axis_mapping = "2,1" if first.crs.is_geographic else "1,2"
    nodata = 0 if first.nodata is None else first.nodata
    sources = []
    for tile, col, row in placements:
        sources.append(
            f"""    <ComplexSource>
      <SourceFilename relativeToVRT="0">{escape(str(tile.path.resolve()))}</SourceFilename>
      <SourceBand>1</SourceBand>
      <SourceProperties RasterXSize="{tile.width}" RasterYSize="{tile.height}" DataType="{_VRT_DTYPES[tile.dtype]}" BlockXSize="{tile.block[1]}" BlockYSize="{tile.block[0]}"/>
      <SrcRect xOff="0" yOff="0" xSize="{tile.width}" ySize="{tile.height}"/>
      <DstRect xOff="{col}" yOff="{row}" xSize="{tile.width}" ySize="{tile.height}"/>
      <NODATA>{nodata:g}</NODATA>
    </ComplexSource>"""
        )
    geotransform = f"{west!r}, {res_x!r}, 0.0, {north!r}, 0.0, {res_y!r}"
    return f"""<VRTDataset rasterXSize="{width}" rasterYSize="{height}">
  <SRS dataAxisToSRSAxisMapping={quoteattr(axis_mapping)}>{escape(first.crs.to_wkt())}</SRS>
  <GeoTransform>{geotransform}</GeoTransform>
  <Metadata><MDI key="HRLULC_FOLDER">{escape(str(folder))}</MDI></Metadata>
  <VRTRasterBand dataType="{_VRT_DTYPES[first.dtype]}" band="1">
    <NoDataValue>{nodata:g}</NoDataValue>
{chr(10).join(sources)}
  </VRTRasterBand>
</VRTDataset>
"""


class LabelMosaic(LabelRaster):
    """A folder of HRLULC tiles read as one label raster (see the module docstring).

    Attributes:
        path: the folder.
        tiles: the tile files the mosaic is made of (those overlapping the scene).
        version: ``"21.11"``, ``"23.12"`` or ``None`` (not given and not in the folder name).
        scheme: the version's class scheme (``None`` without a version).
        reprojected: whether reads are warped onto a scene's grid.
    """

    def __init__(self, folder: str | Path, like: SarScene | None = None, version: str | None = None) -> None:
        folder = Path(folder)
        self.path = str(folder)
        self.version, self.scheme = _resolve_version(folder, version)
        if not folder.is_dir():
            raise SarLulcDataError(f"label folder {folder} does not exist or is not a directory")
        files = find_label_tiles(folder)
        if not files:
            raise SarLulcDataError(
                f"label folder {folder} holds no HRLULC tile (LC_N{{lat}}E{{lon}}.tif, e.g. LC_N35E139.tif)"
            )
        tiles = [_read_tile(path) for path in files]
        if like is not None:
            footprint = transform_bounds(like.crs, tiles[0].crs, *like.bounds, densify_pts=21)
            covering = [tile for tile in tiles if _overlaps(tile.bounds, footprint)]
            if not covering:
                west, south, east, north = footprint
                raise SarLulcDataError(
                    f"label folder {folder} has no tile covering scene {like.path} (the scene spans longitude "
                    f"{west:.4f}..{east:.4f}, latitude {south:.4f}..{north:.4f}; the folder has "
                    f"{', '.join(p.stem for p in files[:10])}{', ...' if len(files) > 10 else ''})"
                )
            tiles = covering
        self.tiles = [tile.path for tile in tiles]
        self._memfile = MemoryFile(_mosaic_vrt(tiles, folder).encode(), ext=".vrt")
        self._source = self._memfile.open()
        self._dataset = self._source
        try:
            self.fill_code = self._fill_code()
            self.reprojected = False
            if like is not None and not _grids_match(like, self):
                self._dataset = warp_labels(self._source, like, self.fill_code)
                self.reprojected = True
        except BaseException:
            self.close()
            raise

    def tags(self) -> dict[str, str]:
        tags = {"HRLULC_FOLDER": self.path, "HRLULC_TILES": ",".join(p.name for p in self.tiles)}
        if self.version is not None:
            tags["HRLULC_VERSION"] = self.version
        return tags

    def close(self) -> None:
        super().close()
        self._memfile.close()

    def __repr__(self) -> str:
        return (
            f"LabelMosaic({self.path!r}, version={self.version!r}, tiles={[p.name for p in self.tiles]}, "
            f"shape={self.shape}, reprojected={self.reprojected})"
        )


def _resolve_version(folder: Path, version: str | None) -> tuple[str | None, ClassScheme | None]:
    if version is not None:
        scheme = hrlulc_scheme(version)  # ValueError for an unknown one: the argument is the caller's
        return str(version).lower().lstrip("v"), scheme
    detected = detect_hrlulc_version(folder)
    if detected is None:
        return None, None
    try:
        return detected, hrlulc_scheme(detected)
    except ValueError as err:
        raise SarLulcDataError(f"label folder {folder}: {err}; pass the version the codes follow") from err


def open_label_tiles(folder: str | Path, like: SarScene | None = None, version: str | None = None) -> LabelMosaic:
    """Open a folder of HRLULC tiles as one label raster, warped onto ``like``'s grid when given.

    Args:
        folder: the folder of ``LC_N{lat}E{lon}.tif`` tiles (e.g. ``JAXA_HRLULC_Japan_v23.12``).
        like: the scene the labels are for: only the tiles overlapping it are used, and reads are on its grid.
        version: ``"21.11"`` or ``"23.12"``; default: from the folder name.

    Raises:
        SarLulcDataError: the folder holds no tile, no tile covers the scene, the tiles are not on one grid, or the
            folder name carries a version without a built-in scheme.
        ValueError: ``version`` is not a known version.
    """
    return LabelMosaic(folder, like=like, version=version)


def open_labels(
    path: str | Path, like: SarScene | None = None, reproject: bool = False, *, version: str | None = None
) -> LabelRaster:
    """Open labels of source codes; with ``like``, make sure they are on that scene's grid.

    Args:
        path: a single-band integer raster (uint8 or uint16 JAXA-style codes, nodata 0), or a folder of JAXA HRLULC
            tiles (``LC_N{lat}E{lon}.tif``), opened as one mosaic by :func:`open_label_tiles`
            and always warped onto ``like``'s grid.
        like: a scene the labels must match. Without ``reproject``, a raster with a different CRS, transform or shape
            raises.
        reproject: warp a raster onto ``like``'s grid with nearest-neighbour resampling (windowed, via a
            ``WarpedVRT``) when it is not already aligned.
        version: the HRLULC version of a tile folder (default: from the folder name).
    """
    if Path(path).is_dir():
        return open_label_tiles(path, like=like, version=version)
    return LabelRaster(path, like=like, reproject=reproject)
