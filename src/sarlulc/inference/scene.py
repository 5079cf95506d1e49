"""Whole-scene inference: sliding-window prediction over an ALOS-2 scene, written as a georeferenced class map.

:func:`predict_scene` turns a scene of any size into a GeoTIFF of class ids in bounded memory::

    from sarlulc.inference import predict_scene

    report = predict_scene("runs/lulc/best", "scene.tif", "map.tif", tile=512, overlap=64, water=True)
    print(report.tiles, report.seconds_total, report.path)

or from the shell: ``sarlulc predict runs/lulc/best scene.tif map.tif --water`` (``scripts/predict.py`` takes the same
arguments and also runs under ``accelerate launch``).

How a scene is cut into tiles
    Square tiles of ``tile`` px (a multiple of the encoder stride, 32) step by ``stride = tile - overlap``. The grid
    starts ``margin = overlap // 2`` px before the scene's first row/column, so the scene's border pixels see
    ``margin`` px of context like every other tile edge; the last tile of each axis is moved back to end ``margin`` px
    past the scene, so no tile is spent on padding alone. Pixels outside the scene are read by *reflection* (row -1
    is row 1, the numpy ``"reflect"`` rule), never as zeros; reflected nodata stays nodata. A tile without a single
    valid pixel is not run (real scenes have wide nodata margins): its pixels are nodata in every output.

How overlapping tiles are blended
    Each tile's class probabilities (softmax of the logits) are multiplied by a separable weight window that is 1 in
    the tile's core and follows a raised-cosine ramp ``0.5 - 0.5 cos(pi (d + 0.5) / overlap)`` over the ``overlap``
    px at each edge (``d`` = distance to the edge in px). The weights never reach 0, and across a regular overlap
    the two ramps sum to exactly 1, so the blend slides smoothly from one tile's prediction to its neighbour's
    while each tile's core, where its context is best, counts fully. The weighted probabilities are summed and
    divided by the summed weights; the class map is their argmax. With ``overlap=0`` the window is all ones and the
    map is exactly each tile's own argmax.

Outputs (uint8, tiled 256 x 256, deflate-compressed, the scene's CRS and transform)
    ``OUT``
        class ids ``0..K-1`` with ``nodata=255`` on every pixel whose input is invalid, the class colour table
        (:meth:`ClassScheme.colormap`; classes of an unknown scheme get a generated palette), the class names as
        band tags ``CLASS_<id>=<name>`` and in the dataset tag ``SARLULC_CLASS_NAMES`` (a JSON list).
    ``<stem>_probabilities.tif`` (``probabilities="classes"``)
        one band per class, probability x 255 rounded (GDAL scale 1/255, so tools that apply scales read [0, 1]).
    ``<stem>_confidence.tif`` (``probabilities="confidence"``)
        one band, the winning class's probability x 255 (scale 1/255).
    ``<stem>_water.tif`` (``water=True``)
        1 where the predicted class is water (``"water"`` of a water-task model, ``"Water"`` of a LULC model), 0
        elsewhere, 255 = nodata.

    Probabilities go into sibling files rather than extra bands because a GeoTIFF colour table only works on a
    single-band file. Their bands use all 256 values, so nodata is marked by an internal mask band (GDAL reads it
    as the dataset mask) instead of a nodata value.

    Every file is written under a hidden temporary name in the destination folder and renamed (``os.replace``) only
    when all of them are complete, the class map last. An exception or ``KeyboardInterrupt`` removes the temporary
    files: only complete outputs ever appear. Existing outputs are refused unless ``overwrite=True``.

Pipeline and memory
    Three kinds of threads overlap the work. A **reader** thread (with ``num_workers`` helper threads, each with its
    own handle on the scene) reads tile windows with rasterio, calibrates them to sigma0 dB (the data layer's
    :meth:`~sarlulc.data.alos2.Alos2Scene.read_db`), has the image processor clip and standardize them, and stacks
    them into batches (pinned memory for CUDA) ahead of the model, a bounded queue apart. The **calling** thread
    runs the model under ``torch.inference_mode`` and blends on the model's device into a band of ``tile`` rows x
    scene width x K float32 that only holds the rows later tiles can still reach; when a tile row is finished, the
    rows no later tile touches are turned into uint8 planes on the device (so only bytes cross to the host) and
    handed to a **writer** thread, which writes them in whole 256-row blocks (every compressed block written once).
    Memory is therefore bounded by the scene *width*, not its size: ``K x tile x width x 4`` bytes for the band
    (151 MB for 9 classes, 512 px tiles and an 8192 px wide scene; on the GPU for a GPU model), the model's
    activations for one batch, a row of tiles or two ahead, and a GDAL block cache capped at 32 MB during the call.
    Measured (``scripts/benchmark.py scene``, BENCHMARKS.md): 1.4 GB peak RSS for a whole process predicting an
    8192 x 8192 scene on the CPU, ~0.75 GB of it the imports of torch and transformers.

Several processes (``accelerate launch scripts/predict.py ...``)
    The tile rows are split between processes with Accelerate (``split_between_processes``); each process also runs
    the one or two tile rows before its share that reach into its first output rows, so its rows receive exactly
    the contributions they get in a single process, in the same order and in the same batches (batches never span
    tile rows). GDAL cannot have two writers on one GeoTIFF, so each process writes its rows into a temporary part
    file in the destination folder (which must be visible to all processes); the main process then copies the parts,
    block row by block row, into the final files and removes them. The result equals the single-process output.
"""

from __future__ import annotations

import colorsys
import json
import math
import os
import queue
import re
import secrets
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
import torch
from rasterio.transform import Affine
from rasterio.windows import Window
from tqdm.auto import tqdm

from . import __version__
from .data.alos2 import CALIBRATION_FACTOR_TAG, POLARIZATIONS, Alos2Scene, SarLulcDataError, open_scene
from .data.classes import SCHEMES, ClassScheme, LulcClass
from .models.image_processing_sar import SarImageProcessor

__all__ = [
    "NODATA_CLASS",
    "PROBABILITY_MODES",
    "PredictionReport",
    "output_paths",
    "predict_scene",
    "scheme_for_labels",
]

NODATA_CLASS = 255
"""Value of nodata pixels in the class map and the water mask."""

PROBABILITY_MODES = ("classes", "confidence")
"""What ``probabilities=`` can ask for: every class's probability, or only the winning class's."""

ProbabilityMode = Literal["classes", "confidence"]

_OUTPUT_BLOCK = 256  # GeoTIFF tile side of every output; writes are grouped into whole rows of these blocks
_GDAL_CACHE_BYTES = 32 * 2**20  # GDAL defaults to 5 % of RAM, which a long scan would fill: RSS would grow with it
_CPU_BATCH_SIZE = 2  # measured at 512 px on 2 cores: as fast as 4 tiles per call, ~400 MB lower peak RSS
_GPU_BATCH_SIZE = 8
_PREFETCH_BATCHES = 2  # batches the reader may prepare ahead of the model
_PENDING_SLABS = 2  # finished row bands that may wait for the writer
_FINISH_ROWS = 64  # rows turned into output planes at a time
_POLL_SECONDS = 0.1  # how often a blocked thread checks whether the others gave up
_CALIBRATION_TAGS = (CALIBRATION_FACTOR_TAG, "CALIBRATION_FACTOR")
_WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


