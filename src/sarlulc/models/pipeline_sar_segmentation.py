"""SarSegmentationPipeline: LULC / water segmentation of SAR GeoTIFFs or arrays with one call.

transformers' stock ``image-segmentation`` pipeline reads images with PIL and converts them to 8-bit RGB, which turns a
float32 sigma0 GeoTIFF into zeros. This subclass reads rasters with rasterio (HH in band 1, HV in band 2), or takes
numpy arrays, and hands raw backscatter to :class:`SarImageProcessor`, which calibrates, clips, standardizes and pads
exactly as the checkpoint was trained.

Usage, with the package installed::

    import sarlulc  # registers the model, the processor and the "sar-segmentation" task
    from transformers import pipeline

    segmenter = pipeline("sar-segmentation", model="path/to/checkpoint", trust_remote_code=True)
    # or, without remote code: pipeline("image-segmentation", model=..., pipeline_class=SarSegmentationPipeline)
    segments = segmenter("tile.tif")                           # [{"score": None, "label": "Water", "mask": PIL}, ...]
    class_map = segmenter("tile.tif", return_class_map=True)   # (H, W) numpy array of class ids, 255 = no data

and without it (the checkpoint carries this file, see :func:`save_pipeline_files`)::

    segmenter = pipeline("sar-segmentation", model="path/to/checkpoint", trust_remote_code=True)

Pass ``task`` explicitly when offline: transformers cannot look a local folder's task up on the Hub.

A checkpoint whose ``config.json`` lists the task under ``custom_pipelines`` makes ``pipeline("sar-segmentation", ...)``
load this file from the checkpoint, and transformers then insists on ``trust_remote_code=True`` even when sarlulc is
installed; ``pipeline_class=SarSegmentationPipeline`` avoids the remote pipeline code.

The pipeline runs each input in one forward pass; it is meant for tiles. Whole scenes (thousands of pixels a side)
go through ``sarlulc.inference.predict_scene``, which tiles with overlap and writes a georeferenced map.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForSemanticSegmentation
from transformers.dynamic_module_utils import custom_object_save
from transformers.pipelines.image_segmentation import ImageSegmentationPipeline

from .image_processing_sar import (
    calibration_factor_from_tags,
    check_raster_bands,
    check_raster_dtype,
    check_raster_size,
    input_kind_from_metadata,
    input_kind_from_values,
    merge_raster_tags,
    polarizations_from_tags,
)

__all__ = [
    "SAR_SEGMENTATION_CUSTOM_PIPELINES",
    "SAR_SEGMENTATION_TASK",
    "SarSegmentationPipeline",
    "check_weights_file",
    "read_sar_raster",
    "register_sar_segmentation_pipeline",
    "save_pipeline_files",
]

SAR_SEGMENTATION_TASK = "sar-segmentation"
"""The custom pipeline task name."""

SAR_SEGMENTATION_CUSTOM_PIPELINES: dict[str, dict[str, Any]] = {
    SAR_SEGMENTATION_TASK: {
        "impl": "pipeline_sar_segmentation.SarSegmentationPipeline",
        "pt": ["AutoModelForSemanticSegmentation"],
        "type": "image",
    }
}
"""The ``custom_pipelines`` entry of a checkpoint's ``config.json``, in the form ``Pipeline.save_pretrained`` writes:
``impl`` is ``<module file>.<class>`` inside the checkpoint, ``pt`` names transformers Auto classes."""


def read_sar_raster(path: str | os.PathLike, num_channels: int = 1) -> dict[str, Any]:
    """Read a SAR raster (band 1 HH, optional band 2 HV) and what the processor needs to interpret it.

    Args:
        path: a GeoTIFF (or any GDAL raster).
        num_channels: bands to read: 1 (HH) or 2 (HH, HV).

    Returns:
        A dict with ``image`` (``(num_channels, H, W)`` raw values, the raster's dtype), ``valid_mask`` (``(H, W)``
        bool, False where any band read is nodata or masked by GDAL), ``nodata`` (band 1's declared nodata or None),
        ``input_kind`` (from the metadata below, or None) and ``calibration_factor`` (from the tags
        ``SARLULC_CALIBRATION_FACTOR``/``CALIBRATION_FACTOR``, or None).

        The input kind comes from the tag ``SARLULC_INPUT_KIND`` (dataset or band 1), else from ``INPUT_KIND``,
        ``SAR_INPUT_KIND``, ``SIGMA0_UNIT``, ``UNITS``, ``UNIT`` or band 1's unit type when their value names a kind
        (``"dB"``, ``"amplitude"``, ...): the rules of ``image_processing_sar.input_kind_from_metadata`` and
        ``calibration_factor_from_tags``, which ``sarlulc.data`` follows too.

    Raises:
        ImportError: rasterio is not installed.
        ValueError: the raster has fewer bands than ``num_channels``, an unknown ``SARLULC_INPUT_KIND`` or a
            calibration factor tag that is not a number (the message names the file and the tag).
    """
    try:
        import rasterio
        import rasterio.errors
    except ImportError as err:  # only raster inputs need it; arrays work without
        raise ImportError("reading rasters needs rasterio: pip install rasterio") from err

    if not Path(path).exists():
        raise ValueError(f"raster {path} does not exist")
    try:
        dataset = rasterio.open(path)
    except rasterio.errors.RasterioError as err:
        raise ValueError(f"raster {path} cannot be opened as a raster: {err}") from err
    with dataset:
        # The rules sarlulc.data applies to every scene (the command line, predict_scene): the same functions.
        try:
            declared = polarizations_from_tags(merge_raster_tags(dataset.tags(), dataset.tags(1)))
        except ValueError:
            declared = None
        check_raster_bands(dataset.count, num_channels, declared is not None, f"raster {path}")
        bands = list(range(1, num_channels + 1))
        for band in bands:
            check_raster_dtype(dataset.dtypes[band - 1], f"raster {path} band {band}")
        check_raster_size(dataset.height, dataset.width, num_channels, f"raster {path}")
        image = dataset.read(bands)
        valid_mask = (dataset.read_masks(bands) > 0).all(axis=0)
        tags = merge_raster_tags(dataset.tags(), dataset.tags(1))
        units = dataset.units[0] if dataset.units else None
        try:
            input_kind = input_kind_from_metadata(tags, units)
            factor = calibration_factor_from_tags(tags)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from err
        if input_kind is None:  # undeclared: judged from the dtype and the values, as for a scene
            sample = image[0][:: max(1, image.shape[1] // 512), :: max(1, image.shape[2] // 512)]
            input_kind = input_kind_from_values(dataset.dtypes[0], sample, dataset.nodatavals[0])
        return {
            "image": image,
            "valid_mask": valid_mask,
            "nodata": dataset.nodatavals[0],
            "input_kind": input_kind,
            "calibration_factor": factor,
        }


class SarSegmentationPipeline(ImageSegmentationPipeline):
    """Semantic segmentation of SAR backscatter with a sarlulc checkpoint (see the module docstring for loading).

    Inputs (one, or a list for several):

    * a path to a GeoTIFF: band 1 HH (and band 2 HV for two-channel models), in the units its metadata declares
      (``SARLULC_INPUT_KIND`` etc., see :func:`read_sar_raster`), else the processor's ``input_kind``; its nodata value
      and GDAL masks mark invalid pixels;
    * a numpy array (or CPU tensor) ``(H, W)`` or ``(C, H, W)`` in the processor's ``input_kind`` units;
    * a dict ``{"image": array, "valid_mask": (H, W) bool, "input_kind": ..., "nodata": ...}`` (all but ``image``
      optional), e.g. a row of a ``sarlulc.data`` tile dataset with ``input_kind="db"``.

    Call parameters:

    * ``input_kind``, ``nodata``, ``calibration_factor``: override what the raster or the processor says;
    * ``return_class_map`` (default False): return the ``(H, W)`` class-id map as a numpy array (uint8 when all ids
      and the ignore index fit, else int64) instead of per-class masks: what GIS tools want to write as a raster;
    * ``mask_invalid`` (default True): pixels invalid in the input (nodata, NaN, non-positive DN, masked) belong to
      no class mask and get the processor's ``ignore_index`` (255) in the class map; False assigns every pixel its
      predicted class, like the stock pipeline.

    Output, per input (as transformers' ``image-segmentation`` pipeline for semantic segmentation): a list with one
    ``{"score": None, "label": class name, "mask": PIL.Image}`` per class present, sorted by class id, where the mask
    is mode ``"L"``, the input's size, 255 on the class's pixels and 0 elsewhere. Batching (``batch_size > 1``)
    needs inputs of one size.

    Examples:
        >>> import numpy as np
        >>> from transformers import pipeline
        >>> from sarlulc import LULC_9, SarImageProcessor, SarLulcConfig, SarLulcForSemanticSegmentation
        >>> from sarlulc import SarSegmentationPipeline
        >>> SarLulcForSemanticSegmentation(SarLulcConfig(id2label=LULC_9.id2label)).save_pretrained("lulc-model")
        >>> _ = SarImageProcessor(input_kind="db").save_pretrained("lulc-model")  # a checkpoint: model + processor
        >>> # pipeline("sar-segmentation", model="lulc-model", trust_remote_code=True) is the same with remote code
        >>> segmenter = pipeline("image-segmentation", model="lulc-model", pipeline_class=SarSegmentationPipeline)
        >>> tile_db = np.random.default_rng(0).uniform(-25, -5, (64, 64)).astype(np.float32)  # HH sigma0 in dB
        >>> class_map = segmenter(tile_db, return_class_map=True)  # (H, W) class ids, 255 = invalid
        >>> class_map.shape, class_map.dtype
        ((64, 64), dtype('uint8'))
        >>> segments = segmenter(tile_db)  # one {"label", "score", "mask"} per class present
        >>> all(segment["label"] in LULC_9.names for segment in segments), segments[0]["mask"].size
        (True, (64, 64))
    """

    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_tokenizer = False
    _load_video_processor = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        check_weights_file(self.model)

    def check_model_type(self, supported_models: Any) -> None:
        """Accept any model: transformers' list holds its own segmentation models only, so the stock check would log
        a spurious error for ours. The pipeline needs (B, K, H, W) ``logits`` and ``config.id2label``."""

    def _sanitize_parameters(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        subtask = kwargs.pop("subtask", None)
        if subtask not in (None, "semantic"):
            raise ValueError(f"SarSegmentationPipeline does semantic segmentation only, got subtask={subtask!r}")
        preprocess = {k: kwargs.pop(k) for k in ("input_kind", "nodata", "calibration_factor") if k in kwargs}
        postprocess = {k: kwargs.pop(k) for k in ("return_class_map", "mask_invalid") if k in kwargs}
        # Anything else is left alone: pipeline() also hands loading options (local_files_only, ...) to __init__.
        return preprocess, {}, postprocess

    def preprocess(self, image: Any, **overrides: Any) -> dict[str, Any]:
        """Read/collect one input and run the image processor on it (a batch of one)."""
        processor = self.image_processor
        if isinstance(image, (str, os.PathLike)):
            item = read_sar_raster(Path(image), processor.num_channels)
        elif isinstance(image, dict):
            if "image" not in image:
                raise ValueError(f"a dict input needs an 'image' array, got keys {sorted(image)}")
            item = dict(image)
        elif isinstance(image, (np.ndarray, torch.Tensor)):
            item = {"image": image}
        else:
            raise ValueError(
                f"SarSegmentationPipeline takes a raster path, a numpy array (H, W)/(C, H, W) or a dict with 'image'; "
                f"got {type(image).__name__} (PIL images and URLs are 8-bit RGB and carry no backscatter)"
            )
        if not isinstance(image, (str, os.PathLike)) and isinstance(item.get("image"), (np.ndarray, torch.Tensor)):
            shape = tuple(item["image"].shape)
            if len(shape) >= 2:
                check_raster_size(shape[-2], shape[-1], shape[0] if len(shape) == 3 else 1, "the input array")
        item.update(overrides)
        kwargs = {key: item[key] for key in ("input_kind", "calibration_factor") if item.get(key) is not None}
        if "nodata" in item:  # None is meaningful (no nodata value), so only a missing key means "default"
            kwargs["nodata"] = item["nodata"]
        valid_mask = item.get("valid_mask")
        inputs = processor(
            images=[item["image"]],
            valid_masks=None if valid_mask is None else [valid_mask],
            return_tensors="pt",
            **kwargs,
        )
        inputs = inputs.to(self.dtype)
        height, width = np.shape(item["image"])[-2:]
        return {**inputs, "target_size": [(height, width)]}

    def _forward(self, model_inputs: dict[str, Any]) -> dict[str, Any]:
        outputs = self.model(pixel_values=model_inputs["pixel_values"])
        return {
            "logits": outputs.logits,
            "pixel_mask": model_inputs["pixel_mask"],
            "target_size": model_inputs["target_size"],
        }

    def postprocess(
        self, model_outputs: dict[str, Any], return_class_map: bool = False, mask_invalid: bool = True
    ) -> list[dict[str, Any]] | np.ndarray:
        target_size = model_outputs["target_size"]
        class_map = self.image_processor.post_process_semantic_segmentation(model_outputs, target_sizes=target_size)
        class_map = class_map[0].numpy()
        ignore_index = self.image_processor.ignore_index
        if mask_invalid:
            height, width = target_size[0]
            valid = model_outputs["pixel_mask"][0, :height, :width].numpy().astype(bool)
            class_map = np.where(valid, class_map, ignore_index)
        if return_class_map:
            fits_uint8 = 0 <= ignore_index <= 255 and len(self.model.config.id2label) <= 256
            return class_map.astype(np.uint8 if fits_uint8 else np.int64)

        from PIL import Image

        annotation = []
        for label in np.unique(class_map):
            if mask_invalid and label == ignore_index:
                continue
            mask = ((class_map == label) * 255).astype(np.uint8)
            name = self.model.config.id2label[int(label)]
            annotation.append({"score": None, "label": name, "mask": Image.fromarray(mask)})
        return annotation


def check_weights_file(model: Any) -> None:
    """Raise ``ValueError`` when the safetensors weights in the folder ``model`` was loaded from lack tensors the
    model has, or hold them in another shape.

    ``pipeline()`` loads the model without a load report, and transformers starts missing tensors at random with only
    a log line: the pipeline would segment with a random decoder. The file's header (names and shapes) is enough.
    """
    folder = Path(str(getattr(model, "name_or_path", "") or ""))
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files:
        return  # a model built in memory, or weights in another form: nothing to compare with
    from safetensors import safe_open

    stored: dict[str, tuple[int, ...]] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as weights:
                for key in weights.keys():
                    stored[key] = tuple(weights.get_slice(key).get_shape())
        except Exception as err:  # safetensors' own error type: a truncated or corrupt file
            raise ValueError(f"checkpoint {folder}: weights file {file.name} is damaged or truncated ({err})") from err
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    missing = sorted(key for key in expected if key not in stored)
    mismatched = sorted(key for key in expected if key in stored and stored[key] != expected[key])
    if missing or mismatched:
        raise ValueError(
            f"checkpoint {folder}: {len(missing)} weight tensor(s) missing from its weights and {len(mismatched)} of "
            f"another shape (e.g. {', '.join((missing + mismatched)[:3])}); the model would segment with random "
            "weights"
        )


def register_sar_segmentation_pipeline() -> None:
    """Register the ``"sar-segmentation"`` task with transformers (importing sarlulc does this).

    Afterwards ``pipeline("sar-segmentation", model=...)`` resolves to :class:`SarSegmentationPipeline` for checkpoints
    that do not carry the pipeline themselves.
    """
    from transformers.pipelines import PIPELINE_REGISTRY

    if PIPELINE_REGISTRY.supported_tasks.get(SAR_SEGMENTATION_TASK, {}).get("impl") is SarSegmentationPipeline:
        return  # registering again would only log an "overwriting" warning
    PIPELINE_REGISTRY.register_pipeline(
        SAR_SEGMENTATION_TASK,
        pipeline_class=SarSegmentationPipeline,
        pt_model=AutoModelForSemanticSegmentation,
        type="image",
    )


def save_pipeline_files(save_directory: str | os.PathLike, image_processor: Any | None = None) -> list[Path]:
    """Make a checkpoint folder carry the pipeline, so that ``pipeline("sar-segmentation", model=folder,
    trust_remote_code=True)`` works where sarlulc is not installed.

    Copies this module and the files it imports (``image_processing_sar.py``) into the folder, adds
    :data:`SAR_SEGMENTATION_CUSTOM_PIPELINES` to the folder's ``config.json`` (which must exist: save the model first)
    and, when given, saves ``image_processor`` (its ``preprocessor_config.json`` and remote code). The pipeline also
    needs that ``preprocessor_config.json``: save the processor the model was trained with into the folder, here or
    with its own ``save_pretrained``; without it ``pipeline(...)`` fails to load an image processor.

    Returns:
        The files written or updated.

    Raises:
        FileNotFoundError: the folder has no ``config.json``.
    """
    folder = Path(save_directory)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{folder} has no config.json; save the model there before adding the pipeline")
    written = [Path(p) for p in custom_object_save(SarSegmentationPipeline, folder)]
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["custom_pipelines"] = {**config.get("custom_pipelines", {}), **SAR_SEGMENTATION_CUSTOM_PIPELINES}
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    written.append(config_file)
    if image_processor is not None:
        written.extend(Path(p) for p in image_processor.save_pretrained(folder))
    return written
