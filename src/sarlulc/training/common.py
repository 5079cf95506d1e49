"""Pieces the pretraining and fine-tuning entry points share: the input-size check, process coordination, logging,
progress bars, and the record of a run's arguments."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import datasets
import transformers
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from ..data.tiles import datasets_progress_bars
from ..errors import as_usage_error
from ..files import write_json

__all__ = [
    "TRAINING_ARGS_FILENAME",
    "check_encoder_input_size",
    "computed_on_main_process",
    "configure_logging",
    "library_progress_bars",
    "save_arguments",
]

T = TypeVar("T")

TRAINING_ARGS_FILENAME = "training_args.json"


def check_encoder_input_size(encoder_config: Any, size: int, what: str) -> None:
    """The encoder sees ``size`` x ``size`` inputs: ``SarMixMAEConfig.check_input_size`` decides whether they fit,
    and its ``ValueError`` becomes the user's error (``UsageError``), since the size is an option or the data's."""
    with as_usage_error():
        encoder_config.check_input_size(size, size, what=what)


def computed_on_main_process(accelerator: Accelerator, compute: Callable[[], T]) -> T:
    """Run ``compute`` on the main process only and hand its (picklable) result to every process.

    For dataset statistics: one pass over the data instead of one per process, the same numbers everywhere.
    """
    holder: list[Any] = [compute() if accelerator.is_main_process else None]
    if accelerator.num_processes > 1:
        broadcast_object_list(holder, from_process=0)
    return holder[0]


def configure_logging(accelerator: Accelerator) -> None:
    """INFO logs of the run on the main process, warnings and errors only from datasets/transformers elsewhere."""
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=logging.INFO
    )
    # accelerate reports every file of every checkpoint at INFO; its "Saving current state to ..." line is enough.
    logging.getLogger("accelerate.checkpointing").setLevel(logging.WARNING)
    verbosity = logging.WARNING if accelerator.is_local_main_process else logging.ERROR
    datasets.utils.logging.set_verbosity(verbosity)
    transformers.utils.logging.set_verbosity(verbosity)


@contextmanager
def library_progress_bars(enabled: bool) -> Iterator[None]:
    """Show or hide the progress bars of datasets (tiling, saving) and transformers (saving, loading) for a while."""
    transformers_enabled = transformers.utils.logging.is_progress_bar_enabled()
    if not enabled:
        transformers.utils.logging.disable_progress_bar()
    try:
        with datasets_progress_bars(enabled):
            yield
    finally:
        if transformers_enabled and not enabled:
            transformers.utils.logging.enable_progress_bar()


def save_arguments(accelerator: Accelerator, directory: str | Path, *records: Any) -> None:
    """Write the fields of every argument record to ``directory/training_args.json`` (main process), to document the
    run (``sarlulc push-to-hub`` reads it for the model card)."""
    if accelerator.is_main_process:
        values = {name: value for record in records for name, value in asdict(record).items()}
        write_json(Path(directory) / TRAINING_ARGS_FILENAME, values)
