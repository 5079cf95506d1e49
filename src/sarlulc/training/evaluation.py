"""Evaluation of a segmentation checkpoint on tiles or on a whole scene, and its report (the logic behind
``scripts/evaluate.py`` and the ablation).

Everything is accumulated as integer counts, window by window, so a scene of any size is evaluated in bounded memory:
a ``(K+1, K+1)`` confusion matrix (:func:`sarlulc.metrics.confusion_matrix`, turned into metrics by
:func:`sarlulc.metrics.metrics_from_confusion`, the semantics of the ``sar_lulc_iou`` metric) and four boundary counts.

**Rare-class IoU**: the mean IoU of the classes that make up less than ``rare_threshold`` (2 %) of the *training*
pixels (``config.class_frequencies`` of the checkpoint), NaN-skipping like mIoU.

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

Boundaries are found tile by tile, so a structure cut by a tile edge is judged inside each tile separately.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..data.classes import SCHEMES, ClassScheme, get_scheme
from ..data.tiles import SpatialSplit, iter_tiles, split_tile_dataset
from ..metrics import confusion_matrix, metrics_from_confusion
from .data import TileNormalization, UsageError, collate_tiles, is_saved_dataset, training_view
from .loop import write_json

__all__ = [
    "REPORT_FILENAMES",
    "EvaluationArguments",
    "SegmentationTally",
    "boundary_counts",
    "class_boundary",
    "evaluate_and_summarize",
    "evaluate_tiles",
    "iterate_scene_batches",
    "load_checkpoint",
    "run_evaluation",
    "scheme_for_model",
    "segmentation_report",
    "write_report",
]

REPORT_FILENAMES = {"json": "eval_report.json", "markdown": "per_class.md", "confusion": "confusion_matrix.png"}


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


def segmentation_report(
    tally: SegmentationTally,
    scheme: ClassScheme,
    class_frequencies: list[int] | None = None,
    rare_threshold: float = 0.02,
) -> dict[str, Any]:
    """Every metric of a tally: mIoU and per-class IoU / F1 / accuracy, water metrics, rare-class IoU, boundary F1.

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
        counts = np.asarray(class_frequencies, dtype=np.float64)
        shares = counts / counts.sum() if counts.sum() else np.zeros_like(counts)
        rare = [i for i, share in enumerate(shares) if share < rare_threshold]
        rare_iou = [result["per_category_iou"][i] for i in rare if not math.isnan(result["per_category_iou"][i])]
        report["train_share"] = {name: float(shares[i]) for i, name in enumerate(scheme.names)}
        report["rare_classes"] = [scheme.names[i] for i in rare]
        report["rare_class_iou"] = float(np.mean(rare_iou)) if rare_iou else math.nan
        report["rare_threshold"] = rare_threshold
    return report


# ----------------------------------------------------------------------------------------------------------------------
# Running a model
# ----------------------------------------------------------------------------------------------------------------------
def load_checkpoint(model_dir: str | Path, device: torch.device | str) -> tuple[nn.Module, Any]:
    """The segmentation model (eval mode, on ``device``) and image processor saved in ``model_dir``."""
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

    import sarlulc  # noqa: F401  (registers the Auto classes)

    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise UsageError(f"--model_dir {model_dir}: no config.json there (give a finetune.py output folder)")
    if not (path / "preprocessor_config.json").is_file():
        raise UsageError(f"--model_dir {model_dir}: no preprocessor_config.json (the input normalization is unknown)")
    model = AutoModelForSemanticSegmentation.from_pretrained(path, trust_remote_code=False)
    processor = AutoImageProcessor.from_pretrained(path, trust_remote_code=False)
    return model.to(device).eval(), processor


