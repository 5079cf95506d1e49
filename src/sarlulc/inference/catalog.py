"""The catalogue of a folder of maps: VRT mosaics (one per CRS) and STAC (an Item per map, a Collection for the folder).

Contract
    :func:`find_maps` lists the class maps of a folder: the non-hidden ``*.tif`` files whose first band carries the
    class tags ``CLASS_<id>`` that :func:`~sarlulc.inference.predict_scene` writes (the water, probability and
    confidence siblings do not, and temporaries are hidden). Everything below is rebuilt from the maps themselves, so
    a catalogue refreshed after a job adds scenes covers every map of the folder, from this run and earlier ones.

    :func:`write_mosaics` writes one GDAL VRT per CRS, ``mosaic_EPSG<code>.vrt`` (``mosaic_CRS<hash>.vrt`` for a CRS
    without an EPSG code), over the maps in that CRS, and ``mosaic.vrt`` when all maps share one CRS. Maps in different
    UTM zones are not warped into one grid: a class map resampled across projections would no longer be the model's
    output pixel for pixel, and each per-CRS mosaic stays exact. Sources are referenced relative to the VRT, so the
    folder can be moved or served as a whole; the VRT carries the colour table, nodata (255), the band description
    and the class names of the first map. Its grid is the finest pixel size of its maps over the union of their
    extents; where maps overlap, the later one (by name) wins on its valid pixels. With several CRSs a stale
    ``mosaic.vrt`` from an earlier single-CRS run is removed.

    :func:`write_stac` writes, with ``pystac``, an Item ``<map stem>.json`` next to each map and ``collection.json``
    for the folder (self-contained: relative links). An Item has the valid footprint as geometry (the map's valid
    pixels at an overview level of at most :data:`FOOTPRINT_SIZE` px, polygonized and reprojected to EPSG:4326), the
    acquisition date as ``datetime`` (or ``start_datetime``/``end_datetime`` for a period), else the run's time with
    ``sarlulc:datetime_source = "run"``; the ``proj`` extension (code, shape, transform, native bbox), the
    ``classification`` extension on the map asset (value, name, colour of every class, and nodata 255), and the
    map's ``SARLULC_*`` tags as ``sarlulc:<key>`` properties (provenance). Every file is written atomically.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.features import shapes
from rasterio.transform import Affine
from rasterio.warp import transform_geom

from ..files import write_json, write_text_atomic
from .outputs import remove_quietly
from .records import NODATA_CLASS

__all__ = [
    "FOOTPRINT_SIZE",
    "MOSAIC_NAME",
    "MapSummary",
    "find_maps",
    "mosaic_name",
    "read_map",
    "write_mosaics",
    "write_stac",
]

MOSAIC_NAME = "mosaic.vrt"
"""The mosaic of a folder whose maps share one CRS."""

FOOTPRINT_SIZE = 512
"""Longest side, in px, of the mask a footprint is traced on (an overview of the map, never the full raster)."""

_SIBLING_KINDS = ("probabilities", "confidence", "water")
_TAG_PREFIX = "SARLULC_"
_ACQUISITION_TAG = "SARLULC_SOURCE_ACQUISITION_DATE"
_COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
_GTIFF_MEDIA_TYPE = "image/tiff; application=geotiff"


@dataclass(frozen=True)
class MapSummary:
    """What the catalogue needs of one class map, read from the file.

    Attributes:
        path: the class map.
        crs, transform, shape: its grid.
        tags: its dataset tags (``SARLULC_*`` provenance among them).
        classes: ``(id, name)`` of every class (band tags ``CLASS_<id>``), by id.
        colormap: the colour table of band 1.
        description: the description of band 1.
        cog: whether the file is laid out as a COG (GDAL's ``LAYOUT=COG`` metadata).
    """

    path: Path
    crs: CRS
    transform: Affine
    shape: tuple[int, int]
    tags: dict[str, str]
    classes: tuple[tuple[int, str], ...]
    colormap: dict[int, tuple[int, int, int, int]]
    description: str
    cog: bool

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(west, south, east, north)`` in the map's CRS."""
        height, width = self.shape
        west, north = self.transform.c, self.transform.f
        east, south = self.transform @ (width, height)
        return min(west, east), min(south, north), max(west, east), max(south, north)


def read_map(path: str | Path) -> MapSummary | None:
    """The summary of a class map, or None when ``path`` is not one (no ``CLASS_<id>`` band tags, not readable)."""
    try:
        with rasterio.open(path) as dataset:
            band_tags = dataset.tags(1)
            classes = sorted(
                (int(key[len("CLASS_") :]), name)
                for key, name in band_tags.items()
                if key.startswith("CLASS_") and key[len("CLASS_") :].isdigit()
            )
            if not classes or dataset.crs is None:
                return None
            try:
                colormap = dataset.colormap(1)
            except ValueError:  # no colour table
                colormap = {}
            return MapSummary(
                path=Path(path),
                crs=dataset.crs,
                transform=dataset.transform,
                shape=(dataset.height, dataset.width),
                tags=dataset.tags(),
                classes=tuple(classes),
                colormap=colormap,
                description=dataset.descriptions[0] or "",
                cog=dataset.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG",
            )
    except rasterio.errors.RasterioIOError:
        return None


def find_maps(folder: str | Path) -> list[MapSummary]:
    """The class maps of ``folder`` (see the module docstring), sorted by name."""
    found = []
    for path in sorted(Path(folder).glob("*.tif")):
        if path.name.startswith(".") or path.stem.endswith(tuple(f"_{kind}" for kind in _SIBLING_KINDS)):
            continue
        summary = read_map(path)
        if summary is not None:
            found.append(summary)
    return found


def mosaic_name(crs: CRS) -> str:
    """``mosaic_EPSG<code>.vrt``, or ``mosaic_CRS<first 8 hex of the WKT's sha1>.vrt`` without an EPSG code."""
    code = crs.to_epsg()
    if code is not None:
        return f"mosaic_EPSG{code}.vrt"
    return f"mosaic_CRS{hashlib.sha1(crs.to_wkt().encode()).hexdigest()[:8]}.vrt"


def write_mosaics(folder: str | Path, maps: Sequence[MapSummary]) -> list[Path]:
    """Write the VRT mosaics of ``maps`` (all in ``folder``) and return their paths (see the module docstring)."""
    folder = Path(folder)
    groups: dict[str, list[MapSummary]] = {}
    for summary in maps:
        groups.setdefault(mosaic_name(summary.crs), []).append(summary)
    written = []
    for name, members in sorted(groups.items()):
        written.append(write_text_atomic(folder / name, _mosaic_vrt(members)))
    if len(groups) == 1:
        written.append(write_text_atomic(folder / MOSAIC_NAME, _mosaic_vrt(next(iter(groups.values())))))
    else:
        remove_quietly(folder / MOSAIC_NAME)
    return written


def _mosaic_vrt(maps: Sequence[MapSummary]) -> str:
    """The VRT XML of maps sharing one CRS, on the finest pixel size over the union of their extents."""
    first = maps[0]
    pixel_x = min(abs(summary.transform.a) for summary in maps)
    pixel_y = min(abs(summary.transform.e) for summary in maps)
    west = min(summary.bounds[0] for summary in maps)
    south = min(summary.bounds[1] for summary in maps)
    east = max(summary.bounds[2] for summary in maps)
    north = max(summary.bounds[3] for summary in maps)
    width, height = round((east - west) / pixel_x), round((north - south) / pixel_y)
    sources = []
    for summary in maps:
        map_west, _, map_east, map_north = summary.bounds
        map_height, map_width = summary.shape
        map_south = summary.bounds[1]
        sources.append(
            f"""    <ComplexSource resampling="nearest">
      <SourceFilename relativeToVRT="1">{escape(summary.path.name)}</SourceFilename>
      <SourceBand>1</SourceBand>
      <SrcRect xOff="0" yOff="0" xSize="{map_width}" ySize="{map_height}"/>
      <DstRect xOff="{(map_west - west) / pixel_x!r}" yOff="{(north - map_north) / pixel_y!r}" xSize="{(map_east - map_west) / pixel_x!r}" ySize="{(map_north - map_south) / pixel_y!r}"/>
      <NODATA>{NODATA_CLASS}</NODATA>
    </ComplexSource>"""
        )
    entries = [
        f'      <Entry c1="{r}" c2="{g}" c3="{b}" c4="{a}"/>'
        for _, (r, g, b, a) in sorted(first.colormap.items())
        if 0 <= _ <= 255
    ]
    colour_table = (
        f"    <ColorInterp>Palette</ColorInterp>\n    <ColorTable>\n{chr(10).join(entries)}\n    </ColorTable>\n"
    )
    class_metadata = "".join(f'<MDI key="CLASS_{cls}">{escape(name)}</MDI>' for cls, name in first.classes)
    dataset_metadata = "".join(
        f"<MDI key={quoteattr(key)}>{escape(first.tags[key])}</MDI>"
        for key in ("SARLULC_CLASS_SCHEME", "SARLULC_CLASS_NAMES", "SARLULC_MODEL")
        if key in first.tags
    )
    axis_mapping = "2,1" if first.crs.is_geographic else "1,2"
    geotransform = f"{west!r}, {pixel_x!r}, 0.0, {north!r}, 0.0, {-pixel_y!r}"
    return f"""<VRTDataset rasterXSize="{width}" rasterYSize="{height}">
  <SRS dataAxisToSRSAxisMapping={quoteattr(axis_mapping)}>{escape(first.crs.to_wkt())}</SRS>
  <GeoTransform>{geotransform}</GeoTransform>
  <Metadata>{dataset_metadata}</Metadata>
  <VRTRasterBand dataType="Byte" band="1">
    <Description>{escape(first.description)}</Description>
    <Metadata>{class_metadata}</Metadata>
    <NoDataValue>{NODATA_CLASS}</NoDataValue>
{colour_table if entries else ""}{chr(10).join(sources)}
  </VRTRasterBand>
</VRTDataset>
"""


# ----------------------------------------------------------------------------------------------------------------------
# STAC
# ----------------------------------------------------------------------------------------------------------------------
def footprint(path: str | Path) -> dict[str, Any] | None:
    """The valid pixels of a map as a GeoJSON (Multi)Polygon in EPSG:4326, traced on an overview of at most
    :data:`FOOTPRINT_SIZE` px (None when no pixel is valid)."""
    with rasterio.open(path) as dataset:
        scale = max(1.0, max(dataset.height, dataset.width) / FOOTPRINT_SIZE)
        out_shape = (max(1, round(dataset.height / scale)), max(1, round(dataset.width / scale)))
        classes = dataset.read(1, out_shape=out_shape, resampling=Resampling.nearest)
        transform = dataset.transform @ Affine.scale(dataset.width / out_shape[1], dataset.height / out_shape[0])
        crs = dataset.crs
    valid = (classes != NODATA_CLASS).astype(np.uint8)
    polygons = [geometry["coordinates"] for geometry, value in shapes(valid, mask=valid, transform=transform) if value]
    if not polygons:
        return None
    native = {"type": "MultiPolygon", "coordinates": polygons}
    geometry = transform_geom(crs, "EPSG:4326", native)
    if len(geometry["coordinates"]) == 1:
        return {"type": "Polygon", "coordinates": geometry["coordinates"][0]}
    return geometry


def _bbox(geometry: Mapping[str, Any]) -> list[float]:
    rings = (
        geometry["coordinates"] if geometry["type"] == "Polygon" else [r for p in geometry["coordinates"] for r in p]
    )
    points = np.array([point for ring in rings for point in ring], dtype=float)
    return [float(points[:, 0].min()), float(points[:, 1].min()), float(points[:, 0].max()), float(points[:, 1].max())]


def _dates(summary: MapSummary, acquisition: str | None, run_time: datetime) -> dict[str, Any]:
    """``datetime`` (or a period) of an Item: the map's acquisition tag, else the job's, else the run's time."""
    text = summary.tags.get(_ACQUISITION_TAG) or acquisition
    if text:
        first, _, last = text.partition("/")
        start = datetime.fromisoformat(first).replace(tzinfo=timezone.utc)
        if last and last != first:
            end = datetime.fromisoformat(last).replace(tzinfo=timezone.utc)
            return {"datetime": None, "start_datetime": start, "end_datetime": end, "source": "scene"}
        return {"datetime": start, "source": "scene"}
    return {"datetime": run_time, "source": "run"}


def _hex_colour(rgba: tuple[int, ...]) -> str:
    return "".join(f"{value:02X}" for value in rgba[:3])


def _item(summary: MapSummary, acquisition: str | None, run_time: datetime) -> Any:
    import pystac
    from pystac.extensions.classification import Classification, ClassificationExtension
    from pystac.extensions.projection import ProjectionExtension

    geometry = footprint(summary.path)
    if geometry is None:  # an all-nodata map still has a place: its extent
        west, south, east, north = summary.bounds
        ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
        geometry = transform_geom(summary.crs, "EPSG:4326", {"type": "Polygon", "coordinates": [ring]})
    dates = _dates(summary, acquisition, run_time)
    properties: dict[str, Any] = {
        f"sarlulc:{key[len(_TAG_PREFIX) :].lower()}": value
        for key, value in sorted(summary.tags.items())
        if key.startswith(_TAG_PREFIX)
    }
    properties["sarlulc:datetime_source"] = dates["source"]
    item = pystac.Item(
        id=summary.path.stem,
        geometry=geometry,
        bbox=_bbox(geometry),
        datetime=dates["datetime"],
        start_datetime=dates.get("start_datetime"),
        end_datetime=dates.get("end_datetime"),
        properties=properties,
    )
    media_type = _COG_MEDIA_TYPE if summary.cog else _GTIFF_MEDIA_TYPE
    asset = pystac.Asset(href=f"./{summary.path.name}", media_type=media_type, roles=["data"], title="class map")
    item.add_asset("classes", asset)
    for kind in _SIBLING_KINDS:
        sibling = summary.path.with_name(f"{summary.path.stem}_{kind}{summary.path.suffix}")
        if sibling.exists():
            item.add_asset(kind, pystac.Asset(href=f"./{sibling.name}", media_type=media_type, roles=["data"]))
    names = dict(summary.classes)
    classes = [
        Classification.create(
            value=value,
            name=_stac_name(name),
            description=name,
            color_hint=_hex_colour(summary.colormap[value]) if value in summary.colormap else None,
        )
        for value, name in sorted(names.items())
    ]
    classes.append(Classification.create(value=NODATA_CLASS, name="nodata", description="no data", nodata=True))
    ClassificationExtension.ext(asset, add_if_missing=True).apply(classes=classes)
    projection = ProjectionExtension.ext(item, add_if_missing=True)
    epsg = summary.crs.to_epsg()
    projection.apply(
        code=f"EPSG:{epsg}" if epsg is not None else None,
        wkt2=None if epsg is not None else summary.crs.to_wkt(),
        shape=list(summary.shape),
        transform=list(summary.transform)[:6],
        bbox=list(summary.bounds),
    )
    return item


def _stac_name(name: str) -> str:
    """A class name as the classification extension wants it (no spaces: ``^[0-9A-Za-z-_]+$``)."""
    return "".join(character if character.isalnum() or character in "-_" else "_" for character in name)


def write_stac(
    folder: str | Path,
    maps: Sequence[MapSummary],
    *,
    acquisition: Mapping[str, str] | None = None,
    run_time: datetime | None = None,
    collection_id: str | None = None,
) -> Path:
    """Write one STAC Item per map and the folder's Collection (see the module docstring); return the collection.

    Args:
        folder: the folder of the maps (Items and ``collection.json`` go there).
        maps: the class maps.
        acquisition: acquisition date (``YYYY-MM-DD`` or ``FIRST/LAST``) by map stem, for maps whose tags lack one.
        run_time: the time of maps without any acquisition date (default: now, UTC).
        collection_id: default: the folder's name.
    """
    import pystac

    folder = Path(folder).resolve()
    run_time = run_time or datetime.now(timezone.utc)
    acquisition = acquisition or {}
    items = [_item(summary, acquisition.get(summary.path.stem), run_time) for summary in maps]
    collection = pystac.Collection(
        id=collection_id or folder.name,
        description=f"Land-cover maps predicted by sarlulc ({len(items)} maps).",
        extent=pystac.Extent(
            pystac.SpatialExtent([_union_bbox([item.bbox for item in items])]),
            pystac.TemporalExtent([_time_interval(items, run_time)]),
        ),
        license="other",
        catalog_type=pystac.CatalogType.SELF_CONTAINED,
    )
    collection.set_self_href(str(folder / "collection.json"))
    for item in items:
        collection.add_item(item)
        item.set_self_href(str(folder / f"{item.id}.json"))
    for item in items:
        write_json(folder / f"{item.id}.json", item.to_dict(include_self_link=False, transform_hrefs=True))
    return write_json(folder / "collection.json", collection.to_dict(include_self_link=False, transform_hrefs=True))


def _union_bbox(boxes: Sequence[Sequence[float]]) -> list[float]:
    if not boxes:
        return [-180.0, -90.0, 180.0, 90.0]
    array = np.asarray(boxes, dtype=float)
    return [float(array[:, 0].min()), float(array[:, 1].min()), float(array[:, 2].max()), float(array[:, 3].max())]


def _time_interval(items: Sequence[Any], run_time: datetime) -> list[datetime]:
    times = []
    for item in items:
        times.extend(
            t for t in (item.datetime, item.common_metadata.start_datetime, item.common_metadata.end_datetime) if t
        )
    return [min(times, default=run_time), max(times, default=run_time)]
