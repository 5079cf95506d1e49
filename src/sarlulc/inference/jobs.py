"""Many scenes in one job: inputs resolved to scenes, one map per scene, resume, COG outputs, the catalogue, processes.

Contract
    :func:`resolve_inputs` turns the command line's inputs into scene paths: a scene file, a JAXA product (folder,
    archive, summary file), a folder (searched with :func:`~sarlulc.data.tiles.find_scene_sources`: products and
    GeoTIFF scenes, label rasters left out), a glob (``data/*.tif``, quoted so that the shell leaves it alone), or
    ``@FILE``, a text file listing inputs of any of these kinds, one per line (blank lines and ``#`` comments skipped,
    relative paths relative to the list file). Duplicates are dropped; the order is kept.

    :func:`predict_scenes` writes one map per scene into ``output_dir``, named after the scene (:func:`map_name`: the
    product id of a product, else the file's stem; ``<parent>_<stem>`` where two scenes would get the same name),
    as a Cloud-Optimized GeoTIFF (:mod:`~sarlulc.inference.cog`) or a plain tiled GeoTIFF. Each scene runs through
    :func:`~sarlulc.inference.predict_scene`, with the per-scene options (``**scene_options``) passed on unchanged.

    Resume: a scene is *complete* when its class map and every sibling asked for exist under their final names,
    open, carry the ``SARLULC_SCENE`` tag of this scene, and their last block decodes (:func:`is_complete`). Final
    names only ever appear by a rename after the file was written and closed (``predict_scene`` and
    :func:`~sarlulc.inference.cog.finalize_cog`), so a killed job leaves hidden temporaries, never a partial map under
    a final name; a complete scene is skipped unless ``overwrite=True``.

    Failures: a scene that fails (unreadable, corrupt, wrong bands, ...) is reported with its reason and the job goes
    on with the others; :attr:`JobReport.failed` lists them. ``KeyboardInterrupt`` stops the job.

    Processes (``accelerate launch``): every process resolves the same inputs and the same pending scenes, then waits
    for the others so that none starts writing before all have decided what is pending. When there are at least as
    many pending scenes as processes, scenes are dealt round-robin and each process predicts whole scenes alone
    (:func:`~sarlulc.inference.distributed.alone`); with fewer, every pending scene is split by tile rows between all
    processes as ``predict_scene`` does for one scene, and the main process makes its COG. Either way exactly one
    process writes each output. Outcomes are gathered on every process; the main process then writes the mosaics and
    the STAC catalogue (:mod:`~sarlulc.inference.catalog`) once, over every map of the folder.

    Progress: one bar over all tiles of the scenes this process predicts (main process only).
"""

from __future__ import annotations

import ctypes
import gc
import glob
import os
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import rasterio
import torch
from rasterio.windows import Window
from tqdm.auto import tqdm

from ..checkpoints import load_segmentation_checkpoint
from ..data.products import open_scene
from ..errors import SarLulcDataError, UsageError
from .catalog import find_maps, write_mosaics, write_stac
from .cog import finalize_cog
from .distributed import ProcessShare, alone, process_state
from .grid import TileGrid
from .outputs import output_paths
from .records import PredictionReport
from .scene import predict_scene

__all__ = [
    "OUTPUT_FORMATS",
    "JobReport",
    "SceneOutcome",
    "SceneTask",
    "is_complete",
    "map_name",
    "plan_scenes",
    "predict_map",
    "predict_scenes",
    "resolve_inputs",
]

OutputFormat = Literal["cog", "gtiff"]
OUTPUT_FORMATS: tuple[str, ...] = ("cog", "gtiff")
_GLOB_CHARACTERS = frozenset("*?[")
_GTIFF_LABEL = "sarlulc-gtiff"


