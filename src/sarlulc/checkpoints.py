"""Loading a segmentation checkpoint for prediction: the model, its image processor and where they came from.

:func:`load_segmentation_checkpoint` is the one loader of the package (scene inference, evaluation, the Hub tools and
the command line use it)::

    from sarlulc.checkpoints import load_segmentation_checkpoint

    loaded = load_segmentation_checkpoint("runs/lulc/best", device="cuda")
    loaded.model, loaded.processor, loaded.folder

Contract
    ``source`` is a loaded model (used as it is), the folder of a checkpoint written by ``save_pretrained``, or a Hub
    model id (``owner/name``), of which only the config, the weights and the processor config are downloaded into
    the Hugging Face cache (``HF_HUB_OFFLINE=1`` uses the cached copy only). Folders are loaded with the installed
    package's classes, never with remote code copied into the checkpoint.

    The processor is, first match wins: the ``image_processor`` argument (a :class:`SarImageProcessor` or a folder
    with ``preprocessor_config.json``), the checkpoint folder's ``preprocessor_config.json``, or the processor
    defaults, with a :class:`UserWarning` (predictions are only right for a model trained with them).

    Every problem is a :class:`ValueError` that names the source and what was expected: a missing folder (or a Hub id
    that cannot be downloaded), a folder without ``config.json``, a model that is not a semantic-segmentation model
    (e.g. a ``sar_mixmae`` pretraining checkpoint), a processor whose band count differs from the model's or whose
    statistics are not finite (a NaN mean), and weights that cannot be used: a truncated or corrupt weights file, a
    pickled ``.bin`` file that torch refuses to unpickle, tensors missing from the file or of another shape than the
    config's (:func:`check_loading_info`). transformers would start such a model with random tensors and only log it;
    a model that predicts with a random decoder is never returned.

A model loaded from a folder is in eval mode (``from_pretrained``'s default); a given model keeps its mode. Neither
is moved unless ``device`` is given.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers.utils import logging as transformers_logging

from .models.configuration_sar_mixmae import SarMixMAEConfig
from .models.image_processing_sar import (
    DEFAULT_CLIP_DB,
    DEFAULT_IMAGE_MEAN_DB,
    DEFAULT_IMAGE_STD_DB,
    SarImageProcessor,
)

__all__ = ["LoadedCheckpoint", "check_loading_info", "load_segmentation_checkpoint", "model_num_channels"]

PROCESSOR_CONFIG = "preprocessor_config.json"
MODEL_CONFIG = "config.json"
_HUB_DOWNLOAD_PATTERNS = ["*.json", "*.safetensors"]  # config, weights, processor config: no remote code, no README
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A segmentation model ready to predict, with the preprocessing it expects.

    Attributes:
        model: the ``SarLulcForSemanticSegmentation`` (or any semantic-segmentation model with ``config.id2label``).
        processor: the :class:`SarImageProcessor` its inputs go through.
        folder: the checkpoint folder (a Hub model's snapshot in the cache), or None for a given model that was not
            loaded from a folder that still exists.
    """

    model: torch.nn.Module
    processor: SarImageProcessor
    folder: Path | None