# ----------------------------------------------------------------------------------------------------------------------
# Classes and colours of a model
# ----------------------------------------------------------------------------------------------------------------------
def _generated_color(index: int) -> tuple[int, int, int]:
    # Golden-angle hue steps keep any number of generated colours apart from each other.
    hue = (index * 0.618033988749895) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.65, 0.9)
    return round(red * 255), round(green * 255), round(blue * 255)


def scheme_for_labels(id2label: Mapping[int | str, str]) -> ClassScheme:
    """The class scheme (names, colours, water class) that matches a model's ``id2label``.

    A model trained on a built-in scheme (``lulc-9``, ``water``, ``jaxa-14``: same names in the same order) gets that
    scheme. Otherwise each class takes the colour of a built-in class of the same name (case-insensitive), or a
    generated one; the class named ``water`` (case-insensitive), if any, is the water class.
    """
    names = [str(id2label[key]) for key in sorted(id2label, key=int)]
    for scheme in SCHEMES.values():
        if scheme.names == names:
            return scheme
    known = {cls.name.lower(): cls.color for scheme in SCHEMES.values() for cls in scheme.classes}
    classes = tuple(
        LulcClass(id=i, name=name, color=known.get(name.lower(), _generated_color(i)), codes=())
        for i, name in enumerate(names)
    )
    water = next((name for name in names if name.lower() == "water"), None)
    return ClassScheme(name="model", classes=classes, water_class=water)


# ----------------------------------------------------------------------------------------------------------------------
# The tile grid
# ----------------------------------------------------------------------------------------------------------------------
def _tile_starts(size: int, tile: int, overlap: int) -> tuple[int, ...]:
    """First pixel (may be negative) of each tile along an axis of ``size`` px; see the module docstring."""
    margin, stride = overlap // 2, tile - overlap
    span = size + 2 * margin
    if span <= tile:
        return (-margin,)
    count = math.ceil((span - tile) / stride) + 1
    return (*(-margin + k * stride for k in range(count - 1)), size + margin - tile)


def _reflect(indices: np.ndarray, size: int) -> np.ndarray:
    """Map pixel indices outside ``[0, size)`` back inside by mirror reflection about the edge pixels."""
    if size == 1:
        return np.zeros_like(indices)
    period = 2 * (size - 1)
    folded = np.mod(indices, period)
    return np.where(folded >= size, period - folded, folded)


def _taper(tile: int, overlap: int) -> np.ndarray:
    """The 1-D blending weights of a tile (float64, ``(tile,)``): 1 in the core, raised-cosine ramps at both ends."""
    weights = np.ones(tile)
    if overlap:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap) + 0.5) / overlap)
        weights[:overlap] = ramp
        weights[-overlap:] = ramp[::-1]
    return weights


@dataclass(frozen=True)
class _TileGrid:
    """Tile positions over a scene, the blending window and the summed weights it gives every pixel."""

    height: int
    width: int
    tile: int
    overlap: int
    row_starts: tuple[int, ...] = field(init=False)
    col_starts: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "row_starts", _tile_starts(self.height, self.tile, self.overlap))
        object.__setattr__(self, "col_starts", _tile_starts(self.width, self.tile, self.overlap))

    @property
    def num_rows(self) -> int:
        return len(self.row_starts)

    @property
    def num_tiles(self) -> int:
        return len(self.row_starts) * len(self.col_starts)

    def top(self, row: int) -> int:
        """First scene row that is final once tile rows ``< row`` are done (``height`` for ``row == num_rows``).

        Tile row ``row`` finishes the scene rows ``[top(row), top(row + 1))``: no later tile row reaches them.
        """
        return self.height if row >= self.num_rows else min(max(self.row_starts[row], 0), self.height)

    def first_row_reaching(self, scene_row: int) -> int:
        """The first tile row that contributes to ``scene_row`` or later rows (a process starts there)."""
        return next(i for i, start in enumerate(self.row_starts) if start + self.tile > scene_row)

    def source_rows(self, row: int) -> np.ndarray:
        return _reflect(np.arange(self.row_starts[row], self.row_starts[row] + self.tile), self.height)

    def source_cols(self, col: int) -> np.ndarray:
        return _reflect(np.arange(self.col_starts[col], self.col_starts[col] + self.tile), self.width)

    def window(self) -> np.ndarray:
        """The 2-D blending weights ``(tile, tile)`` float32."""
        taper = _taper(self.tile, self.overlap)
        return np.outer(taper, taper).astype(np.float32)

    def weight_sums(self) -> tuple[np.ndarray, np.ndarray]:
        """Summed window weights of every scene row ``(height,)`` and column ``(width,)``, float32.

        The window is separable and the grid is a product of row and column positions, so the total weight of pixel
        ``(r, c)`` over all tiles is ``rows[r] * cols[c]`` and needs no per-pixel accumulation. (A tile that is not run
        has no valid pixel, so no valid pixel misses its weight.)
        """
        taper = _taper(self.tile, self.overlap)
        sums = []
        for size, starts in ((self.height, self.row_starts), (self.width, self.col_starts)):
            total = np.zeros(size)
            for start in starts:
                first, last = max(start, 0), min(start + self.tile, size)
                total[first:last] += taper[first - start : last - start]
            sums.append(total.astype(np.float32))
        return sums[0], sums[1]


# ----------------------------------------------------------------------------------------------------------------------
# Output files
# ----------------------------------------------------------------------------------------------------------------------
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


@dataclass(frozen=True)
class _Layout:
    """Which uint8 planes a finished row band carries, in order: class ids, the water mask, probabilities."""

    num_labels: int
    water_id: int | None
    probabilities: str | None

    @property
    def water_plane(self) -> int | None:
        return None if self.water_id is None else 1

    @property
    def probability_planes(self) -> slice | None:
        if self.probabilities is None:
            return None
        first = 1 + (self.water_id is not None)
        return slice(first, first + (self.num_labels if self.probabilities == "classes" else 1))

    @property
    def count(self) -> int:
        planes = self.probability_planes
        return (1 + (self.water_id is not None)) if planes is None else planes.stop