# ----------------------------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------------------------
def resolve_inputs(inputs: Sequence[str], exclude: str | os.PathLike | None = None) -> list[str]:
    """The scene paths of ``inputs`` (module docstring); files under ``exclude`` (the output folder) are left out.

    Raises:
        UsageError: an input that does not exist, a glob or folder that matches no scene, an unreadable list file.
    """
    found: list[str] = []
    for entry in inputs:
        found.extend(_resolve_one(entry, Path.cwd()))
    excluded = None if exclude is None else Path(exclude).resolve()
    scenes, seen = [], set()
    for path in found:
        resolved = Path(path).resolve()
        if excluded is not None and (resolved == excluded or excluded in resolved.parents):
            continue
        if str(resolved) not in seen:
            seen.add(str(resolved))
            scenes.append(path)
    if not scenes:
        raise UsageError(f"no scene found in {', '.join(inputs)}")
    return scenes


def _resolve_one(entry: str, base: Path) -> list[str]:
    from ..data.tiles import find_scene_sources

    if entry.startswith("@"):
        list_file = (base / entry[1:]).resolve() if not Path(entry[1:]).is_absolute() else Path(entry[1:])
        try:
            lines = list_file.read_text(encoding="utf-8").splitlines()
        except OSError as err:
            raise UsageError(f"cannot read the input list {entry[1:]}: {err.strerror or err}") from err
        found = []
        for line in lines:
            line = line.strip()
            if line and not line.startswith("#"):
                found.extend(_resolve_one(line, list_file.parent))
        return found
    path = Path(entry) if Path(entry).is_absolute() else base / entry
    if _GLOB_CHARACTERS & set(entry):
        matches = sorted(glob.glob(str(path), recursive=True))
        if not matches:
            raise UsageError(f"{entry} matches no file")
        return [scene for match in matches for scene in _resolve_one(match, base)]
    if path.is_dir() and not _is_product_folder(path):
        try:
            return [source.scene for source in find_scene_sources(path)]
        except SarLulcDataError as err:
            raise UsageError(str(err)) from err
    # A file, a product folder, an archive member path or a missing path: predict_scene's reader judges it, and a
    # missing one fails as that scene's own error.
    return [str(path)]


def _is_product_folder(path: Path) -> bool:
    from ..data.products import find_products

    return str(path) in find_products(path) if any(p.is_file() for p in path.iterdir()) else False


# ----------------------------------------------------------------------------------------------------------------------
# Planning
# ----------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SceneTask:
    """One scene of a job.

    Attributes:
        source: the scene's path, as handed to ``predict_scene``.
        name: the map's stem in the output folder.
        paths: the final outputs by kind (:func:`~sarlulc.inference.outputs.output_paths`).
        shape: ``(height, width)`` of the scene, or None when it could not be opened (then ``error`` says why).
        acquisition: the acquisition date or period (``YYYY-MM-DD[/YYYY-MM-DD]``) when the scene says.
        error: why the scene cannot be predicted, found while planning.
    """

    source: str
    name: str
    paths: dict[str, Path]
    shape: tuple[int, int] | None = None
    acquisition: str | None = None
    error: str | None = None

    def tiles(self, tile: int, overlap: int) -> int:
        """Tiles of the whole scene (0 when it could not be opened)."""
        if self.shape is None:
            return 0
        grid = TileGrid(self.shape[0], self.shape[1], tile, overlap)
        return grid.num_rows * grid.num_cols


@dataclass(frozen=True)
class SceneOutcome:
    """What happened to one scene: ``status`` is ``"done"``, ``"skipped"`` (complete already) or ``"failed"``."""

    name: str
    source: str
    status: Literal["done", "skipped", "failed"]
    path: Path
    reason: str | None = None
    seconds: float = 0.0
    tiles: int = 0
    """Tiles this process ran through the model for the scene (0 unless done)."""


