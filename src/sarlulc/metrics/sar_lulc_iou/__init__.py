"""The ``sar_lulc_iou`` evaluate metric folder: ``sar_lulc_iou.py`` is the self-contained script, README.md its card."""

from .sar_lulc_iou import SarLulcIoU, confusion_matrix, metrics_from_confusion

__all__ = ["SarLulcIoU", "confusion_matrix", "metrics_from_confusion"]
