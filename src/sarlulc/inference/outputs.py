"""The output GeoTIFFs: names, checks before anything is written, atomic writing in aligned block rows.

Contract
    :func:`output_paths` names the files of an output path (the class map and its ``<stem>_<kind><suffix>`` siblings).
    :func:`check_destination` refuses, before any file exists, outputs that exist (without ``overwrite``), are
    folders, are the input scene, or cannot be written.

    :class:`OutputFiles` opens every output of an :class:`~sarlulc.inference.records.OutputSpec` under a hidden,
    unique temporary name in its destination folder (uint8, tiled 256 x 256, deflate, the scene's CRS and transform,
    colour tables, band descriptions, tags), takes finished rows in order (:meth:`OutputFiles.write`; or the rows of
    one column strip after another, :meth:`OutputFiles.columns`, whose windows start and end on block edges) and
    writes them in whole rows of 256-px blocks, so that every compressed block is written once. :meth:`OutputFiles.commit` closes
    the files, verifies every one complete (:func:`~sarlulc.files.verify_raster_complete`: it reopens and its last
    block decodes; GDAL only logs a block it failed to write on a full disk) and only then renames them to their final
    names with ``os.replace``, the class map last, so a class map that exists is complete with its siblings;
    :meth:`OutputFiles.discard` removes the temporary files after a failure. Only complete outputs ever appear: a
    failed write, close or check raises :class:`~sarlulc.errors.OutputWriteError` (a full disk named as such) and
    leaves the previous outputs as they were. Temporary names are :func:`sarlulc.files.temporary_name`'s; those of a
    killed earlier run of the same outputs are swept when the files are opened.

    :func:`provenance_tags` assembles the dataset tags every output carries: the sarlulc version, the model, the
    scene and what it says about itself (product id, convention, calibration, date: ``SARLULC_SOURCE_*``), what the
    model was trained on (``SARLULC_MODEL_*``), the classes, the tiling and the grid the map is on.

    Probabilities go into sibling files rather than extra bands because a GeoTIFF colour table only works on a
    single-band file. Their bands use all 256 values, so nodata is marked by an internal mask band (GDAL reads it as
    the dataset mask) instead of a nodata value.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import RasterioError
from rasterio.windows import Window

from .. import __version__
from ..data.classes import ClassScheme
from ..data.scene import PROVENANCE_PREFIX
from ..errors import OutputWriteError
from ..files import create_temporary, output_write_error, remove_path, sweep_stale_temporaries, verify_raster_complete
from .records import NODATA_CLASS, Georeference, OutputSpec, SceneInput

__all__ = [
    "OUTPUT_BLOCK",
    "AlignedRows",
    "ColumnWindow",
    "OutputFiles",
    "check_destination",
    "geotiff_profile",
    "output_paths",
    "provenance_tags",
    "refuse_existing",
    "remove_quietly",
    "temporary_path",
]

OUTPUT_BLOCK = 256
"""GeoTIFF tile side of every output; writes are grouped into whole rows of these blocks."""


def output_paths(out_path: str | os.PathLike, probabilities: str | None = None, water: bool = False) -> dict[str, Path]:
    """The files :func:`predict_scene` writes for ``out_path``: keys ``"classes"`` and, when asked for, ``"probabilities"``
    or ``"confidence"``, and ``"water"`` (siblings named ``<stem>_<key><suffix>``)."""
    out = Path(out_path)
    suffix = out.suffix or ".tif"
    paths = {"classes": out}
    if probabilities is not None:
        key = "probabilities" if probabilities == "classes" else "confidence"
        paths[key] = out.with_name(f"{out.stem}_{key}{suffix}")
    if water:
        paths["water"] = out.with_name(f"{out.stem}_water{suffix}")
    return paths


def provenance_tags(
    *,
    model_name: str,
    scene: SceneInput,
    scheme: ClassScheme,
    tile: int,
    overlap: int,
    processor: Any = None,
    output_grid: str = "scene",
    output_gsd: float | None = None,
    resampling: str | None = None,
) -> dict[str, str]:
    """Dataset tags of every output of one prediction: what made it, from which input, with which classes and tiling.

    Args:
        model_name: the checkpoint folder, Hub id or model class.
        scene: the probed scene, with its calibration decided (the CF recorded is the one used).
        scheme: the model's classes.
        tile, overlap: the tiling.
        processor: the checkpoint's image processor (its training-data record: convention, polarizations, GSD).
        output_grid: ``"scene"`` or ``"model"``: the grid the map is on.
        output_gsd: the map's GSD in metres.
        resampling: how the scene was resampled to the model's GSD, or ``None`` when it was not.
    """
    tags = {
        "SARLULC_VERSION": __version__,
        "SARLULC_MODEL": model_name,
        "SARLULC_SCENE": Path(scene.path).name,
        "SARLULC_CLASS_SCHEME": scheme.name,
        "SARLULC_CLASS_NAMES": json.dumps(scheme.names),
        "SARLULC_TILE": str(tile),
        "SARLULC_OVERLAP": str(overlap),
        "SARLULC_INPUT_KIND": scene.input_kind,
        "SARLULC_OUTPUT_GRID": output_grid,
    }
    tags.update(scene.source_tags)
    if scene.input_kind == "dn":  # the CF actually used: the processor's may have replaced the scene's default
        tags[f"{PROVENANCE_PREFIX}CALIBRATION_FACTOR"] = repr(float(scene.calibration_factor))
        tags[f"{PROVENANCE_PREFIX}CALIBRATION_FACTOR_FROM"] = scene.calibration_factor_source
    if output_gsd is not None:
        tags["SARLULC_GSD_M"] = f"{output_gsd:.2f}"
    if resampling is not None:
        tags["SARLULC_RESAMPLING"] = resampling
    trained = {
        "BACKSCATTER": getattr(processor, "backscatter", None),
        "POLARIZATIONS": ",".join(getattr(processor, "polarizations", None) or ()),
        "GSD_M": None if getattr(processor, "gsd", None) is None else f"{processor.gsd:.2f}",
    }
    tags.update({f"SARLULC_MODEL_{key}": value for key, value in trained.items() if value})
    return tags


def refuse_existing(paths: dict[str, Path]) -> None:
    """Raise ``FileExistsError`` naming every output that exists."""
    existing = [str(path) for path in paths.values() if path.exists() or path.is_symlink()]
    if existing:
        raise FileExistsError(f"output {', '.join(existing)} already exists; pass overwrite=True (--overwrite)")


def check_destination(paths: dict[str, Path], scene_path: str, overwrite: bool) -> None:
    """Refuse outputs that exist (without ``overwrite``), overwrite the scene, or cannot be written."""
    for path in paths.values():
        if path.is_dir():
            raise IsADirectoryError(f"output {path} is a folder; give a file name such as {path / 'map.tif'}")
        if Path(scene_path).exists() and path.exists() and os.path.samefile(path, scene_path):
            raise ValueError(f"output {path} is the input scene; choose another output name")
    if not overwrite:
        refuse_existing(paths)
    folder = paths["classes"].parent
    existing = folder
    while not existing.exists():  # a missing folder is created later, so its first existing ancestor must be writable
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"output folder {folder} cannot be created: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"output folder {existing} is not writable")


def temporary_path(final: Path, label: str) -> Path:
    """A new empty file next to ``final`` with a hidden, recognizable name (GDAL then writes over it); see
    :func:`sarlulc.files.create_temporary`."""
    return create_temporary(final, label)


def remove_quietly(path: Path) -> None:
    """Remove a temporary file; a missing one is fine."""
    remove_path(path)


def geotiff_profile(georeference: Georeference, count: int, **extra: Any) -> dict[str, Any]:
    """The rasterio profile of every output: uint8, tiled in 256-px blocks, deflate, the scene's grid."""
    return dict(
        driver="GTiff",
        height=georeference.height,
        width=georeference.width,
        count=count,
        dtype="uint8",
        crs=georeference.crs,
        transform=georeference.transform,
        tiled=True,
        blockxsize=OUTPUT_BLOCK,
        blockysize=OUTPUT_BLOCK,
        compress="deflate",
        interleave="band",
        bigtiff="IF_SAFER",
        **extra,
    )