class _AlignedRows:
    """Collects consecutive row slabs and passes them on in whole rows of output blocks.

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
        if row != self._next:
            raise RuntimeError(f"rows arrived out of order: expected row {self._next}, got {row}")
        self._pending.append(planes)
        self._next += planes.shape[1]
        aligned = self._first + (self._next - self._first) // _OUTPUT_BLOCK * _OUTPUT_BLOCK
        cut = self._next if self._next >= self._end else aligned
        if cut <= self._start:
            return
        data = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending, axis=1)
        split = cut - self._start
        self._write(self._start, data[:, :split])
        self._pending = [data[:, split:]] if split < data.shape[1] else []
        self._start = cut


def _temporary_path(final: Path, label: str) -> Path:
    """A new empty file next to ``final`` with a hidden, unique name (GDAL then writes over it).

    Created with the permissions a plain new file gets (0666 less the umask), which the output keeps when it is
    renamed; ``tempfile.mkstemp`` would make it private to its owner.
    """
    while True:
        path = final.with_name(f".{final.name}.{label}-{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return path
        except FileExistsError:
            continue
        except OSError as err:
            raise PermissionError(f"cannot write into the output folder {final.parent}: {err}") from err


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _profile(height: int, width: int, count: int, crs: Any, transform: Any, **extra: Any) -> dict[str, Any]:
    return dict(
        driver="GTiff",
        height=height,
        width=width,
        count=count,
        dtype="uint8",
        crs=crs,
        transform=transform,
        tiled=True,
        blockxsize=_OUTPUT_BLOCK,
        blockysize=_OUTPUT_BLOCK,
        compress="deflate",
        interleave="band",
        bigtiff="IF_SAFER",
        **extra,
    )


class _OutputFiles:
    """The final rasters, open under temporary names until :meth:`commit` renames them.

    Args:
        layout: the planes each written row band carries.
        scheme: classes, colours and water class of the model.
        georeference: ``(height, width, crs, transform)`` of the scene.
        paths: final paths from :func:`output_paths`.
        tags: dataset tags written into every file.
    """

    def __init__(
        self,
        layout: _Layout,
        scheme: ClassScheme,
        georeference: tuple[int, int, Any, Any],
        paths: dict[str, Path],
        tags: dict[str, str],
    ) -> None:
        self.paths = paths
        self._layout = layout
        self.temporary: dict[str, Path] = {}
        self._datasets: dict[str, Any] = {}
        self._aligned = _AlignedRows(0, georeference[0], self._write_block_rows)
        try:
            for key, final in paths.items():
                self.temporary[key] = _temporary_path(final, "partial")
            self._open_classes(scheme, georeference, tags)
            if "water" in paths:
                self._open_water(scheme, georeference, tags)
            if layout.probabilities is not None:
                self._open_probabilities(scheme, georeference, tags)
        except BaseException:
            self.discard()
            raise

    def _open(self, key: str, profile: dict[str, Any], tags: dict[str, str]) -> Any:
        dataset = rasterio.open(self.temporary[key], "w", **profile)
        self._datasets[key] = dataset
        dataset.update_tags(**tags)
        return dataset

    def _open_classes(self, scheme: ClassScheme, georeference: tuple, tags: dict[str, str]) -> None:
        dataset = self._open("classes", _profile(*georeference[:2], 1, *georeference[2:], nodata=NODATA_CLASS), tags)
        dataset.write_colormap(1, scheme.colormap())
        dataset.set_band_description(1, f"class id ({scheme.name}); {NODATA_CLASS} = no data")
        dataset.update_tags(1, **{f"CLASS_{cls.id}": cls.name for cls in scheme.classes})

    def _open_water(self, scheme: ClassScheme, georeference: tuple, tags: dict[str, str]) -> None:
        dataset = self._open("water", _profile(*georeference[:2], 1, *georeference[2:], nodata=NODATA_CLASS), tags)
        water_color = scheme.classes[scheme.water_id].color
        dataset.write_colormap(1, {0: (200, 200, 200, 255), 1: (*water_color, 255), NODATA_CLASS: (0, 0, 0, 0)})
        dataset.set_band_description(1, f"water mask: 1 = {scheme.water_class}, 0 = other, {NODATA_CLASS} = no data")

    def _open_probabilities(self, scheme: ClassScheme, georeference: tuple, tags: dict[str, str]) -> None:
        if self._layout.probabilities == "classes":
            key, names = "probabilities", [f"probability of {cls.name} x 255" for cls in scheme.classes]
        else:
            key, names = "confidence", ["probability of the predicted class x 255"]
        dataset = self._open(key, _profile(*georeference[:2], len(names), *georeference[2:]), tags)
        dataset.scales = (1 / 255,) * len(names)
        dataset.offsets = (0.0,) * len(names)
        for band, name in enumerate(names, start=1):
            dataset.set_band_description(band, name)
        if key == "probabilities":
            for cls in scheme.classes:
                dataset.update_tags(cls.id + 1, CLASS_ID=str(cls.id), CLASS_NAME=cls.name)

    def write(self, row: int, planes: np.ndarray) -> None:
        """Write the uint8 planes ``(layout.count, n, width)`` of scene rows ``[row, row + n)``."""
        self._aligned.push(row, planes)

    def _write_block_rows(self, row: int, planes: np.ndarray) -> None:
        window = Window(0, row, planes.shape[2], planes.shape[1])
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
        """Close the files and move them to their final names, the class map last."""
        self.close()
        if not overwrite:
            _refuse_existing(self.paths)
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
            _remove_quietly(path)
        self.temporary = {}


# What _OutputFiles is made of: layout, scheme, (height, width, crs, transform), paths, tags.
_Files = tuple[_Layout, ClassScheme, tuple[int, int, Any, Any], dict[str, Path], dict[str, str]]


class _PartFile:
    """One process's row band ``[first_row, end_row)`` of every plane, in a temporary multi-band GeoTIFF."""

    def __init__(
        self, final: Path, rank: int, rows: tuple[int, int], georeference: tuple[int, int, Any, Any], layout: _Layout
    ) -> None:
        self.path = _temporary_path(final, f"part{rank}")
        self.first_row, end_row = rows
        _, width, crs, transform = georeference
        try:
            # Parts live for one run: fast compression keeps them small without slowing the writer down.
            profile = _profile(
                end_row - self.first_row,
                width,
                layout.count,
                crs,
                transform * Affine.translation(0, self.first_row),
                zlevel=1,
            )
            self._dataset = rasterio.open(self.path, "w", **profile)
        except BaseException:
            _remove_quietly(self.path)
            raise
        self._aligned = _AlignedRows(self.first_row, end_row, self._write_block_rows)

    def write(self, row: int, planes: np.ndarray) -> None:
        self._aligned.push(row, planes)

    def _write_block_rows(self, row: int, planes: np.ndarray) -> None:
        self._dataset.write(planes, window=Window(0, row - self.first_row, planes.shape[2], planes.shape[1]))

    def close(self) -> None:
        self._dataset.close()

    def discard(self) -> None:
        try:
            self._dataset.close()
        except Exception:  # the file goes away anyway; the original error matters
            pass
        _remove_quietly(self.path)


def _merge_parts(files: _Files, parts: list[tuple[int, str]], overwrite: bool) -> None:
    """Copy the parts ``(first scene row, path)``, in row order, into the final outputs, one block row at a time."""
    outputs = _OutputFiles(*files)
    try:
        for first_row, path in parts:
            with rasterio.open(path) as source:
                for row in range(0, source.height, _OUTPUT_BLOCK):
                    rows = min(_OUTPUT_BLOCK, source.height - row)
                    outputs.write(first_row + row, source.read(window=Window(0, row, source.width, rows)))
        outputs.commit(overwrite)
    except BaseException:
        outputs.discard()
        raise