@dataclass(frozen=True)
class JobReport:
    """The outcome of :func:`predict_scenes`.

    Attributes:
        outcomes: one per scene, in input order.
        mosaics: the VRT mosaics written (main process; empty elsewhere or with ``catalog=False``).
        collection: the STAC collection written, or None.
        seconds_total: wall time of the job on this process.
        seconds_cog: time spent turning GeoTIFFs into COGs on this process.
        process_index, num_processes: this process, and how many ran the job.
    """

    outcomes: list[SceneOutcome]
    mosaics: list[Path] = field(default_factory=list)
    collection: Path | None = None
    seconds_total: float = 0.0
    seconds_cog: float = 0.0
    process_index: int = 0
    num_processes: int = 1

    def with_status(self, status: str) -> list[SceneOutcome]:
        return [outcome for outcome in self.outcomes if outcome.status == status]

    @property
    def failed(self) -> list[SceneOutcome]:
        return self.with_status("failed")

    def table(self) -> str:
        """The summary: one line per scene (status, map, seconds, reason), then the counts."""
        width = max([len(outcome.name) for outcome in self.outcomes] + [5])
        lines = [f"{'scene':<{width}}  status   seconds  detail"]
        for outcome in self.outcomes:
            detail = outcome.reason if outcome.status == "failed" else str(outcome.path)
            seconds = f"{outcome.seconds:7.1f}" if outcome.status == "done" else "      -"
            lines.append(f"{outcome.name:<{width}}  {outcome.status:<7}  {seconds}  {detail}")
        counts = {status: len(self.with_status(status)) for status in ("done", "skipped", "failed")}
        lines.append(", ".join(f"{count} {status}" for status, count in counts.items()))
        return "\n".join(lines)