class AlignedRows:
    """Collects consecutive row slabs of the rows ``[first_row, end_row)`` and passes them on in whole rows of output
    blocks (the last one may be shorter).

    A compressed GeoTIFF block that is written in two parts may be compressed and stored twice (the first part
    flushed from GDAL's cache), which wastes time and file space; whole block rows are written once.
    """

    def __init__(self, first_row: int, end_row: int, write: Callable[[int, np.ndarray], None]) -> None:
        self._start = first_row
        self._next = first_row
        self._first, self._end = first_row, end_row
        self._write = write
        self._pending: list[np.ndarray] = []

    def push(self, row: int, planes: np.ndarray) -> None:
        """Take the planes ``(count, n, width)`` of rows ``[row, row + n)``; ``row`` must follow the previous slab."""
        if row != self._next:
            raise RuntimeError(f"rows arrived out of order: expected row {self._next}, got {row}")
        self._pending.append(planes)
        self._next += planes.shape[1]
        aligned = self._first + (self._next - self._first) // OUTPUT_BLOCK * OUTPUT_BLOCK
        cut = self._next if self._next >= self._end else aligned
        if cut <= self._start:
            return
        data = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending, axis=1)
        split = cut - self._start
        self._write(self._start, data[:, :split])
        self._pending = [data[:, split:]] if split < data.shape[1] else []
        self._start = cut