def _refuse_existing(paths: dict[str, Path]) -> None:
    existing = [str(path) for path in paths.values() if path.exists() or path.is_symlink()]
    if existing:
        raise FileExistsError(f"output {', '.join(existing)} already exists; pass overwrite=True (--overwrite)")


def _check_destination(paths: dict[str, Path], scene_path: str, overwrite: bool) -> None:
    """Refuse outputs that exist (without ``overwrite``), overwrite the scene, or cannot be written."""
    for path in paths.values():
        if path.is_dir():
            raise IsADirectoryError(f"output {path} is a folder; give a file name such as {path / 'map.tif'}")
        if Path(scene_path).exists() and path.exists() and os.path.samefile(path, scene_path):
            raise ValueError(f"output {path} is the input scene; choose another output name")
    if not overwrite:
        _refuse_existing(paths)
    folder = paths["classes"].parent
    existing = folder
    while not existing.exists():  # a missing folder is created later, so its first existing ancestor must be writable
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"output folder {folder} cannot be created: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"output folder {existing} is not writable")


# ----------------------------------------------------------------------------------------------------------------------
# Threads
# ----------------------------------------------------------------------------------------------------------------------
class _End:
    """Marks the end of a queue's stream."""


_END = _End()


@dataclass
class _Failure:
    """An exception raised in a helper thread, passed to the calling thread to re-raise."""

    error: BaseException


