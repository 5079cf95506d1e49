"""Publishing a fine-tuned segmentation checkpoint on the Hugging Face Hub (the logic behind ``sarlulc push-to-hub`` and
``scripts/push_to_hub.py``).

A ``sarlulc finetune`` output folder holds much more than a Hub repository should: ``step_N`` checkpoints with
optimizer states, logs, evaluation reports, the run's arguments with local paths. Publishing it takes four steps:

1. :func:`load_trained_run` checks the folder and collects what to upload: ``config.json``, the safetensors weights
   (one file or shards with their index), ``preprocessor_config.json``, every remote-code ``.py`` file that ``auto_map``
   and ``custom_pipelines`` reference (and the files those import), plus the run's small JSON summaries when present.
   Anything missing is reported at once, by name, as a :class:`~sarlulc.errors.UsageError`.
2. :func:`build_model_card` fills the Jinja template shipped in the package (``sarlulc/templates/sar_lulc_template.md``,
   read with :mod:`importlib.resources`, so it works from an installed wheel; any other file can replace it) with
   what the folder says
   about the run: metrics (``all_results.json``, or ``eval_results.json`` of a ``best`` folder) as ``model-index``
   entries, the preprocessing from ``preprocessor_config.json``, the architecture and refinements from
   ``config.json``, the classes with their colours, the training setup from ``training_args.json``, and whether the
   training scenes were synthetic (the ``SARLULC_SYNTHETIC`` tag that :mod:`sarlulc.data.synthetic` writes).
3. :func:`write_upload_folder` copies exactly those files and the card (``README.md``) into a folder.
4. :func:`push_to_hub` uploads that folder in one commit with ``HfApi().upload_folder``, or, for a dry run, leaves the
   folder where the caller asked and uploads nothing.

Example::

    from sarlulc.hub import CardOptions, push_to_hub

    push_to_hub("runs/lulc", "me/sar-lulc-tiny", dry_run_dir="hub_preview")          # look before uploading
    push_to_hub("runs/lulc", "me/sar-lulc-tiny", options=CardOptions(license="cc-by-4.0"))
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import datasets
import rasterio
import torch
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.errors import HfHubHTTPError, HFValidationError
from huggingface_hub.utils import validate_repo_id
from rasterio.errors import RasterioIOError
from transformers.dynamic_module_utils import get_relative_imports
from transformers.utils import CONFIG_NAME, IMAGE_PROCESSOR_NAME, SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME

from .data.classes import ClassScheme
from .data.tiles import find_scene_sources
from .errors import SarLulcDataError, UsageError
from .models.configuration_sar_lulc import SarLulcConfig
from .models.image_processing_sar import SarImageProcessor
from .models.modeling_sar_lulc import SarLulcForSemanticSegmentation
from .models.pipeline_sar_segmentation import SAR_SEGMENTATION_TASK
from .training.batches import is_saved_dataset
from .training.evaluation import scheme_for_model
from .training.finetuning import metric_key
from .training.loop import ALL_RESULTS_FILENAME, BEST_DIRNAME

__all__ = [
    "HUB_ERRORS",
    "TEMPLATE_NAME",
    "CardOptions",
    "PushResult",
    "TrainedRun",
    "build_model_card",
    "default_template",
    "detect_synthetic",
    "load_trained_run",
    "push_to_hub",
    "write_upload_folder",
]

TEMPLATE_NAME = "sar_lulc_template.md"
"""The model card template in the package's ``templates`` folder (package data, see :func:`default_template`)."""

# What a failed upload raises that is not the user's input: OSError (HTTP status errors, offline mode, the disk) and,
# for unreachable hosts, the HTTP client's own error class, which HfHubHTTPError derives from (httpx or httpx2, by
# huggingface_hub version). The command line reports them in one line with exit status 1.
HUB_ERRORS = (OSError, *HfHubHTTPError.__bases__)

CARD_NAME = "README.md"
# The best model's folder (OUTPUT/best) has this instead of all_results.json (sarlulc.training.loop writes both).
BEST_RESULTS_FILENAME = "eval_results.json"
TRAINING_ARGS_FILENAME = "training_args.json"
# Small, path-free summaries of the run worth publishing next to the weights; training_args.json stays local because
# it records the machine's paths.
SUMMARY_FILES = (ALL_RESULTS_FILENAME, BEST_RESULTS_FILENAME, "class_frequencies.json", "band_statistics.json")
# Auto classes a published checkpoint must declare so that it loads with only trust_remote_code=True.
REQUIRED_CONFIG_AUTO_CLASSES = ("AutoConfig", "AutoModelForSemanticSegmentation")
REQUIRED_PROCESSOR_AUTO_CLASSES = ("AutoImageProcessor",)
# The tag sarlulc.data.synthetic writes into every synthetic scene.
SYNTHETIC_TAG = "SARLULC_SYNTHETIC"

