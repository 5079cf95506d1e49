"""Evaluation of a segmentation checkpoint on tiles or on a whole scene, and its report (the logic behind
``sarlulc evaluate``, ``scripts/run_evaluation.py``, the ablation and the demo).

Two things can be scored:

* **saved tiles** (:func:`evaluate_tiles`): the model runs on every tile of a saved dataset split;
* **a written class map** (:func:`score_map`): the map that ``sarlulc predict`` (:func:`sarlulc.inference.predict_scene`)
  wrote, against the label raster on the same grid, window by window (all windows, or those of one split's tiles).
  This is the only way a whole scene is scored: ``sarlulc evaluate --scene`` first predicts the scene exactly as a user
  would, then scores that map, so the numbers describe the map a user gets (blended overlaps included).

Everything is accumulated as integer counts, window by window, so a scene of any size is evaluated in bounded memory:
a ``(K+1, K+1)`` confusion matrix (:func:`sarlulc.metrics.confusion_matrix`, turned into metrics by
:func:`sarlulc.metrics.metrics_from_confusion`, the semantics of the ``sar_lulc_iou`` metric) and four boundary counts.

**Rare-class IoU** and **rare-class recall**: the mean IoU and the mean recall (per-class accuracy) of the classes that
make up less than ``rare_threshold`` (2 %) of the *training* pixels (``config.class_frequencies`` of the checkpoint),
NaN-skipping like mIoU (a rare class absent from the evaluated reference has no recall).

**Boundary F1 on thin structures** (ours; the paper reports qualitative gains on roads, rivers and canals), computed
class by class and summed over the classes:

1. *Boundary* of class ``c`` in a label map: the pixels of ``c`` with a pixel of another class in their 3 x 3
   neighbourhood. Pixels next to unlabeled (ignore) reference pixels are left out everywhere.
2. *Thin* boundary pixels: boundary pixels that no ``w x w`` square (``w = thin_width``, 5 px by default) lying
   entirely in class ``c`` covers, i.e. that the opening of class ``c``'s mask with that square removes. These are the
   parts of a class narrower than ``w`` pixels (roads, rivers, canals, levees, and the tips of sharp corners), found
   by the same width test in the reference and, separately, in the prediction.
3. With a tolerance of ``t`` pixels (2 by default; Chebyshev distance): precision = thin boundary pixels of the
   *prediction* that have a reference boundary pixel of the same class within ``t`` / thin boundary pixels of the
   prediction; recall = thin boundary pixels of the *reference* that have a predicted boundary pixel of the same class
   within ``t`` / thin boundary pixels of the reference; boundary F1 = their harmonic mean.

Recall asks whether the thin structures of the reference are traced (whatever width the prediction gives them);
precision whether the thin structures the model draws are real, so speckle-like noise in the prediction, which is thin
everywhere, lowers it.

Boundaries are found tile (window) by tile, so a structure cut by a tile edge is judged inside each tile separately.
"""

from __future__ import annotations

import functools
import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rasterio.windows import Window
from torch import nn
from tqdm.auto import tqdm

from sarlulc_cli.arguments import EvaluationArguments, InferenceArguments, SpatialSplitArguments

from ..checkpoints import load_segmentation_checkpoint
from ..data.classes import ClassScheme, scheme_for_id2label
from ..data.tiles import split_tile_dataset, tile_windows
from ..errors import SarLulcDataError, UsageError, as_usage_error
from ..files import atomic_output, write_json, write_text_atomic
from ..metrics import confusion_matrix, metrics_from_confusion
from ..models.configuration_sar_lulc import SarLulcConfig
from .batches import TileNormalization, collate_tiles, is_saved_dataset, label_id_remap, spatial_split, training_view

__all__ = [
    "RARE_THRESHOLD",
    "REPORT_FILENAMES",
    "EvaluationArguments",
    "InferenceArguments",
    "SegmentationTally",
    "boundary_counts",
    "check_evaluation_arguments",
    "class_boundary",
    "class_shares",
    "evaluate_and_summarize",
    "evaluate_tiles",
    "load_checkpoint",
    "rare_class_ids",
    "run_evaluation",
    "scheme_for_model",
    "score_map",
    "segmentation_report",
    "write_report",
]

