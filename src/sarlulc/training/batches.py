"""Tile splits for training: where they come from, how they become batches, and how batches are normalized.

Training data is given as one path, which is either

* a dataset saved with ``save_to_disk`` (a ``DatasetDict`` of splits, as ``sarlulc demo`` writes to ``OUT/tiles``, or a
  single ``Dataset``), or
* scenes: a folder (every GeoTIFF scene and its ``*_labels.tif`` / ``labels.tif``, and every JAXA product: mosaic
  tiles and their archives, L1.5/L2.1 product folders), or one scene or product; these are tiled with
  :mod:`sarlulc.data.tiles` (and split in space for fine-tuning, by :func:`spatial_split` of the
  :class:`SpatialSplitArguments`). ``--labels`` gives labels to the scenes without their own: a folder of JAXA HRLULC
  tiles (or one label raster), warped onto each scene's grid while tiling.

:class:`TileArguments` say where the tiles come from and how scenes are cut; :func:`check_tile_arguments` checks them
before anything heavy and :func:`load_training_splits` loads the splits they describe.

A saved dataset keeps the class ids of the scheme it was tiled with, and records that scheme
(:func:`sarlulc.data.tiles.label_scheme`). A task with another scheme uses it when its scheme derives from the recorded
one (water from lulc-9 tiles: Water vs the rest): :func:`label_id_remap` gives the id lookup table, which
:func:`collate_tiles` and :func:`remap_histogram` apply on the fly; the stored tiles are never rewritten.

Batches stay in sigma0 dB until the training step: augmentation (:mod:`sarlulc.training.augment`) works in dB, and
:class:`TileNormalization` then applies the image processor's clip and standardization on the accelerator's device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from tqdm.auto import tqdm

from sarlulc_cli.arguments import SpatialSplitArguments, TileArguments

from ..data.classes import ClassScheme, class_id_remap
from ..data.tiles import SpatialSplit, datasets_progress_bars, label_scheme, split_tile_dataset, tile_dataset
from ..errors import UsageError, as_usage_error

__all__ = [
    "SpatialSplitArguments",
    "TileArguments",
    "TileNormalization",
    "check_label_ids",
    "check_tile_arguments",
    "collate_tiles",
    "is_saved_dataset",
    "label_histogram",
    "label_id_remap",
    "load_tile_splits",
    "load_training_splits",
    "remap_histogram",
    "spatial_split",
    "training_view",
]

_SAVED_DATASET_MARKERS = ("dataset_dict.json", "state.json")


def is_saved_dataset(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    path = Path(path)
    return path.is_dir() and any((path / marker).is_file() for marker in _SAVED_DATASET_MARKERS)


def _load_saved(path: Path) -> datasets.DatasetDict:
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.Dataset):
        return datasets.DatasetDict({"train": loaded})
    return loaded


def load_tile_splits(
    source: str | Path,
    *,
    scheme: ClassScheme,
    split: SpatialSplit | None,
    tile_size: int,
    stride: int | None = None,
    min_valid_fraction: float = 0.5,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    labels: str | Path | None = None,
) -> datasets.DatasetDict:
    """The tile splits of a saved dataset or of scenes and products (see the module docstring).

    Args:
        source: a saved dataset folder, a folder of scenes and products, or one scene or product.
        scheme: class scheme used to encode the label rasters (scenes only; a saved dataset keeps its ids).
        split: spatial split for scenes; ``None`` puts every tile into ``"train"`` (pretraining).
        tile_size, stride, min_valid_fraction, cache_dir, progress: tiling options of
            :func:`sarlulc.data.tiles.tile_dataset` (scenes only).
        labels: labels for the scenes without their own: a folder of HRLULC tiles or one label raster.

    Raises:
        UsageError: the source does not exist, or labels are given for a saved dataset.
        SarLulcDataError: a scene, product or label raster is unusable.
    """
    path = Path(source)
    if not path.exists() and not _inside_archive(path):
        raise UsageError(
            f"training data {path} does not exist (give a saved dataset folder, a scene folder or a scene)"
        )
    if is_saved_dataset(path):
        if labels is not None:
            raise UsageError(
                f"training data {path} is a saved tile dataset with its labels; --labels applies to scenes"
            )
        return _load_saved(path)
    options = dict(
        tile_size=tile_size,
        stride=stride,
        scheme=scheme,
        min_valid_fraction=min_valid_fraction,
        cache_dir=cache_dir,
        progress=progress,
        labels=labels,
        # A label raster shared by several scenes cannot be on every scene's grid: it is warped (tiles always are).
        reproject_labels=labels is not None,
    )
    with datasets_progress_bars(progress):
        if split is None:
            return datasets.DatasetDict({"train": tile_dataset(str(path), **options)})
        return split_tile_dataset(str(path), split, **options)


def _inside_archive(path: Path) -> bool:
    """Whether ``path`` names a member of an existing archive (``ARCHIVE.tar.gz/N35E139_19_sl_HH_F02DAR.tif``)."""
    return any(parent.is_file() for parent in path.parents)


def check_tile_arguments(args: TileArguments) -> None:
    """Check the data options before anything is loaded; raises :class:`UsageError`."""
    if not Path(args.train_data).exists() and not _inside_archive(Path(args.train_data)):
        raise UsageError(
            f"--train_data {args.train_data} does not exist (give a saved dataset folder, a scene folder or a scene)"
        )
    if args.labels is not None and not Path(args.labels).exists():
        raise UsageError(f"--labels {args.labels} does not exist (give a folder of HRLULC tiles or a label raster)")
    if args.tile_size < 32 or (args.tile_stride is not None and not 1 <= args.tile_stride <= args.tile_size):
        raise UsageError("--tile_size must be >= 32 and --tile_stride in [1, tile_size]")
    if not 0.0 <= args.min_valid_fraction <= 1.0:
        raise UsageError(f"--min_valid_fraction must be in [0, 1], got {args.min_valid_fraction}")


def spatial_split(args: SpatialSplitArguments) -> SpatialSplit:
    """The :class:`~sarlulc.data.tiles.SpatialSplit` of the split options; raises :class:`UsageError` for bad ones."""
    with as_usage_error("spatial split (--split_fractions, --split_group_size): "):
        return SpatialSplit.from_shares(args.split_fractions, args.split_group_size, args.split_seed)


def load_training_splits(
    args: TileArguments, scheme: ClassScheme, split: SpatialSplit | None, progress: bool
) -> datasets.DatasetDict:
    """The tile splits of ``args.train_data``: :func:`load_tile_splits` with the data options of ``args``."""
    return load_tile_splits(
        args.train_data,
        scheme=scheme,
        split=split,
        tile_size=args.tile_size,
        stride=args.tile_stride,
        min_valid_fraction=args.min_valid_fraction,
        cache_dir=args.cache_dir,
        progress=progress,
        labels=args.labels,
    )


def training_view(dataset: datasets.Dataset, with_labels: bool) -> datasets.Dataset:
    """The columns a training step reads, formatted as numpy arrays of their stored dtypes.

    ``with_format("numpy")`` alone would widen ``valid_mask`` and ``label`` to int64 (see :mod:`sarlulc.data.tiles`);
    ``dtype=None`` keeps uint8, an eighth of the bytes per batch.
    """
    columns = ["image", "valid_mask", "label"] if with_labels else ["image", "valid_mask"]
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise UsageError(f"the dataset lacks the columns {missing}; it has {dataset.column_names}")
    return dataset.select_columns(columns).with_format("numpy", dtype=None)


def collate_tiles(examples: Sequence[dict[str, Any]], label_remap: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    """Stack tile examples into a batch.

    Args:
        examples: tile examples (``image``, ``valid_mask`` and optionally ``label``).
        label_remap: a ``(256,)`` uint8 lookup table from :func:`label_id_remap` applied to the stored label ids, or
            ``None`` to keep them.

    Returns:
        ``images`` ``(B, C, T, T)`` float32 sigma0 dB (0.0 where invalid), ``valid`` ``(B, T, T)`` bool and, if the
        examples have labels, ``labels`` ``(B, T, T)`` int64 class ids (255 = ignore).
    """
    batch = {
        "images": torch.from_numpy(np.stack([np.asarray(e["image"], dtype=np.float32) for e in examples])),
        "valid": torch.from_numpy(np.stack([np.asarray(e["valid_mask"]) for e in examples])).bool(),
    }
    if "label" in examples[0]:
        labels = np.stack([np.asarray(e["label"], dtype=np.uint8) for e in examples])
        if label_remap is not None:
            labels = label_remap[labels]
        batch["labels"] = torch.from_numpy(labels).long()
    return batch


@dataclass(frozen=True)
class TileNormalization:
    """The image processor's clip + standardization, as a batched torch transform for the training hot path.

    ``pixel_values = (clip(dB, low, high) - mean[c]) / std[c]``, 0.0 where invalid: exactly what
    ``SarImageProcessor.preprocess(..., input_kind="db")`` computes for tiles whose side is a multiple of its
    ``pad_to_multiple_of``, without the per-sample numpy round trip. Build it with :meth:`from_processor` so the
    processor's config stays the single source of these numbers.
    """

    clip_db: tuple[float, float]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_processor(cls, processor: Any) -> TileNormalization:
        if not getattr(processor, "do_normalize", True):
            raise UsageError("the image processor has do_normalize=False; training expects standardized inputs")
        return cls(
            clip_db=(float(processor.clip_db[0]), float(processor.clip_db[1])),
            mean=tuple(float(v) for v in processor.image_mean),
            std=tuple(float(v) for v in processor.image_std),
        )

    def clip(self, images: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``images`` ``(B, C, H, W)`` dB -> clipped dB, 0.0 where invalid: the processor's ``backscatter_db``."""
        return images.float().clamp(*self.clip_db) * valid.unsqueeze(1)

    def __call__(self, images: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``images`` ``(B, C, H, W)`` dB, ``valid`` ``(B, H, W)`` bool -> ``pixel_values`` ``(B, C, H, W)`` float32."""
        if images.shape[1] != len(self.mean):
            raise ValueError(f"images have {images.shape[1]} bands but the normalization has {len(self.mean)}")
        shape = (1, len(self.mean), 1, 1)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=images.device).view(shape)
        std = torch.tensor(self.std, dtype=torch.float32, device=images.device).view(shape)
        values = (images.float().clamp(*self.clip_db) - mean) / std
        return values * valid.unsqueeze(1).to(values.dtype)


def label_histogram(dataset: datasets.Dataset, *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """Pixel count of every label value 0..255 in the ``label`` column, int64 ``(256,)``."""
    counts = np.zeros(256, dtype=np.int64)
    batches = dataset.select_columns(["label"]).with_format("numpy", dtype=None).iter(batch_size=batch_size)
    for batch in tqdm(batches, desc="label histogram", unit="batch", disable=not progress):
        counts += np.bincount(np.asarray(batch["label"], dtype=np.uint8).ravel(), minlength=256)
    return counts


def check_label_ids(histogram: np.ndarray, scheme: ClassScheme, where: str) -> None:
    """Raise :class:`UsageError` if labels hold ids that are neither a class of ``scheme`` nor its ignore index.

    A saved dataset keeps the class ids of the scheme it was tiled with; ids beyond the task's classes mean the task
    (or ``--class_scheme``) does not match the data.
    """
    stray = [
        value for value in np.flatnonzero(histogram) if value >= scheme.num_classes and value != scheme.ignore_index
    ]
    if stray:
        raise UsageError(
            f"{where} has label ids {[int(v) for v in stray][:10]} but the class scheme {scheme.name!r} has "
            f"{scheme.num_classes} classes (ids 0..{scheme.num_classes - 1}, {scheme.ignore_index} = ignore); the "
            "data was tiled with another class scheme: re-tile it for this task or choose the matching task"
        )
    if not histogram[: scheme.num_classes].any():
        raise UsageError(f"{where} has no labeled pixel (every label is {scheme.ignore_index}); it cannot train")


def label_id_remap(dataset: Any, scheme: ClassScheme, where: str) -> np.ndarray | None:
    """The lookup table taking the dataset's stored label ids to ids of ``scheme``, or ``None`` when none is needed.

    ``None`` when the dataset records no scheme (its ids are then checked by :func:`check_label_ids` as they are) or
    records ``scheme`` itself.

    Raises:
        UsageError: the recorded scheme is another one, from which ``scheme`` cannot be derived.
    """
    recorded = label_scheme(dataset)
    if recorded is None or recorded == scheme:
        return None
    try:
        return class_id_remap(recorded, scheme)
    except ValueError as err:
        raise UsageError(
            f"{where} has labels of the class scheme {recorded.name!r} but the task's class scheme is {scheme.name!r}: "
            f"{err}; the data was tiled with another class scheme: re-tile it for this task or choose the matching task"
        ) from err


def remap_histogram(histogram: np.ndarray, label_remap: np.ndarray | None) -> np.ndarray:
    """The label histogram ``(256,)`` of the ids after ``label_remap`` (unchanged when it is ``None``)."""
    if label_remap is None:
        return histogram
    return np.bincount(label_remap, weights=histogram, minlength=256).astype(np.int64)
