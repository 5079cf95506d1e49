""":func:`predict_scene`: a whole scene in, georeferenced maps out (see :mod:`sarlulc.inference` for the method).

Contract
    Every check that can fail on the user's input runs before any file is created: arguments, destination, the scene
    (opened and checked once, :func:`probe_scene`), the checkpoint and its processor
    (:func:`~sarlulc.checkpoints.load_segmentation_checkpoint`), the scene's bands against the model's, the tile
    against the encoder stride, ``water=True`` against the model's classes. Then the tile rows of this process
    (:class:`~sarlulc.inference.distributed.ProcessShare`) run through the reader / model / writer pipeline into the
    output files (one process) or a part file that the main process merges (several).

    A scene whose blending band would exceed ``max_band_bytes`` (default
    :data:`~sarlulc.inference.blending.STRIP_BAND_BYTES`) is predicted in column strips, one after the other, each
    into its own column window of the outputs (:func:`~sarlulc.inference.blending.plan_strips`); the maps are
    byte-identical to a prediction in one band. Only a tile x classes that no strip can bound is refused up front.

    The calibration factor of a DN scene is, first match wins: the ``calibration_factor`` argument, the scene's tag
    or product metadata, the checkpoint processor's value (:func:`calibrated_input`).

    What the model was trained on (its processor's ``backscatter``, ``polarizations``, ``gsd``) is checked against
    the scene (:func:`~sarlulc.inference.compatibility.check_scene_against_model`: a warning, or an error with
    ``strict=True``). A scene at another GSD is predicted on the model's grid
    (:mod:`sarlulc.inference.resampling`) and its maps are put back on the scene's grid, unless
    ``output_grid="model"``. Every output carries the provenance tags of
    :func:`~sarlulc.inference.outputs.provenance_tags`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import rasterio
import torch
from tqdm.auto import tqdm

from ..checkpoints import load_segmentation_checkpoint, model_num_channels
from ..data.classes import scheme_for_id2label
from ..data.products import open_scene
from ..errors import UsageError
from ..models.image_processing_sar import SarImageProcessor
from .blending import STRIP_BAND_BYTES, plan_strips
from .compatibility import check_scene_against_model, check_scene_bands
from .distributed import ProcessShare, predict_distributed, process_state
from .grid import MIN_TILE, ColumnStrip, TileGrid, check_tiling
from .outputs import OUTPUT_BLOCK, OutputFiles, check_destination, output_paths, provenance_tags
from .pipeline import TileRowsJob, predict_strips
from .records import (
    PROBABILITY_MODES,
    Georeference,
    OutputSpec,
    PredictionReport,
    ProbabilityMode,
    RunStats,
    SceneInput,
)
from .resampling import OUTPUT_GRIDS, GridResampling, ModelGridScene, plan_resampling, regrid_outputs
from .tiled import check_tile_fits_model

__all__ = ["calibrated_input", "checked_device", "clamp_tile", "predict_scene", "probe_scene"]

_GDAL_CACHE_BYTES = 32 * 2**20  # GDAL defaults to 5 % of RAM, which a long scan would fill: RSS would grow with it
_CPU_BATCH_SIZE = 2  # measured at 512 px on 2 cores: as fast as 4 tiles per call, ~400 MB lower peak RSS
_GPU_BATCH_SIZE = 8
_GPU_MAX_WORKERS = 4


def predict_scene(
    model: Any,
    scene_path: str | os.PathLike,
    out_path: str | os.PathLike,
    tile: int = 512,
    overlap: int = 64,
    batch_size: int | None = None,
    image_processor: SarImageProcessor | str | os.PathLike | None = None,
    probabilities: ProbabilityMode | None = None,
    water: bool = False,
    device: str | torch.device | None = None,
    progress: bool | tqdm = True,
    *,
    overwrite: bool = False,
    input_kind: str | None = None,
    calibration_factor: float | None = None,
    bands: Sequence[int] | None = None,
    num_workers: int | None = None,
    polarizations: Sequence[str] | None = None,
    strict: bool = False,
    output_grid: str = "scene",
    max_band_bytes: int = STRIP_BAND_BYTES,
) -> PredictionReport:
    """Predict a land-cover (or water) map for a whole scene and write it as a GeoTIFF; see :mod:`sarlulc.inference`.

    Args:
        model: a loaded ``SarLulcForSemanticSegmentation`` (any model whose ``model(pixel_values=x).logits`` maps
            ``(B, C, H, W)`` to ``(B, K, H, W)`` and whose ``config.id2label`` names the K classes), the folder of
            a checkpoint saved with ``save_pretrained``, or a Hub model id (downloaded into the Hugging Face cache;
            ``HF_HUB_OFFLINE=1`` uses the cached copy only). A loaded model is put in eval mode for the call (its training
            flag is restored) and moved to ``device`` when one is given.
        scene_path: anything :func:`sarlulc.data.open_scene` opens: a scene GeoTIFF (band 1 HH, optional band 2
            HV), a 25 m mosaic tile (folder, file or archive), an L1.5/L2.1 product, a CEOS delivery. Its input kind
            (DN, linear power or dB) comes from its tags, dtype or values; the DN calibration factor from its tags or
            product metadata, else from the processor.
        out_path: the class map GeoTIFF to write; sibling outputs are named after it (:func:`output_paths`). A
            missing folder is created.
        tile: tile side in px, a multiple of 32.
        overlap: px shared by neighbouring tiles, ``0 <= overlap < tile / 2``; 64 of 512 hides the seams.
        batch_size: tiles per model call. Default: 2 on the CPU, where larger batches are no faster and only
            raise the memory peak, 8 on a GPU.
        image_processor: the preprocessing (clip range, mean/std per band) as a ``SarImageProcessor`` or a folder
            with ``preprocessor_config.json``. Default: the checkpoint's; without one, the processor defaults with a
            warning.
        probabilities: also write ``"classes"`` (K bands, probability x 255) or ``"confidence"`` (1 band).
        water: also write a water mask (1 water, 0 other, 255 nodata); the model must have a class named water.
        device: where the model runs. Default: a loaded model's device, ``cuda`` for a checkpoint when available,
            else ``cpu``; under ``accelerate launch``, each process's device.
        progress: show a progress bar over tiles (main process only), or a bar to advance by one per tile (a job's
            bar over many scenes; left open).
        overwrite: replace existing outputs.
        input_kind: ``"dn"``, ``"linear"`` or ``"db"``, overriding what the scene's metadata say.
        calibration_factor: CF in dB for DN scenes, overriding the scene's tag and the processor's value.
        bands: 1-based scene bands to read as (HH,) or (HH, HV), e.g. ``(1,)`` to use only HH of a dual-pol scene.
        num_workers: threads preparing tiles ahead of the model. Default: 1 on the CPU, where the model needs the
            cores; up to 4 with a GPU.
        polarizations: the polarizations to read, in channel order, e.g. ``("HH",)``: an alternative to ``bands``.
        strict: refuse a scene whose backscatter convention (sigma0/gamma0) or polarizations differ from the
            model's training data, instead of warning.
        output_grid: for a scene resampled to the model's GSD, write the maps on the ``"scene"``'s grid (its CRS,
            transform and shape; default) or on the ``"model"`` grid it was predicted on. Ignored otherwise.
        max_band_bytes: the blending band's budget: a scene whose band (classes x tile x width, float32) is larger
            is predicted in column strips whose bands fit it (the same maps, byte for byte).

    Returns:
        A :class:`PredictionReport`. Under several processes every process gets one (with its own tile counts).

    Raises:
        SarLulcDataError: the scene is missing, unreadable, corrupt, has a band count the model does not take
            (:class:`~sarlulc.inference.compatibility.SceneBandsError`), or, with ``strict``, another convention or
            polarizations than the model's training data.
        ValueError: a bad tile/overlap/batch size, a checkpoint that cannot be loaded, ``water=True`` for a model
            without a water class, a tile x classes whose band exceeds
            :data:`~sarlulc.inference.blending.MAX_BAND_BYTES` even in the narrowest column strip.
        FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError: the output exists (without
            ``overwrite``), is a folder, or cannot be written.

        All of these are raised before any file is created. An exception during the prediction (or Ctrl-C) removes
        every temporary file and is re-raised.

    Examples:
        >>> from sarlulc import LULC_9, SarImageProcessor, SarLulcConfig, SarLulcForSemanticSegmentation
        >>> from sarlulc.data.synthetic import generate_scene
        >>> from sarlulc.inference import predict_scene
        >>> _ = generate_scene("synth", size=256, progress=False, overwrite=True)  # a 256 x 256 DN scene
        >>> model = SarLulcForSemanticSegmentation(SarLulcConfig(id2label=LULC_9.id2label))  # untrained; or a folder
        >>> report = predict_scene(
        ...     model, "synth/scene.tif", "maps/lulc.tif", tile=128, overlap=32, image_processor=SarImageProcessor(),
        ...     probabilities="confidence", water=True, progress=False,
        ... )
        >>> str(report.path), sorted(report.extra_paths), report.tiles
        ('maps/lulc.tif', ['confidence', 'water'], 9)
    """
    _check_arguments(tile, overlap, batch_size, probabilities, num_workers, output_grid)
    if device is not None:
        checked_device(device)
    paths = output_paths(out_path, probabilities, water)
    check_destination(paths, str(scene_path), overwrite)
    scene = probe_scene(
        scene_path,
        input_kind=input_kind,
        bands=bands,
        calibration_factor=calibration_factor,
        polarizations=polarizations,
    )
    loaded = load_segmentation_checkpoint(model, image_processor=image_processor)
    net = loaded.model
    check_scene_bands(scene, loaded.processor, model_num_channels(net.config))
    check_scene_against_model(scene, loaded.processor, strict=strict)
    scene = calibrated_input(scene, loaded.processor)
    resampling = _plan_resampling(scene, loaded.processor)
    grid_georeference = scene.georeference if resampling is None else resampling.model
    tile = clamp_tile(tile, overlap, grid_georeference.height, grid_georeference.width)
    check_tile_fits_model(net.config, tile)
    scheme = scheme_for_id2label(net.config.id2label)
    on_model_grid = resampling is not None and output_grid == "model"
    spec = OutputSpec(
        paths=paths,
        scheme=scheme,
        probabilities=probabilities,
        water=water,
        tags=provenance_tags(
            model_name=str(loaded.folder or getattr(net.config, "_name_or_path", "") or type(net).__name__),
            scene=scene,
            scheme=scheme,
            tile=tile,
            overlap=overlap,
            processor=loaded.processor,
            output_grid="model" if on_model_grid else "scene",
            output_gsd=resampling.model_gsd if on_model_grid else scene.gsd,
            resampling=None if resampling is None else resampling.describe(),
        ),
    )
    # Predicted on the model grid and then put on the scene's: the model-grid maps go to hidden files first.
    run_spec = spec if resampling is None or on_model_grid else _model_grid_spec(spec)

    state = process_state()
    target = _target_device(device, state, net, given_model=isinstance(model, torch.nn.Module))
    batch_size = batch_size or (_CPU_BATCH_SIZE if target.type == "cpu" else _GPU_BATCH_SIZE)
    grid = TileGrid(grid_georeference.height, grid_georeference.width, tile, overlap)
    strips = plan_strips(
        grid, len(net.config.id2label), batch_size, OUTPUT_BLOCK, run_spec.layout.count, budget=max_band_bytes
    )
    share = ProcessShare.of(grid, state)
    paths["classes"].parent.mkdir(parents=True, exist_ok=True)

    was_training = net.training
    net.eval()
    if target != next(net.parameters()).device:
        net.to(target)
    started = time.perf_counter()
    own_bar = isinstance(progress, bool)
    progress_bar = (
        tqdm(
            total=len(share.run) * sum(len(strip.cols) for strip in strips),
            unit="tile",
            desc="predict_scene",
            disable=not progress or share.index != 0,
            leave=False,
        )
        if own_bar
        else progress
    )
    job = TileRowsJob(
        model=net,
        processor=loaded.processor,
        open_scene=scene.open if resampling is None else ModelGridScene.opener(scene.open, resampling),
        grid=grid,
        layout=run_spec.layout,
        rows=share.run,
        emit_from=share.own.start,
        device=target,
        batch_size=batch_size,
        num_workers=num_workers or (1 if target.type == "cpu" else min(_GPU_MAX_WORKERS, os.cpu_count() or 1)),
        progress_bar=progress_bar,
    )
    try:
        with rasterio.Env(GDAL_CACHEMAX=_GDAL_CACHE_BYTES):
            if state is None:
                stats = _predict_single(job, strips, run_spec, grid_georeference, overwrite or run_spec is not spec)
            else:
                stats = predict_distributed(
                    job, run_spec, grid_georeference, share.index, overwrite or run_spec is not spec, strips
                )
            if run_spec is not spec and share.index == 0:
                regrid_outputs(run_spec.paths, spec, resampling, overwrite)
    finally:
        if own_bar:
            progress_bar.close()
        net.train(was_training)
    output_shape = grid_georeference.shape if on_model_grid else scene.georeference.shape
    return PredictionReport(
        path=paths["classes"],
        extra_paths={key: path for key, path in paths.items() if key != "classes"},
        shape=output_shape,
        tile=tile,
        overlap=overlap,
        batch_size=batch_size,
        tiles=stats.tiles,
        tiles_skipped=stats.skipped,
        seconds_model=stats.seconds_model,
        seconds_waiting=stats.seconds_waiting,
        seconds_total=time.perf_counter() - started,
        pixels_written=output_shape[0] * output_shape[1],
        device=str(target),
        process_index=share.index,
        num_processes=share.count,
        predicted_shape=grid_georeference.shape,
    )


def probe_scene(
    scene_path: str | os.PathLike,
    *,
    input_kind: str | None = None,
    bands: Sequence[int] | None = None,
    calibration_factor: float | None = None,
    polarizations: Sequence[str] | None = None,
) -> SceneInput:
    """Open and check the scene once: its grid, bands, input kind, calibration (argument, else tag or product
    metadata, else default), convention, polarizations, GSD and provenance tags.

    Raises:
        SarLulcDataError: the scene is missing, unreadable or corrupt.
    """
    # The scene's integrity check reads across the whole scene: keep GDAL's cache small for it as well.
    with (
        rasterio.Env(GDAL_CACHEMAX=_GDAL_CACHE_BYTES),
        open_scene(
            scene_path,
            input_kind=input_kind,
            calibration_factor=calibration_factor,
            bands=bands,
            polarizations=polarizations,
        ) as scene,
    ):
        return SceneInput(
            path=str(scene_path),
            georeference=Georeference(scene.height, scene.width, scene.crs, scene.transform),
            num_channels=scene.count,
            input_kind=scene.input_kind,
            bands=tuple(scene.bands),
            calibration_factor=scene.calibration_factor,
            calibration_factor_source=scene.calibration_factor_source,
            backscatter=scene.backscatter,
            polarizations=tuple(scene.polarizations),
            gsd=scene.gsd if scene.crs is not None else None,
            source_tags=scene.provenance() if scene.crs is not None else {},
        )


def calibrated_input(scene: SceneInput, processor: SarImageProcessor) -> SceneInput:
    """The scene with its DN calibration factor decided: argument > scene tag > processor.

    A tagged scene (or a product with its own metadata) knows its own calibration; an untagged one follows the
    checkpoint's processor.
    """
    if scene.calibration_factor_source in ("argument", "tag", "metadata"):
        return scene
    return replace(scene, calibration_factor=processor.calibration_factor, calibration_factor_source="processor")


def clamp_tile(tile: int, overlap: int, height: int, width: int) -> int:
    """``tile`` made no larger than one tile needs to cover the scene (its longer side plus the border margins,
    rounded up to a multiple of 32): a 8192 px tile on a 512 px scene would only blend padding."""
    span = max(height, width) + 2 * (overlap // 2)
    needed = max(-(-span // MIN_TILE) * MIN_TILE, MIN_TILE)
    while overlap >= needed / 2:  # keep the overlap valid for the smaller tile
        needed += MIN_TILE
    return min(tile, needed)


def _check_arguments(
    tile: int,
    overlap: int,
    batch_size: int | None,
    probabilities: str | None,
    num_workers: int | None,
    output_grid: str = "scene",
) -> None:
    check_tiling(tile, overlap, batch_size)
    if output_grid not in OUTPUT_GRIDS:
        raise ValueError(f"output_grid must be one of {OUTPUT_GRIDS}, got {output_grid!r}")
    if probabilities is not None and probabilities not in PROBABILITY_MODES:
        raise ValueError(f"probabilities must be None or one of {PROBABILITY_MODES}, got {probabilities!r}")
    if num_workers is not None and num_workers < 1:
        raise ValueError(f"num_workers must be at least 1, got {num_workers}")


def _plan_resampling(scene: SceneInput, processor: SarImageProcessor) -> GridResampling | None:
    """The model grid of a scene at another GSD than the model's training data, else None."""
    if scene.gsd is None:
        return None
    return plan_resampling(scene.georeference, scene.gsd, getattr(processor, "gsd", None))