def _put(channel: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Put ``item`` unless ``stop`` is set while waiting for space; True if it was put."""
    while not stop.is_set():
        try:
            channel.put(item, timeout=_POLL_SECONDS)
            return True
        except queue.Full:
            continue
    return False


@dataclass
class _Batch:
    """Preprocessed neighbouring tiles of one tile row, ready for the model.

    Attributes:
        row: tile row index.
        cols: tile column index of each tile in the batch (empty when none of them has a valid pixel).
        pixel_values: ``(len(cols), C, tile, tile)`` float32 normalized backscatter (pinned for CUDA), or None.
        valid: ``(len(cols), tile, tile)`` bool, True where the input pixel is valid, or None.
        skipped: neighbouring tiles left out for want of a valid pixel (not run; for the progress bar).
    """

    row: int
    cols: list[int]
    pixel_values: torch.Tensor | None
    valid: torch.Tensor | None
    skipped: int


class _TileReader(threading.Thread):
    """Reads, calibrates, normalizes and batches the tiles of the given tile rows, in order, ahead of the model.

    ``num_workers`` threads prepare batches in parallel (rasterio and numpy release the GIL), each with its own scene
    handle (GDAL handles must not be shared between threads); this thread keeps their order and puts them on
    ``batches``. Any exception is put on the queue for the calling thread to raise.
    """

    def __init__(
        self,
        open_handle: Callable[[], Alos2Scene],
        processor: SarImageProcessor,
        grid: _TileGrid,
        rows: range,
        batch_size: int,
        num_workers: int,
        pin_memory: bool,
        batches: queue.Queue,
        stop: threading.Event,
    ) -> None:
        super().__init__(name="sarlulc-reader", daemon=True)
        self._open_handle = open_handle
        self._processor = processor
        self._grid = grid
        self._rows = rows
        self._batch_size = batch_size
        self._num_workers = num_workers
        self._pin_memory = pin_memory
        self._batches = batches
        self._halt = stop
        self._local = threading.local()
        self._handles: list[Alos2Scene] = []
        self._handles_lock = threading.Lock()

    def _scene(self) -> Alos2Scene:
        scene = getattr(self._local, "scene", None)
        if scene is None:
            scene = self._local.scene = self._open_handle()
            with self._handles_lock:
                self._handles.append(scene)
        return scene

    def _read_tile(self, scene: Alos2Scene, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """sigma0 dB ``(C, tile, tile)`` and validity ``(tile, tile)`` at reflected source rows/cols of the scene."""
        top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        db, valid = scene.read_db(Window(left, top, right - left, bottom - top))
        # A tile reaching past the scene maps several of its pixels to one source pixel, so its source window is
        # smaller than the tile: gather the mirrored pixels.
        if db.shape[1:] != (len(rows), len(cols)):
            row_index, col_index = np.ix_(rows - top, cols - left)
            db, valid = db[:, row_index, col_index], valid[row_index, col_index]
        return db, valid

    def _prepare_batch(self, row: int, cols: range) -> _Batch:
        """Read and preprocess the tiles ``cols`` of tile row ``row``; tiles without a valid pixel are left out."""
        scene = self._scene()
        rows = self._grid.source_rows(row)
        run, values, masks = [], [], []
        for col in cols:
            db, valid = self._read_tile(scene, rows, self._grid.source_cols(col))
            if not valid.any():
                continue
            # The data layer has calibrated to dB; the processor applies the checkpoint's clip and standardization.
            features = self._processor.preprocess(
                db, valid_masks=valid, input_kind="db", nodata=None, pad_to_multiple_of=None
            )
            run.append(col)
            values.append(features["pixel_values"][0])
            masks.append(valid)
        if not run:
            return _Batch(row, [], None, None, len(cols))
        return _Batch(
            row, run, self._stack(values, torch.float32), self._stack(masks, torch.bool), len(cols) - len(run)
        )

    def _stack(self, arrays: list[np.ndarray], dtype: torch.dtype) -> torch.Tensor:
        stacked = torch.empty((len(arrays), *arrays[0].shape), dtype=dtype, pin_memory=self._pin_memory)
        np.stack(arrays, out=stacked.numpy())
        return stacked

    def _work(self) -> Iterator[tuple[int, range]]:
        # A batch is `batch_size` neighbouring tiles of one row, less those without a valid pixel: the same batches
        # whichever process runs the row, so a tile's logits never depend on how the scene was split.
        num_cols = len(self._grid.col_starts)
        for row in self._rows:
            for first in range(0, num_cols, self._batch_size):
                yield row, range(first, min(first + self._batch_size, num_cols))

    def run(self) -> None:
        try:
            with ThreadPoolExecutor(self._num_workers, thread_name_prefix="sarlulc-read") as pool:
                work = self._work()
                pending = deque(pool.submit(self._prepare_batch, *unit) for unit in islice(work, self._num_workers))
                while pending and not self._halt.is_set():
                    batch = pending.popleft().result()
                    following = next(work, None)
                    if following is not None:
                        pending.append(pool.submit(self._prepare_batch, *following))
                    if not _put(self._batches, batch, self._halt):
                        break
                for future in pending:
                    future.cancel()
            _put(self._batches, _END, self._halt)
        except BaseException as err:  # handed to the calling thread, which raises it
            _put(self._batches, _Failure(err), self._halt)
        finally:
            for scene in self._handles:
                scene.close()


class _RowWriter(threading.Thread):
    """Writes finished row bands ``(row, planes)`` from ``slabs`` into the outputs until the end marker."""

    def __init__(self, sink: _OutputFiles | _PartFile, slabs: queue.Queue, stop: threading.Event) -> None:
        super().__init__(name="sarlulc-writer", daemon=True)
        self._sink = sink
        self._slabs = slabs
        self._halt = stop
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                try:
                    item = self._slabs.get(timeout=_POLL_SECONDS)
                except queue.Empty:
                    continue
                if item is _END:
                    return
                self._sink.write(*item)
        except BaseException as err:  # the calling thread raises it
            self.error = err
            self._halt.set()


# ----------------------------------------------------------------------------------------------------------------------
# Blending on the model's device
# ----------------------------------------------------------------------------------------------------------------------
def _first_argmax(planes: torch.Tensor) -> torch.Tensor:
    """Index (uint8) of the largest of K planes ``(K, ...)`` at each position, the first one on ties like
    ``torch.argmax(dim=0)``; a running maximum over the planes is several times faster on the CPU than ``argmax``,
    which reduces across the non-contiguous plane dimension element by element."""
    best = planes[0].clone()
    index = torch.zeros(best.shape, dtype=torch.uint8, device=planes.device)
    for k in range(1, planes.shape[0]):
        index.masked_fill_(planes[k] > best, k)
        torch.maximum(best, planes[k], out=best)
    return index


class _Blender:
    """Weighted class probabilities of a band of ``tile`` scene rows, on the model's device.

    The band starts at scene row ``top``; tile row ``i`` only touches rows ``[top(i), top(i) + tile)``, so after tile
    row ``i`` the rows ``[top(i), top(i + 1))`` are final (:meth:`finish`) and the band slides down to ``top(i + 1)``.
    """

    def __init__(self, grid: _TileGrid, layout: _Layout, first_row: int, device: torch.device) -> None:
        self._grid = grid
        self._layout = layout
        self._device = device
        tile, width = grid.tile, grid.width
        self._sums = torch.zeros((layout.num_labels, tile, width), dtype=torch.float32, device=device)
        self._valid = torch.zeros((tile, width), dtype=torch.bool, device=device)
        self._window = torch.from_numpy(grid.window()).to(device)
        row_weights, col_weights = grid.weight_sums()
        self._row_weights = torch.from_numpy(row_weights).to(device)
        self._col_weights = torch.from_numpy(col_weights).to(device)
        self._top = grid.top(first_row)

    @property
    def num_labels(self) -> int:
        return self._layout.num_labels

    @property
    def tile(self) -> int:
        return self._grid.tile

    def weighted_probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """``(B, K, tile, tile)`` logits -> softmax probabilities times the blending window, float32.

        Computed in place on the logits (which are not used again): on the CPU, filling a freshly allocated tensor
        of this size costs more than the arithmetic itself.
        """
        probabilities = logits.float()  # a copy only for a model that does not return float32
        probabilities.sub_(probabilities.amax(dim=1, keepdim=True)).exp_()
        return probabilities.mul_(self._window / probabilities.sum(dim=1, keepdim=True))

    def add(self, weighted: torch.Tensor, valid: torch.Tensor, row: int, col: int) -> None:
        """Add one tile's weighted probabilities ``(K, tile, tile)`` and validity ``(tile, tile)`` into the band."""
        grid = self._grid
        row0, col0 = grid.row_starts[row], grid.col_starts[col]
        first, last = max(row0, 0), min(row0 + grid.tile, grid.height)
        left, right = max(col0, 0), min(col0 + grid.tile, grid.width)
        band = slice(first - self._top, last - self._top)
        tile_rows, tile_cols = slice(first - row0, last - row0), slice(left - col0, right - col0)
        self._sums[:, band, left:right] += weighted[:, tile_rows, tile_cols]
        self._valid[band, left:right] = valid[tile_rows, tile_cols]

    def finish(self, row: int, emit: bool) -> tuple[int, np.ndarray] | None:
        """Close tile row ``row``: return ``(first scene row, uint8 planes (count, n, width))`` of the rows it finished
        (None when ``emit`` is False or it finished none), and slide the band down past them."""
        end = self._grid.top(row + 1)
        count = end - self._top
        if count <= 0:
            return None
        result = (self._top, self._planes(count)) if emit else None
        keep = self._grid.tile - count
        # Move the kept rows up in pieces of at most `count` rows, each copied from below where it lands, so that no
        # piece overlaps its destination: a copy of all kept rows at once would need a temporary as large as them.
        for first in range(0, keep, count):
            rows = min(count, keep - first)
            self._sums[:, first : first + rows] = self._sums[:, first + count : first + count + rows]
            self._valid[first : first + rows] = self._valid[first + count : first + count + rows]
        self._sums[:, keep:] = 0.0
        self._valid[keep:] = False
        self._top = end
        return result

    def _planes(self, count: int) -> np.ndarray:
        """The uint8 planes ``(layout.count, count, width)`` of the band's first ``count`` rows."""
        planes = np.empty((self._layout.count, count, self._grid.width), dtype=np.uint8)
        # In chunks of rows: the float and int64 temporaries of a whole band would be several times its uint8 size.
        for first in range(0, count, _FINISH_ROWS):
            rows = slice(first, min(first + _FINISH_ROWS, count))
            planes[:, rows] = self._plane_rows(rows).cpu().numpy()
        return planes

    def _plane_rows(self, rows: slice) -> torch.Tensor:
        sums, valid = self._sums[:, rows], self._valid[rows]
        classes = _first_argmax(sums)
        planes = [torch.where(valid, classes, NODATA_CLASS)]
        if self._layout.water_id is not None:
            planes.append(torch.where(valid, (classes == self._layout.water_id).to(torch.uint8), NODATA_CLASS))
        if self._layout.probabilities is not None:
            scene_rows = slice(self._top + rows.start, self._top + rows.stop)
            probabilities = sums / (self._row_weights[scene_rows, None] * self._col_weights[None, :])
            if self._layout.probabilities == "confidence":
                probabilities = probabilities.amax(dim=0, keepdim=True)
            planes.extend(probabilities.mul_(255.0).round_().clamp_(0, 255).masked_fill_(~valid, 0))
        return torch.stack([plane.to(torch.uint8) for plane in planes])


class _ModelClock:
    """Seconds spent in the model: CUDA events on a GPU (no synchronization per batch), wall time otherwise."""

    def __init__(self, device: torch.device) -> None:
        self._device = device
        self._cuda = device.type == "cuda"
        self._events: list[tuple[Any, Any]] = []
        self._seconds = 0.0
        self._started: Any = None

    def start(self) -> None:
        if self._cuda:
            self._started = torch.cuda.Event(enable_timing=True)
            self._started.record()
        else:
            self._started = time.perf_counter()

    def stop(self) -> None:
        if self._cuda:
            ended = torch.cuda.Event(enable_timing=True)
            ended.record()
            self._events.append((self._started, ended))
        else:
            self._seconds += time.perf_counter() - self._started

    def total(self) -> float:
        if self._cuda:
            torch.cuda.synchronize(self._device)
            return self._seconds + sum(start.elapsed_time(end) for start, end in self._events) / 1000.0
        return self._seconds


def _next_batch(batches: queue.Queue, reader: _TileReader, writer: _RowWriter) -> Any:
    """The reader's next item; raises if the writer failed (it stops the reader, which then sends nothing more)."""
    while True:
        try:
            return batches.get(timeout=_POLL_SECONDS)
        except queue.Empty:
            if writer.error is not None:
                raise writer.error from None
            if not reader.is_alive() and batches.empty():
                raise RuntimeError("the reader thread stopped without a result") from None


def _run_batch(
    model: torch.nn.Module,
    batch: _Batch,
    blender: _Blender,
    clock: _ModelClock,
    device: torch.device,
    dtype: torch.dtype,
) -> None:
    """Run the model on a batch and blend its tiles in. A function of its own, so that the batch's logits are freed
    before the next batch's activations are allocated."""
    pixel_values = batch.pixel_values.to(device, dtype=dtype, non_blocking=True)
    valid = batch.valid.to(device, non_blocking=True)
    clock.start()
    logits = model(pixel_values=pixel_values).logits
    clock.stop()
    expected = (len(batch.cols), blender.num_labels, blender.tile, blender.tile)
    if tuple(logits.shape) != expected:
        raise ValueError(
            f"the model returned logits of shape {tuple(logits.shape)} for tiles of shape "
            f"{tuple(pixel_values.shape)}; expected {expected}"
        )
    weighted = blender.weighted_probabilities(logits)
    for index, col in enumerate(batch.cols):
        blender.add(weighted[index], valid[index], batch.row, col)


@dataclass
class _RunStats:
    tiles: int = 0
    skipped: int = 0
    seconds_model: float = 0.0
    seconds_waiting: float = 0.0


def _predict_rows(
    model: torch.nn.Module,
    processor: SarImageProcessor,
    open_handle: Callable[[], Alos2Scene],
    grid: _TileGrid,
    layout: _Layout,
    rows: range,
    emit_from: int,
    sink: _OutputFiles | _PartFile,
    device: torch.device,
    batch_size: int,
    num_workers: int,
    progress_bar: tqdm,
) -> _RunStats:
    """Run tile rows ``rows`` and write the scene rows finished by tile rows ``>= emit_from`` into ``sink``."""
    stats = _RunStats()
    stop = threading.Event()
    batches: queue.Queue = queue.Queue(maxsize=_PREFETCH_BATCHES)
    slabs: queue.Queue = queue.Queue(maxsize=_PENDING_SLABS)
    reader = _TileReader(
        open_handle, processor, grid, rows, batch_size, num_workers, device.type == "cuda", batches, stop
    )
    writer = _RowWriter(sink, slabs, stop)
    dtype = next(model.parameters()).dtype
    clock = _ModelClock(device)

    def hand_over(item: Any) -> None:
        if not _put(slabs, item, stop):
            raise writer.error or RuntimeError("the writer thread stopped")

    reader.start()
    writer.start()
    try:
        with torch.inference_mode():
            blender = _Blender(grid, layout, rows.start, device)
            current = rows.start
            while True:
                waited = time.perf_counter()
                item = _next_batch(batches, reader, writer)
                stats.seconds_waiting += time.perf_counter() - waited
                if isinstance(item, _Failure):
                    raise item.error
                if item is _END:
                    break
                while current < item.row:
                    finished = blender.finish(current, current >= emit_from)
                    if finished is not None:
                        hand_over(finished)
                    current += 1
                if item.cols:
                    _run_batch(model, item, blender, clock, device, dtype)
                stats.tiles += len(item.cols)
                stats.skipped += item.skipped
                progress_bar.update(len(item.cols) + item.skipped)
            while current < rows.stop:
                finished = blender.finish(current, current >= emit_from)
                if finished is not None:
                    hand_over(finished)
                current += 1
        hand_over(_END)
        writer.join()
        if writer.error is not None:
            raise writer.error
        stats.seconds_model = clock.total()
        return stats
    finally:
        stop.set()
        reader.join()
        writer.join()


# ----------------------------------------------------------------------------------------------------------------------
# Loading, validation, processes
# ----------------------------------------------------------------------------------------------------------------------
def _resolve_processor(
    explicit: SarImageProcessor | str | os.PathLike | None, folder: Path | None, num_channels: int
) -> SarImageProcessor:
    """The explicit processor (or its folder), else the checkpoint's, else the defaults with a warning."""
    if isinstance(explicit, SarImageProcessor):
        return explicit
    if explicit is not None:
        if not (Path(explicit) / "preprocessor_config.json").is_file():
            raise ValueError(f"image_processor {explicit} is not a folder with a preprocessor_config.json")
        return SarImageProcessor.from_pretrained(explicit)
    if folder is not None and (folder / "preprocessor_config.json").is_file():
        return SarImageProcessor.from_pretrained(folder)
    warnings.warn(
        f"{'the model' if folder is None else folder} has no preprocessor_config.json: using SarImageProcessor "
        "defaults (clip [-35, 5] dB, mean -12 dB, std 6 dB). Predictions are only right if the model was trained "
        "with these; pass image_processor= or save the processor with the checkpoint",
        UserWarning,
        stacklevel=3,
    )
    return SarImageProcessor(num_channels=num_channels)


_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def _download_checkpoint(source: str) -> Path:
    """A Hub model id (``owner/name``) as a local snapshot (the config, weights and processor config only)."""
    if not _REPO_ID.match(source) or source.endswith((".tif", ".tiff", ".json")):
        raise ValueError(f"checkpoint {source} does not exist or is not a folder (expected a save_pretrained folder)")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(source, allow_patterns=["*.json", "*.safetensors"]))
    except Exception as err:  # offline, unknown repository, no access: say what was tried
        raise ValueError(
            f"checkpoint {source} is not a local folder, and downloading it as a Hub model repository failed "
            f"({type(err).__name__}: {err})"
        ) from err


