"""Tiles of (scene, labels) pairs as Hugging Face datasets, spatial splits and dataset statistics.

A scene is cut into a regular grid of square tiles (``tile_size`` pixels, ``stride`` apart, starting at the top-left
pixel so that tiles line up with the GeoTIFF's internal blocks when the sizes divide each other). Tiles that reach past
the raster's edge are padded with invalid pixels; tiles whose share of valid scene pixels is below
``min_valid_fraction`` are skipped. Every tile becomes one example with these columns:

* ``image`` -- ``Array3D((C, T, T), "float32")``: sigma0 in dB (bands HH, HV), 0.0 where invalid;
* ``valid_mask`` -- ``Array2D((T, T), "uint8")``: 1 where the scene pixel is valid in every band;
* ``label`` -- ``Array2D((T, T), "uint8")``: class ids of the :class:`~sarlulc.data.classes.ClassScheme`, 255 where
  unlabeled (unknown code, label nodata, invalid scene pixel, padding). A scene without a label raster (pretraining)
  gets an all-255 label, so labeled and unlabeled scenes share one schema and can be mixed. The feature records its
  scheme: its ``id`` is the scheme as JSON (:meth:`ClassScheme.to_dict`), read back by :func:`label_scheme`. It lives
  in the dataset's schema, so it survives ``save_to_disk`` / ``load_from_disk``, streaming and column selection, and a
  task with another scheme can remap the ids when its scheme derives from the recorded one
  (:func:`sarlulc.data.classes.class_id_remap`);
* ``crs`` -- ``Value("string")``: the scene's CRS, ``"EPSG:xxxx"`` when it has an EPSG code, WKT otherwise;
* ``transform`` -- ``List(Value("float64"), length=6)``: the tile's own affine ``(a, b, c, d, e, f)`` (rasterio order);
* ``row_off``, ``col_off`` -- ``Value("int64")``: the tile's origin in the scene, in pixels;
* ``scene`` -- ``Value("string")``: the scene id (by default the scene path as given);
* ``product_id`` -- ``Value("string")``: the product the tile comes from (a mosaic tile and year, an ALOS-2 product
  id, or a plain GeoTIFF's file name: :attr:`sarlulc.data.scene.ProductInfo.product_id`).

Scenes are anything :func:`sarlulc.data.open_scene` opens: GeoTIFFs and JAXA products (mosaic tiles, archives,
L1.5/L2.1 product folders). Labels are a raster per scene, or a folder of JAXA HRLULC tiles shared by every scene
(``labels=``), warped onto each scene's grid on the fly.

:func:`tile_dataset` builds a map-style :class:`datasets.Dataset` (``Dataset.from_generator``) or, with
``streaming=True``, an :class:`datasets.IterableDataset` that reads windows on the fly and yields the same tiles in the
same order. Its shards are the scenes, so ``datasets.distributed.split_dataset_by_node`` spreads scenes over workers.
:func:`split_tile_dataset` does the same per split of a :class:`SpatialSplit` and returns a ``DatasetDict`` /
``IterableDatasetDict``; a split that no tile reaches is an empty dataset with the same schema.
:func:`class_frequencies` and :func:`band_statistics` stream over a dataset for the loss weights and the
normalization of later stages.

Reading tiles back: ``datasets``' ``"numpy"`` and ``"torch"`` formats cast integer columns to int64 and float columns
to float32 unless told otherwise, which is harmless for ``label`` but loses precision in ``transform``; use
``dataset.with_format("numpy", dtype=None)`` (or ``"torch"``) to get the stored dtypes (uint8, float64) back.
Map-style builds are cached by ``datasets`` under a fingerprint of the options and of the files' size and
modification time, so rebuilding after a scene changed does not return stale tiles.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from rasterio.windows import Window
from tqdm.auto import tqdm

from ..errors import SarLulcDataError
from ..models.image_processing_sar import DEFAULT_CLIP_DB
from .alos2 import LabelRaster
from .classes import ClassScheme, get_scheme
from .labels import HRLULC_TILE_NAME, is_label_folder, open_labels
from .products import ARCHIVE_SUFFIXES, find_products, is_product_folder, open_scene
from .scene import SarScene

__all__ = [
    "DEFAULT_CLIP_RANGE_DB",
    "BandStatistics",
    "ClassFrequencies",
    "SceneSource",
    "SpatialSplit",
    "band_statistics",
    "class_frequencies",
    "datasets_progress_bars",
    "find_scene_sources",
    "iter_tiles",
    "label_scheme",
    "resolve_sources",
    "shard_for_process",
    "split_tile_dataset",
    "tile_dataset",
    "tile_features",
    "tile_windows",
]

logger = logging.getLogger(__name__)

DEFAULT_CLIP_RANGE_DB = DEFAULT_CLIP_DB
"""The model's input clip range for sigma0 in dB: the image processor's default (one constant, defined there)."""

_LABEL_SUFFIX = "_labels"
_RASTER_SUFFIXES = (".tif", ".tiff")


# ----------------------------------------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SceneSource:
    """A scene raster, its optional label raster and the id stored in the ``scene`` column (default: the path)."""

    scene: str
    labels: str | None = None
    scene_id: str | None = None

    @property
    def id(self) -> str:
        return self.scene_id if self.scene_id is not None else self.scene


def _labels_for(scene: Path) -> Path | None:
    candidates = [scene.with_name(f"{scene.stem}{_LABEL_SUFFIX}{scene.suffix}")]
    if scene.stem == "scene":
        candidates.append(scene.with_name(f"labels{scene.suffix}"))
    return next((c for c in candidates if c.exists()), None)


def _product_folders(products: list[str]) -> set[Path]:
    """The folders whose rasters belong to the products found (a product folder, a loose mosaic tile's folder): their
    GeoTIFFs are not scenes of their own. Archives hold their files inside: their folder keeps its other scenes."""
    folders = set()
    for product in products:
        path = Path(product)
        if path.is_dir():
            folders.add(path)
        elif path.is_file() and not path.name.lower().endswith(ARCHIVE_SUFFIXES):
            folders.add(path.parent)
    return folders


def find_scene_sources(folder: str | Path, labels: str | Path | None = None) -> list[SceneSource]:
    """All scenes in a folder tree, sorted by path, each paired with its labels if there are any.

    Scenes are JAXA products (:func:`sarlulc.data.products.find_products`: mosaic tiles, archives, L1.5/L2.1 product
    folders) and the other ``*.tif``/``*.tiff`` files, except label rasters: HRLULC tiles (``LC_N{lat}E{lon}.tif``),
    and per-scene label rasters found by name: ``NAME_labels.tif`` belongs to ``NAME.tif``, and ``labels.tif`` to
    ``scene.tif`` in the same folder (what ``sarlulc synth`` writes).

    Args:
        folder: the folder tree.
        labels: labels for every scene that has no label raster of its own: a folder of HRLULC tiles or one raster,
            warped onto each scene's grid.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise SarLulcDataError(f"scene folder {folder} does not exist or is not a directory")
    shared = None if labels is None else str(labels)
    products = find_products(folder)
    inside_products = _product_folders(products)
    sources = [SceneSource(product, shared) for product in products]
    rasters = sorted(p for p in folder.rglob("*") if p.suffix.lower() in _RASTER_SUFFIXES and p.is_file())
    for path in rasters:
        if path.parent in inside_products or HRLULC_TILE_NAME.match(path.name) or is_label_folder(path.parent):
            continue
        is_label = path.stem.endswith(_LABEL_SUFFIX) or (path.stem == "labels" and (path.with_stem("scene")).exists())
        if not is_label:
            own = _labels_for(path)
            sources.append(SceneSource(str(path), shared if own is None else str(own)))
    if not sources:
        raise SarLulcDataError(
            f"scene folder {folder} contains no GeoTIFF scene (*.tif, *.tiff other than labels) and no JAXA product"
        )
    return sorted(sources, key=lambda source: source.scene)


def resolve_sources(
    sources: str | Path | SceneSource | tuple | Iterable[str | Path | SceneSource | tuple],
    labels: str | Path | None = None,
) -> list[SceneSource]:
    """Normalize the ways to name scenes: a folder, a scene or product path, a ``(scene, labels)`` pair, or a list of
    these. ``labels`` (a folder of HRLULC tiles or one raster) goes to every scene named without labels of its own."""
    if isinstance(sources, (str, Path, SceneSource)) or (
        isinstance(sources, tuple) and len(sources) == 2 and not isinstance(sources[0], (tuple, SceneSource))
    ):
        sources = [sources]
    shared = None if labels is None else str(labels)
    resolved: list[SceneSource] = []
    for item in sources:
        if isinstance(item, SceneSource):
            resolved.append(item)
        elif isinstance(item, tuple):
            scene, own = item
            resolved.append(SceneSource(str(scene), shared if own is None else str(own)))
        elif Path(item).is_dir() and not is_product_folder(item):
            resolved.extend(find_scene_sources(item, labels=shared))
        else:
            resolved.append(SceneSource(str(item), shared))
    if not resolved:
        raise ValueError("no scenes given")
    ids = [s.id for s in resolved]
    if len(set(ids)) != len(ids):
        raise ValueError(f"scene ids must be unique, got {ids}")
    return resolved


# ----------------------------------------------------------------------------------------------------------------------
# Tile geometry and spatial splits
# ----------------------------------------------------------------------------------------------------------------------
def _starts(length: int, tile_size: int, stride: int) -> list[int]:
    starts = [0]
    while starts[-1] + tile_size < length:
        starts.append(starts[-1] + stride)
    return starts


def tile_windows(height: int, width: int, tile_size: int = 256, stride: int | None = None) -> list[Window]:
    """Row-major grid of ``tile_size`` windows, ``stride`` apart from the top-left pixel, covering the raster.

    The last row/column of tiles may reach past the raster (reads pad it with invalid pixels); no tile starts where
    the previous one already reaches the end.
    """
    stride = tile_size if stride is None else stride
    if tile_size < 1 or not 1 <= stride <= tile_size:
        raise ValueError(f"need tile_size >= 1 and 1 <= stride <= tile_size, got {tile_size} and {stride}")
    return [
        Window(col, row, tile_size, tile_size)
        for row in _starts(height, tile_size, stride)
        for col in _starts(width, tile_size, stride)
    ]


@dataclass(frozen=True)
class SpatialSplit:
    """Assign tiles to splits by spatial groups, so that no split shares pixels with another.

    Each scene is divided into square groups of ``group_size`` x ``group_size`` tile positions (``group_size * stride``
    pixels). Within every scene, a seeded permutation of its groups gives each split its share of groups (at least one
    group for every split with a positive fraction, when there are enough groups). A tile belongs to the split of the
    groups it covers; a tile whose pixels reach into groups of different splits (possible only when ``stride <
    tile_size``) belongs to none and is dropped. The assignment depends only on geometry (scene size, tile size,
    stride) and the seed, never on pixel values, so map-style and streaming datasets agree.

    Attributes:
        fractions: split name -> share of groups, e.g. ``{"train": 0.8, "validation": 0.1, "test": 0.1}``.
        group_size: tiles per group side (on the stride grid).
        seed: seed of the group permutation.
    """

    fractions: Mapping[str, float] = field(default_factory=lambda: {"train": 0.8, "validation": 0.1, "test": 0.1})
    group_size: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.fractions or any(f < 0 for f in self.fractions.values()) or sum(self.fractions.values()) <= 0:
            raise ValueError(f"split fractions must be non-negative with a positive sum, got {dict(self.fractions)}")
        if self.group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {self.group_size}")

    @classmethod
    def from_shares(
        cls,
        shares: Sequence[float],
        group_size: int = 4,
        seed: int = 0,
        names: Sequence[str] = ("train", "validation", "test"),
    ) -> SpatialSplit:
        """The split with one share per name, in order: ``from_shares([0.8, 0.1, 0.1])`` gives train 0.8,
        validation 0.1, test 0.1 (the form the command-line options take).

        Raises:
            ValueError: not one share per name, a negative share or none positive, a group size below 1.
        """
        shares = list(shares)
        if len(shares) != len(names):
            raise ValueError(f"need {len(names)} split shares ({', '.join(names)}), got {shares}")
        return cls(fractions=dict(zip(names, (float(share) for share in shares))), group_size=group_size, seed=seed)

    @property
    def names(self) -> list[str]:
        return [name for name, fraction in self.fractions.items() if fraction > 0]

    def _group_counts(self, groups: int) -> list[int]:
        """Groups per split (in :attr:`names` order): largest remainders, at least one each when possible."""
        fractions = np.array([self.fractions[n] for n in self.names], dtype=np.float64)
        exact = fractions / fractions.sum() * groups
        counts = np.floor(exact).astype(int)
        for i in np.argsort(-(exact - counts), kind="stable")[: groups - counts.sum()]:
            counts[i] += 1
        if groups >= len(counts):
            for i in np.flatnonzero(counts == 0):
                counts[i] += 1
                counts[np.argmax(counts)] -= 1
        return counts.tolist()

    def group_splits(self, scene_id: str, height: int, width: int, stride: int) -> np.ndarray:
        """Split index (into :attr:`names`) of every group of a scene, shape ``(group rows, group cols)``."""
        pitch = self.group_size * stride
        shape = (math.ceil(height / pitch), math.ceil(width / pitch))
        scene_seed = int.from_bytes(hashlib.blake2b(scene_id.encode(), digest_size=8).digest(), "little")
        order = np.random.default_rng([self.seed, scene_seed]).permutation(shape[0] * shape[1])
        assignment = np.empty(shape[0] * shape[1], dtype=np.int64)
        start = 0
        for split_index, count in enumerate(self._group_counts(shape[0] * shape[1])):
            assignment[order[start : start + count]] = split_index
            start += count
        return assignment.reshape(shape)

    def tile_split(self, groups: np.ndarray, window: Window, stride: int) -> str | None:
        """The split of a tile given its scene's :meth:`group_splits`, or ``None`` if it straddles two splits."""
        pitch = self.group_size * stride
        row0, col0 = int(window.row_off), int(window.col_off)
        rows = slice(row0 // pitch, min((row0 + int(window.height) - 1) // pitch, groups.shape[0] - 1) + 1)
        cols = slice(col0 // pitch, min((col0 + int(window.width) - 1) // pitch, groups.shape[1] - 1) + 1)
        covered = np.unique(groups[rows, cols])
        return self.names[int(covered[0])] if covered.size == 1 else None

    def to_dict(self) -> dict[str, Any]:
        return {"fractions": dict(self.fractions), "group_size": self.group_size, "seed": self.seed}


# ----------------------------------------------------------------------------------------------------------------------
# Tile generation
# ----------------------------------------------------------------------------------------------------------------------
def tile_features(channels: int, tile_size: int, scheme: ClassScheme | None = None) -> datasets.Features:
    """The explicit schema of tile datasets (see the module docstring); ``scheme`` is recorded in the label feature."""
    scheme_record = None if scheme is None else json.dumps(scheme.to_dict(), sort_keys=True)
    return datasets.Features(
        {
            "image": datasets.Array3D((channels, tile_size, tile_size), "float32"),
            "valid_mask": datasets.Array2D((tile_size, tile_size), "uint8"),
            "label": datasets.Array2D((tile_size, tile_size), "uint8", id=scheme_record),
            "crs": datasets.Value("string"),
            "transform": datasets.List(datasets.Value("float64"), length=6),
            "row_off": datasets.Value("int64"),
            "col_off": datasets.Value("int64"),
            "scene": datasets.Value("string"),
            "product_id": datasets.Value("string"),
        }
    )


@dataclass(frozen=True)
class _TileSpec:
    """Everything the tile generator needs, as plain data (it travels through ``datasets``' gen_kwargs)."""

    tile_size: int
    stride: int
    scheme: dict
    min_valid_fraction: float
    reproject_labels: bool
    input_kind: str | None
    calibration_factor: float | None
    bands: tuple[int, ...] | None
    split: dict | None
    progress: bool
    polarizations: tuple[str, ...] | None = None

    def open_scene(self, source: SceneSource) -> SarScene:
        return open_scene(
            source.scene, self.input_kind, self.calibration_factor, self.bands, polarizations=self.polarizations
        )

    def open_labels(self, source: SceneSource, scene: SarScene) -> LabelRaster | None:
        if source.labels is None:
            return None
        return open_labels(source.labels, like=scene, reproject=self.reproject_labels)


def _crs_string(scene: SarScene) -> str:
    epsg = scene.crs.to_epsg()
    return f"EPSG:{epsg}" if epsg is not None else scene.crs.to_wkt()


def _encode_labels(codes: np.ndarray, labels: LabelRaster, scheme: ClassScheme, valid: np.ndarray) -> np.ndarray:
    ids = scheme.encode(codes)
    ids[(codes == labels.nodata) | ~valid] = scheme.ignore_index
    return ids


def _scene_tiles(source: SceneSource, spec: _TileSpec, split_name: str | None) -> Iterator[dict[str, Any]]:
    scheme = ClassScheme.from_dict(spec.scheme)
    split = SpatialSplit(**spec.split) if spec.split is not None else None
    with spec.open_scene(source) as scene:
        labels = spec.open_labels(source, scene)
        with labels if labels is not None else nullcontext():
            windows = tile_windows(scene.height, scene.width, spec.tile_size, spec.stride)
            groups = split.group_splits(source.id, scene.height, scene.width, spec.stride) if split else None
            crs = _crs_string(scene)
            product_id = scene.product.product_id or Path(source.scene).name
            for window in tqdm(
                windows, desc=f"tiles of {Path(source.id).name}", unit="tile", disable=not spec.progress
            ):
                if split is not None and split.tile_split(groups, window, spec.stride) != split_name:
                    continue
                db, valid = scene.read_db(window)
                if valid.mean() < spec.min_valid_fraction or not valid.any():
                    continue
                if labels is None:
                    label = np.full(valid.shape, scheme.ignore_index, dtype=np.uint8)
                else:
                    label = _encode_labels(labels.read_labels(window), labels, scheme, valid)
                yield {
                    "image": db,
                    "valid_mask": valid.astype(np.uint8),
                    "label": label,
                    "crs": crs,
                    "transform": list(scene.window_transform(window))[:6],
                    "row_off": int(window.row_off),
                    "col_off": int(window.col_off),
                    "scene": source.id,
                    "product_id": product_id,
                }


def _generate_tiles(sources: list[dict], spec: dict, split_name: str | None = None) -> Iterator[dict[str, Any]]:
    """The ``datasets`` generator: module-level and fed plain dicts so that it pickles and shards by scene."""
    tile_spec = _TileSpec(**spec)
    for source in sources:
        yield from _scene_tiles(SceneSource(**source), tile_spec, split_name)


def _make_spec(
    *,
    tile_size: int,
    stride: int | None,
    scheme: str | Path | Mapping | ClassScheme | None,
    min_valid_fraction: float,
    reproject_labels: bool,
    input_kind: str | None,
    calibration_factor: float | None,
    bands: Sequence[int] | None,
    progress: bool,
    split: SpatialSplit | None = None,
    polarizations: Sequence[str] | None = None,
) -> _TileSpec:
    """Validate the tiling options and freeze them into plain data."""
    stride = tile_size if stride is None else stride
    tile_windows(1, 1, tile_size, stride)  # validates tile_size and stride
    if not 0.0 <= min_valid_fraction <= 1.0:
        raise ValueError(f"min_valid_fraction must be in [0, 1], got {min_valid_fraction}")
    return _TileSpec(
        tile_size=tile_size,
        stride=stride,
        scheme=get_scheme(scheme).to_dict(),
        min_valid_fraction=float(min_valid_fraction),
        reproject_labels=reproject_labels,
        input_kind=input_kind,
        calibration_factor=calibration_factor,
        bands=None if bands is None else tuple(int(b) for b in bands),
        split=None if split is None else split.to_dict(),
        progress=progress,
        polarizations=None if polarizations is None else tuple(str(p).upper() for p in polarizations),
    )


def _check_sources(sources: list[SceneSource], spec: _TileSpec) -> int:
    """Open every scene and label raster once, so that bad data fails here with a clear error; return the channels."""
    channels = set()
    for source in sources:
        with spec.open_scene(source) as scene:
            channels.add(scene.count)
            labels = spec.open_labels(source, scene)
            if labels is not None:
                labels.close()
    if len(channels) > 1:
        raise SarLulcDataError(
            f"scenes have different band counts {sorted(channels)}; select the same bands in all (bands=...)"
        )
    return channels.pop()


def _file_stamp(path: str | None) -> list | None:
    """Size and modification time of a file, of every file of a folder (a product, a label folder), or of the archive
    a member path (``ARCHIVE.tar.gz/member``) points into."""
    if path is None:
        return None
    local = Path(path)
    if not local.exists():
        archive = next((parent for parent in local.parents if parent.is_file()), None)
        if archive is None:
            return None
        local = archive
    if local.is_dir():
        return [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in sorted(local.rglob("*")) if f.is_file()]
    stat = local.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _fingerprint(sources: list[SceneSource], spec: _TileSpec, split_name: str | None) -> str:
    """Cache key of a map-style build: changes when a file, an option or the split changes (not with progress)."""
    content = {
        "sources": [[s.scene, s.labels, s.id, _file_stamp(s.scene), _file_stamp(s.labels)] for s in sources],
        "spec": {**spec.__dict__, "progress": None},
        "split_name": split_name,
        "version": 3,  # 3: the label feature records the class scheme
    }
    return hashlib.blake2b(json.dumps(content, sort_keys=True, default=str).encode(), digest_size=16).hexdigest()


@contextmanager
def datasets_progress_bars(enabled: bool) -> Iterator[None]:
    """Context manager that silences ``datasets``' own progress bars (build, save) when ``enabled`` is False."""
    was_disabled = datasets.are_progress_bars_disabled()
    if not enabled:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not enabled and not was_disabled:
            datasets.enable_progress_bars()


def _build(
    sources: list[SceneSource],
    spec: _TileSpec,
    channels: int,
    split_name: str | None,
    streaming: bool,
    cache_dir: str | Path | None,
) -> datasets.Dataset | datasets.IterableDataset:
    features = tile_features(channels, spec.tile_size, ClassScheme.from_dict(spec.scheme))
    gen_kwargs = {"sources": [s.__dict__ for s in sources], "spec": spec.__dict__, "split_name": split_name}
    split = datasets.NamedSplit(split_name or "train")
    if streaming:
        return datasets.IterableDataset.from_generator(
            _generate_tiles, features=features, gen_kwargs=gen_kwargs, split=split
        )
    with datasets_progress_bars(spec.progress):
        try:
            return datasets.Dataset.from_generator(
                _generate_tiles,
                features=features,
                gen_kwargs=gen_kwargs,
                split=split,
                cache_dir=None if cache_dir is None else str(cache_dir),
                fingerprint=_fingerprint(sources, spec, split_name),
            )
        except ValueError as err:
            # datasets refuses to prepare a split without examples; no tile passing the filters is a valid outcome
            # (a tiny scene, a split whose groups are all nodata), so return an empty dataset with the same schema.
            if "corresponds to no data" not in str(err):
                raise
            logger.warning(
                "no tile of %s passed the filters%s",
                [s.id for s in sources],
                f" in split {split_name!r}" if split_name else "",
            )
            return datasets.Dataset.from_dict({name: [] for name in features}, features=features, split=split)


def iter_tiles(
    sources: Any,
    *,
    tile_size: int = 256,
    stride: int | None = None,
    scheme: str | Path | Mapping | ClassScheme | None = None,
    min_valid_fraction: float = 0.5,
    reproject_labels: bool = False,
    input_kind: str | None = None,
    calibration_factor: float | None = None,
    bands: Sequence[int] | None = None,
    progress: bool = True,
    polarizations: Sequence[str] | None = None,
    labels: str | Path | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield tile examples (dicts of numpy arrays, columns as in the module docstring) without ``datasets``."""
    spec = _make_spec(
        tile_size=tile_size,
        stride=stride,
        scheme=scheme,
        min_valid_fraction=min_valid_fraction,
        reproject_labels=reproject_labels,
        input_kind=input_kind,
        calibration_factor=calibration_factor,
        bands=bands,
        progress=progress,
        polarizations=polarizations,
    )
    for source in resolve_sources(sources, labels):
        yield from _scene_tiles(source, spec, None)


def shard_for_process(
    dataset: datasets.IterableDataset, rank: int | None = None, world_size: int | None = None
) -> datasets.IterableDataset:
    """This process's disjoint part of a streaming tile dataset (``datasets.distributed.split_dataset_by_node``).

    The dataset's shards are its scenes: with a multiple of ``world_size`` scenes, each process reads whole scenes of
    its own (no process opens another's files); otherwise every process reads all scenes and keeps every
    ``world_size``-th tile. Either way the processes' tiles are disjoint and together are the dataset. DataLoader
    workers then divide a process's scenes between them the same way (``datasets`` shards by ``gen_kwargs`` lists).

    Args:
        dataset: from :func:`tile_dataset` or :func:`split_tile_dataset` with ``streaming=True``.
        rank, world_size: default: ``RANK`` and ``WORLD_SIZE`` as ``accelerate launch``/``torchrun`` set them (one
            process: the dataset unchanged).
    """
    from datasets.distributed import split_dataset_by_node

    if rank is None or world_size is None:
        rank, world_size = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return dataset
    return split_dataset_by_node(dataset, rank=rank, world_size=world_size)


def tile_dataset(
    sources: Any,
    *,
    tile_size: int = 256,
    stride: int | None = None,
    scheme: str | Path | Mapping | ClassScheme | None = None,
    min_valid_fraction: float = 0.5,
    reproject_labels: bool = False,
    input_kind: str | None = None,
    calibration_factor: float | None = None,
    bands: Sequence[int] | None = None,
    streaming: bool = False,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    polarizations: Sequence[str] | None = None,
    labels: str | Path | None = None,
) -> datasets.Dataset | datasets.IterableDataset:
    """Tile one or more scenes into a ``datasets.Dataset`` (or an ``IterableDataset`` with ``streaming=True``).

    Args:
        sources: a folder (see :func:`find_scene_sources`), a scene or product path, a ``(scene, labels)`` pair, a
            :class:`SceneSource`, or a list of these.
        tile_size: tile side T in pixels.
        stride: distance between tile origins (default ``tile_size``: no overlap).
        scheme: class scheme for the labels (name, JSON path, dict or :class:`ClassScheme`; default ``"lulc-9"``).
        min_valid_fraction: skip tiles with a smaller share of valid scene pixels (padding counts as invalid);
            tiles without any valid pixel are always skipped.
        reproject_labels: warp label rasters that are not on their scene's grid (nearest neighbour) instead of raising
            :class:`SarLulcDataError`.
        input_kind, calibration_factor, bands, polarizations: passed to :func:`sarlulc.data.open_scene`.
        streaming: return an ``IterableDataset`` that reads windows lazily (same tiles, same order).
        cache_dir: where ``datasets`` writes the Arrow cache of a map-style build (default: ``HF_DATASETS_CACHE``).
        progress: show progress bars.
        labels: labels for every scene given without its own: a folder of JAXA HRLULC tiles (or one raster), warped
            onto each scene's grid window by window.

    Raises:
        SarLulcDataError: a scene or label raster is unusable or misaligned (checked before any tile is built).
    """
    spec = _make_spec(
        tile_size=tile_size,
        stride=stride,
        scheme=scheme,
        min_valid_fraction=min_valid_fraction,
        reproject_labels=reproject_labels,
        input_kind=input_kind,
        calibration_factor=calibration_factor,
        bands=bands,
        progress=progress,
        polarizations=polarizations,
    )
    resolved = resolve_sources(sources, labels)
    channels = _check_sources(resolved, spec)
    return _build(resolved, spec, channels, None, streaming, cache_dir)


def split_tile_dataset(
    sources: Any,
    split: SpatialSplit | None = None,
    *,
    tile_size: int = 256,
    stride: int | None = None,
    scheme: str | Path | Mapping | ClassScheme | None = None,
    min_valid_fraction: float = 0.5,
    reproject_labels: bool = False,
    input_kind: str | None = None,
    calibration_factor: float | None = None,
    bands: Sequence[int] | None = None,
    streaming: bool = False,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    polarizations: Sequence[str] | None = None,
    labels: str | Path | None = None,
) -> datasets.DatasetDict | datasets.IterableDatasetDict:
    """Like :func:`tile_dataset`, split in space by ``split`` (default :class:`SpatialSplit`: 80/10/10 by groups
    of 4 x 4 tiles) into a ``DatasetDict`` (or ``IterableDatasetDict``) with one entry per split name.

    Each split's generator reads only its own tiles; tiles straddling two splits are dropped. The ``label`` feature
    records the class scheme (:func:`label_scheme`), so that a task whose scheme derives from it (water from LULC)
    can train on the tiles.

    Examples:
        >>> from sarlulc.data import SpatialSplit, label_scheme, split_tile_dataset
        >>> from sarlulc.data.synthetic import generate_scene
        >>> _ = generate_scene("synth", size=256, progress=False, overwrite=True)  # a scene and its labels (JAXA codes)
        >>> split = SpatialSplit.from_shares([0.6, 0.2, 0.2], group_size=1, seed=0)
        >>> splits = split_tile_dataset("synth", split, tile_size=64, cache_dir="cache", progress=False)
        >>> sorted(splits)  # 4 x 4 tiles of 64 px, each in one split (tiles mostly nodata are dropped)
        ['test', 'train', 'validation']
        >>> tile = splits["train"].with_format("numpy")[0]
        >>> tile["image"].shape, tile["label"].shape, label_scheme(splits["train"]).name  # dB image, class ids
        ((1, 64, 64), (64, 64), 'lulc-9')
        >>> splits.save_to_disk("tiles")  # what `sarlulc finetune --train_data tiles` reads
    """
    split = SpatialSplit() if split is None else split
    spec = _make_spec(
        tile_size=tile_size,
        stride=stride,
        scheme=scheme,
        min_valid_fraction=min_valid_fraction,
        reproject_labels=reproject_labels,
        input_kind=input_kind,
        calibration_factor=calibration_factor,
        bands=bands,
        progress=progress,
        split=split,
        polarizations=polarizations,
    )
    resolved = resolve_sources(sources, labels)
    channels = _check_sources(resolved, spec)
    parts = {name: _build(resolved, spec, channels, name, streaming, cache_dir) for name in split.names}
    return datasets.IterableDatasetDict(parts) if streaming else datasets.DatasetDict(parts)


def label_scheme(dataset: datasets.Dataset | datasets.IterableDataset) -> ClassScheme | None:
    """The class scheme a tile dataset's labels were encoded with, as recorded in its ``label`` feature.

    ``None`` for a dataset without the record (tiled before schemes were recorded, or built by hand).

    Raises:
        SarLulcDataError: the record is there but is not a class scheme.
    """
    features = dataset.features
    record = getattr(features.get("label"), "id", None) if features is not None else None
    if not record:
        return None
    try:
        return ClassScheme.from_dict(json.loads(record))
    except (ValueError, TypeError) as err:
        raise SarLulcDataError(f"the label column records a class scheme that cannot be read: {err}") from err


# ----------------------------------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------------------------------
def _batches(
    dataset: datasets.Dataset | datasets.IterableDataset, columns: list[str], batch_size: int, progress: bool, desc: str
) -> Iterator[dict[str, np.ndarray]]:
    total = math.ceil(len(dataset) / batch_size) if isinstance(dataset, datasets.Dataset) else None
    batches = dataset.select_columns(columns).with_format("numpy").iter(batch_size=batch_size)
    yield from tqdm(batches, total=total, desc=desc, unit="batch", disable=not progress)


@dataclass
class ClassFrequencies:
    """Pixel count of every class id over a dataset (ignore pixels excluded), for loss weighting.

    Attributes:
        counts: int64 array ``(K,)``, pixels per class id.
        scheme: name of the class scheme.
        id2label: class id -> name.
    """

    counts: np.ndarray
    scheme: str
    id2label: dict[int, str]

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    @property
    def fractions(self) -> np.ndarray:
        """Share of each class among the labeled pixels (float64, sums to 1; zeros if nothing is labeled)."""
        return self.counts / self.total if self.total else np.zeros(len(self.counts))

    def to_dict(self) -> dict[str, Any]:
        return {
            "scheme": self.scheme,
            "id2label": {str(k): v for k, v in self.id2label.items()},
            "counts": [int(c) for c in self.counts],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClassFrequencies:
        return cls(
            counts=np.asarray(data["counts"], dtype=np.int64),
            scheme=str(data["scheme"]),
            id2label={int(k): str(v) for k, v in data["id2label"].items()},
        )

    def save_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load_json(cls, path: str | Path) -> ClassFrequencies:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def table(self) -> str:
        """A printable table: id, name, pixels and percent of labeled pixels."""
        lines = [f"{'id':>3}  {'class':<20} {'pixels':>12} {'%':>7}"]
        for class_id, (count, fraction) in enumerate(zip(self.counts, self.fractions)):
            lines.append(f"{class_id:>3}  {self.id2label[class_id]:<20} {int(count):>12} {100 * fraction:>7.2f}")
        return "\n".join(lines)


def class_frequencies(
    dataset: datasets.Dataset | datasets.IterableDataset,
    scheme: str | Path | Mapping | ClassScheme | None = None,
    *,
    batch_size: int = 64,
    progress: bool = True,
) -> ClassFrequencies:
    """Count the pixels of each class id in the ``label`` column (ids >= K, such as 255, are not counted)."""
    scheme = get_scheme(scheme)
    counts = np.zeros(256, dtype=np.int64)
    for batch in _batches(dataset, ["label"], batch_size, progress, "class frequencies"):
        counts += np.bincount(np.asarray(batch["label"], dtype=np.uint8).ravel(), minlength=256)
    return ClassFrequencies(counts=counts[: scheme.num_classes].copy(), scheme=scheme.name, id2label=scheme.id2label)


@dataclass
class BandStatistics:
    """Mean and standard deviation (population) of sigma0 dB per band over valid pixels, after clipping.

    Attributes:
        mean, std: one value per band (HH, HV), dB.
        count: valid pixels used per band.
        clip_range: the ``(low, high)`` dB range values were clipped to first.
    """

    mean: list[float]
    std: list[float]
    count: int
    clip_range: tuple[float, float] = DEFAULT_CLIP_RANGE_DB

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "count": self.count, "clip_range": list(self.clip_range)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BandStatistics:
        return cls(
            mean=[float(v) for v in data["mean"]],
            std=[float(v) for v in data["std"]],
            count=int(data["count"]),
            clip_range=(float(data["clip_range"][0]), float(data["clip_range"][1])),
        )

    def save_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load_json(cls, path: str | Path) -> BandStatistics:
        return cls.from_dict(json.loads(Path(path).read_text()))


def band_statistics(
    dataset: datasets.Dataset | datasets.IterableDataset,
    clip_range: tuple[float, float] = DEFAULT_CLIP_RANGE_DB,
    *,
    batch_size: int = 64,
    progress: bool = True,
) -> BandStatistics:
    """Per-band mean/std of clipped sigma0 dB over the valid pixels of ``image``, streaming in float64.

    Batches are merged with Chan et al.'s pairwise update of (count, mean, sum of squared deviations), which stays
    accurate over billions of pixels.
    """
    low, high = float(clip_range[0]), float(clip_range[1])
    if not low < high:
        raise ValueError(f"clip_range must be (low, high) with low < high, got {clip_range}")
    count, mean, m2 = 0, None, None
    for batch in _batches(dataset, ["image", "valid_mask"], batch_size, progress, "band statistics"):
        image = np.asarray(batch["image"])
        valid = np.asarray(batch["valid_mask"]).astype(bool)
        values = np.clip(np.moveaxis(image, 1, 0)[:, valid].astype(np.float64), low, high)  # (C, n)
        n = values.shape[1]
        if n == 0:
            continue
        batch_mean = values.mean(axis=1)
        batch_m2 = ((values - batch_mean[:, None]) ** 2).sum(axis=1)
        if mean is None:
            count, mean, m2 = n, batch_mean, batch_m2
            continue
        delta = batch_mean - mean
        total = count + n
        mean = mean + delta * n / total
        m2 = m2 + batch_m2 + delta**2 * count * n / total
        count = total
    if mean is None:
        raise ValueError("the dataset has no valid pixel to compute band statistics from")
    std = np.sqrt(m2 / count)
    return BandStatistics(mean=mean.tolist(), std=std.tolist(), count=count, clip_range=(low, high))