REPORT_FILENAMES = {"json": "eval_report.json", "markdown": "per_class.md", "confusion": "confusion_matrix.png"}

RARE_THRESHOLD = 0.02
"""A class with a smaller share of the training pixels is rare (rare-class IoU and recall)."""


# ----------------------------------------------------------------------------------------------------------------------
# Morphology on label maps (torch max-pooling: works batched, on any device)
# ----------------------------------------------------------------------------------------------------------------------
def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation of ``(N, H, W)`` bool masks by a ``(2r+1)`` square; outside the map counts as background."""
    if radius == 0:
        return mask
    pooled = F.max_pool2d(mask[:, None].float(), 2 * radius + 1, stride=1, padding=radius)
    return pooled[:, 0] > 0


def _erode(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary erosion by a ``(2r+1)`` square; outside the map counts as foreground, so edges do not erode."""
    return ~_dilate(~mask, radius)


def _opening(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary opening: the union of the ``(2r+1)`` squares that fit entirely inside the mask."""
    return _dilate(_erode(mask, radius), radius)


def _thin_radius(thin_width: int) -> int:
    if thin_width < 3 or thin_width % 2 == 0:
        raise ValueError(f"thin_width must be an odd number >= 3, got {thin_width}")
    return thin_width // 2


def class_boundary(mask: torch.Tensor) -> torch.Tensor:
    """``(N, H, W)`` bool: pixels of the mask with a pixel outside it in their 3 x 3 neighbourhood (inside the map)."""
    return mask & _dilate(~mask, 1)


def boundary_counts(
    predictions: torch.Tensor,
    references: torch.Tensor,
    num_labels: int,
    ignore_index: int = 255,
    thin_width: int = 5,
    tolerance: int = 2,
) -> np.ndarray:
    """The four counts of the thin-structure boundary F1 (module docstring) for a batch of maps.

    Args:
        predictions, references: ``(N, H, W)`` class ids; references use ``ignore_index`` for unlabeled pixels.

    Returns:
        int64 ``[matched predicted, predicted, matched reference, reference]`` thin-structure boundary pixels, summed
        over the classes.
    """
    radius = _thin_radius(thin_width)
    labeled = _erode(references != ignore_index, 1)
    counts = torch.zeros(4, dtype=torch.int64, device=references.device)
    for class_id in range(num_labels):
        reference, predicted = references == class_id, predictions == class_id
        if not (reference.any() or predicted.any()):
            continue
        reference_edge = class_boundary(reference) & labeled
        predicted_edge = class_boundary(predicted) & labeled
        reference_thin = reference_edge & ~_opening(reference, radius)
        predicted_thin = predicted_edge & ~_opening(predicted, radius)
        counts += torch.stack(
            [
                (predicted_thin & _dilate(reference_edge, tolerance)).sum(),
                predicted_thin.sum(),
                (reference_thin & _dilate(predicted_edge, tolerance)).sum(),
                reference_thin.sum(),
            ]
        )
    return counts.cpu().numpy()


# ----------------------------------------------------------------------------------------------------------------------
# Accumulating counts
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class SegmentationTally:
    """Counts over everything evaluated so far: confusion matrix and thin-structure boundary counts.

    Attributes:
        num_labels: K.
        confusion: int64 ``(K+1, K+1)``, rows = reference, columns = prediction, last bin = ids outside ``[0, K)``.
        boundary: int64 ``(4,)``, see :func:`boundary_counts`.
        tiles: maps folded in.
        ignore_index, thin_width, tolerance: as in :func:`boundary_counts`.
    """

    num_labels: int
    ignore_index: int = 255
    thin_width: int = 5
    tolerance: int = 2
    confusion: np.ndarray = field(init=False)
    boundary: np.ndarray = field(init=False)
    tiles: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.confusion = np.zeros((self.num_labels + 1,) * 2, dtype=np.int64)
        self.boundary = np.zeros(4, dtype=np.int64)

    def update(self, predictions: torch.Tensor, references: torch.Tensor) -> None:
        """Fold ``(N, H, W)`` predicted and reference class ids (one window or a batch of tiles) into the counts."""
        self.confusion += confusion_matrix(
            predictions.cpu().numpy(), references.cpu().numpy(), self.num_labels, self.ignore_index
        )
        self.boundary += boundary_counts(
            predictions, references, self.num_labels, self.ignore_index, self.thin_width, self.tolerance
        )
        self.tiles += len(predictions)

    def boundary_scores(self) -> dict[str, float]:
        """Precision, recall and F1 of thin-structure boundaries (NaN when undefined)."""
        matched_pred, pred, matched_ref, ref = (int(v) for v in self.boundary)
        precision = matched_pred / pred if pred else math.nan
        recall = matched_ref / ref if ref else math.nan
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else math.nan
        return {"boundary_precision_thin": precision, "boundary_recall_thin": recall, "boundary_f1_thin": f1}


def class_shares(class_frequencies: Sequence[int]) -> np.ndarray:
    """Each class's share of the pixels counted in ``class_frequencies`` (zeros when nothing was counted)."""
    counts = np.asarray(class_frequencies, dtype=np.float64)
    return counts / counts.sum() if counts.sum() else np.zeros_like(counts)


def rare_class_ids(class_frequencies: Sequence[int], rare_threshold: float = RARE_THRESHOLD) -> list[int]:
    """The rare classes: those with a share of the training pixels (``class_frequencies``) under ``rare_threshold``."""
    return [i for i, share in enumerate(class_shares(class_frequencies)) if share < rare_threshold]


def segmentation_report(
    tally: SegmentationTally,
    scheme: ClassScheme,
    class_frequencies: list[int] | None = None,
    rare_threshold: float = RARE_THRESHOLD,
) -> dict[str, Any]:
    """Every metric of a tally: mIoU and per-class IoU / F1 / accuracy, water metrics, rare-class IoU and recall,
    boundary F1.

    Args:
        tally: the counts.
        scheme: class names and the water class.
        class_frequencies: training pixels per class (``config.class_frequencies``), for the rare classes.
        rare_threshold: a class with a smaller share of the training pixels is rare.
    """
    water_id = scheme.water_id
    result = metrics_from_confusion(
        tally.confusion,
        scheme.num_classes,
        task="water" if water_id is not None else "lulc",
        water_id=water_id,
        id2label=scheme.id2label,
    )
    report: dict[str, Any] = {
        "scheme": scheme.name,
        "classes": scheme.names,
        "tiles": tally.tiles,
        **{key: value for key, value in result.items() if not key.startswith("per_category")},
        "per_class": {
            name: {
                "iou": float(result["per_category_iou"][i]),
                "f1": float(result["per_category_f1"][i]),
                "accuracy": float(result["per_category_accuracy"][i]),
                "reference_pixels": int(tally.confusion[i, :].sum()),
                "predicted_pixels": int(tally.confusion[:, i].sum()),
            }
            for i, name in enumerate(scheme.names)
        },
        **tally.boundary_scores(),
        "boundary_definition": {"thin_width_px": tally.thin_width, "tolerance_px": tally.tolerance},
    }
    if class_frequencies is not None:
        shares = class_shares(class_frequencies)
        rare = rare_class_ids(class_frequencies, rare_threshold)
        rare_iou = [result["per_category_iou"][i] for i in rare if not math.isnan(result["per_category_iou"][i])]
        rare_recall = [
            result["per_category_accuracy"][i] for i in rare if not math.isnan(result["per_category_accuracy"][i])
        ]
        report["train_share"] = {name: float(shares[i]) for i, name in enumerate(scheme.names)}
        report["rare_classes"] = [scheme.names[i] for i in rare]
        report["rare_class_iou"] = float(np.mean(rare_iou)) if rare_iou else math.nan
        report["rare_class_recall"] = float(np.mean(rare_recall)) if rare_recall else math.nan
        report["rare_threshold"] = rare_threshold
    return report


# ----------------------------------------------------------------------------------------------------------------------
# Running a model
# ----------------------------------------------------------------------------------------------------------------------
def load_checkpoint(model_dir: str | Path, device: torch.device | str) -> tuple[nn.Module, Any]:
    """The segmentation model (eval mode, on ``device``) and the image processor saved in ``model_dir``.

    :func:`sarlulc.checkpoints.load_segmentation_checkpoint`, with the processor required (scores of a model fed the
    wrong normalization would mean nothing) and its errors turned into :class:`UsageError` naming ``--model_dir``.
    """
    with as_usage_error(f"--model_dir {model_dir}: "):
        loaded = load_segmentation_checkpoint(model_dir, device=device, require_processor=True)
    return loaded.model.eval(), loaded.processor


def scheme_for_model(id2label: Mapping[int, str], class_scheme: str | None = None) -> ClassScheme:
    """The class scheme a model predicts (:func:`sarlulc.data.classes.scheme_for_id2label`), as a usage error when
    ``--class_scheme`` does not match the model's classes."""
    with as_usage_error("--class_scheme: " if class_scheme is not None else ""):
        return scheme_for_id2label(id2label, class_scheme)


@torch.inference_mode()
def _predict(model: nn.Module, normalization: TileNormalization, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    valid = batch["valid"]
    logits = model(pixel_values=normalization(batch["images"], valid), pixel_mask=valid).logits
    return logits.argmax(dim=1)


def _fold_batches(
    model: nn.Module,
    normalization: TileNormalization,
    batches: Iterable[dict[str, torch.Tensor]],
    tally: SegmentationTally,
    device: torch.device | str,
) -> SegmentationTally:
    for batch in batches:
        batch = {key: value.to(device) for key, value in batch.items()}
        tally.update(_predict(model, normalization, batch), batch["labels"])
    return tally


def evaluate_tiles(
    model: nn.Module,
    tiles: Any,
    normalization: TileNormalization,
    tally: SegmentationTally,
    *,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    progress: bool = True,
    label_remap: np.ndarray | None = None,
) -> SegmentationTally:
    """Fold the model's predictions on a tile ``datasets.Dataset`` (columns image, valid_mask, label) into ``tally``.

    ``label_remap`` (from :func:`sarlulc.training.batches.label_id_remap`) takes the stored label ids to the model's.
    """
    loader = torch.utils.data.DataLoader(
        training_view(tiles, with_labels=True),
        batch_size=batch_size,
        collate_fn=functools.partial(collate_tiles, label_remap=label_remap),
    )
    batches = tqdm(loader, desc="evaluating tiles", unit="batch", disable=not progress)
    return _fold_batches(model, normalization, batches, tally, device)


def _open_raster(path: str | Path, role: str) -> Any:
    import rasterio
    from rasterio.errors import RasterioIOError

    if not Path(path).is_file():
        raise SarLulcDataError(f"{role} {path} does not exist")
    try:
        return rasterio.open(path)
    except RasterioIOError as err:
        raise SarLulcDataError(f"{role} {path} cannot be opened as a raster: {err}") from err


def _check_same_grid(predicted: Any, reference: Any) -> None:
    """The map and the labels must cover the same pixels: same size, CRS and transform (to a fraction of a pixel)."""
    where = f"the map {predicted.name} and the label raster {reference.name}"
    if predicted.shape != reference.shape:
        raise SarLulcDataError(f"{where} differ in size: {predicted.shape} and {reference.shape} (height, width) px")
    if predicted.crs != reference.crs:
        raise SarLulcDataError(f"{where} have different CRSs: {predicted.crs} and {reference.crs}")
    tolerance = 1e-3 * min(abs(predicted.transform.a), abs(predicted.transform.e))
    if not predicted.transform.almost_equals(reference.transform, precision=tolerance):
        raise SarLulcDataError(
            f"{where} are not aligned: transforms {predicted.transform!r} and {reference.transform!r}"
        )


def score_map(
    map_path: str | Path,
    labels_path: str | Path,
    scheme: ClassScheme,
    windows: Sequence[Window] | None = None,
    tally: SegmentationTally | None = None,
    *,
    window_size: int = 256,
    progress: bool = False,
    strict: bool = False,
) -> SegmentationTally:
    """Fold a written class map, scored against its label raster window by window, into ``tally``.

    Args:
        map_path: a class map (band 1: class ids of ``scheme``, its nodata, 255 by default, where the scene had no
            valid pixel), as :func:`sarlulc.inference.predict_scene` writes it.
        labels_path: the label raster (source codes, encoded with ``scheme``), on the map's grid.
        scheme: the classes of the map (their ids) and of the labels (their source codes).
        windows: the windows to score, e.g. the tiles of one split; default: the whole map, cut into ``window_size``
            windows. Parts of a window outside the raster count as nodata.
        tally: counts to add to; default: a new :class:`SegmentationTally` of ``scheme``.
        window_size: side of the default windows (boundaries are judged inside each window).
        progress: show a progress bar over the windows.
        strict: raise on label codes outside the scheme instead of warning.

    Pixels are left out where the map has nodata and where the labels are nodata or a code outside the scheme
    (ignore). Codes outside the scheme (other than the label nodata and 0, "no data" in every JAXA scheme) are
    reported with their pixel counts: a ``UserWarning``, or with ``strict`` an error. A window without any map pixel
    is skipped (it does not count in ``tally.tiles``).

    Raises:
        SarLulcDataError: a file is missing or unreadable, the two rasters are not on the same grid, or (``strict``)
            the labels hold codes outside the scheme.
        UsageError: ``scheme`` has no source codes (a model's own class names), so the labels cannot be encoded.
    """
    if not scheme.has_source_codes:
        raise UsageError(
            f"the class scheme {scheme.name!r} ({scheme.names}) names no label-raster codes, so {labels_path} cannot "
            "be encoded; pass a class scheme with codes (--class_scheme NAME or FILE.json)"
        )
    tally = tally if tally is not None else SegmentationTally(scheme.num_classes, scheme.ignore_index)
    with _open_raster(map_path, "class map") as predicted, _open_raster(labels_path, "label raster") as reference:
        _check_same_grid(predicted, reference)
        if windows is None:
            windows = tile_windows(predicted.height, predicted.width, window_size)
        map_nodata = int(predicted.nodata) if predicted.nodata is not None else scheme.ignore_index
        label_nodata = reference.nodata
        unknown: dict[int, int] = {}
        for window in tqdm(windows, desc="scoring the map", unit="window", disable=not progress):
            prediction = predicted.read(1, window=window, boundless=True, fill_value=map_nodata).astype(np.int64)
            unmapped = prediction == map_nodata
            if unmapped.all():
                continue
            codes = reference.read(1, window=window, boundless=True, fill_value=0)
            target = scheme.encode(codes).astype(np.int64)
            outside = (target == scheme.ignore_index) & (codes != 0) & ~unmapped
            if label_nodata is not None:
                outside &= codes != label_nodata
                target[codes == label_nodata] = scheme.ignore_index
            if outside.any():
                for code, count in zip(*np.unique(codes[outside], return_counts=True), strict=True):
                    unknown[int(code)] = unknown.get(int(code), 0) + int(count)
            target[unmapped] = scheme.ignore_index
            prediction[unmapped] = scheme.ignore_index
            tally.update(torch.from_numpy(prediction[None]), torch.from_numpy(target[None]))
    if unknown:
        listed = ", ".join(f"{code} ({count} px)" for code, count in sorted(unknown.items()))
        message = (
            f"label raster {labels_path} holds codes outside the class scheme {scheme.name!r}: {listed}; they are "
            "left out of the scores"
        )
        if strict:
            raise SarLulcDataError(message.replace("; they are left out of the scores", " (--strict)"))
        warnings.warn(message, UserWarning, stacklevel=2)
    return tally


# ----------------------------------------------------------------------------------------------------------------------
# Report files
# ----------------------------------------------------------------------------------------------------------------------
def _percent(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def _markdown(report: Mapping[str, Any]) -> str:
    rare = set(report.get("rare_classes", ()))
    shares = report.get("train_share", {})
    lines = [
        f"# Evaluation ({report['scheme']}, {report['tiles']} tiles)",
        "",
        f"mIoU {_percent(report['mean_iou'])} %, overall accuracy {_percent(report['overall_accuracy'])} %, "
        f"IoU_water {_percent(report.get('iou_water', math.nan))} %, rare-class IoU "
        f"{_percent(report.get('rare_class_iou', math.nan))} %, thin-structure boundary F1 "
        f"{_percent(report['boundary_f1_thin'])} %.",
        "",
        "| id | class | train share % | IoU % | F1 % | accuracy % | reference px | predicted px |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for class_id, (name, values) in enumerate(report["per_class"].items()):
        marker = " (rare)" if name in rare else ""
        lines.append(
            f"| {class_id} | {name}{marker} | {_percent(shares.get(name, math.nan))} | {_percent(values['iou'])} | "
            f"{_percent(values['f1'])} | {_percent(values['accuracy'])} | {values['reference_pixels']} | "
            f"{values['predicted_pixels']} |"
        )
    lines += ["", "Accuracy is the recall of the class; rare: under the rare threshold of the training pixels.", ""]
    return "\n".join(lines)


def _plot_confusion(report: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(report["confusion_matrix"], dtype=np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    names = report["classes"]
    size = 1.0 + 0.6 * len(names)
    figure, axes = plt.subplots(figsize=(size + 1.5, size))
    image = axes.imshow(shares, vmin=0.0, vmax=1.0, cmap="Blues")
    axes.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axes.set_yticks(range(len(names)), names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("reference class")
    axes.set_title("confusion matrix (share of each reference class)")
    for row in range(len(names)):
        for col in range(len(names)):
            if counts[row, col]:
                colour = "white" if shares[row, col] > 0.5 else "black"
                axes.text(col, row, f"{100 * shares[row, col]:.0f}", ha="center", va="center", color=colour, fontsize=8)
    figure.colorbar(image, ax=axes, fraction=0.046)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_report(report: Mapping[str, Any], output_dir: str | Path) -> dict[str, Path]:
    """Write the JSON report, the per-class markdown table and the confusion-matrix PNG; return their paths."""
    directory = Path(output_dir)
    paths = {kind: directory / name for kind, name in REPORT_FILENAMES.items()}
    write_json(paths["json"], report)
    write_text_atomic(paths["markdown"], _markdown(report))
    with atomic_output(paths["confusion"]) as temporary:
        _plot_confusion(report, temporary)
    return paths


# ----------------------------------------------------------------------------------------------------------------------
# The command's logic
# ----------------------------------------------------------------------------------------------------------------------
def check_evaluation_arguments(args: EvaluationArguments, inference_args: InferenceArguments) -> None:
    """Check the options and paths before any model is loaded; raises :class:`UsageError`."""
    if (args.data is None) == (args.scene is None):
        raise UsageError("give exactly one of --data (a saved tile dataset) and --scene (with --labels)")
    if args.data is not None and not is_saved_dataset(args.data):
        raise UsageError(f"--data {args.data} is not a dataset saved with save_to_disk")
    if args.scene is not None:
        if args.labels is None:
            raise UsageError("--scene needs --labels (the label raster to compare with)")
        for flag, path in (("--scene", args.scene), ("--labels", args.labels)):
            if not Path(path).is_file():
                raise UsageError(f"{flag} {path} does not exist")
    if args.tile_size < 32 or args.tile_size % 32:
        raise UsageError(f"--tile_size {args.tile_size} is not a positive multiple of 32")
    if inference_args.device is not None:
        from ..inference.scene import checked_device

        checked_device(inference_args.device)
    if args.output_dir is not None:
        _check_writable_folder(Path(args.output_dir), "--output_dir")
    if args.thin_width < 3 or args.thin_width % 2 == 0:
        raise UsageError(f"--thin_width must be an odd number >= 3, got {args.thin_width}")
    if args.boundary_tolerance < 0 or (inference_args.batch_size is not None and inference_args.batch_size < 1):
        raise UsageError("--boundary_tolerance must be >= 0 and --batch_size >= 1")


def _check_writable_folder(folder: Path, flag: str) -> None:
    """:class:`UsageError` unless ``folder`` is (or can be created as) a writable folder."""
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{flag} {folder} cannot be created: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {folder}: {existing} is not writable")


def _evaluation_name(args: EvaluationArguments) -> str:
    if args.data is not None:
        return args.split or "test"
    return args.split or "scene"


def _model_config(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise UsageError(f"--model_dir {model_dir}: no config.json there (give a `sarlulc finetune` output folder)")
    try:
        config = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UsageError(f"--model_dir {model_dir}: its config.json is not valid JSON ({err})") from err
    if not isinstance(config, dict) or config.get("model_type") != SarLulcConfig.model_type or "id2label" not in config:
        found = config.get("model_type") if isinstance(config, dict) else None
        raise UsageError(
            f"--model_dir {model_dir}: not a sarlulc segmentation checkpoint (its config.json has model_type "
            f"{found!r}, expected {SarLulcConfig.model_type!r} with id2label); give a `sarlulc finetune` output folder"
        )
    return config


def _evaluate_saved_tiles(
    args: EvaluationArguments, inference_args: InferenceArguments, tally_options: dict[str, int], name: str
) -> tuple[SegmentationTally, ClassScheme, list[int] | None]:
    """The model on every tile of split ``name`` of the saved dataset ``args.data``."""
    import datasets

    device = torch.device(inference_args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, processor = load_checkpoint(args.model_dir, device)
    scheme = scheme_for_model(model.config.id2label, args.class_scheme)
    splits = datasets.load_from_disk(args.data)
    splits = splits if isinstance(splits, datasets.DatasetDict) else datasets.DatasetDict({"train": splits})
    if name not in splits or len(splits[name]) == 0:
        raise UsageError(f"no tile in split {name!r} (splits: {dict(splits.num_rows)})")
    tally = SegmentationTally(scheme.num_classes, scheme.ignore_index, **tally_options)
    # A water model scores on tiles made for the LULC task: their recorded scheme is remapped to the model's.
    label_remap = label_id_remap(splits[name], scheme, f"split {name!r} of {args.data}")
    evaluate_tiles(
        model,
        splits[name],
        TileNormalization.from_processor(processor),
        tally,
        # predict_scene's default: larger batches are no faster on a CPU and only raise the memory peak
        batch_size=inference_args.batch_size or (8 if device.type == "cuda" else 2),
        device=device,
        progress=not args.disable_tqdm,
        label_remap=label_remap,
    )
    return tally, scheme, model.config.class_frequencies


def _split_windows(
    args: EvaluationArguments, split_args: SpatialSplitArguments, scheme: ClassScheme, name: str
) -> list[Window]:
    """The windows of the tiles of split ``name`` when the scene is tiled and split as ``sarlulc finetune`` does."""
    splits = split_tile_dataset(
        (args.scene, args.labels),
        spatial_split(split_args),
        tile_size=args.tile_size,
        scheme=scheme,
        progress=not args.disable_tqdm,
    )
    if name not in splits or len(splits[name]) == 0:
        raise UsageError(f"no tile in split {name!r} of {args.scene} (splits: {dict(splits.num_rows)})")
    positions = splits[name].select_columns(["row_off", "col_off"])
    return [
        Window(col_off, row_off, args.tile_size, args.tile_size)
        for row_off, col_off in zip(positions["row_off"], positions["col_off"])
    ]


def _predict_map(args: EvaluationArguments, inference_args: InferenceArguments, map_path: Path) -> None:
    """``sarlulc predict MODEL_DIR SCENE MAP`` with the inference options; its input errors are the user's."""
    from ..inference import predict_scene

    try:
        predict_scene(
            args.model_dir,
            args.scene,
            map_path,
            tile=inference_args.tile,
            overlap=inference_args.overlap,
            batch_size=inference_args.batch_size,
            device=inference_args.device,
            num_workers=inference_args.num_workers,
            progress=not args.disable_tqdm,
            overwrite=True,  # the map belongs to this evaluation's output folder
        )
    except (UsageError, SarLulcDataError):
        raise
    except (ValueError, OSError) as err:  # what predict_scene raises for a bad scene, checkpoint or option
        raise UsageError(f"predicting {args.scene}: {err}") from err


def run_evaluation(
    args: EvaluationArguments,
    inference_args: InferenceArguments | None = None,
    split_args: SpatialSplitArguments | None = None,
) -> dict[str, Any]:
    """Evaluate ``args.model_dir`` and write the report; returns it (with ``"files"``: the written paths).

    Args:
        args: what to score (``--data`` tiles, or ``--scene`` with ``--labels``) and the report's options.
        inference_args: how the model runs: for ``--scene``, the options of ``sarlulc predict`` (tile, overlap,
            batch size, device); for ``--data``, the batch size and device. Default :class:`InferenceArguments`.
        split_args: the spatial split of ``--scene`` for ``--split`` (default :class:`SpatialSplitArguments`).

    With ``--scene``, the map is written to ``OUTPUT_DIR/<scene name>_map.tif`` (``report["map"]``) and scored with
    :func:`score_map`, on the whole scene or on the windows of ``--split``'s tiles.

    Raises:
        UsageError, SarLulcDataError: bad options, paths, checkpoint or data.
    """
    inference_args = inference_args if inference_args is not None else InferenceArguments()
    split_args = split_args if split_args is not None else SpatialSplitArguments()
    check_evaluation_arguments(args, inference_args)
    name = _evaluation_name(args)
    output_dir = Path(args.output_dir) if args.output_dir is not None else Path(args.model_dir) / f"eval_{name}"
    tally_options = {"thin_width": args.thin_width, "tolerance": args.boundary_tolerance}
    extra: dict[str, Any] = {}
    if args.data is not None:
        tally, scheme, class_frequencies = _evaluate_saved_tiles(args, inference_args, tally_options, name)
        extra["evaluated"] = name
    else:
        config = _model_config(args.model_dir)
        scheme = scheme_for_model({int(k): v for k, v in config["id2label"].items()}, args.class_scheme)
        class_frequencies = config.get("class_frequencies")
        # Checked before the (long) prediction: the split must exist and hold tiles.
        windows = _split_windows(args, split_args, scheme, name) if args.split is not None else None
        map_path = output_dir / f"{Path(args.scene).stem}_map.tif"
        _predict_map(args, inference_args, map_path)
        tally = SegmentationTally(scheme.num_classes, scheme.ignore_index, **tally_options)
        score_map(
            map_path,
            args.labels,
            scheme,
            windows,
            tally,
            window_size=args.tile_size,
            progress=not args.disable_tqdm,
            strict=args.strict,
        )
        extra.update(evaluated=f"{args.scene} ({name})", map=str(map_path))
    if not tally.confusion.any():  # ignored reference pixels are never counted
        raise SarLulcDataError(
            f"no labelled pixel to score in {args.labels if args.data is None else args.data} "
            f"({name}): every reference pixel is nodata, unknown or outside the predicted map"
        )
    report = segmentation_report(tally, scheme, class_frequencies, args.rare_threshold)
    report["model_dir"] = str(args.model_dir)
    report.update(extra)
    files = write_report(report, output_dir)
    report["files"] = {kind: str(path) for kind, path in files.items()}
    return report


def evaluate_and_summarize(
    args: EvaluationArguments,
    inference_args: InferenceArguments | None = None,
    split_args: SpatialSplitArguments | None = None,
) -> dict[str, Any]:
    """:func:`run_evaluation`, then print the headline metrics and the written files (``sarlulc evaluate``)."""
    report = run_evaluation(args, inference_args, split_args)
    keys = ("mean_iou", "overall_accuracy", "iou_water", "rare_class_iou", "boundary_f1_thin")
    print(json.dumps({key: report[key] for key in keys if key in report}, indent=2))
    for kind, path in report["files"].items():
        print(f"wrote {kind}: {path}")
    return report
