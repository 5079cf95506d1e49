"""The reader / model / writer pipeline that runs a share of a scene's tile rows into a row sink.

Contract
    :func:`predict_rows` runs the tile rows ``job.rows`` of a :class:`TileRowsJob` over the tile columns of its column
    strip (``job.strip``: the whole scene, or one strip of a wide scene, :mod:`~sarlulc.inference.grid`) and writes
    the scene rows finished by tile rows ``>= job.emit_from``, the strip's core columns of them, into a sink (anything
    with ``write(row, planes)``: a column window of the output files, or of one process's part file), in order. Three
    kinds of threads overlap the work:

    - a **reader** thread (:class:`TileReader`, with ``num_workers`` helper threads, each with its own handle on the
      scene) reads tile windows with rasterio, calibrates them to sigma0 dB (the data layer's
      :meth:`~sarlulc.data.alos2.Alos2Scene.read_db`), has the image processor clip and standardize them, and stacks
      them into batches (pinned memory for CUDA) ahead of the model, a bounded queue apart;
    - the **calling** thread runs the model under ``torch.inference_mode`` (:func:`~sarlulc.inference.tiled.run_batch`)
      and blends on the model's device (:class:`~sarlulc.inference.blending.RowBlender`); when a tile row is done,
      the rows no later tile touches are encoded into uint8 planes on the device and handed on;
    - a **writer** thread (:class:`RowWriter`) writes them into the sink.

    An exception in any thread stops the others (they poll a shared event), every thread is joined, and the exception
    is raised in the calling thread. :class:`~sarlulc.inference.records.RunStats` says what was done.

    :func:`predict_strips` runs a job strip after strip, each into its own column window of the sink.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from itertools import islice
from typing import Any, Protocol

import numpy as np
import torch
from rasterio.windows import Window
from tqdm.auto import tqdm

from ..data.alos2 import Alos2Scene
from ..models.image_processing_sar import SarImageProcessor
from .blending import BlendedRows, RowBlender, encode_planes
from .grid import ColumnStrip, TileGrid
from .records import PlaneLayout, RunStats
from .tiled import ModelClock, run_batch

__all__ = ["RowSink", "RowWriter", "TileBatch", "TileReader", "TileRowsJob", "predict_rows", "predict_strips"]

_PREFETCH_BATCHES = 2  # batches the reader may prepare ahead of the model
_PENDING_SLABS = 2  # finished row bands that may wait for the writer
_POLL_SECONDS = 0.1  # how often a blocked thread checks whether the others gave up


class RowSink(Protocol):
    """Where finished rows go: ``write(first scene row, uint8 planes (count, n, core width))``, rows in order."""

    def write(self, row: int, planes: np.ndarray) -> None: ...


@dataclass(frozen=True)
class TileRowsJob:
    """The tile rows one process runs, and everything it needs to run them.

    Attributes:
        model: the segmentation model, in eval mode, on ``device``.
        processor: clips and standardizes the calibrated tiles.
        open_scene: opens a new handle on the scene (one per reader thread).
        grid: the tile grid over the scene.
        layout: the uint8 planes each finished row band carries.
        rows: the tile rows to run.
        emit_from: the first tile row whose finished scene rows are written (earlier rows of ``rows`` only
            contribute to them).
        device: where the model runs and the blending band lives.
        batch_size: tiles per model call.
        num_workers: threads preparing tiles.
        progress_bar: advanced by one per tile, run or skipped.
        strip: the column strip whose tiles are run and whose core columns are written (None: the whole scene).
    """

    model: torch.nn.Module
    processor: SarImageProcessor
    open_scene: Callable[[], Alos2Scene]
    grid: TileGrid
    layout: PlaneLayout
    rows: range
    emit_from: int
    device: torch.device
    batch_size: int
    num_workers: int
    progress_bar: tqdm
    strip: ColumnStrip | None = None

    @property
    def scene_rows(self) -> tuple[int, int]:
        """The scene rows ``[first, end)`` this job writes."""
        return self.grid.top(self.emit_from), self.grid.top(self.rows.stop)


class _End:
    """Marks the end of a queue's stream."""


_END = _End()


@dataclass(frozen=True)
class _Failure:
    """An exception raised in a helper thread, passed to the calling thread to re-raise."""

    error: BaseException


