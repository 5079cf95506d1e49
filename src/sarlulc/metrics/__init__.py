"""`evaluate` metrics shipped with the package, loadable offline by path::

    import evaluate
    from sarlulc.metrics import metric_path

    metric = evaluate.load(metric_path())  # or sarlulc.metrics.load_metric()

:class:`SarLulcIoU`, :func:`confusion_matrix` and :func:`metrics_from_confusion` are exported lazily, so importing
this package does not import evaluate (which pulls in transformers' pipelines and takes seconds).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import evaluate

    from .sar_lulc_iou.sar_lulc_iou import SarLulcIoU, confusion_matrix, metrics_from_confusion

__all__ = ["SarLulcIoU", "confusion_matrix", "load_metric", "metric_path", "metrics_from_confusion"]

_LAZY = ("SarLulcIoU", "confusion_matrix", "metrics_from_confusion")


def metric_path() -> str:
    """Folder of the ``sar_lulc_iou`` metric (it holds ``sar_lulc_iou.py``), for ``evaluate.load(metric_path())``."""
    return str(Path(__file__).resolve().parent / "sar_lulc_iou")


def load_metric(**kwargs: Any) -> evaluate.EvaluationModule:
    """``evaluate.load(metric_path(), **kwargs)``: the ``sar_lulc_iou`` metric, offline (no Hub access)."""
    import evaluate

    return evaluate.load(metric_path(), **kwargs)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from .sar_lulc_iou import sar_lulc_iou

        return getattr(sar_lulc_iou, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