def load_segmentation_checkpoint(
    source: torch.nn.Module | str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    image_processor: SarImageProcessor | str | os.PathLike | None = None,
    require_processor: bool = False,
) -> LoadedCheckpoint:
    """Load (or take) a segmentation model and resolve its image processor; see the module docstring.

    Args:
        source: a loaded model, a ``save_pretrained`` folder or a Hub model id.
        device: move the model there; None leaves it where it is (a loaded checkpoint is on the CPU).
        image_processor: the processor, or a folder holding its ``preprocessor_config.json``; None uses the
            checkpoint's, else the defaults with a warning.
        require_processor: refuse a checkpoint without its own processor config instead of falling back to the
            defaults (evaluation: scores of a model fed the wrong normalization would be meaningless).

    Raises:
        ValueError: the checkpoint is missing or cannot be loaded, is not a semantic-segmentation model, or the
            processor's band count differs from the model's.
    """
    if isinstance(source, torch.nn.Module):
        model, folder = source, _folder_of(source)
        _check_segmentation_config(getattr(model, "config", None), f"model {type(model).__name__}")
    else:
        folder = _local_or_downloaded(source)
        model = _from_folder(folder)
    num_channels = model_num_channels(model.config)
    if require_processor and image_processor is None and (folder is None or not (folder / PROCESSOR_CONFIG).is_file()):
        raise ValueError(
            f"checkpoint {folder or type(model).__name__} has no {PROCESSOR_CONFIG}: its input normalization is "
            "unknown (save the image processor with the model, as the training commands do)"
        )
    processor = _resolve_processor(image_processor, folder, num_channels)
    if processor.num_channels != num_channels:
        raise ValueError(
            f"the image processor expects {processor.num_channels} band(s) but the model takes {num_channels}"
        )
    if device is not None:
        model.to(device)
    return LoadedCheckpoint(model=model, processor=processor, folder=folder)


def model_num_channels(config: Any) -> int:
    """The input bands a model takes: its encoder's ``num_channels`` (1 = HH, 2 = HH and HV); 1 when it says none."""
    backbone = getattr(config, "backbone_config", None)
    return int(getattr(backbone, "num_channels", None) or getattr(config, "num_channels", None) or 1)


def _folder_of(model: torch.nn.Module) -> Path | None:
    """The folder a loaded model came from, where its processor config may be (``from_pretrained`` records it)."""
    name = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
    return Path(name) if name and Path(name).is_dir() else None


def _local_or_downloaded(source: str | os.PathLike) -> Path:
    folder = Path(source)
    if folder.is_dir():
        return folder
    return _download(str(source))


def _download(source: str) -> Path:
    """A Hub model id (``owner/name``) as a local snapshot of its config, weights and processor config."""
    if not _REPO_ID.match(source) or source.endswith((".tif", ".tiff", ".json")):
        raise ValueError(f"checkpoint {source} does not exist or is not a folder (expected a save_pretrained folder)")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(source, allow_patterns=_HUB_DOWNLOAD_PATTERNS))
    except Exception as err:  # offline, unknown repository, no access: say what was tried
        raise ValueError(
            f"checkpoint {source} is not a local folder, and downloading it as a Hub model repository failed "
            f"({type(err).__name__}: {err})"
        ) from err


def _from_folder(folder: Path) -> torch.nn.Module:
    if not (folder / MODEL_CONFIG).is_file():
        raise ValueError(f"checkpoint {folder} has no {MODEL_CONFIG}; expected a folder written by save_pretrained")
    from transformers import MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING, AutoConfig, AutoModelForSemanticSegmentation

    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    except (ValueError, OSError, KeyError) as err:
        if "trust_remote_code" in str(err):
            # transformers' advice (pass trust_remote_code=True) is for other models' code, which sarlulc never runs.
            raise ValueError(
                f"checkpoint {folder} is not a sarlulc checkpoint: its {MODEL_CONFIG} names a model type with its own "
                "code; expected a folder written by `sarlulc finetune` (or save_pretrained of a sarlulc model)"
            ) from err
        reason = " ".join(str(err).split())  # one line, whatever the library's message spans
        raise ValueError(
            f"checkpoint {folder}: its {MODEL_CONFIG} cannot be read as a model config ({reason})"
        ) from err
    _check_segmentation_config(config, f"checkpoint {folder}")
    if type(config) not in MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING:
        raise ValueError(
            f"checkpoint {folder} is a {config.model_type} model, not a semantic-segmentation model; expected a "
            "sar_lulc checkpoint"
        )
    # The installed package's classes (registered on import), not remote code copied into the checkpoint. transformers'
    # own load report (a table of every missing tensor) is silenced: check_loading_info says it in one line.
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        model, info = AutoModelForSemanticSegmentation.from_pretrained(
            folder, config=config, trust_remote_code=False, output_loading_info=True
        )
    except RuntimeError as err:
        if "mismatched" not in str(err):
            raise
        raise ValueError(
            f"checkpoint {folder}: weight tensors of another shape than its {MODEL_CONFIG} describes (weights of "
            "another model configuration); the model would predict with random weights"
        ) from err
    except (OSError, ValueError, EOFError, pickle.UnpicklingError) as err:
        raise ValueError(f"checkpoint {folder}: its weights cannot be loaded ({_first_line(err)})") from err
    except Exception as err:  # safetensors' own error type (a truncated file) derives from Exception only
        if type(err).__module__.startswith("safetensors"):
            raise ValueError(
                f"checkpoint {folder}: its weights file is damaged or truncated ({_first_line(err)})"
            ) from err
        raise
    finally:
        transformers_logging.set_verbosity(verbosity)
    check_loading_info(info, f"checkpoint {folder}")
    return model