def scheme_for_model(id2label: Mapping[int, str], class_scheme: str | None = None) -> ClassScheme:
    """The class scheme a model predicts: ``class_scheme`` if given (checked), else the known scheme with its names."""
    names = [id2label[i] for i in range(len(id2label))]
    if class_scheme is not None:
        try:
            scheme = get_scheme(class_scheme)
        except ValueError as err:
            raise UsageError(f"--class_scheme: {err}") from err
        if scheme.names != names:
            raise UsageError(f"the model's classes {names} differ from the scheme {scheme.name!r}: {scheme.names}")
        return scheme
    for scheme in SCHEMES.values():
        if scheme.names == names:
            return scheme
    raise UsageError(f"the model's classes {names} match no built-in scheme; pass --class_scheme FILE.json")


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
) -> SegmentationTally:
    """Fold the model's predictions on a tile ``datasets.Dataset`` (columns image, valid_mask, label) into ``tally``."""
    loader = torch.utils.data.DataLoader(
        training_view(tiles, with_labels=True), batch_size=batch_size, collate_fn=collate_tiles
    )
    batches = tqdm(loader, desc="evaluating tiles", unit="batch", disable=not progress)
    return _fold_batches(model, normalization, batches, tally, device)


def iterate_scene_batches(
    scene: str | Path,
    labels: str | Path,
    scheme: ClassScheme,
    *,
    tile_size: int,
    batch_size: int,
    progress: bool = True,
) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of every window of a scene with any valid pixel (padding and nodata are labeled ignore)."""
    examples = iter_tiles((str(scene), str(labels)), tile_size=tile_size, scheme=scheme, min_valid_fraction=0.0)
    pending = []
    for example in tqdm(examples, desc="evaluating scene windows", unit="tile", disable=not progress):
        pending.append(example)
        if len(pending) == batch_size:
            yield collate_tiles(pending)
            pending = []
    if pending:
        yield collate_tiles(pending)


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
    directory.mkdir(parents=True, exist_ok=True)
    paths = {kind: directory / name for kind, name in REPORT_FILENAMES.items()}
    write_json(paths["json"], report)
    paths["markdown"].write_text(_markdown(report))
    _plot_confusion(report, paths["confusion"])
    return paths


# ----------------------------------------------------------------------------------------------------------------------
# The script's logic
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class EvaluationArguments:
    """Options of ``scripts/evaluate.py``."""

    model_dir: str = field(metadata={"help": "A finetune.py output folder (OUTPUT or OUTPUT/best)."})
    data: str | None = field(
        default=None, metadata={"help": "A saved tile dataset (save_to_disk); evaluates its --split (default test)."}
    )
    scene: str | None = field(
        default=None,
        metadata={"help": "A scene GeoTIFF (with --labels): evaluates the whole scene window by window, or --split."},
    )
    labels: str | None = field(default=None, metadata={"help": "The label raster of --scene (JAXA-style codes)."})
    split: str | None = field(
        default=None,
        metadata={
            "help": "Split to evaluate: of --data (default test), or of --scene cut by the spatial split options "
            "below (default: the whole scene)."
        },
    )
    split_fractions: list[float] = field(
        default_factory=lambda: [0.8, 0.1, 0.1],
        metadata={"help": "--scene with --split: shares of train, validation and test (as in finetune.py)."},
    )
    split_group_size: int = field(default=4, metadata={"help": "--scene with --split: groups of N x N tiles."})
    split_seed: int = field(default=0, metadata={"help": "--scene with --split: seed of the spatial split."})
    tile_size: int = field(default=256, metadata={"help": "--scene: window side in pixels (a multiple of 32)."})
    class_scheme: str | None = field(
        default=None, metadata={"help": "Class scheme of the labels; default: the built-in one matching the model."}
    )
    batch_size: int = field(default=8, metadata={"help": "Tiles per forward pass."})
    thin_width: int = field(
        default=5, metadata={"help": "Boundary F1: parts of a class narrower than this (odd, px) are thin structures."}
    )
    boundary_tolerance: int = field(default=2, metadata={"help": "Boundary F1: matching tolerance in pixels."})
    rare_threshold: float = field(
        default=0.02, metadata={"help": "Rare-class IoU: classes under this share of the training pixels."}
    )
    output_dir: str | None = field(
        default=None, metadata={"help": "Where the report goes (default: MODEL_DIR/eval_<split or scene>)."}
    )
    device: str | None = field(default=None, metadata={"help": "cpu or cuda (default: cuda when available)."})
    disable_tqdm: bool = field(default=False, metadata={"help": "Hide progress bars."})

    def validate(self) -> None:
        if (self.data is None) == (self.scene is None):
            raise UsageError("give exactly one of --data (a saved tile dataset) and --scene (with --labels)")
        if self.data is not None and not is_saved_dataset(self.data):
            raise UsageError(f"--data {self.data} is not a dataset saved with save_to_disk")
        if self.scene is not None:
            if self.labels is None:
                raise UsageError("--scene needs --labels (the label raster to compare with)")
            for flag, path in (("--scene", self.scene), ("--labels", self.labels)):
                if not Path(path).is_file():
                    raise UsageError(f"{flag} {path} does not exist")
            if self.tile_size % 32:
                raise UsageError(f"--tile_size {self.tile_size} is not a multiple of 32")
        if self.thin_width < 3 or self.thin_width % 2 == 0:
            raise UsageError(f"--thin_width must be an odd number >= 3, got {self.thin_width}")
        if self.boundary_tolerance < 0 or self.batch_size < 1:
            raise UsageError("--boundary_tolerance must be >= 0 and --batch_size >= 1")


def _evaluation_name(args: EvaluationArguments) -> str:
    if args.data is not None:
        return args.split or "test"
    return args.split or "scene"


def run_evaluation(args: EvaluationArguments) -> dict[str, Any]:
    """Evaluate ``args.model_dir`` and write the report; returns it (with ``"files"``: the written paths)."""
    import datasets

    args.validate()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, processor = load_checkpoint(args.model_dir, device)
    scheme = scheme_for_model(model.config.id2label, args.class_scheme)
    normalization = TileNormalization.from_processor(processor)
    tally = SegmentationTally(
        scheme.num_classes, scheme.ignore_index, thin_width=args.thin_width, tolerance=args.boundary_tolerance
    )
    progress = not args.disable_tqdm
    name = _evaluation_name(args)
    if args.data is not None or args.split is not None:
        if args.data is not None:
            splits = datasets.load_from_disk(args.data)
            splits = splits if isinstance(splits, datasets.DatasetDict) else datasets.DatasetDict({"train": splits})
        else:
            fractions = dict(zip(("train", "validation", "test"), args.split_fractions))
            try:
                split = SpatialSplit(fractions=fractions, group_size=args.split_group_size, seed=args.split_seed)
            except ValueError as err:
                raise UsageError(str(err)) from err
            splits = split_tile_dataset(
                (args.scene, args.labels), split, tile_size=args.tile_size, scheme=scheme, progress=progress
            )
        if name not in splits or len(splits[name]) == 0:
            raise UsageError(f"no tile in split {name!r} (splits: {dict(splits.num_rows)})")
        evaluate_tiles(
            model, splits[name], normalization, tally, batch_size=args.batch_size, device=device, progress=progress
        )
    else:
        batches = iterate_scene_batches(
            args.scene, args.labels, scheme, tile_size=args.tile_size, batch_size=args.batch_size, progress=progress
        )
        _fold_batches(model, normalization, batches, tally, device)
    report = segmentation_report(tally, scheme, model.config.class_frequencies, args.rare_threshold)
    report["model_dir"] = str(args.model_dir)
    report["evaluated"] = name if args.data is not None else f"{args.scene} ({name})"
    files = write_report(report, args.output_dir or Path(args.model_dir) / f"eval_{name}")
    report["files"] = {kind: str(path) for kind, path in files.items()}
    return report


def evaluate_and_summarize(args: EvaluationArguments) -> dict[str, Any]:
    """:func:`run_evaluation`, then print the headline metrics and the written files (``scripts/evaluate.py`` and
    ``sarlulc evaluate``)."""
    import json

    report = run_evaluation(args)
    keys = ("mean_iou", "overall_accuracy", "iou_water", "rare_class_iou", "boundary_f1_thin")
    print(json.dumps({key: report[key] for key in keys if key in report}, indent=2))
    for kind, path in report["files"].items():
        print(f"wrote {kind}: {path}")
    return report