CARD_TAGS = ("sar", "alos-2", "palsar-2", "l-band", "land-cover", "lulc", "segmentation", "remote-sensing", "sarlulc")
EVAL_TASK_TYPE = "semantic-segmentation"
# Scalar metrics of a run (keys of all_results.json without "eval_"): model-index metric type and display name.
SUMMARY_METRICS = (
    ("mean_iou", "mean_iou", "mIoU"),
    ("mean_accuracy", "mean_accuracy", "mean class accuracy"),
    ("overall_accuracy", "accuracy", "overall pixel accuracy"),
    ("iou_water", "iou", "IoU_water"),
    ("f1_water", "f1", "F1_water"),
    ("precision_water", "precision", "precision_water"),
    ("recall_water", "recall", "recall_water"),
)
# Hyperparameters from training_args.json shown on the card, when the run recorded them.
CARD_HYPERPARAMETERS = (
    "learning_rate",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_train_epochs",
    "max_train_steps",
    "warmup_ratio",
    "weight_decay",
    "layer_decay",
    "tile_size",
    "crop_size",
    "mixed_precision",
    "seed",
)
PAPER_RESULTS = {"lulc_miou": 50.26, "water_iou_pretrained": 93.64, "water_iou_scratch": 90.06}
"""What the paper reports on real Japan-wide ALOS-2 data (docs/method.md, section 4), in percent."""

INPUT_KIND_DESCRIPTIONS = {
    "dn": "ALOS-2 L1.5/L2.1 amplitude digital numbers",
    "linear": "sigma0 as linear power",
    "db": "sigma0 in dB",
}


@dataclass(frozen=True)
class CardOptions:
    """What the output folder cannot tell about a run; everything is optional.

    Attributes:
        license: the Hub license id of the weights.
        dataset_name, dataset_type: the evaluation dataset in ``model-index`` (type: a Hub dataset id if it has one);
            default: a description of the synthetic or real ALOS-2 data the run used.
        dataset_split: the split the metrics were computed on; default: the run's ``eval_split`` (``validation``).
        synthetic: whether the training scenes were synthetic; ``None`` detects it (:func:`detect_synthetic`).
        base_model: Hub id of the SAR-W-MixMAE pretraining checkpoint the encoder started from, if published.
        class_scheme: class scheme (name or JSON file) for the class colours; default: the run's, else the built-in
            scheme with the model's class names.
        template_path: a Jinja card template file; default: the one shipped with the package (:func:`default_template`).
    """

    license: str = "apache-2.0"
    dataset_name: str | None = None
    dataset_type: str | None = None
    dataset_split: str | None = None
    synthetic: bool | None = None
    base_model: str | None = None
    class_scheme: str | None = None
    template_path: str | Path | None = None


@dataclass(frozen=True)
class TrainedRun:
    """A checked output folder and what it says about its run (see :func:`load_trained_run`).

    Attributes:
        directory: the output folder.
        files: paths relative to ``directory`` that belong on the Hub, sorted (the card is not among them).
        config: the model configuration.
        processor: the image processor (the input preprocessing).
        metrics: the run's results (``all_results.json`` or ``eval_results.json``); empty when there are none.
        training_args: the run's arguments (``training_args.json``); empty when not recorded.
    """

    directory: Path
    files: list[str]
    config: SarLulcConfig
    processor: SarImageProcessor
    metrics: dict[str, Any] = field(default_factory=dict)
    training_args: dict[str, Any] = field(default_factory=dict)

    @property
    def task(self) -> str:
        """``"lulc"`` or ``"water"``: as the run recorded it, else water for a two-class model."""
        return self.training_args.get("task") or ("water" if self.config.num_labels == 2 else "lulc")


@dataclass(frozen=True)
class PushResult:
    """What :func:`push_to_hub` did.

    Attributes:
        files: the uploaded (or, in a dry run, written) paths, relative to the repository root, sorted.
        folder: the dry run's folder; ``None`` after an upload.
        commit_url: the upload's commit; ``None`` in a dry run.
    """

    files: list[str]
    folder: Path | None = None
    commit_url: str | None = None


