"""Pieces the pretraining and fine-tuning entry points share: data and augmentation options, and the script runner."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import datasets
import transformers
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from transformers import HfArgumentParser

from ..data.alos2 import SarLulcDataError
from ..data.classes import ClassScheme
from ..data.tiles import SpatialSplit, datasets_progress_bars
from .augment import AugmentConfig
from .data import UsageError, load_tile_splits

__all__ = [
    "AugmentArguments",
    "TileArguments",
    "check_input_size",
    "computed_on_main_process",
    "configure_logging",
    "library_progress_bars",
    "run_script",
    "save_arguments",
]

T = TypeVar("T")


@dataclass
class TileArguments:
    """Where the training tiles come from and how scenes are cut into them."""

    _argument_group_name = "data"

    train_data: str = field(
        metadata={
            "help": "Training data: a dataset saved with save_to_disk (e.g. the OUT/tiles of `sarlulc demo`), a folder "
            "of GeoTIFF scenes (with NAME_labels.tif or labels.tif next to each scene), or one scene file."
        }
    )
    tile_size: int = field(default=256, metadata={"help": "Tile side in pixels when tiling scenes (a multiple of 32)."})
    tile_stride: int | None = field(
        default=None, metadata={"help": "Distance between tile origins when tiling scenes (default: tile_size)."}
    )
    min_valid_fraction: float = field(
        default=0.5, metadata={"help": "Skip scene tiles with a smaller share of valid (non-nodata) pixels."}
    )
    cache_dir: str | None = field(
        default=None, metadata={"help": "Where tiled scenes are cached as Arrow files (default: HF_DATASETS_CACHE)."}
    )

    def validate(self) -> None:
        if not Path(self.train_data).exists():
            raise UsageError(
                f"--train_data {self.train_data} does not exist (give a saved dataset folder, a scene folder or a scene)"
            )
        if self.tile_size < 32 or (self.tile_stride is not None and not 1 <= self.tile_stride <= self.tile_size):
            raise UsageError("--tile_size must be >= 32 and --tile_stride in [1, tile_size]")
        if not 0.0 <= self.min_valid_fraction <= 1.0:
            raise UsageError(f"--min_valid_fraction must be in [0, 1], got {self.min_valid_fraction}")

    def load_splits(self, scheme: ClassScheme, split: SpatialSplit | None, progress: bool) -> datasets.DatasetDict:
        """The tile splits of ``train_data`` (:func:`~sarlulc.training.data.load_tile_splits` with these options)."""
        return load_tile_splits(
            self.train_data,
            scheme=scheme,
            split=split,
            tile_size=self.tile_size,
            stride=self.tile_stride,
            min_valid_fraction=self.min_valid_fraction,
            cache_dir=self.cache_dir,
            progress=progress,
        )


@dataclass
class AugmentArguments:
    """Random augmentation of training tiles (drawn from the per-step generator, so resumes replay it)."""

    _argument_group_name = "augmentation"

    crop_size: int | None = field(
        default=None,
        metadata={"help": "Train on random square crops of this side (a multiple of 32; default: the tile)."},
    )
    flip: bool = field(default=True, metadata={"help": "Random horizontal/vertical flips (--no_flip disables)."})
    rotate90: bool = field(default=True, metadata={"help": "Random 90-degree rotations (--no_rotate90 disables)."})
    gain_jitter_db: float = field(
        default=0.0,
        metadata={
            "help": "Speckle-preserving intensity jitter: a random gain in linear power, i.e. an offset of up to +-this "
            "many dB per tile (0 disables)."
        },
    )

    def augment_config(self) -> AugmentConfig:
        try:
            return AugmentConfig(
                crop_size=self.crop_size, flip=self.flip, rotate90=self.rotate90, gain_db=self.gain_jitter_db
            )
        except ValueError as err:
            raise UsageError(str(err)) from err


def check_input_size(size: int, stride: int, what: str) -> None:
    """The model sees ``size`` x ``size`` inputs: they must tile the encoder's last stage."""
    if size % stride:
        raise UsageError(f"{what} {size} is not a multiple of the encoder stride {stride}")


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


def save_arguments(accelerator: Accelerator, directory: str | Path, *groups: Any) -> None:
    """Write every argument group to ``directory/training_args.json`` (main process), to document the run."""
    if accelerator.is_main_process:
        Path(directory).mkdir(parents=True, exist_ok=True)
        values = {name: value for group in groups for name, value in asdict(group).items()}
        (Path(directory) / "training_args.json").write_text(json.dumps(values, indent=2))


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the examples of a script's docstring as written and shows each option's default, unless the help already
    says what happens by default (the options whose default is None)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or "default" in text:
            return text
        return super()._get_help_string(action)


def run_script(
    dataclass_types: Sequence[type],
    main: Callable[..., Any],
    argv: Sequence[str] | None,
    prog: str,
    description: str,
) -> int:
    """Parse ``argv`` into the dataclasses, call ``main(*groups)``, and turn user errors into a message and exit 2.

    :class:`UsageError` and :class:`SarLulcDataError` are the user's to fix (a path, an option, a config, the data):
    they are printed as ``prog: error: ...`` without a traceback. Anything else is a bug and keeps its traceback.
    """
    parser = HfArgumentParser(dataclass_types, prog=prog, description=description, formatter_class=_HelpFormatter)
    groups = parser.parse_args_into_dataclasses(args=list(argv) if argv is not None else None)
    try:
        main(*groups)
    except (UsageError, SarLulcDataError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    return 0
