"""Experiment trackers: a dependency-free JSON-lines tracker, and the choice between it and accelerate's own.

:class:`JsonlTracker` implements accelerate's :class:`~accelerate.tracking.GeneralTracker`, so it plugs into
``Accelerator(log_with=[...])`` next to TensorBoard, W&B, ... and ``accelerator.log(values, step)`` reaches all of
them. It needs nothing beyond the standard library, which is why it is the default: a run always leaves a readable
record of its metrics, even on a machine without any tracking package.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from accelerate.tracking import GeneralTracker, get_available_trackers
from accelerate.utils import LoggerType

__all__ = ["JSONL_FILENAME", "JsonlTracker", "make_trackers", "read_jsonl_log", "validate_report_to"]

JSONL_FILENAME = "metrics.jsonl"


def _plain(value: Any) -> Any:
    """A JSON-safe scalar: tensors and numpy numbers become Python numbers, NaN/inf become None."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class JsonlTracker(GeneralTracker):
    """Append one JSON object per ``log`` call to ``<logging_dir>/<run_name>/metrics.jsonl``.

    Each line is ``{"step": int | null, "time": unix seconds, **values}``; the hyperparameters of
    ``store_init_configuration`` go to ``config.json`` next to it. The file is opened in append mode, so a resumed run
    continues the same log (steps between the last checkpoint and an interruption appear twice: readers should keep
    the last record of a step, as :func:`read_jsonl_log` does).
    """

    name = "jsonl"
    requires_logging_directory = True

    def __init__(self, run_name: str, logging_dir: str | Path) -> None:
        super().__init__()
        self.run_name = run_name
        self.directory = Path(logging_dir) / run_name
        self.path = self.directory / JSONL_FILENAME

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    @property
    def tracker(self) -> Path:
        return self.path

    def store_init_configuration(self, values: dict) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = {key: _plain(value) for key, value in values.items()}
        (self.directory / "config.json").write_text(json.dumps(config, indent=2, default=str))

    def log(self, values: dict, step: int | None = None, **kwargs: Any) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        record = {"step": step, "time": round(time.time(), 3)}
        record.update({key: _plain(value) for key, value in values.items()})
        with self.path.open("a") as stream:
            stream.write(json.dumps(record, default=str) + "\n")


def read_jsonl_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a :class:`JsonlTracker` file, keeping for every (step, keys) only the last one written.

    Records are returned in step order; a record written again after a resume replaces the earlier one.
    """
    latest: dict[tuple, dict[str, Any]] = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            keys = tuple(sorted(k for k in record if k not in ("step", "time")))
            latest.pop((record["step"], keys), None)  # re-insert so that the newest record wins its position
            latest[(record["step"], keys)] = record
    return sorted(latest.values(), key=lambda r: -1 if r["step"] is None else r["step"])


def validate_report_to(report_to: str) -> list[str]:
    """The tracker names of a ``--report_to`` value (comma separated), checked before any training starts.

    ``"jsonl"`` is ours; ``"all"`` means every tracker accelerate finds installed (plus ours); any other name must be an
    accelerate tracker that is installed. ``"none"`` disables tracking.

    Raises:
        ValueError: an unknown tracker, or one whose package is not installed.
    """
    names = [name.strip().lower() for name in report_to.split(",") if name.strip()]
    if not names or names == ["none"]:
        return []
    known = {str(t) for t in LoggerType if t != LoggerType.ALL}
    available = {str(t) for t in get_available_trackers()}
    for name in names:
        if name in ("jsonl", "all"):
            continue
        if name not in known:
            raise ValueError(f"unknown tracker {name!r} in --report_to; use jsonl, all, none or one of {sorted(known)}")
        if name not in available:
            raise ValueError(
                f"tracker {name!r} is not installed (installed: {sorted(available) or 'none'}); install its package "
                "or use --report_to jsonl"
            )
    return names


def make_trackers(report_to: str, run_name: str, logging_dir: str | Path) -> list[str | GeneralTracker]:
    """The ``log_with`` list for ``Accelerator``: names of accelerate trackers and our :class:`JsonlTracker`."""
    names = validate_report_to(report_to)
    trackers: list[str | GeneralTracker] = []
    if "jsonl" in names or "all" in names:
        trackers.append(JsonlTracker(run_name, logging_dir))
    trackers.extend(name for name in names if name != "jsonl")
    return trackers