# ----------------------------------------------------------------------------------------------------------------------
# Checking an output folder
# ----------------------------------------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict[str, Any]:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UsageError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(content, dict):
        raise UsageError(f"{path} must hold a JSON object, got {type(content).__name__}")
    return content


def _code_references(owner: str, auto_map: Mapping[str, Any]) -> dict[str, str]:
    """``{module file: why it is needed}`` for the local classes of an ``auto_map``-like mapping.

    A reference is ``module.Class``; transformers also allows ``[slow, fast]`` pairs, ``None`` and ``repo--module.Class``
    for code that lives in another repository, which needs no local file.
    """
    needed = {}
    for auto_class, references in auto_map.items():
        for reference in references if isinstance(references, (list, tuple)) else [references]:
            if isinstance(reference, str) and "--" not in reference:
                needed[f"{reference.rsplit('.', 1)[0]}.py"] = f"{auto_class} in {owner}"
    return needed


def _weight_files(directory: Path, problems: list[str]) -> list[str]:
    index_path = directory / SAFE_WEIGHTS_INDEX_NAME
    if index_path.is_file():
        shards = sorted(set(_read_json(index_path).get("weight_map", {}).values()))
        if not shards:
            problems.append(f"{SAFE_WEIGHTS_INDEX_NAME} lists no weight shards")
        problems.extend(
            f"{shard} (a weight shard listed in {SAFE_WEIGHTS_INDEX_NAME})"
            for shard in shards
            if not (directory / shard).is_file()
        )
        return [SAFE_WEIGHTS_INDEX_NAME, *shards]
    if not (directory / SAFE_WEIGHTS_NAME).is_file():
        problems.append(f"{SAFE_WEIGHTS_NAME} (the weights; save the model with save_pretrained)")
    return [SAFE_WEIGHTS_NAME]


def _remote_code_files(
    directory: Path, config: Mapping[str, Any], processor: Mapping[str, Any] | None, problems: list[str]
) -> list[str]:
    """Every ``.py`` file the checkpoint's remote code needs, following relative imports as transformers does when it
    loads them; missing files and ``auto_map``/``custom_pipelines`` entries go to ``problems``. ``processor`` is
    ``None`` when the folder has no processor config (a problem reported on its own)."""
    auto_map = config.get("auto_map") or {}
    processor_auto_map = (processor or {}).get("auto_map") or {}
    pipelines = config.get("custom_pipelines") or {}
    problems.extend(
        f"an auto_map entry for {name} in {CONFIG_NAME} (re-save the model after `import sarlulc`)"
        for name in REQUIRED_CONFIG_AUTO_CLASSES
        if name not in auto_map
    )
    problems.extend(
        f"an auto_map entry for {name} in {IMAGE_PROCESSOR_NAME} (re-save the processor after `import sarlulc`)"
        for name in REQUIRED_PROCESSOR_AUTO_CLASSES
        if processor is not None and name not in processor_auto_map
    )
    if SAR_SEGMENTATION_TASK not in pipelines:
        problems.append(
            f"a custom_pipelines entry for {SAR_SEGMENTATION_TASK!r} in {CONFIG_NAME} "
            "(sarlulc.models.pipeline_sar_segmentation.save_pipeline_files adds it)"
        )
    needed = {
        **_code_references(f"{IMAGE_PROCESSOR_NAME} auto_map", processor_auto_map),
        **_code_references(
            f"{CONFIG_NAME} custom_pipelines", {task: spec.get("impl") for task, spec in pipelines.items()}
        ),
        **_code_references(f"{CONFIG_NAME} auto_map", auto_map),
    }
    found: set[str] = set()
    pending = list(needed)
    while pending:
        name = pending.pop()
        if name in found:
            continue
        if not (directory / name).is_file():
            problems.append(f"{name} (remote code for {needed[name]})")
            continue
        found.add(name)
        for module in get_relative_imports(directory / name):
            imported = f"{module}.py"
            needed.setdefault(imported, f"`from .{module} import` in {name}")
            pending.append(imported)
    return sorted(found)


