"""Several processes on one scene (``accelerate launch scripts/predict.py ...``): dividing the tile rows, part files,
and their merge.

Contract
    :func:`process_state` is Accelerate's process state under ``accelerate launch`` (or an initialized
    ``torch.distributed``), else None: a single process never creates that process-wide singleton. Inside
    :func:`alone` it is None even under ``accelerate launch``: a multi-scene job
    (:mod:`~sarlulc.inference.jobs`) gives whole scenes to single processes that way.

    :meth:`ProcessShare.of` splits the tile rows between processes with Accelerate (``split_between_processes``);
    each process also runs the one or two tile rows before its share that reach into its first output rows, so its
    rows receive exactly the contributions they get in a single process, in the same order and in the same batches
    (batches never span tile rows).

    A wide scene's column strips (:func:`~sarlulc.inference.blending.plan_strips`) run inside each process's rows: the
    process predicts its rows strip after strip.

    GDAL cannot have two writers on one GeoTIFF, so :func:`predict_distributed` writes each process's rows into a
    temporary :class:`PartFile` in the destination folder (which must be visible to all processes); the main process
    then copies the parts into the final files (:func:`merge_parts`), block row by block row of one column strip's
    core after another (bounded memory at any width), and every process removes its part. The result equals the
    single-process output. Every outcome is shared between the processes, so a failure anywhere makes every process
    raise (and remove its part) instead of waiting forever for the failed one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

from .grid import ColumnStrip, TileGrid
from .outputs import OUTPUT_BLOCK, ColumnWindow, OutputFiles, geotiff_profile, remove_quietly, temporary_path
from .pipeline import TileRowsJob, predict_strips
from .records import Georeference, OutputSpec, PlaneLayout, RunStats

__all__ = ["PartFile", "ProcessShare", "alone", "merge_parts", "predict_distributed", "process_state"]

_WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def _launched_processes() -> int:
    for name in _WORLD_SIZE_VARIABLES:
        value = os.environ.get(name)
        if value and value.isdigit():
            return int(value)
    return 1


_ALONE: ContextVar[bool] = ContextVar("sarlulc_inference_alone", default=False)


@contextmanager
def alone() -> Iterator[None]:
    """Within this block, this process predicts on its own (:func:`process_state` is None), whatever launched it."""
    token = _ALONE.set(True)
    try:
        yield
    finally:
        _ALONE.reset(token)


def process_state() -> Any:
    """Accelerate's process state when this is one of several processes (``accelerate launch``), else None (also
    within :func:`alone`).

    A single process never creates the state: it is a process-wide singleton whose settings (CPU or GPU) a later
    ``Accelerator(...)`` in the same program could not change.
    """
    if _ALONE.get():
        return None
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if not distributed and _launched_processes() <= 1:
        return None
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    # PartialState only picks the CPU backend when told to (accelerate launch --cpu sets ACCELERATE_USE_CPU).
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())


@dataclass(frozen=True)
class ProcessShare:
    """This process's part of a scene's tile rows.

    Attributes:
        index, count: this process and how many share the scene.
        own: the tile rows whose finished scene rows this process writes.
        run: the tile rows it runs: ``own`` and the one or two before it that reach into its first output rows.
    """

    index: int
    count: int
    own: range
    run: range

    @classmethod
    def of(cls, grid: TileGrid, state: Any) -> ProcessShare:
        """The share of the process ``state`` (None: a single process, which owns every tile row)."""
        own = range(grid.num_rows)
        if state is None:
            return cls(index=0, count=1, own=own, run=own)
        with state.split_between_processes(list(own)) as share:
            own = range(share[0], share[-1] + 1) if share else range(0)
        run = range(grid.first_row_reaching(grid.top(own.start)), own.stop) if own else own
        return cls(index=state.process_index, count=state.num_processes, own=own, run=run)


class PartFile:
    """One process's scene rows ``[first_row, end_row)`` of every plane, in a temporary multi-band GeoTIFF next to
    ``final``."""

    def __init__(
        self, final: Path, rank: int, rows: tuple[int, int], georeference: Georeference, layout: PlaneLayout
    ) -> None:
        self.path = temporary_path(final, f"part{rank}")
        self.first_row, self.end_row = rows
        try:
            # Parts live for one run: fast compression keeps them small without slowing the writer down.
            profile = geotiff_profile(georeference.rows(self.first_row, self.end_row), layout.count, zlevel=1)
            self._dataset = rasterio.open(self.path, "w", **profile)
        except BaseException:
            remove_quietly(self.path)
            raise

    def columns(self, left: int, right: int) -> ColumnWindow:
        """A sink for the scene columns ``[left, right)`` of this part's rows (one column strip's core)."""
        return ColumnWindow(self.first_row, self.end_row, left, right, self._write_block_rows)

    def _write_block_rows(self, row: int, col: int, planes: np.ndarray) -> None:
        self._dataset.write(planes, window=Window(col, row - self.first_row, planes.shape[2], planes.shape[1]))

    def close(self) -> None:
        self._dataset.close()

    def discard(self) -> None:
        try:
            self._dataset.close()
        except Exception:  # the file goes away anyway; the original error matters
            pass
        remove_quietly(self.path)


def merge_parts(
    spec: OutputSpec,
    georeference: Georeference,
    parts: list[tuple[int, str]],
    overwrite: bool,
    strips: tuple[ColumnStrip, ...] | None = None,
) -> None:
    """Copy the parts ``(first scene row, path)``, in row order, into the final outputs, one block row of one column
    strip's core (default: the whole width) at a time."""
    outputs = OutputFiles(spec, georeference)
    columns = [(0, georeference.width)] if strips is None else [(strip.left, strip.right) for strip in strips]
    try:
        for left, right in columns:
            sink = outputs.columns(left, right)
            for first_row, path in parts:
                with rasterio.open(path) as source:
                    for row in range(0, source.height, OUTPUT_BLOCK):
                        rows = min(OUTPUT_BLOCK, source.height - row)
                        sink.write(first_row + row, source.read(window=Window(left, row, right - left, rows)))
        outputs.commit(overwrite)
    except BaseException:
        outputs.discard()
        raise


