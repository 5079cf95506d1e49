"""sar_lulc_iou: mean IoU, per-class IoU / accuracy / F1 and binary water metrics from a streamed confusion matrix.

This file is an ``evaluate`` metric script. ``evaluate.load("<dir>/sar_lulc_iou")`` copies it alone into the
modules cache, so it imports only numpy, datasets and evaluate (never sarlulc).

Semantics are those of evaluate's reference ``mean_iou`` (areas summed over the whole set, ``ignore_index`` applied
to references, NaN IoU for a class absent from both prediction and reference, NaN skipped in the means), computed
from integer counts instead of stored pixels:

* a pixel whose reference is ``ignore_index`` is not counted anywhere;
* a pixel whose reference is outside ``[0, K-1]`` (and not ``ignore_index``) is in no class's reference area, but
  its prediction, if inside ``[0, K-1]``, still counts in that class's predicted area (a false positive);
* a pixel whose prediction is outside ``[0, K-1]`` but whose reference is class ``i`` counts in class ``i``'s
  reference area (a miss for ``i``, and a wrong pixel for the overall accuracy).

To hold these cases the confusion matrix has one extra bin: :func:`confusion_matrix` returns ``(K+1, K+1)`` counts
whose last row / column gathers every value outside ``[0, K-1]``; ``cm[:K, :K]`` is the ordinary matrix.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import datasets
import evaluate
import numpy as np

_NAME = "sar_lulc_iou"
TASKS = ("lulc", "water")
DEFAULT_IGNORE_INDEX = 255
DEFAULT_WATER_ID = 1
# Largest (reference value span) x (prediction value span) table the metric accumulates: 2**24 int64 = 128 MiB.
_MAX_TABLE_CELLS = 1 << 24

_DESCRIPTION = """\
Confusion-matrix segmentation metrics for land-use/land-cover (LULC) and water maps. Pixel counts are summed over
the whole evaluation set as int64, so the memory held does not grow with the number of pixels: `add_batch` folds
each batch into a count table and `compute` turns it into IoU, accuracy and F1 per class, their means, the overall
pixel accuracy and, for the water task, IoU / F1 / precision / recall of the water class. Same semantics as
evaluate's `mean_iou` (see its README for the definitions).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of 2-D integer arrays, or an (N, H, W) integer array): predicted class ids per example.
    references (same shapes as `predictions`): reference class ids; `ignore_index` marks pixels not to count.
    num_labels (`int`): number of classes K; class ids are 0..K-1.
    ignore_index (`int`, defaults to 255): reference value of pixels to ignore.
    task (`str`, "lulc" or "water", defaults to "lulc"): "water" adds the binary metrics of class `water_id`.
    water_id (`int`, defaults to 1 with task "water"): class id of water (use 0 for the 9-class LULC scheme).
    id2label (`dict[int, str]`, optional): class names; adds per-class dicts keyed by name.

Returns:
    mean_iou (`float`): mean of the per-class IoU over classes present in prediction or reference.
    mean_accuracy (`float`): mean of the per-class accuracy over classes present in the reference.
    overall_accuracy (`float`): correctly classified / counted reference pixels.
    per_category_iou (`ndarray` (K,)): intersection / union per class (NaN when the union is empty).
    per_category_accuracy (`ndarray` (K,)): recall per class (NaN when the class is absent from the reference).
    per_category_f1 (`ndarray` (K,)): 2 * intersection / (predicted + reference area) per class (Dice).
    confusion_matrix (`list[list[int]]` (K, K)): pixel counts, row = reference class, column = predicted class.
    iou_water, f1_water, precision_water, recall_water (`float`, task "water"): binary metrics of `water_id`;
        a ratio whose denominator is zero is NaN (no water anywhere: all four are NaN).
    per_category_iou_by_name, per_category_accuracy_by_name, per_category_f1_by_name (`dict[str, float]`,
        with `id2label`).

Examples:

    >>> metric = evaluate.load("path/to/sar_lulc_iou")
    >>> metric.add_batch(predictions=[[[0, 1], [1, 1]]], references=[[[0, 1], [0, 255]]])
    >>> round(metric.compute(num_labels=2)["mean_iou"], 4)
    0.5