def load_trained_run(output_dir: str | Path) -> TrainedRun:
    """Check a ``sarlulc finetune`` output folder and collect what to publish.

    Raises:
        UsageError: the folder is not a complete sarlulc segmentation checkpoint; the message names every missing
            file or entry (config, weights, processor config, remote code, ``auto_map``/``custom_pipelines``).
    """
    directory = Path(output_dir)
    if not directory.is_dir():
        raise UsageError(f"{directory} does not exist or is not a folder (give a sarlulc finetune output folder)")
    problems: list[str] = []
    config_path, processor_path = directory / CONFIG_NAME, directory / IMAGE_PROCESSOR_NAME
    raw_config = _read_json(config_path) if config_path.is_file() else None
    raw_processor = _read_json(processor_path) if processor_path.is_file() else None
    if raw_config is None:
        problems.append(f"{CONFIG_NAME} (the model configuration)")
    elif raw_config.get("model_type") != SarLulcConfig.model_type:
        raise UsageError(
            f"{config_path} describes a {raw_config.get('model_type')!r} model; only {SarLulcConfig.model_type!r} "
            "segmentation checkpoints (sarlulc finetune outputs) can be published with a sarlulc card"
        )
    weights = _weight_files(directory, problems)
    if raw_processor is None:
        problems.append(f"{IMAGE_PROCESSOR_NAME} (the input preprocessing; save the SarImageProcessor there)")
    code = _remote_code_files(directory, raw_config, raw_processor, problems) if raw_config is not None else []
    if problems:
        listed = "\n".join(f"  - {problem}" for problem in problems)
        raise UsageError(f"{directory} is not a complete segmentation checkpoint; missing:\n{listed}")

    try:
        config = SarLulcConfig.from_pretrained(directory)
        processor = SarImageProcessor.from_pretrained(directory)
    except ValueError as err:
        raise UsageError(f"{directory}: {err}") from err
    results = directory / ALL_RESULTS_FILENAME
    if not results.is_file():
        results = directory / BEST_RESULTS_FILENAME
    training_args = directory / TRAINING_ARGS_FILENAME
    if not training_args.is_file() and directory.name == BEST_DIRNAME:  # OUTPUT/best: the run's arguments are in OUTPUT
        training_args = directory.parent / TRAINING_ARGS_FILENAME
    summaries = [name for name in SUMMARY_FILES if (directory / name).is_file()]
    return TrainedRun(
        directory=directory,
        files=sorted({CONFIG_NAME, IMAGE_PROCESSOR_NAME, *weights, *code, *summaries}),
        config=config,
        processor=processor,
        metrics=_read_json(results) if results.is_file() else {},
        training_args=_read_json(training_args) if training_args.is_file() else {},
    )


# ----------------------------------------------------------------------------------------------------------------------
# Synthetic training data
# ----------------------------------------------------------------------------------------------------------------------
def _training_scenes(train_data: Path) -> list[Path]:
    """The scene rasters behind a ``--train_data`` value: the scene, a folder's scenes, or a saved tile dataset's
    ``scene`` column (scene paths as they were given when tiling, so relative ones are read from the current folder)."""
    if is_saved_dataset(train_data):
        loaded = datasets.load_from_disk(str(train_data))
        splits = loaded.values() if isinstance(loaded, datasets.DatasetDict) else [loaded]
        return sorted(
            {Path(scene) for split in splits if "scene" in split.column_names for scene in split.unique("scene")}
        )
    if train_data.is_dir():
        try:
            return [Path(source.scene) for source in find_scene_sources(train_data)]
        except SarLulcDataError:
            return []
    return [train_data]


def detect_synthetic(training_args: Mapping[str, Any]) -> bool | None:
    """Whether a run trained on synthetic scenes, from the rasters its ``train_data`` names.

    Returns:
        True when any training scene that can still be opened carries the ``SARLULC_SYNTHETIC=1`` tag, False when they
        all lack it, None when no scene can be found (no ``training_args.json``, data moved or deleted).
    """
    train_data = training_args.get("train_data")
    if not train_data or not Path(train_data).exists():
        return None
    flags = []
    for scene in _training_scenes(Path(train_data)):
        try:
            with rasterio.open(scene) as dataset:
                flags.append(dataset.tags().get(SYNTHETIC_TAG) == "1")
        except RasterioIOError:
            continue
    return any(flags) if flags else None