def _model_grid_spec(spec: OutputSpec) -> OutputSpec:
    """``spec`` with hidden model-grid files in place of the outputs (the same names in every process)."""
    paths = {key: path.with_name(f".{path.name}.model-grid.tif") for key, path in spec.paths.items()}
    return replace(spec, paths=paths)


def checked_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device`` that exists on this machine; :class:`UsageError` naming it otherwise."""
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as err:
        raise UsageError(f"device {device!r} is not a torch device (e.g. cpu, cuda, cuda:1, mps)") from err
    if target.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {device!r}: this machine has no CUDA GPU that torch can use; use cpu")
    if target.type == "cuda" and target.index is not None and target.index >= torch.cuda.device_count():
        raise UsageError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if target.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"device {device!r}: MPS is not available on this machine; use cpu")
    return target


def _target_device(
    device: str | torch.device | None, state: Any, net: torch.nn.Module, given_model: bool
) -> torch.device:
    """The device asked for, else each process's under ``accelerate launch``, else a given model's, else the GPU if
    there is one."""
    if device is not None:
        return checked_device(device)
    if state is not None:
        return state.device
    if given_model:
        return next(net.parameters()).device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _predict_single(
    job: TileRowsJob, strips: tuple[ColumnStrip, ...], spec: OutputSpec, georeference: Georeference, overwrite: bool
) -> RunStats:
    outputs = OutputFiles(spec, georeference)
    try:
        stats = predict_strips(job, strips, outputs.columns)
        outputs.commit(overwrite)
    except BaseException:
        outputs.discard()
        raise
    return stats