"""

_CITATION = """\
@article{everingham2010pascal,
  title   = {The Pascal Visual Object Classes (VOC) Challenge},
  author  = {Everingham, Mark and Van Gool, Luc and Williams, Christopher K. I. and Winn, John and Zisserman, Andrew},
  journal = {International Journal of Computer Vision},
  volume  = {88},
  number  = {2},
  pages   = {303--338},
  year    = {2010}
}
"""


# ---------------------------------------------------------------------------------------------------------------------
# Pure functions (usable without the evaluate machinery, e.g. summed over the windows of a national-scale map)


def confusion_matrix(
    predictions: Any, references: Any, num_labels: int, ignore_index: int = DEFAULT_IGNORE_INDEX
) -> np.ndarray:
    """Pixel counts of (reference, prediction) class pairs, with an extra bin for ids outside ``[0, K-1]``.

    Args:
        predictions: integer class ids, any shape (one tile, a batch or a scene window).
        references: integer class ids, same shape; pixels equal to ``ignore_index`` are not counted.
        num_labels: number of classes K.
        ignore_index: reference value of pixels to ignore.

    Returns:
        int64 array of shape ``(K+1, K+1)``: ``cm[i, j]`` pixels with reference bin ``i`` and prediction bin ``j``,
        where bin ``K`` gathers all values outside ``[0, K-1]``. Sum the matrices of several windows, then call
        :func:`metrics_from_confusion`. Memory is about 40 bytes per pixel of the input, so process a whole scene
        window by window.
    """
    _check_num_labels(num_labels)
    pred, ref = _as_id_arrays(predictions, references)
    counted = ref != ignore_index
    bins = num_labels + 1
    flat = _bins(ref[counted], num_labels) * bins + _bins(pred[counted], num_labels)
    return np.bincount(flat, minlength=bins * bins).astype(np.int64, copy=False).reshape(bins, bins)


def metrics_from_confusion(
    cm: Any,
    num_labels: int,
    *,
    task: str = "lulc",
    water_id: int | None = None,
    id2label: Mapping[Any, str] | None = None,
) -> dict[str, Any]:
    """Segmentation metrics from a confusion matrix (rows = reference, columns = prediction).

    Args:
        cm: non-negative integer counts, shape ``(K, K)`` (an ordinary confusion matrix) or ``(K+1, K+1)`` (as
            returned by :func:`confusion_matrix`: the last row / column holds the ids outside ``[0, K-1]``).
        num_labels: number of classes K; tells the two shapes apart.
        task: ``"lulc"``, or ``"water"`` to add the binary metrics of class ``water_id``.
        water_id: class id of water for task ``"water"`` (defaults to 1, the binary water scheme).
        id2label: optional class names (int or str keys ``0..K-1``) for per-class dicts keyed by name.

    Returns:
        The dict described in the metric card (``mean_iou``, ``per_category_iou``, ..., ``confusion_matrix``
        as a ``(K, K)`` nested list of ints, and the ``*_water`` keys for task ``"water"``). Scalars are floats,
        per-class values float64 arrays of shape ``(K,)``; undefined ratios (0 / 0) are NaN, without warnings.
    """
    _check_num_labels(num_labels)
    cm = np.asarray(cm)
    if cm.dtype.kind not in "iu":
        raise ValueError(f"confusion matrix must hold integer counts, got dtype {cm.dtype}")
    if cm.shape not in ((num_labels, num_labels), (num_labels + 1, num_labels + 1)):
        raise ValueError(
            f"confusion matrix for num_labels={num_labels} must have shape {(num_labels, num_labels)} or "
            f"{(num_labels + 1, num_labels + 1)}, got {cm.shape}"
        )
    if (cm < 0).any():
        raise ValueError("confusion matrix has negative counts")
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if task != "water" and water_id is not None:
        raise ValueError(f"water_id is only used with task='water', got task={task!r}")
    names = _class_names(id2label, num_labels) if id2label is not None else None

    cm = cm.astype(np.int64, copy=False)
    intersect = np.diagonal(cm[:num_labels, :num_labels])
    area_label = cm[:num_labels, :].sum(axis=1)  # includes predictions outside [0, K-1]
    area_pred = cm[:, :num_labels].sum(axis=0)  # includes references outside [0, K-1]
    iou = _ratio(intersect, area_label + area_pred - intersect)
    accuracy = _ratio(intersect, area_label)
    f1 = _ratio(2 * intersect, area_label + area_pred)

    result: dict[str, Any] = {
        "mean_iou": _nanmean(iou),
        "mean_accuracy": _nanmean(accuracy),
        "overall_accuracy": float(_ratio(intersect.sum(), area_label.sum())),
        "per_category_iou": iou,
        "per_category_accuracy": accuracy,
        "per_category_f1": f1,
        "confusion_matrix": cm[:num_labels, :num_labels].tolist(),
    }
    if task == "water":
        water = DEFAULT_WATER_ID if water_id is None else int(water_id)
        if not 0 <= water < num_labels:
            raise ValueError(f"water_id {water} is not a class id in [0, {num_labels - 1}]")
        result["iou_water"] = float(iou[water])
        result["f1_water"] = float(f1[water])
        result["precision_water"] = float(_ratio(intersect[water], area_pred[water]))
        result["recall_water"] = float(accuracy[water])
    if names is not None:
        for key, values in (("iou", iou), ("accuracy", accuracy), ("f1", f1)):
            result[f"per_category_{key}_by_name"] = {name: float(v) for name, v in zip(names, values)}
    return result


# ---------------------------------------------------------------------------------------------------------------------
# The evaluate metric


class SarLulcIoU(evaluate.Metric):
    """Streaming confusion-matrix metric for LULC / water segmentation (see the module docstring for semantics).

    ``add_batch`` / ``add`` fold the pixels into an int64 table of counts indexed by (reference value, prediction
    value), whose size is the span of the ids seen (e.g. 256 x K for uint8 labels with 255 = ignore), never the number
    of pixels; no Arrow cache is written. ``compute`` maps that table onto the ``(K+1, K+1)`` confusion matrix for the
    ``num_labels`` and ``ignore_index`` it is given, returns the metrics and clears the state.

    The counts live in this process only, so ``num_process > 1`` is refused: gather predictions first (e.g.
    ``Accelerator.gather_for_metrics``) or sum :func:`confusion_matrix` results across processes.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.num_process != 1:
            raise ValueError(
                f"{_NAME} accumulates counts in memory and does not support num_process={self.num_process}; gather "
                "predictions on one process or sum confusion_matrix() results across processes"
            )
        self.info.module_name = _NAME  # evaluate would derive "sar_lulc_io_u" from the class name
        self._reset()

    def _info(self) -> evaluate.MetricInfo:
        ids = datasets.Sequence(datasets.Sequence(datasets.Value("int64")))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": ids, "references": ids}),
            reference_urls=["https://github.com/huggingface/evaluate/tree/main/metrics/mean_iou"],
        )

    def add_batch(self, *, predictions: Any = None, references: Any = None, **kwargs: Any) -> None:
        """Fold a batch of (prediction, reference) class-id maps into the running counts; no pixel is kept."""
        if kwargs:
            raise ValueError(f"bad inputs for {_NAME}: {sorted(kwargs)}; expected predictions and references")
        if predictions is None or references is None:
            raise ValueError(f"{_NAME}.add_batch needs both predictions and references")
        if len(predictions) != len(references):
            raise ValueError(f"got {len(predictions)} predictions but {len(references)} references")
        for prediction, reference in zip(predictions, references):
            self._fold(prediction, reference)

    def add(self, *, prediction: Any = None, reference: Any = None, **kwargs: Any) -> None:
        """Fold one (prediction, reference) pair of class-id maps into the running counts."""
        if kwargs:
            raise ValueError(f"bad inputs for {_NAME}: {sorted(kwargs)}; expected prediction and reference")
        if prediction is None or reference is None:
            raise ValueError(f"{_NAME}.add needs both prediction and reference")
        self._fold(prediction, reference)

    def compute(
        self,
        *,
        predictions: Any = None,
        references: Any = None,
        num_labels: int,
        ignore_index: int = DEFAULT_IGNORE_INDEX,
        task: str = "lulc",
        water_id: int | None = None,
        id2label: Mapping[Any, str] | None = None,
    ) -> dict[str, Any]:
        """Metrics over everything added so far (plus ``predictions`` / ``references`` if given); clears the state.

        The arguments are those of :func:`metrics_from_confusion`; the state is kept if they are invalid.
        """
        if predictions is not None or references is not None:
            self.add_batch(predictions=predictions, references=references)
        if self._counts is None:
            raise ValueError(f"{_NAME}: nothing to compute, add predictions and references first")
        result = metrics_from_confusion(
            self._confusion(num_labels, ignore_index), num_labels, task=task, water_id=water_id, id2label=id2label
        )
        self._reset()
        return result

    # -----------------------------------------------------------------------------------------------------------------
    def _reset(self) -> None:
        # _counts[r, p]: pixels with reference value _ref_offset + r and prediction value _pred_offset + p.
        self._counts: np.ndarray | None = None
        self._ref_offset = 0
        self._pred_offset = 0

    def _fold(self, prediction: Any, reference: Any) -> None:
        pred, ref = _as_id_arrays(prediction, reference)
        if ref.size == 0:
            return
        self._cover(int(ref.min()), int(ref.max()), int(pred.min()), int(pred.max()))
        n_pred = self._counts.shape[1]
        flat = ref.astype(np.int64).ravel()
        flat -= self._ref_offset
        flat *= n_pred
        flat += pred.astype(np.int64).ravel()
        flat -= self._pred_offset
        self._counts += np.bincount(flat, minlength=self._counts.size).reshape(self._counts.shape)

    def _cover(self, ref_lo: int, ref_hi: int, pred_lo: int, pred_hi: int) -> None:
        """Grow the count table so that it covers reference values [ref_lo, ref_hi] and predictions [pred_lo, pred_hi]."""
        if self._counts is not None:
            rows, cols = self._counts.shape
            current = (self._ref_offset, self._ref_offset + rows - 1, self._pred_offset, self._pred_offset + cols - 1)
            ref_lo, ref_hi = min(ref_lo, current[0]), max(ref_hi, current[1])
            pred_lo, pred_hi = min(pred_lo, current[2]), max(pred_hi, current[3])
            if (ref_lo, ref_hi, pred_lo, pred_hi) == current:
                return
        shape = (ref_hi - ref_lo + 1, pred_hi - pred_lo + 1)
        if shape[0] * shape[1] > _MAX_TABLE_CELLS:
            raise ValueError(
                f"{_NAME}: class ids span references [{ref_lo}, {ref_hi}] x predictions [{pred_lo}, {pred_hi}], too "
                "wide to count; map labels to 0..K-1 and ignore_index first, or use confusion_matrix(num_labels=...)"
            )
        grown = np.zeros(shape, dtype=np.int64)
        if self._counts is not None:
            r0, p0 = self._ref_offset - ref_lo, self._pred_offset - pred_lo
            grown[r0 : r0 + self._counts.shape[0], p0 : p0 + self._counts.shape[1]] = self._counts
        self._counts, self._ref_offset, self._pred_offset = grown, ref_lo, pred_lo

    def _confusion(self, num_labels: int, ignore_index: int) -> np.ndarray:
        """The (K+1, K+1) confusion matrix of the accumulated counts (see :func:`confusion_matrix`)."""
        _check_num_labels(num_labels)
        one_hot = np.eye(num_labels + 1, dtype=np.int64)
        ref_values = np.arange(self._counts.shape[0], dtype=np.int64) + self._ref_offset
        pred_values = np.arange(self._counts.shape[1], dtype=np.int64) + self._pred_offset
        ref_to_bin = one_hot[_bins(ref_values, num_labels)]
        ref_to_bin[ref_values == ignore_index] = 0
        return ref_to_bin.T @ self._counts @ one_hot[_bins(pred_values, num_labels)]