def map_name(source: str, product_id: str | None) -> str:
    """A map's stem: the product id of a product (its file name for a plain GeoTIFF), without the suffix."""
    name = product_id or Path(source).name
    for suffix in (".tiff", ".tif", ".tar.gz", ".tgz", ".zip", ".tar"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return "".join(character if character.isalnum() or character in "-_." else "_" for character in name)


def plan_scenes(
    sources: Sequence[str],
    output_dir: Path,
    probabilities: str | None,
    water: bool,
    scene_options: dict[str, Any],
) -> list[SceneTask]:
    """Open every scene once (without the integrity scan) for its name, grid and date; a scene that cannot be opened
    becomes a task with its ``error``."""
    opened: list[tuple[str, str, tuple[int, int] | None, str | None, str | None]] = []
    reader_options = {
        key: scene_options[key]
        for key in ("input_kind", "bands", "polarizations")
        if scene_options.get(key) is not None
    }
    for source in sources:
        try:
            with rasterio.Env(GDAL_CACHEMAX=32 * 2**20), open_scene(source, check=False, **reader_options) as scene:
                product = scene.product
                opened.append(
                    (source, map_name(source, product.product_id), scene.shape, product.describe_date(), None)
                )
        except (SarLulcDataError, OSError, ValueError) as err:
            opened.append((source, map_name(source, None), None, None, str(err)))
    names = [name for _, name, *_ in opened]
    tasks = []
    for source, name, shape, acquisition, error in opened:
        if names.count(name) > 1:
            name = f"{map_name(Path(source).parent.name, None)}_{name}"
        paths = output_paths(output_dir / f"{name}.tif", probabilities, water)
        tasks.append(SceneTask(source, name, paths, shape, acquisition, error))
    final_names = [task.name for task in tasks]
    duplicates = sorted({name for name in final_names if final_names.count(name) > 1})
    if duplicates:
        raise UsageError(f"several scenes would write the same map {duplicates[0]}.tif; give them distinct names")
    return tasks


def is_complete(task: SceneTask) -> bool:
    """Whether every output of ``task`` exists, opens, was made from this scene, and its last block decodes."""
    scene_name = Path(task.source).name
    for path in task.paths.values():
        if not path.is_file():
            return False
        try:
            with rasterio.open(path) as dataset:
                if dataset.tags().get("SARLULC_SCENE") != scene_name:
                    return False
                block_height, block_width = dataset.block_shapes[0]
                row = (dataset.height - 1) // block_height * block_height
                col = (dataset.width - 1) // block_width * block_width
                dataset.read(1, window=Window(col, row, dataset.width - col, dataset.height - row))
        except rasterio.errors.RasterioError:
            return False
    return True


# ----------------------------------------------------------------------------------------------------------------------
# One map
# ----------------------------------------------------------------------------------------------------------------------
def predict_map(
    model: Any,
    scene_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    output_format: OutputFormat = "cog",
    overwrite: bool = False,
    probabilities: str | None = None,
    water: bool = False,
    **scene_options: Any,
) -> tuple[PredictionReport, float]:
    """:func:`~sarlulc.inference.predict_scene` into ``out_path`` as a COG or a plain GeoTIFF; returns its report and
    the seconds the COG copy took.

    For a COG, ``predict_scene`` writes hidden GeoTIFFs next to the outputs (names every process agrees on, so that
    a row split over several processes writes them too), which the main process copies into COGs and renames.
    """
    finals = output_paths(out_path, probabilities, water)
    if output_format == "gtiff":
        report = predict_scene(
            model, scene_path, out_path, probabilities=probabilities, water=water, overwrite=overwrite, **scene_options
        )
        return report, 0.0
    if output_format != "cog":
        raise ValueError(f"output_format must be one of {OUTPUT_FORMATS}, got {output_format!r}")
    if not overwrite:
        from .outputs import refuse_existing

        refuse_existing(finals)
    out = Path(out_path)
    staging = out.with_name(f".{out.stem}.{_GTIFF_LABEL}{out.suffix or '.tif'}")
    report = predict_scene(
        model, scene_path, staging, probabilities=probabilities, water=water, overwrite=True, **scene_options
    )
    # The report names the files the caller asked for, not the GeoTIFFs they were copied from.
    report = replace(
        report, path=finals["classes"], extra_paths={key: path for key, path in finals.items() if key != "classes"}
    )
    if report.process_index != 0:
        return report, 0.0
    started = time.perf_counter()
    finalize_cog(output_paths(staging, probabilities, water), finals, overwrite)
    return report, time.perf_counter() - started


# ----------------------------------------------------------------------------------------------------------------------
# The job
# ----------------------------------------------------------------------------------------------------------------------
def release_freed_memory() -> None:
    """Give the memory a finished scene freed back to the system (glibc's ``malloc_trim``; a no-op elsewhere).

    A scene's blending band, queues and GDAL buffers are freed when it ends, but glibc keeps the freed arenas mapped,
    so without this the next scene's allocations land beside them and a job's peak RSS grows with the number of
    scenes (BENCHMARKS.md, multi-scene jobs)."""
    gc.collect()
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.malloc_trim(0)


def predict_scenes(
    model: Any,
    inputs: Sequence[str],
    output_dir: str | os.PathLike,
    *,
    output_format: OutputFormat = "cog",
    overwrite: bool = False,
    probabilities: str | None = None,
    water: bool = False,
    tile: int = 512,
    overlap: int = 64,
    device: str | torch.device | None = None,
    image_processor: Any = None,
    progress: bool = True,
    catalog: bool = True,
    describe_error: Callable[[BaseException], str] = str,
    **scene_options: Any,
) -> JobReport:
    """Predict every scene of ``inputs`` into ``output_dir`` (see the module docstring).

    Args:
        model: a checkpoint folder, Hub id or loaded model (loaded once for the whole job).
        inputs: scene files, products, folders, globs or ``@FILE`` lists (:func:`resolve_inputs`).
        output_dir: the folder of the maps, mosaics and STAC files (created if missing).
        output_format: ``"cog"`` (default) or ``"gtiff"``.
        overwrite: redo scenes whose outputs are complete (default: skip them).
        probabilities, water: the sibling outputs, as for ``predict_scene``.
        tile, overlap: the tiling, as for ``predict_scene``.
        device: where the model runs (default: each process's under ``accelerate launch``, else cuda if available).
        image_processor: as for ``predict_scene`` (default: the checkpoint's).
        progress: one bar over all tiles (main process only).
        catalog: write the mosaics and the STAC catalogue at the end.
        describe_error: the reason a failed scene shows in the summary (default ``str``; the command line passes one
            that names its own options instead of this function's arguments).
        **scene_options: passed to every ``predict_scene`` call unchanged (``batch_size``, ``num_workers``,
            ``input_kind``, ``calibration_factor``, ``bands``, ...).

    Raises:
        UsageError: no scene in ``inputs``, two scenes with the same map name, a bad ``output_format``.
        ValueError: a checkpoint that cannot be loaded; options ``predict_scene`` refuses.
    """
    if output_format not in OUTPUT_FORMATS:
        raise UsageError(f"format must be one of {', '.join(OUTPUT_FORMATS)}, got {output_format!r}")
    started = time.perf_counter()
    run_time = datetime.now(timezone.utc)
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise UsageError(f"--output-dir {output_dir} is a file; give a folder")
    output_dir.mkdir(parents=True, exist_ok=True)
    tasks = plan_scenes(resolve_inputs(inputs, exclude=output_dir), output_dir, probabilities, water, scene_options)
    state = process_state()
    rank, count = (0, 1) if state is None else (state.process_index, state.num_processes)

    loaded = load_segmentation_checkpoint(model, image_processor=image_processor)
    if device is None:
        device = state.device if state is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    options = dict(
        scene_options,
        image_processor=loaded.processor,
        tile=tile,
        overlap=overlap,
        device=device,
        probabilities=probabilities,
        water=water,
        output_format=output_format,
        overwrite=overwrite,
    )

    outcomes: dict[str, SceneOutcome] = {}
    pending = []
    for task in tasks:
        if task.error is not None:
            outcomes[task.name] = SceneOutcome(task.name, task.source, "failed", task.paths["classes"], task.error)
        elif not overwrite and is_complete(task):
            outcomes[task.name] = SceneOutcome(task.name, task.source, "skipped", task.paths["classes"])
        else:
            pending.append(task)
    if state is not None:
        state.wait_for_everyone()  # nobody writes before every process has decided what is pending

    whole_scenes = state is None or len(pending) >= count
    mine = pending[rank::count] if whole_scenes else pending
    total = sum(_tiles_of_this_process(task, tile, overlap, state, whole_scenes) for task in mine)
    bar = tqdm(total=total, unit="tile", desc="predict", disable=not progress or rank != 0)
    seconds_cog = 0.0
    try:
        for task in mine:
            scene_started = time.perf_counter()
            try:
                with alone() if whole_scenes else nullcontext():
                    report, cog_seconds = predict_map(
                        loaded.model, task.source, task.paths["classes"], progress=bar, **options
                    )
            except (SarLulcDataError, OSError, ValueError, RuntimeError) as err:
                reason = describe_error(err)
                outcomes[task.name] = SceneOutcome(task.name, task.source, "failed", task.paths["classes"], reason)
                continue
            seconds_cog += cog_seconds
            release_freed_memory()
            outcomes[task.name] = SceneOutcome(
                task.name,
                task.source,
                "done",
                task.paths["classes"],
                seconds=time.perf_counter() - scene_started,
                tiles=report.tiles,
            )
    finally:
        bar.close()

    if state is not None:
        outcomes = _gather_outcomes(outcomes, rank, whole_scenes)
    ordered = [outcomes[task.name] for task in tasks if task.name in outcomes]
    mosaics, collection = [], None
    if catalog and rank == 0:
        maps = find_maps(output_dir)
        if maps:
            mosaics = write_mosaics(output_dir, maps)
            dates = {task.name: task.acquisition for task in tasks if task.acquisition}
            collection = write_stac(output_dir, maps, acquisition=dates, run_time=run_time)
    if state is not None:
        state.wait_for_everyone()
    return JobReport(
        outcomes=ordered,
        mosaics=mosaics,
        collection=collection,
        seconds_total=time.perf_counter() - started,
        seconds_cog=seconds_cog,
        process_index=rank,
        num_processes=count,
    )


def _tiles_of_this_process(task: SceneTask, tile: int, overlap: int, state: Any, whole_scene: bool) -> int:
    if whole_scene or task.shape is None:
        return task.tiles(tile, overlap)
    grid = TileGrid(task.shape[0], task.shape[1], tile, overlap)
    return len(ProcessShare.of(grid, state).run) * grid.num_cols


def _gather_outcomes(outcomes: dict[str, SceneOutcome], rank: int, whole_scenes: bool) -> dict[str, SceneOutcome]:
    """Every process's outcomes on every process. Scenes split by rows are reported by the main process, which made
    their files (another process's view of them lacks the COG copy)."""
    from accelerate.utils import gather_object

    gathered: dict[str, SceneOutcome] = {}
    for process, entries in gather_object([(rank, list(outcomes.values()))]):
        if whole_scenes or process == 0:
            for outcome in entries:
                gathered.setdefault(outcome.name, outcome)
    return gathered