# ----------------------------------------------------------------------------------------------------------------------
# The model card
# ----------------------------------------------------------------------------------------------------------------------
def _finite(value: Any) -> float | None:
    """``value`` as a float when it is a finite number (all_results.json writes NaN as null)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def _eval_metric(metrics: Mapping[str, Any], key: str) -> float | None:
    return _finite(metrics.get(f"eval_{key}"))


def _card_scheme(run: TrainedRun, options: CardOptions) -> ClassScheme | None:
    """The class scheme for colours and label codes; None (with no colours on the card) when nothing matches."""
    requested = options.class_scheme or run.training_args.get("class_scheme")
    try:
        return scheme_for_model(run.config.id2label, requested)
    except UsageError:
        if options.class_scheme is not None:
            raise
        return None


def _classes(run: TrainedRun, scheme: ClassScheme | None) -> list[dict[str, Any]]:
    counts = run.config.class_frequencies
    total = sum(counts) if counts else 0
    rows = []
    for class_id in range(run.config.num_labels):
        name = run.config.id2label[class_id]
        lulc_class = scheme.classes[class_id] if scheme is not None else None
        rows.append(
            {
                "id": class_id,
                "name": name,
                "hex": None if lulc_class is None else "#{:02x}{:02x}{:02x}".format(*lulc_class.color),
                "rgb": None if lulc_class is None else ", ".join(str(v) for v in lulc_class.color),
                "codes": None if lulc_class is None else ", ".join(str(code) for code in lulc_class.codes),
                "train_share": _percent(counts[class_id] / total) if total else "n/a",
                "iou": _percent(_eval_metric(run.metrics, f"iou_{metric_key(name)}")),
            }
        )
    return rows


def _eval_results(run: TrainedRun, task_name: str, dataset: Mapping[str, str]) -> list[EvalResult]:
    """One ``EvalResult`` per finite metric of the run: the scalar metrics, then the IoU of every class."""
    entries = list(SUMMARY_METRICS)
    summary_keys = {key for key, _, _ in SUMMARY_METRICS}
    for class_name in run.config.id2label.values():
        key = f"iou_{metric_key(class_name)}"
        if key not in summary_keys:  # the LULC Water class's IoU is already IoU_water
            entries.append((key, "iou", f"IoU {class_name}"))
    results = []
    for key, metric_type, name in entries:
        value = _eval_metric(run.metrics, key)
        if value is not None:
            results.append(
                EvalResult(
                    task_type=EVAL_TASK_TYPE,
                    task_name=task_name,
                    dataset_type=dataset["type"],
                    dataset_name=dataset["name"],
                    dataset_split=dataset["split"],
                    metric_type=metric_type,
                    metric_name=name,
                    metric_value=value,
                )
            )
    return results


def _refinements(config: SarLulcConfig) -> list[dict[str, str]]:
    """State and settings of the three refinements (docs/method.md, section 3), as the card's table rows."""
    if config.use_highres_injection:
        detail = f"; detail stem {config.highres_channels} channels" if "detail" in config.highres_sources else ""
        injection = ("on", f"sources: {', '.join(config.highres_sources)}{detail}")
    else:
        injection = ("off", "plain UperNet fusion at stride 4")
    if config.use_refine_up_head:
        strides = " -> ".join(str(4 // 2**step) for step in range(config.refine_steps + 1))
        rest = "" if config.refine_steps == 2 else ", then bilinear x2"  # one step ends at stride 2
        refine = (
            "on",
            f"{config.refine_steps} refinement block(s), stride {strides}{rest}, channels {config.refine_channels}",
        )
    else:
        refine = ("off", "1x1 classifier at stride 4, bilinear x4 upsampling")
    loss = f"focal (gamma {config.focal_gamma:g}) + {config.dice_weight:g} x dice"
    if config.class_weight_alpha == 0:
        weighting = ("off", f"alpha 0 (unweighted); {loss}")
    elif config.class_frequencies is None:
        weighting = ("off", f"alpha {config.class_weight_alpha:g}, but no class frequencies recorded: uniform; {loss}")
    else:
        weighting = ("on", f"alpha {config.class_weight_alpha:g} on the training class frequencies; {loss}")
    names = (
        "(i) high-resolution feature injection",
        "(ii) progressive refine-up head",
        "(iii) alpha-scaled class re-weighting",
    )
    return [
        {"name": name, "state": state, "settings": settings}
        for name, (state, settings) in zip(names, (injection, refine, weighting))
    ]


def _architecture(config: SarLulcConfig) -> dict[str, Any]:
    # The meta device builds the module tree without allocating weights: exact counts at no cost.
    with torch.device("meta"):
        model = SarLulcForSemanticSegmentation(config)
    backbone = config.backbone_config
    return {
        "parameters": f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M",
        "encoder_parameters": f"{sum(p.numel() for p in model.backbone.parameters()) / 1e6:.2f} M",
        "patch_size": backbone.patch_size,
        "embed_dim": backbone.embed_dim,
        "depths": list(backbone.depths),
        "num_heads": list(backbone.num_heads),
        "window_size": list(backbone.window_size),
        "decoder_hidden_size": config.decoder_hidden_size,
        "pool_scales": list(config.pool_scales),
        "refinements": _refinements(config),
    }


def _preprocessing(processor: SarImageProcessor) -> dict[str, Any]:
    bands = ("HH", "HV")[: processor.num_channels]
    return {
        "bands": bands,
        "input_kind": processor.input_kind,
        "input_kind_description": INPUT_KIND_DESCRIPTIONS[processor.input_kind],
        "calibration_factor": processor.calibration_factor,
        "nodata": processor.nodata,
        "clip_db": processor.clip_db,
        "standardization": [
            {"band": band, "mean": f"{mean:.4f}", "std": f"{std:.4f}"}
            for band, mean, std in zip(bands, processor.image_mean, processor.image_std)
        ],
        "pad_to_multiple_of": processor.pad_to_multiple_of,
        "ignore_index": processor.ignore_index,
    }


def _training(run: TrainedRun, options: CardOptions) -> dict[str, Any]:
    args, metrics = run.training_args, run.metrics
    if options.base_model is not None or args.get("pretrained"):
        initialization = "pretrained"
    elif args.get("from_scratch"):
        initialization = "scratch"
    else:
        initialization = None
    # The loop selects by IoU_water for the water task and by mIoU otherwise, and records it as best_<metric>.
    selection, selection_name = ("iou_water", "IoU_water") if "best_iou_water" in metrics else ("mean_iou", "mIoU")
    best_step, final_step = metrics.get("best_step"), metrics.get("completed_steps")
    return {
        "initialization": initialization,
        "steps": final_step,
        "epochs": metrics.get("epochs"),
        "runtime_minutes": f"{metrics['train_runtime_seconds'] / 60:.1f}"
        if "train_runtime_seconds" in metrics
        else None,
        "num_processes": metrics.get("num_processes"),
        "best": {
            "metric": selection_name,
            "value": _percent(_finite(metrics.get(f"best_{selection}"))),
            "step": best_step,
        }
        if best_step is not None and best_step != final_step
        else None,
        "hyperparameters": [(key, args[key]) for key in CARD_HYPERPARAMETERS if args.get(key) is not None],
    }


def default_template() -> str:
    """The text of the model card template shipped with the package."""
    return (files("sarlulc") / "templates" / TEMPLATE_NAME).read_text(encoding="utf-8")


def build_model_card(run: TrainedRun, repo_id: str, options: CardOptions | None = None) -> ModelCard:
    """The model card (``README.md``) of a checked run, from the template in ``options.template_path``.

    Raises:
        UsageError: the template does not exist, or ``options.class_scheme`` does not fit the model's classes.
    """
    options = options or CardOptions()
    if options.template_path is None:
        template = default_template()
    else:
        path = Path(options.template_path)
        if not path.is_file():
            raise UsageError(f"model card template {path} does not exist (omit --template for the built-in one)")
        template = path.read_text(encoding="utf-8")
    config, task = run.config, run.task
    task_name = "Water segmentation" if task == "water" else f"LULC segmentation ({config.num_labels} classes)"
    synthetic = options.synthetic if options.synthetic is not None else detect_synthetic(run.training_args)
    scheme = _card_scheme(run, options)
    if synthetic:
        default_dataset = ("sarlulc synthetic ALOS-2 PALSAR-2 HH scenes", "sarlulc-synthetic")
    else:
        default_dataset = ("ALOS-2 PALSAR-2 HH with JAXA High-Resolution LULC labels", "alos2-palsar2-hh-lulc")
    dataset = {
        "name": options.dataset_name or default_dataset[0],
        "type": options.dataset_type or default_dataset[1],
        "split": options.dataset_split or run.training_args.get("eval_split") or "validation",
    }
    model_name = repo_id.split("/")[-1]
    eval_results = _eval_results(run, task_name, dataset)
    tags = [*CARD_TAGS, "water" if task == "water" else "land-use", *(["synthetic-data"] if synthetic else [])]
    card_data = ModelCardData(
        license=options.license,
        library_name="transformers",
        pipeline_tag="image-segmentation",
        tags=tags,
        base_model=options.base_model,
        model_name=model_name,
        eval_results=eval_results or None,
    )
    summary = [
        {"name": name, "value": _percent(value)}
        for key, _, name in SUMMARY_METRICS
        if (value := _eval_metric(run.metrics, key)) is not None
    ]
    return ModelCard.from_template(
        card_data,
        template_str=template,
        repo_id=repo_id,
        model_name=model_name,
        task=task,
        task_name=task_name,
        synthetic=synthetic,
        dataset=dataset,
        scheme_name=None if scheme is None else scheme.name,
        classes=_classes(run, scheme),
        metrics=summary,
        evaluated_step=run.metrics.get("completed_steps", run.metrics.get("step")),
        paper=PAPER_RESULTS,
        preprocessing=_preprocessing(run.processor),
        architecture=_architecture(config),
        training=_training(run, options),
        pipeline_task=SAR_SEGMENTATION_TASK,
    )


# ----------------------------------------------------------------------------------------------------------------------
# The upload
# ----------------------------------------------------------------------------------------------------------------------
def write_upload_folder(run: TrainedRun, card: ModelCard, folder: str | Path) -> list[str]:
    """Copy the run's files and the card into ``folder`` (created if needed); return the written paths, sorted."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in run.files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(run.directory / name, folder / name)
    card.save(folder / CARD_NAME)
    return sorted([*run.files, CARD_NAME])


def _check_repo_id(repo_id: str) -> None:
    # The namespace is required: the card's usage examples name the full id, which the Hub would otherwise complete.
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise UsageError(f"invalid repository id {repo_id!r}: {err}") from err
    if "/" not in repo_id:
        raise UsageError(f"give the repository as USER/NAME (or ORG/NAME), got {repo_id!r}")


def _check_empty(folder: Path) -> None:
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UsageError(f"dry-run folder {folder} already exists and is not empty; give a new or empty folder")


def push_to_hub(
    output_dir: str | Path,
    repo_id: str,
    *,
    options: CardOptions | None = None,
    api: HfApi | None = None,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str | None = None,
    dry_run_dir: str | Path | None = None,
) -> PushResult:
    """Publish a fine-tuned segmentation checkpoint with its model card (the module docstring has the steps).

    Args:
        output_dir: a ``sarlulc finetune`` output folder (``OUTPUT`` or ``OUTPUT/best``).
        repo_id: ``user/name`` of the model repository (created if it does not exist).
        options: card details the folder cannot tell (:class:`CardOptions`).
        api: the Hub client; default ``HfApi()``. Tests pass a fake with ``create_repo`` and ``upload_folder``.
        private: create the repository private (an existing repository keeps its visibility).
        token: Hub token; default: the logged-in user's (``hf auth login``) or ``HF_TOKEN``.
        commit_message: default ``"Upload sarlulc <task> segmentation model"``.
        dry_run_dir: write the folder that would be uploaded there (a new or empty folder) and upload nothing.

    Raises:
        UsageError: a bad repository id, an incomplete output folder, a missing template, a non-empty dry-run folder.
        Hub errors (``huggingface_hub.errors.HfHubHTTPError``, connection errors) propagate from ``api``.
    """
    _check_repo_id(repo_id)
    run = load_trained_run(output_dir)
    if dry_run_dir is not None:
        _check_empty(Path(dry_run_dir))
    card = build_model_card(run, repo_id, options)
    if dry_run_dir is not None:
        files = write_upload_folder(run, card, dry_run_dir)
        return PushResult(files=files, folder=Path(dry_run_dir))

    api = api or HfApi()
    repo = api.create_repo(repo_id, private=private, token=token, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sarlulc-hub-") as staging:
        files = write_upload_folder(run, card, staging)
        commit = api.upload_folder(
            repo_id=repo.repo_id,
            folder_path=staging,
            # Only the files chosen above: never step_* checkpoints, optimizer states or logs, even if present.
            allow_patterns=files,
            commit_message=commit_message or f"Upload sarlulc {run.task} segmentation model",
            token=token,
        )
    return PushResult(files=files, commit_url=commit.commit_url)