class ColumnWindow:
    """A row sink for the columns ``[left, right)`` of the rows ``[first_row, end_row)``: rows in order, written in
    whole rows of output blocks by ``write(row, col, planes)``.

    For every block to be written once, ``left`` lies on a block edge and ``right`` too, or is the raster's width.
    """

    def __init__(
        self, first_row: int, end_row: int, left: int, right: int, write: Callable[[int, int, np.ndarray], None]
    ) -> None:
        self.left, self.right = left, right
        self._aligned = AlignedRows(first_row, end_row, lambda row, planes: write(row, left, planes))

    def write(self, row: int, planes: np.ndarray) -> None:
        """Take the planes ``(count, n, right - left)`` of rows ``[row, row + n)``, which follow the previous ones."""
        if planes.shape[2] != self.right - self.left:
            raise ValueError(f"planes of {planes.shape[2]} columns for the columns [{self.left}, {self.right})")
        self._aligned.push(row, planes)


class OutputFiles:
    """The final rasters of ``spec``, open under temporary names until :meth:`commit` renames them.

    Args:
        spec: which files, their final paths, the class scheme, the tags.
        georeference: the scene's grid.
    """

    def __init__(self, spec: OutputSpec, georeference: Georeference) -> None:
        self.paths = spec.paths
        self._layout = spec.layout
        self.temporary: dict[str, Path] = {}
        self._datasets: dict[str, Any] = {}
        self._height = georeference.height
        self._rows = self.columns(0, georeference.width)
        try:
            for key, final in spec.paths.items():
                sweep_stale_temporaries(final)
                self.temporary[key] = temporary_path(final, "partial")
            self._open_classes(spec, georeference)
            if spec.water:
                self._open_water(spec, georeference)
            if spec.probabilities is not None:
                self._open_probabilities(spec, georeference)
        except BaseException:
            self.discard()
            raise

    def _open(self, key: str, profile: dict[str, Any], tags: dict[str, str]) -> Any:
        dataset = rasterio.open(self.temporary[key], "w", **profile)
        self._datasets[key] = dataset
        dataset.update_tags(**tags)
        return dataset

    def _open_classes(self, spec: OutputSpec, georeference: Georeference) -> None:
        scheme = spec.scheme
        dataset = self._open("classes", geotiff_profile(georeference, 1, nodata=NODATA_CLASS), spec.tags)
        dataset.write_colormap(1, scheme.colormap())
        dataset.set_band_description(1, f"class id ({scheme.name}); {NODATA_CLASS} = no data")
        dataset.update_tags(1, **{f"CLASS_{cls.id}": cls.name for cls in scheme.classes})

    def _open_water(self, spec: OutputSpec, georeference: Georeference) -> None:
        scheme = spec.scheme
        dataset = self._open("water", geotiff_profile(georeference, 1, nodata=NODATA_CLASS), spec.tags)
        water_color = scheme.classes[scheme.water_id].color
        dataset.write_colormap(1, {0: (200, 200, 200, 255), 1: (*water_color, 255), NODATA_CLASS: (0, 0, 0, 0)})
        dataset.set_band_description(1, f"water mask: 1 = {scheme.water_class}, 0 = other, {NODATA_CLASS} = no data")

    def _open_probabilities(self, spec: OutputSpec, georeference: Georeference) -> None:
        scheme = spec.scheme
        if spec.probabilities == "classes":
            key, names = "probabilities", [f"probability of {cls.name} x 255" for cls in scheme.classes]
        else:
            key, names = "confidence", ["probability of the predicted class x 255"]
        dataset = self._open(key, geotiff_profile(georeference, len(names)), spec.tags)
        dataset.scales = (1 / 255,) * len(names)
        dataset.offsets = (0.0,) * len(names)
        for band, name in enumerate(names, start=1):
            dataset.set_band_description(band, name)
        if key == "probabilities":
            for cls in scheme.classes:
                dataset.update_tags(cls.id + 1, CLASS_ID=str(cls.id), CLASS_NAME=cls.name)

    def write(self, row: int, planes: np.ndarray) -> None:
        """Write the uint8 planes ``(layout.count, n, width)`` of scene rows ``[row, row + n)`` (every column)."""
        self._rows.write(row, planes)

    def columns(self, left: int, right: int) -> ColumnWindow:
        """A sink for the columns ``[left, right)`` of every row, from row 0 on (one column strip's core)."""
        return ColumnWindow(0, self._height, left, right, self._write_checked)

    def _write_checked(self, row: int, col: int, planes: np.ndarray) -> None:
        try:
            self._write_block_rows(row, planes, col)
        except (OSError, RasterioError) as err:  # GDAL's write errors (a full disk among them)
            raise output_write_error(self.paths["classes"], err, "map") from err

    def _write_block_rows(self, row: int, planes: np.ndarray, col: int = 0) -> None:
        window = Window(col, row, planes.shape[2], planes.shape[1])
        self._datasets["classes"].write(planes[0], 1, window=window)
        if self._layout.water_plane is not None:
            self._datasets["water"].write(planes[self._layout.water_plane], 1, window=window)
        probability_planes = self._layout.probability_planes
        if probability_planes is not None:
            dataset = self._datasets["probabilities" if self._layout.probabilities == "classes" else "confidence"]
            dataset.write(planes[probability_planes], window=window)
            # The internal mask band marks nodata: probabilities use all 256 values.
            dataset.write_mask(np.where(planes[0] == NODATA_CLASS, 0, 255).astype(np.uint8), window=window)

    def close(self) -> None:
        for dataset in self._datasets.values():
            dataset.close()

    def commit(self, overwrite: bool) -> None:
        """Close the files, verify every one complete, then move them to their final names, the class map last."""
        for key in self.temporary:
            try:
                self._datasets[key].close()
                verify_raster_complete(self.temporary[key])
            except OutputWriteError:
                raise
            except Exception as err:  # the close (where GDAL flushes its cache) or the reopening failed
                raise output_write_error(self.paths[key], err, "map") from err
        if not overwrite:
            refuse_existing(self.paths)
        for key in sorted(self.temporary, key=lambda k: k == "classes"):
            os.replace(self.temporary[key], self.paths[key])
        self.temporary = {}

    def discard(self) -> None:
        """Close and delete the temporary files (after a failure)."""
        for dataset in self._datasets.values():
            try:
                dataset.close()
            except Exception:  # the file goes away anyway; the original error matters
                pass
        for path in self.temporary.values():
            remove_quietly(path)
        self.temporary = {}