def _put(channel: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Put ``item`` unless ``stop`` is set while waiting for space; True if it was put."""
    while not stop.is_set():
        try:
            channel.put(item, timeout=_POLL_SECONDS)
            return True
        except queue.Full:
            continue
    return False


@dataclass(frozen=True)
class TileBatch:
    """Preprocessed neighbouring tiles of one tile row, ready for the model.

    Attributes:
        row: tile row index.
        cols: tile column index of each tile in the batch (empty when none of them has a valid pixel).
        pixel_values: ``(len(cols), C, tile, tile)`` float32 normalized backscatter (pinned for CUDA), or None.
        valid: ``(len(cols), tile, tile)`` bool, True where the input pixel is valid, or None.
        skipped: neighbouring tiles left out for want of a valid pixel (not run; for the progress bar).
    """

    row: int
    cols: list[int]
    pixel_values: torch.Tensor | None
    valid: torch.Tensor | None
    skipped: int


class TileReader(threading.Thread):
    """Reads, calibrates, normalizes and batches the tiles of the job's tile rows, in order, ahead of the model.

    ``num_workers`` threads prepare batches in parallel (rasterio and numpy release the GIL), each with its own scene
    handle (GDAL handles must not be shared between threads); this thread keeps their order and puts them on
    ``batches``. Any exception is put on the queue for the calling thread to raise.
    """

    def __init__(self, job: TileRowsJob, batches: queue.Queue, stop: threading.Event) -> None:
        super().__init__(name="sarlulc-reader", daemon=True)
        self._job = job
        self._pin_memory = job.device.type == "cuda"
        self._batches = batches
        self._halt = stop
        self._local = threading.local()
        self._handles: list[Alos2Scene] = []
        self._handles_lock = threading.Lock()

    def _scene(self) -> Alos2Scene:
        scene = getattr(self._local, "scene", None)
        if scene is None:
            scene = self._local.scene = self._job.open_scene()
            with self._handles_lock:
                self._handles.append(scene)
        return scene

    def _read_tile(self, scene: Alos2Scene, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """sigma0 dB ``(C, tile, tile)`` and validity ``(tile, tile)`` at reflected source rows/cols of the scene."""
        top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        db, valid = scene.read_db(Window(left, top, right - left, bottom - top))
        # A tile reaching past the scene maps several of its pixels to one source pixel, so its source window is
        # smaller than the tile: gather the mirrored pixels.
        if db.shape[1:] != (len(rows), len(cols)):
            row_index, col_index = np.ix_(rows - top, cols - left)
            db, valid = db[:, row_index, col_index], valid[row_index, col_index]
        return db, valid

    def _prepare_batch(self, row: int, cols: range) -> TileBatch:
        """Read and preprocess the tiles ``cols`` of tile row ``row``; tiles without a valid pixel are left out."""
        scene = self._scene()
        grid = self._job.grid
        rows = grid.source_rows(row)
        run, values, masks = [], [], []
        for col in cols:
            db, valid = self._read_tile(scene, rows, grid.source_cols(col))
            if not valid.any():
                continue
            # The data layer has calibrated to dB; the processor applies the checkpoint's clip and standardization.
            features = self._job.processor.preprocess(
                db, valid_masks=valid, input_kind="db", nodata=None, pad_to_multiple_of=None
            )
            run.append(col)
            values.append(features["pixel_values"][0])
            masks.append(valid)
        if not run:
            return TileBatch(row, [], None, None, len(cols))
        return TileBatch(
            row, run, self._stack(values, torch.float32), self._stack(masks, torch.bool), len(cols) - len(run)
        )

    def _stack(self, arrays: list[np.ndarray], dtype: torch.dtype) -> torch.Tensor:
        stacked = torch.empty((len(arrays), *arrays[0].shape), dtype=dtype, pin_memory=self._pin_memory)
        np.stack(arrays, out=stacked.numpy())
        return stacked

    def _work(self) -> Iterator[tuple[int, range]]:
        cols = None if self._job.strip is None else self._job.strip.cols
        return self._job.grid.batches(self._job.rows, self._job.batch_size, cols)

    def run(self) -> None:
        workers = self._job.num_workers
        try:
            with ThreadPoolExecutor(workers, thread_name_prefix="sarlulc-read") as pool:
                work = self._work()
                pending = deque(pool.submit(self._prepare_batch, *unit) for unit in islice(work, workers))
                while pending and not self._halt.is_set():
                    batch = pending.popleft().result()
                    following = next(work, None)
                    if following is not None:
                        pending.append(pool.submit(self._prepare_batch, *following))
                    if not _put(self._batches, batch, self._halt):
                        break
                for future in pending:
                    future.cancel()
            _put(self._batches, _END, self._halt)
        except BaseException as err:  # handed to the calling thread, which raises it
            _put(self._batches, _Failure(err), self._halt)
        finally:
            for scene in self._handles:
                scene.close()


class RowWriter(threading.Thread):
    """Writes finished row bands ``(row, planes)`` from ``slabs`` into the sink until the end marker."""

    def __init__(self, sink: RowSink, slabs: queue.Queue, stop: threading.Event) -> None:
        super().__init__(name="sarlulc-writer", daemon=True)
        self._sink = sink
        self._slabs = slabs
        self._halt = stop
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                try:
                    item = self._slabs.get(timeout=_POLL_SECONDS)
                except queue.Empty:
                    continue
                if item is _END:
                    return
                self._sink.write(*item)
        except BaseException as err:  # the calling thread raises it
            self.error = err
            self._halt.set()


def _next_batch(batches: queue.Queue, reader: TileReader, writer: RowWriter) -> Any:
    """The reader's next item; raises if the writer failed (it stops the reader, which then sends nothing more)."""
    while True:
        try:
            return batches.get(timeout=_POLL_SECONDS)
        except queue.Empty:
            if writer.error is not None:
                raise writer.error from None
            if not reader.is_alive() and batches.empty():
                raise RuntimeError("the reader thread stopped without a result") from None


def predict_rows(job: TileRowsJob, sink: RowSink) -> RunStats:
    """Run the job's tile rows and write the scene rows it finishes into ``sink``; see the module docstring."""
    tiles = skipped = 0
    seconds_waiting = 0.0
    stop = threading.Event()
    batches: queue.Queue = queue.Queue(maxsize=_PREFETCH_BATCHES)
    slabs: queue.Queue = queue.Queue(maxsize=_PENDING_SLABS)
    reader = TileReader(job, batches, stop)
    writer = RowWriter(sink, slabs, stop)
    dtype = next(job.model.parameters()).dtype
    clock = ModelClock(job.device)
    layout = job.layout

    def hand_over(item: Any) -> None:
        if not _put(slabs, item, stop):
            raise writer.error or RuntimeError("the writer thread stopped")

    def encoded(rows: BlendedRows) -> tuple[int, np.ndarray]:
        return rows.first_row, encode_planes(rows, layout)

    def finish(blender: RowBlender, row: int) -> None:
        """Close tile row ``row``; its finished scene rows go to the writer when this job writes them."""
        finished = blender.finish(row, encoded if row >= job.emit_from else None)
        if finished is not None:
            hand_over(finished)

    reader.start()
    writer.start()
    try:
        with torch.inference_mode():
            blender = RowBlender(job.grid, layout.num_labels, job.rows.start, job.device, job.strip)
            current = job.rows.start
            while True:
                waited = time.perf_counter()
                item = _next_batch(batches, reader, writer)
                seconds_waiting += time.perf_counter() - waited
                if isinstance(item, _Failure):
                    raise item.error
                if item is _END:
                    break
                while current < item.row:
                    finish(blender, current)
                    current += 1
                if item.cols:
                    run_batch(
                        job.model,
                        blender,
                        item.pixel_values,
                        item.valid,
                        item.row,
                        item.cols,
                        device=job.device,
                        dtype=dtype,
                        clock=clock,
                    )
                tiles += len(item.cols)
                skipped += item.skipped
                job.progress_bar.update(len(item.cols) + item.skipped)
            while current < job.rows.stop:
                finish(blender, current)
                current += 1
        hand_over(_END)
        writer.join()
        if writer.error is not None:
            raise writer.error
        return RunStats(tiles=tiles, skipped=skipped, seconds_model=clock.total(), seconds_waiting=seconds_waiting)
    finally:
        stop.set()
        reader.join()
        writer.join()


def predict_strips(
    job: TileRowsJob, strips: tuple[ColumnStrip, ...], columns: Callable[[int, int], RowSink]
) -> RunStats:
    """Run the job over each column strip in turn, writing its core into ``columns(strip.left, strip.right)``."""
    tiles = skipped = 0
    seconds_model = seconds_waiting = 0.0
    for strip in strips:
        stats = predict_rows(replace(job, strip=strip), columns(strip.left, strip.right))
        tiles, skipped = tiles + stats.tiles, skipped + stats.skipped
        seconds_model, seconds_waiting = seconds_model + stats.seconds_model, seconds_waiting + stats.seconds_waiting
    return RunStats(tiles=tiles, skipped=skipped, seconds_model=seconds_model, seconds_waiting=seconds_waiting)