# ---------------------------------------------------------------------------------------------------------------------
# Helpers


def _check_num_labels(num_labels: int) -> None:
    if isinstance(num_labels, bool) or not isinstance(num_labels, (int, np.integer)) or num_labels < 1:
        raise ValueError(f"num_labels must be a positive integer, got {num_labels!r}")


def _as_id_arrays(prediction: Any, reference: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both inputs as integer numpy arrays of the same shape (CPU tensors and nested lists are accepted)."""
    pred, ref = np.asarray(prediction), np.asarray(reference)
    for what, array in (("predictions", pred), ("references", ref)):
        if array.dtype.kind not in "biu":
            raise ValueError(f"{what} must be integer class ids, got dtype {array.dtype}")
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    return pred, ref


def _bins(values: np.ndarray, num_labels: int) -> np.ndarray:
    """Bin (int64) of each class id: the id itself inside [0, K-1], K for every value outside."""
    values = values.astype(np.int64, copy=False)
    return np.where((values >= 0) & (values < num_labels), values, num_labels)


def _ratio(numerator: Any, denominator: Any) -> np.ndarray:
    """Elementwise numerator / denominator as float64, NaN where the denominator is 0 (no warning)."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _nanmean(values: np.ndarray) -> float:
    """Mean over the non-NaN values; NaN (without warning) when there are none."""
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def _class_names(id2label: Mapping[Any, str], num_labels: int) -> list[str]:
    labels = {int(key): str(name) for key, name in id2label.items()}
    missing = [i for i in range(num_labels) if i not in labels]
    if missing:
        raise ValueError(f"id2label has no name for class ids {missing}")
    return [labels[i] for i in range(num_labels)]