def _first_line(err: BaseException) -> str:
    lines = [line for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def check_loading_info(info: dict[str, Any], what: str) -> None:
    """Raise ``ValueError`` when ``from_pretrained(..., output_loading_info=True)``'s report lists weights missing from
    the checkpoint or of another shape: such a model would predict with randomly initialized tensors."""
    missing = sorted(info.get("missing_keys") or ())
    mismatched = sorted(
        str(item[0] if isinstance(item, (tuple, list)) else item) for item in info.get("mismatched_keys") or ()
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} weight tensor(s) missing from its weights (e.g. {', '.join(missing[:3])})")
    if mismatched:
        problems.append(f"{len(mismatched)} of another shape than its config (e.g. {', '.join(mismatched[:3])})")
    if problems:
        raise ValueError(
            f"{what} has {' and '.join(problems)}: the model would predict with random weights; use a complete "
            "checkpoint written by save_pretrained"
        )


def _check_segmentation_config(config: Any, what: str) -> None:
    """Refuse a model that cannot name per-pixel classes: the pretraining encoder, or a model without a config."""
    if isinstance(config, SarMixMAEConfig):
        raise ValueError(
            f"{what} is a {config.model_type} model (the pretraining encoder), not a segmentation model; fine-tune it "
            "into a sar_lulc model first (scripts/finetune.py)"
        )
    if not getattr(config, "id2label", None):
        raise ValueError(f"{what} has no config.id2label naming its classes; expected a segmentation model")


def _resolve_processor(
    explicit: SarImageProcessor | str | os.PathLike | None, folder: Path | None, num_channels: int
) -> SarImageProcessor:
    """The explicit processor (or its folder), else the checkpoint's, else the defaults with a warning."""
    if isinstance(explicit, SarImageProcessor):
        return explicit
    if explicit is not None:
        if not (Path(explicit) / PROCESSOR_CONFIG).is_file():
            raise ValueError(f"image_processor {explicit} is not a folder with a {PROCESSOR_CONFIG}")
        return _processor_from(Path(explicit))
    if folder is not None and (folder / PROCESSOR_CONFIG).is_file():
        return _processor_from(folder)
    low, high = DEFAULT_CLIP_DB
    warnings.warn(
        f"{'the model' if folder is None else folder} has no {PROCESSOR_CONFIG}: using SarImageProcessor defaults "
        f"(clip [{low:g}, {high:g}] dB, mean {DEFAULT_IMAGE_MEAN_DB:g} dB, std {DEFAULT_IMAGE_STD_DB:g} dB). "
        "Predictions are only right if the model was trained with these; pass image_processor= or save the "
        "processor with the checkpoint",
        UserWarning,
        stacklevel=3,
    )
    return SarImageProcessor(num_channels=num_channels)


def _processor_from(folder: Path) -> SarImageProcessor:
    """The processor saved in ``folder``; a config that is not JSON or holds unusable values names the file."""
    try:
        return SarImageProcessor.from_pretrained(folder)
    except (ValueError, OSError, TypeError) as err:  # json.JSONDecodeError is a ValueError
        raise ValueError(f"{folder / PROCESSOR_CONFIG}: {_first_line(err).split(': ', 1)[-1]}") from err