def _gather_errors(error: BaseException | None) -> list[tuple[int, str]]:
    """Exchange every process's error (None = success): ``(process index, message)`` of those that failed.

    Every process must call this, even after a failure of its own, or the others would wait for it forever.
    """
    from accelerate.utils import gather_object

    messages = gather_object([None if error is None else f"{type(error).__name__}: {error}"])
    return [(rank, message) for rank, message in enumerate(messages) if message is not None]


def _raise_if_any_failed(error: BaseException | None, failures: list[tuple[int, str]], what: str) -> None:
    if error is not None:
        raise error
    if failures:
        detail = "; ".join(f"process {rank}: {message}" for rank, message in failures)
        raise RuntimeError(f"{what} failed in another process ({detail})")


def predict_distributed(
    job: TileRowsJob,
    spec: OutputSpec,
    georeference: Georeference,
    rank: int,
    overwrite: bool,
    strips: tuple[ColumnStrip, ...] | None = None,
) -> RunStats:
    """Write this process's scene rows (``job.scene_rows``) into a part file, column strip after column strip
    (default: the whole width at once); the main process merges every part into the outputs of ``spec``.

    The parts are exchanged as ``(first row, path)`` and every outcome is shared, so that a failure anywhere makes
    every process raise (and remove its part) instead of waiting forever for the failed one.
    """
    from accelerate.utils import gather_object

    rows = job.scene_rows
    stats, part, error = RunStats(), None, None
    try:
        try:
            if rows[1] > rows[0]:
                part = PartFile(spec.paths["classes"], rank, rows, georeference, job.layout)
                stats = predict_strips(
                    job, strips or (job.grid.strip(0, job.grid.width, job.batch_size),), part.columns
                )
                part.close()
        except Exception as err:  # shared with every process below, then raised
            error = err
        _raise_if_any_failed(error, _gather_errors(error), "predict_scene")
        parts = gather_object([None if part is None else (rows[0], str(part.path))])
        merge_error = None
        if rank == 0:
            try:
                merge_parts(spec, georeference, [entry for entry in parts if entry is not None], overwrite, strips)
            except Exception as err:  # shared with every process below, then raised
                merge_error = err
        _raise_if_any_failed(merge_error, _gather_errors(merge_error), "merging the parts of predict_scene")
    finally:
        if part is not None:
            part.discard()
    return stats