def _load_model(source: Any) -> tuple[torch.nn.Module, Path | None]:
    """The model and the folder it came from (where its preprocessor_config.json may be)."""
    if isinstance(source, torch.nn.Module):
        name = getattr(getattr(source, "config", None), "_name_or_path", "") or ""
        return source, (Path(name) if name and Path(name).is_dir() else None)
    folder = Path(source)
    if not folder.is_dir():
        folder = _download_checkpoint(str(source))
    if not (folder / "config.json").is_file():
        raise ValueError(f"checkpoint {folder} has no config.json; expected a folder written by save_pretrained")
    from transformers import AutoModelForSemanticSegmentation

    # The installed package's classes (registered on import), not remote code copied into the checkpoint.
    return AutoModelForSemanticSegmentation.from_pretrained(folder, trust_remote_code=False), folder


def _check_arguments(
    tile: int, overlap: int, batch_size: int | None, probabilities: str | None, num_workers: int | None
) -> None:
    for name, value in (("tile", tile), ("overlap", overlap), ("batch_size", 1 if batch_size is None else batch_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if tile < 32 or tile % 32:
        raise ValueError(f"tile must be a positive multiple of 32 px (the encoder stride), got {tile}")
    if not 0 <= overlap < tile / 2:
        raise ValueError(
            f"overlap must be in [0, tile/2) px: 0 <= overlap < {tile / 2:g} for tile {tile}, got {overlap} "
            "(each scene row must be reached by tiles of at most two consecutive tile rows)"
        )
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if probabilities is not None and probabilities not in PROBABILITY_MODES:
        raise ValueError(f"probabilities must be None or one of {PROBABILITY_MODES}, got {probabilities!r}")
    if num_workers is not None and num_workers < 1:
        raise ValueError(f"num_workers must be at least 1, got {num_workers}")


def _scene_declares_calibration(scene: Alos2Scene) -> bool:
    return any(key.upper() in _CALIBRATION_TAGS for key in scene.tags())


def _launched_processes() -> int:
    for name in _WORLD_SIZE_VARIABLES:
        value = os.environ.get(name)
        if value and value.isdigit():
            return int(value)
    return 1


def _process_state() -> Any:
    """Accelerate's process state when this is one of several processes (``accelerate launch``), else None.

    A single process never creates the state: it is a process-wide singleton whose settings (CPU or GPU) a later
    ``Accelerator(...)`` in the same program could not change.
    """
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if not distributed and _launched_processes() <= 1:
        return None
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    # PartialState only picks the CPU backend when told to (accelerate launch --cpu sets ACCELERATE_USE_CPU).
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())


def _gather_errors(error: BaseException | None) -> list[tuple[int, str]]:
    """Exchange every process's error (None = success): ``(process index, message)`` of those that failed.

    Every process must call this, even after a failure of its own, or the others would wait for it forever.
    """
    from accelerate.utils import gather_object

    messages = gather_object([None if error is None else f"{type(error).__name__}: {error}"])
    return [(rank, message) for rank, message in enumerate(messages) if message is not None]


def _raise_if_any_failed(error: BaseException | None, failures: list[tuple[int, str]], what: str) -> None:
    if error is not None:
        raise error
    if failures:
        detail = "; ".join(f"process {rank}: {message}" for rank, message in failures)
        raise RuntimeError(f"{what} failed in another process ({detail})")


# ----------------------------------------------------------------------------------------------------------------------
# The entry point
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class PredictionReport:
    """What :func:`predict_scene` did, for logs and benchmarks.

    Attributes:
        path: the class map.
        extra_paths: the sibling outputs by kind (``"probabilities"`` or ``"confidence"``, ``"water"``).
        shape: ``(height, width)`` of the scene and of every output, in px.
        tile, overlap, batch_size: the tiling used (px, px, tiles per model call).
        tiles: tiles the model ran on in this process; tile-processed pixels are ``tiles * tile**2``.
        tiles_skipped: tiles of this process without a valid input pixel, not run.
        seconds_model: time in the model's forward passes (GPU time from CUDA events on a GPU).
        seconds_waiting: time the model waited for the reader (near 0 when reading keeps up).
        seconds_total: wall time of the pipeline, from the first read to the renamed outputs (model loading and
            argument checks excluded); in several processes, including the merge.
        pixels_written: pixels of the class map (``height * width``, nodata included).
        device: the device the model ran on.
        process_index, num_processes: this process and how many shared the scene.
    """

    path: Path
    extra_paths: dict[str, Path]
    shape: tuple[int, int]
    tile: int
    overlap: int
    batch_size: int
    tiles: int
    tiles_skipped: int
    seconds_model: float
    seconds_waiting: float
    seconds_total: float
    pixels_written: int
    device: str
    process_index: int = 0
    num_processes: int = 1

    @property
    def model_pixels_per_second(self) -> float:
        """Tile pixels the model processed per second of total time (the benchmark's throughput)."""
        return self.tiles * self.tile**2 / self.seconds_total if self.seconds_total > 0 else 0.0


def predict_scene(
    model: Any,
    scene_path: str | os.PathLike,
    out_path: str | os.PathLike,
    tile: int = 512,
    overlap: int = 64,
    batch_size: int | None = None,
    image_processor: SarImageProcessor | str | os.PathLike | None = None,
    probabilities: ProbabilityMode | None = None,
    water: bool = False,
    device: str | torch.device | None = None,
    progress: bool = True,
    *,
    overwrite: bool = False,
    input_kind: str | None = None,
    calibration_factor: float | None = None,
    bands: Sequence[int] | None = None,
    num_workers: int | None = None,
) -> PredictionReport:
    """Predict a land-cover (or water) map for a whole scene and write it as a GeoTIFF; see the module docstring.

    Args:
        model: a loaded ``SarLulcForSemanticSegmentation`` (any model whose ``model(pixel_values=x).logits`` maps
            ``(B, C, H, W)`` to ``(B, K, H, W)`` and whose ``config.id2label`` names the K classes), the folder of
            a checkpoint saved with ``save_pretrained``, or a Hub model id (downloaded into the Hugging Face cache;
            ``HF_HUB_OFFLINE=1`` uses the cached copy only). A loaded model is put in eval mode for the call (its training
            flag is restored) and moved to ``device`` when one is given.
        scene_path: the scene raster (band 1 HH, optional band 2 HV). Its input kind (DN, linear power or dB) comes
            from its tags, dtype or values (:func:`sarlulc.data.alos2.open_scene`); the DN calibration factor from
            its tags, else from the processor.
        out_path: the class map GeoTIFF to write; sibling outputs are named after it (:func:`output_paths`). A
            missing folder is created.
        tile: tile side in px, a multiple of 32.
        overlap: px shared by neighbouring tiles, ``0 <= overlap < tile / 2``; 64 of 512 hides the seams.
        batch_size: tiles per model call. Default: 2 on the CPU, where larger batches are no faster and only
            raise the memory peak, 8 on a GPU.
        image_processor: the preprocessing (clip range, mean/std per band) as a ``SarImageProcessor`` or a folder
            with ``preprocessor_config.json``. Default: the checkpoint's; without one, the processor defaults with a
            warning.
        probabilities: also write ``"classes"`` (K bands, probability x 255) or ``"confidence"`` (1 band).
        water: also write a water mask (1 water, 0 other, 255 nodata); the model must have a class named water.
        device: where the model runs. Default: a loaded model's device, ``cuda`` for a checkpoint when available,
            else ``cpu``; under ``accelerate launch``, each process's device.
        progress: show a progress bar over tiles (main process only).
        overwrite: replace existing outputs.
        input_kind: ``"dn"``, ``"linear"`` or ``"db"``, overriding what the scene's metadata say.
        calibration_factor: CF in dB for DN scenes, overriding the scene's tag and the processor's value.
        bands: 1-based scene bands to read as (HH,) or (HH, HV), e.g. ``(1,)`` to use only HH of a dual-pol scene.
        num_workers: threads preparing tiles ahead of the model. Default: 1 on the CPU, where the model needs the
            cores; up to 4 with a GPU.

    Returns:
        A :class:`PredictionReport`. Under several processes every process gets one (with its own tile counts).

    Raises:
        SarLulcDataError: the scene is missing, unreadable, corrupt, or has a band count the model does not take.
        ValueError: a bad tile/overlap/batch size, a checkpoint that cannot be loaded, ``water=True`` for a model
            without a water class.
        FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError: the output exists (without
            ``overwrite``), is a folder, or cannot be written.

        All of these are raised before any file is created. An exception during the prediction (or Ctrl-C) removes
        every temporary file and is re-raised.
    """
    _check_arguments(tile, overlap, batch_size, probabilities, num_workers)
    paths = output_paths(out_path, probabilities, water)
    _check_destination(paths, str(scene_path), overwrite)

    # The scene's integrity check reads the whole scene decimated: keep GDAL's cache small for it as well.
    with (
        rasterio.Env(GDAL_CACHEMAX=_GDAL_CACHE_BYTES),
        open_scene(scene_path, input_kind=input_kind, bands=bands) as scene,
    ):
        scene_tagged = _scene_declares_calibration(scene)
        georeference = (scene.height, scene.width, scene.crs, scene.transform)
        scene_channels, kind, band_indexes = scene.count, scene.input_kind, scene.bands
        scene_factor = scene.calibration_factor

    net, folder = _load_model(model)
    config = net.config
    backbone = getattr(config, "backbone_config", None)
    channels = int(getattr(backbone, "num_channels", scene_channels))
    stride = int(getattr(backbone, "encoder_stride", 32))
    if tile % stride:
        raise ValueError(f"tile must be a multiple of the model's encoder stride {stride} px, got {tile}")
    processor = _resolve_processor(image_processor, folder, channels)
    if processor.num_channels != channels:
        raise ValueError(f"the image processor expects {processor.num_channels} band(s) but the model takes {channels}")
    if scene_channels != channels:
        raise SarLulcDataError(
            f"scene {scene_path} has {scene_channels} band(s) ({', '.join(POLARIZATIONS[:scene_channels])}) but the "
            f"model takes {channels} ({', '.join(POLARIZATIONS[:channels])}); pass bands=(...) to choose the scene's "
            "bands"
        )
    scheme = scheme_for_labels(config.id2label)
    if water and scheme.water_id is None:
        raise ValueError(f"water=True needs a model with a class named 'water'; its classes are {scheme.names}")
    layout = _Layout(scheme.num_classes, scheme.water_id if water else None, probabilities)

    # Argument > scene tag > processor: a tagged scene knows its own calibration; an untagged one follows the checkpoint.
    if calibration_factor is None:
        calibration_factor = scene_factor if scene_tagged else processor.calibration_factor
    open_handle = partial(
        open_scene, scene_path, input_kind=kind, calibration_factor=calibration_factor, bands=band_indexes, check=False
    )

    grid = _TileGrid(georeference[0], georeference[1], tile, overlap)
    state = _process_state()
    rank, world = (state.process_index, state.num_processes) if state is not None else (0, 1)
    own = range(grid.num_rows)
    if state is not None:
        with state.split_between_processes(list(own)) as share:
            own = range(share[0], share[-1] + 1) if share else range(0)
    # A process also runs the tile rows before its share that reach into its first output rows (one, or two before
    # a last tile row that was moved back), so those rows get every contribution they get in a single process.
    run_rows = range(grid.first_row_reaching(grid.top(own.start)), own.stop) if own else own

    if device is not None:
        target = torch.device(device)
    elif state is not None:
        target = state.device
    elif isinstance(model, torch.nn.Module):
        target = next(net.parameters()).device
    else:
        target = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    workers = num_workers or (1 if target.type == "cpu" else min(4, os.cpu_count() or 1))
    batch_size = batch_size or (_CPU_BATCH_SIZE if target.type == "cpu" else _GPU_BATCH_SIZE)
    tags = {
        "SARLULC_VERSION": __version__,
        "SARLULC_MODEL": str(folder or getattr(config, "_name_or_path", "") or type(net).__name__),
        "SARLULC_SCENE": Path(scene_path).name,
        "SARLULC_CLASS_SCHEME": scheme.name,
        "SARLULC_CLASS_NAMES": json.dumps(scheme.names),
        "SARLULC_TILE": str(tile),
        "SARLULC_OVERLAP": str(overlap),
        "SARLULC_INPUT_KIND": kind,
    }
    paths["classes"].parent.mkdir(parents=True, exist_ok=True)

    was_training = net.training
    net.eval()
    if target != next(net.parameters()).device:
        net.to(target)
    started = time.perf_counter()
    progress_bar = tqdm(
        total=len(run_rows) * len(grid.col_starts),
        unit="tile",
        desc="predict_scene",
        disable=not progress or rank != 0,
        leave=False,
    )
    run = partial(
        _predict_rows,
        net,
        processor,
        open_handle,
        grid,
        layout,
        run_rows,
        own.start,
        device=target,
        batch_size=batch_size,
        num_workers=workers,
        progress_bar=progress_bar,
    )
    files = (layout, scheme, georeference, paths, tags)
    try:
        with rasterio.Env(GDAL_CACHEMAX=_GDAL_CACHE_BYTES):
            if state is None:
                stats = _predict_single(run, files, overwrite)
            else:
                stats = _predict_distributed(run, files, (grid.top(own.start), grid.top(own.stop)), rank, overwrite)
    finally:
        progress_bar.close()
        net.train(was_training)
    return PredictionReport(
        path=paths["classes"],
        extra_paths={key: path for key, path in paths.items() if key != "classes"},
        shape=(grid.height, grid.width),
        tile=tile,
        overlap=overlap,
        batch_size=batch_size,
        tiles=stats.tiles,
        tiles_skipped=stats.skipped,
        seconds_model=stats.seconds_model,
        seconds_waiting=stats.seconds_waiting,
        seconds_total=time.perf_counter() - started,
        pixels_written=grid.height * grid.width,
        device=str(target),
        process_index=rank,
        num_processes=world,
    )


def _predict_single(run: Callable[..., _RunStats], files: _Files, overwrite: bool) -> _RunStats:
    outputs = _OutputFiles(*files)
    try:
        stats = run(sink=outputs)
        outputs.commit(overwrite)
    except BaseException:
        outputs.discard()
        raise
    return stats


def _predict_distributed(
    run: Callable[..., _RunStats], files: _Files, rows: tuple[int, int], rank: int, overwrite: bool
) -> _RunStats:
    """Write this process's scene rows ``rows`` into a part file; the main process merges every part into the outputs.

    The parts are exchanged as ``(first row, path)`` and every outcome is shared, so that a failure anywhere makes
    every process raise (and remove its part) instead of waiting forever for the failed one.
    """
    from accelerate.utils import gather_object

    layout, _, georeference, paths, _ = files
    stats, part, error = _RunStats(), None, None
    try:
        try:
            if rows[1] > rows[0]:
                part = _PartFile(paths["classes"], rank, rows, georeference, layout)
                stats = run(sink=part)
                part.close()
        except Exception as err:  # shared with every process below, then raised
            error = err
        _raise_if_any_failed(error, _gather_errors(error), "predict_scene")
        parts = gather_object([None if part is None else (rows[0], str(part.path))])
        merge_error = None
        if rank == 0:
            try:
                _merge_parts(files, [entry for entry in parts if entry is not None], overwrite)
            except Exception as err:  # shared with every process below, then raised
                merge_error = err
        _raise_if_any_failed(merge_error, _gather_errors(merge_error), "merging the parts of predict_scene")
    finally:
        if part is not None:
            part.discard()
    return stats
