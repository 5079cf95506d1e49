"""Whole-scene inference: sliding-window prediction over an ALOS-2 scene, written as a georeferenced class map.

:func:`predict_scene` turns a scene of any size (height and width) into a GeoTIFF of class ids in bounded memory::

    from sarlulc.inference import predict_scene

    report = predict_scene("runs/lulc/best", "scene.tif", "map.tif", tile=512, overlap=64, water=True)
    print(report.tiles, report.seconds_total, report.path)

or from the shell: ``sarlulc predict runs/lulc/best scene.tif map.tif --water`` (``scripts/predict.py`` takes the same
arguments and also runs under ``accelerate launch``). :func:`predict_tiled` does the same tiling and blending on a
tensor in memory, without any file.

The package, one module per responsibility (each module's docstring states its contract):

- :mod:`~sarlulc.inference.grid`: tile starts, reflection, the blending window, batches;
- :mod:`~sarlulc.inference.blending`: the blending band on the model's device, first argmax, output planes;
- :mod:`~sarlulc.inference.tiled`: the model step shared by both entry points, and :func:`predict_tiled`;
- :mod:`~sarlulc.inference.outputs`: output names and checks, atomic GeoTIFF writing in aligned block rows;
- :mod:`~sarlulc.inference.pipeline`: the reader / model / writer threads;
- :mod:`~sarlulc.inference.distributed`: tile rows split between processes, part files and their merge;
- :mod:`~sarlulc.inference.records`: the typed records they hand each other, and :class:`PredictionReport`;
- :mod:`~sarlulc.inference.compatibility`: the scene against what the model was trained on (convention, bands);
- :mod:`~sarlulc.inference.resampling`: a scene at another GSD seen on the model's grid, maps put back on the scene's;
- :mod:`~sarlulc.inference.scene`: :func:`predict_scene`. The model loader is :mod:`sarlulc.checkpoints`;
- :mod:`~sarlulc.inference.jobs`: many scenes in one resumable job (``sarlulc predict --output-dir``), above
  :func:`predict_scene`; :mod:`~sarlulc.inference.cog`: Cloud-Optimized GeoTIFF finalization;
  :mod:`~sarlulc.inference.catalog`: VRT mosaics per CRS and the STAC catalogue of a folder of maps.

How a scene is cut into tiles
    Square tiles of ``tile`` px (a multiple of the encoder stride, 32) step by ``stride = tile - overlap``. The grid
    starts ``margin = overlap // 2`` px before the scene's first row/column, so the scene's border pixels see
    ``margin`` px of context like every other tile edge; the last tile of each axis is moved back to end ``margin`` px
    past the scene, so no tile is spent on padding alone. Pixels outside the scene are read by *reflection* (row -1
    is row 1, the numpy ``"reflect"`` rule), never as zeros; reflected nodata stays nodata. A tile without a single
    valid pixel is not run (real scenes have wide nodata margins): its pixels are nodata in every output.

How overlapping tiles are blended
    Each tile's class probabilities (softmax of the logits) are multiplied by a separable weight window that is 1 in
    the tile's core and follows a raised-cosine ramp ``0.5 - 0.5 cos(pi (d + 0.5) / overlap)`` over the ``overlap``
    px at each edge (``d`` = distance to the edge in px). The weights never reach 0, and across a regular overlap
    the two ramps sum to exactly 1, so the blend slides smoothly from one tile's prediction to its neighbour's
    while each tile's core, where its context is best, counts fully. The weighted probabilities are summed and
    divided by the summed weights; the class map is their argmax. With ``overlap=0`` the window is all ones and the
    map is exactly each tile's own argmax.

    The sums live in a band of ``tile`` rows that slides down the scene; a scene too wide for one band (over 512 MiB)
    is predicted in column strips that run the very same tiles and batches, so memory is bounded in both dimensions
    and the maps are the same, byte for byte.

Products, conventions and GSD
    The scene is anything :func:`sarlulc.data.open_scene` opens (a GeoTIFF, a 25 m mosaic tile or its archive, an
    L1.5/L2.1 product, a CEOS delivery); ``bands=`` or ``polarizations=`` choose its bands. A checkpoint's image
    processor records what the model was trained on (``backscatter``, ``polarizations``, ``gsd``): a scene with
    another convention (gamma0 on a sigma0 model) or other polarizations is predicted with a one-line warning, or
    refused with ``strict=True``. A scene whose GSD differs from the model's by more than 5 % is read on the model's
    grid (coarsening averages linear power, refining interpolates it bilinearly) and its maps are resampled back onto
    the scene's grid (class ids and water by nearest neighbour, probabilities bilinearly), so the map has the scene's
    CRS, transform and shape; ``output_grid="model"`` keeps them on the model's grid instead.

Outputs (uint8, tiled 256 x 256, deflate-compressed, the scene's CRS and transform)
    ``OUT``
        class ids ``0..K-1`` with ``nodata=255`` on every pixel whose input is invalid, the class colour table
        (:meth:`ClassScheme.colormap` of :func:`~sarlulc.data.classes.scheme_for_id2label`: classes of an unknown
        scheme get a generated palette), the class names as band tags ``CLASS_<id>=<name>`` and in the dataset tag
        ``SARLULC_CLASS_NAMES`` (a JSON list).
    ``<stem>_probabilities.tif`` (``probabilities="classes"``)
        one band per class, probability x 255 rounded (GDAL scale 1/255, so tools that apply scales read [0, 1]).
    ``<stem>_confidence.tif`` (``probabilities="confidence"``)
        one band, the winning class's probability x 255 (scale 1/255).
    ``<stem>_water.tif`` (``water=True``)
        1 where the predicted class is water (``"water"`` of a water-task model, ``"Water"`` of a LULC model), 0
        elsewhere, 255 = nodata.

    Every file carries provenance tags: ``SARLULC_VERSION``, ``SARLULC_MODEL``, ``SARLULC_SCENE``, the scene's own
    record (``SARLULC_SOURCE_PRODUCT_ID``, ``_BACKSCATTER``, ``_POLARIZATIONS``, ``_CALIBRATION_FACTOR`` (the CF used),
    ``_ACQUISITION_DATE``, ...), the model's training data (``SARLULC_MODEL_BACKSCATTER``, ``_POLARIZATIONS``,
    ``_GSD_M``), the classes, the tiling and the output grid (``SARLULC_OUTPUT_GRID``, ``SARLULC_GSD_M``,
    ``SARLULC_RESAMPLING``).

    Probabilities go into sibling files rather than extra bands because a GeoTIFF colour table only works on a
    single-band file. Their bands use all 256 values, so nodata is marked by an internal mask band (GDAL reads it
    as the dataset mask) instead of a nodata value.

    Every file is written under a hidden temporary name in the destination folder and renamed (``os.replace``) only
    when all of them are complete, the class map last. An exception or ``KeyboardInterrupt`` removes the temporary
    files: only complete outputs ever appear. Existing outputs are refused unless ``overwrite=True``.

Pipeline and memory
    Three kinds of threads overlap the work. A **reader** thread (with ``num_workers`` helper threads, each with its
    own handle on the scene) reads tile windows with rasterio, calibrates them to sigma0 dB (the data layer's
    :meth:`~sarlulc.data.alos2.Alos2Scene.read_db`), has the image processor clip and standardize them, and stacks
    them into batches (pinned memory for CUDA) ahead of the model, a bounded queue apart. The **calling** thread
    runs the model under ``torch.inference_mode`` and blends on the model's device into a band of ``tile`` rows x
    scene width x K float32 that only holds the rows later tiles can still reach; when a tile row is finished, the
    rows no later tile touches are turned into uint8 planes on the device (so only bytes cross to the host) and
    handed to a **writer** thread, which writes them in whole 256-row blocks (every compressed block written once).
    Memory is therefore bounded by the width, not the scene's size: ``K x tile x width x 4`` bytes for the band
    (151 MB for 9 classes, 512 px tiles and an 8192 px wide scene; on the GPU for a GPU model), the model's
    activations for one batch, a row of tiles or two ahead, and a GDAL block cache capped at 32 MB during the call.
    A scene whose band would exceed 512 MiB (``max_band_bytes``) is predicted in column strips, each writing its
    columns into the outputs, so the width is bounded too (a 200,000 px wide scene: ~1.4 GB peak RSS instead of a
    3.6 GiB band).
    Measured (``scripts/benchmark.py scene``, BENCHMARKS.md): 1.4 GB peak RSS for a whole process predicting an
    8192 x 8192 scene on the CPU, ~0.75 GB of it the imports of torch and transformers.

Several processes (``accelerate launch scripts/predict.py ...``)
    The tile rows are split between processes with Accelerate (``split_between_processes``); each process also runs
    the one or two tile rows before its share that reach into its first output rows, so its rows receive exactly
    the contributions they get in a single process, in the same order and in the same batches (batches never span
    tile rows). GDAL cannot have two writers on one GeoTIFF, so each process writes its rows into a temporary part
    file in the destination folder (which must be visible to all processes); the main process then copies the parts,
    block row by block row, into the final files and removes them. The result equals the single-process output.
"""

from .outputs import output_paths
from .records import (
    NODATA_CLASS,
    PROBABILITY_MODES,
    Georeference,
    OutputSpec,
    PredictionReport,
    ProbabilityMode,
    SceneInput,
)
from .scene import predict_scene
from .tiled import predict_tiled

__all__ = [
    "NODATA_CLASS",
    "PROBABILITY_MODES",
    "Georeference",
    "OutputSpec",
    "PredictionReport",
    "ProbabilityMode",
    "SceneInput",
    "output_paths",
    "predict_scene",
    "predict_tiled",
]
