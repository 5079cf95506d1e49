"""Checkpoints of the SAR-W-MixMAE authors' code in sarlulc's classes.

The authors' code (acaglayan/SAR-W-MixMAE, MIT, built on Sense-X/MixMIM) saves ``torch.save`` checkpoints, a dict
whose ``"model"`` entry is the state dict of its ``MixMIM`` model (``models_mixmim.py`` for pretraining,
``models_mixmim_ft.py`` / ``models_sen12_ft.py`` for fine-tuning), beside the optimizer state, the epoch, the loss
scaler and the run's ``argparse.Namespace``. This module maps every tensor of such a state dict onto
:class:`~sarlulc.models.modeling_sar_mixmae.SarMixMAEForPreTraining` (a pretraining checkpoint) or the encoder
:class:`~sarlulc.models.modeling_sar_mixmae.SarMixMAEModel` (a fine-tuning checkpoint: its classification head has
no place in a segmentation model and is left out), and writes a ``save_pretrained`` folder with the image processor
of the data the authors trained on. ``scripts/convert_sarw_mixmae_checkpoint.py`` is its command line.

The contract:

- **Loading** never unpickles arbitrary objects: ``torch.load(weights_only=True)``, with one standard-library class
  allowed beside tensors and containers, ``argparse.Namespace`` (the run's arguments, which the authors' checkpoints
  carry). A checkpoint that needs any other Python object is refused.
- **Dimensions** come from the tensor shapes (widths, depths, heads and windows from the relative position bias
  tables, the image size from the fixed position embedding); what shapes cannot tell (the decoder's heads, which are
  16 in all the authors' models) comes from the run's arguments or an option, and an option that contradicts the
  shapes is an error.
- **Every tensor** has a place: the learned ones are renamed onto ours; the fixed ones (``absolute_pos_embed``,
  ``decoder_pos_embed``, every ``relative_position_index``) are recomputed by our model, so they are checked against
  what it computes (a different table, e.g. an interpolated one, is refused) and not stored; an unknown tensor, a
  missing one or a shape that does not fit is an error naming it.
- **The config** reproduces the authors' computation (``AUTHORS_REFERENCE_SETTINGS``: the weight from the model
  input, per channel, scale 1, the plain mean), with ``norm_pix_loss`` and ``mask_ratio`` from the run's arguments
  when the checkpoint has them.
- **The image processor** standardizes with the authors' statistics for the data (``REFERENCE_STATISTICS``:
  Sentinel-1 VH, VV in dB, as their code defines them), takes dB input (``input_kind="db"``), clips nowhere that
  Sentinel-1 data reaches (their code does not clip) and records the band order (``polarizations``).
- **Output**: written to a hidden folder beside the destination and renamed into place when complete.

Every problem with the checkpoint or the options raises :class:`~sarlulc.errors.UsageError` with one line that names
it. Their data pipeline resizes BigEarthNet's 120 px patches to 128 px; the processor pads to a multiple of 32
instead, so resize first to feed the model exactly what their code fed it.
"""

from __future__ import annotations

import argparse
import math
import os
import pickle
import re
import shutil
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import UsageError
from .files import write_json
from .models.configuration_sar_mixmae import AUTHORS_REFERENCE_SETTINGS, SarMixMAEConfig
from .models.image_processing_sar import SarImageProcessor
from .models.modeling_sar_mixmae import (
    SarMixMAEForPreTraining,
    SarMixMAEModel,
    relative_position_index,
    sincos_position_embedding_2d,
)

__all__ = [
    "CONVERSION_INFO_FILENAME",
    "REFERENCE_POLARIZATIONS",
    "REFERENCE_STATISTICS",
    "ConvertedCheckpoint",
    "ReferenceCheckpoint",
    "convert_reference_state_dict",
    "convert_sarw_mixmae_checkpoint",
    "load_reference_checkpoint",
    "reference_config",
    "reference_image_processor",
]

REFERENCE_STATISTICS: dict[str, tuple[list[float], list[float]]] = {
    "benv2": ([-19.1966, -12.5144], [5.4501, 5.0019]),
    "benv1": ([-19.2309, -12.5951], [3.1672, 2.9644]),
}
"""Per-band dB mean and standard deviation (VH, VV) with which the authors standardize their input: ``"benv2"``,
BigEarthNet v2 Sentinel-1 (``main_pretrain.py``, ``main_finetune.py``; their released pretraining); ``"benv1"``,
BigEarthNet v1 (``README_benv1.md``; also their SEN12-FLOOD fine-tuning)."""

REFERENCE_POLARIZATIONS = ("VH", "VV")
"""The band order of the authors' input (their loaders stack VH, then VV)."""

REFERENCE_BACKSCATTER = "sigma0"
"""The backscatter convention of the authors' data (Sentinel-1 GRD sigma0), recorded with a statistics preset."""

REFERENCE_GSD = 10.0
"""The ground sampling distance (m) of the authors' data (BigEarthNet Sentinel-1 patches), recorded with a preset."""

REFERENCE_CLIP_DB = (-100.0, 100.0)
"""The processor's clip range for converted checkpoints: the authors' pipeline does not clip, and no Sentinel-1 sigma0
leaves this range, so clipping changes nothing."""

REFERENCE_DECODER_HEADS = 16
"""Decoder heads of every model the authors' code registers (mixmim_base, _large, _huge); shapes cannot tell."""

CONVERSION_INFO_FILENAME = "conversion.json"

# The authors' names (regular expressions over a whole key) -> ours, relative to the encoder or the pretraining model.
_ENCODER_RULES = (
    (r"patch_embed\.proj\.(weight|bias)", r"embeddings.patch_embeddings.projection.\1"),
    (r"patch_embed\.norm\.(weight|bias)", r"embeddings.patch_embeddings.norm.\1"),
    (r"layers\.(\d+)\.blocks\.(\d+)\.norm1\.(weight|bias)", r"encoder.stages.\1.blocks.\2.layernorm_before.\3"),
    (r"layers\.(\d+)\.blocks\.(\d+)\.attn\.(qkv|proj)\.(weight|bias)", r"encoder.stages.\1.blocks.\2.attention.\3.\4"),
    (
        r"layers\.(\d+)\.blocks\.(\d+)\.attn\.relative_position_bias_table",
        r"encoder.stages.\1.blocks.\2.attention.relative_position_bias_table",
    ),
    (r"layers\.(\d+)\.blocks\.(\d+)\.norm2\.(weight|bias)", r"encoder.stages.\1.blocks.\2.layernorm_after.\3"),
    (r"layers\.(\d+)\.blocks\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)", r"encoder.stages.\1.blocks.\2.mlp.\3.\4"),
    (r"layers\.(\d+)\.downsample\.(norm|reduction)\.(weight|bias)", r"encoder.downsamples.\1.\2.\3"),
    (r"norm\.(weight|bias)", r"layernorm.\1"),
)
_DECODER_RULES = (
    (r"mask_token", r"mask_token"),
    (r"decoder_embed\.(weight|bias)", r"decoder_embed.\1"),
    (r"decoder_blocks\.(\d+)\.norm1\.(weight|bias)", r"decoder_blocks.\1.layernorm_before.\2"),
    (r"decoder_blocks\.(\d+)\.attn\.(qkv|proj)\.(weight|bias)", r"decoder_blocks.\1.attention.\2.\3"),
    (r"decoder_blocks\.(\d+)\.norm2\.(weight|bias)", r"decoder_blocks.\1.layernorm_after.\2"),
    (r"decoder_blocks\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)", r"decoder_blocks.\1.mlp.\2.\3"),
    (r"decoder_norm\.(weight|bias)", r"decoder_norm.\1"),
    (r"decoder_pred\.(weight|bias)", r"decoder_pred.\1"),
)
# Fixed tensors our model recomputes (checked, not stored) and the fine-tuning classifier (left out).
_FIXED = re.compile(r"absolute_pos_embed|decoder_pos_embed|layers\.\d+\.blocks\.\d+\.attn\.relative_position_index")
_CLASSIFIER = re.compile(r"head\.(weight|bias)")
_ENCODER_PREFIX = SarMixMAEModel.base_model_prefix + "."


# ----------------------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReferenceCheckpoint:
    """A checkpoint of the authors' code, read safely.

    Attributes:
        path: the file.
        state_dict: the ``MixMIM`` model's tensors under the authors' names (a ``module.`` prefix removed).
        kind: ``"pretraining"`` (it has the decoder) or ``"finetuning"`` (the encoder, maybe with a classifier).
        run_arguments: the run's ``argparse`` arguments as plain values, when the checkpoint carries them.
    """

    path: Path
    state_dict: dict[str, torch.Tensor]
    kind: str
    run_arguments: dict[str, Any] = field(default_factory=dict)


def load_reference_checkpoint(path: str | os.PathLike) -> ReferenceCheckpoint:
    """Read a ``.pth`` of the authors' code with ``torch.load(weights_only=True)``; see the module docstring.

    Accepts the training checkpoints (a dict with a ``"model"`` state dict) and bare state dicts. Raises
    :class:`UsageError` for a missing file, a file that is not a PyTorch checkpoint, one that needs pickled objects,
    or one without the authors' model tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such checkpoint file")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's weights-only unpickler names the first class it refused to build
        refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        if refused:
            raise UsageError(
                f"{path} needs pickled Python objects to load ({refused.group(1)}), which are never unpickled here; "
                "re-save its tensors with torch.save(checkpoint['model'], 'state_dict.pth') and convert that file"
            ) from err
        raise UsageError(f"{path} is not a PyTorch checkpoint (it does not unpickle as one)") from err
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"{path} is not a PyTorch checkpoint ({first_line})") from err

    arguments: dict[str, Any] = {}
    if isinstance(loaded, Mapping) and isinstance(loaded.get("model"), Mapping):
        state = loaded["model"]
        run_args = loaded.get("args")
        if isinstance(run_args, argparse.Namespace):
            arguments = {key: value for key, value in vars(run_args).items() if _is_plain(value)}
        elif isinstance(run_args, Mapping):
            arguments = {str(key): value for key, value in run_args.items() if _is_plain(value)}
    elif isinstance(loaded, Mapping) and loaded and all(torch.is_tensor(value) for value in loaded.values()):
        state = loaded
    else:
        keys = sorted(map(str, loaded))[:6] if isinstance(loaded, Mapping) else type(loaded).__name__
        raise UsageError(f"{path} has no 'model' state dict (found {keys}): not a checkpoint of the SAR-W-MixMAE code")
    state = {str(key): value for key, value in state.items()}
    not_tensors = sorted(key for key, value in state.items() if not torch.is_tensor(value))
    if not_tensors:
        raise UsageError(f"{path}: the 'model' state dict holds non-tensors: {not_tensors[:5]}")
    if state and all(key.startswith("module.") for key in state):  # saved from a DistributedDataParallel wrapper
        state = {key[len("module.") :]: value for key, value in state.items()}
    if "patch_embed.proj.weight" not in state:
        raise UsageError(
            f"{path} has no 'patch_embed.proj.weight': not the MixMIM model of the SAR-W-MixMAE code "
            f"(first keys: {sorted(state)[:5]})"
        )
    kind = "pretraining" if any(key.startswith("decoder_") for key in state) else "finetuning"
    return ReferenceCheckpoint(path=path, state_dict=state, kind=kind, run_arguments=arguments)


def _is_plain(value: Any) -> bool:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return True
    return isinstance(value, (list, tuple)) and all(_is_plain(item) for item in value)


# ----------------------------------------------------------------------------------------------------------------------
# Dimensions
# ----------------------------------------------------------------------------------------------------------------------
def _shape(state: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in state:
        raise UsageError(f"the checkpoint lacks {key!r}, which the authors' model has")
    return tuple(state[key].shape)


def _agree(name: str, inferred: Any, given: Any) -> Any:
    """The inferred value, after checking that an option given for it says the same."""
    if given is not None and list(given if isinstance(given, (list, tuple)) else [given]) != list(
        inferred if isinstance(inferred, (list, tuple)) else [inferred]
    ):
        raise UsageError(f"--{name} {given} contradicts the checkpoint's tensors, which say {inferred}")
    return inferred


def reference_config(
    checkpoint: ReferenceCheckpoint,
    *,
    image_size: int | None = None,
    num_heads: Sequence[int] | None = None,
    decoder_num_heads: int | None = None,
    norm_pix_loss: bool | None = None,
    mask_ratio: float | None = None,
    backscatter_channel_mode: str = "per_channel",
    backscatter_weight_scale: float = 1.0,
) -> SarMixMAEConfig:
    """The :class:`SarMixMAEConfig` of an authors' checkpoint: dimensions from its shapes (module docstring), the
    authors' loss settings, and the options (``None``: from the run's arguments, else the authors' defaults)."""
    state = checkpoint.state_dict
    embed_dim, num_channels, patch_size, patch_width = _shape(state, "patch_embed.proj.weight")
    if patch_size != patch_width:
        raise UsageError(f"patch_embed.proj.weight has a {patch_size}x{patch_width} kernel; only square patches exist")
    stages = sorted({int(match.group(1)) for key in state if (match := re.match(r"layers\.(\d+)\.", key))})
    if not stages or stages != list(range(len(stages))):
        raise UsageError(f"the checkpoint's stages are {stages}: expected layers.0 ... layers.N")
    depths, heads, windows = [], [], []
    for stage in stages:
        blocks = {int(m.group(1)) for key in state if (m := re.match(rf"layers\.{stage}\.blocks\.(\d+)\.", key))}
        if not blocks or sorted(blocks) != list(range(len(blocks))):
            raise UsageError(f"stage layers.{stage} has blocks {sorted(blocks)}: expected 0 ... N")
        depths.append(len(blocks))
        rows, stage_heads = _shape(state, f"layers.{stage}.blocks.0.attn.relative_position_bias_table")
        window = (math.isqrt(rows) + 1) // 2
        if (2 * window - 1) ** 2 != rows:
            raise UsageError(
                f"layers.{stage}.blocks.0.attn.relative_position_bias_table has {rows} rows, not (2 * window - 1)**2"
            )
        heads.append(stage_heads)
        windows.append(window)
    hidden = _shape(state, "layers.0.blocks.0.mlp.fc1.weight")[0]
    mlp_ratio = hidden / embed_dim

    if "absolute_pos_embed" in state:
        tokens = _shape(state, "absolute_pos_embed")[1]
        grid = math.isqrt(tokens)
        if grid * grid != tokens:
            raise UsageError(f"absolute_pos_embed has {tokens} tokens: not a square grid")
        image_size = _agree("image_size", grid * patch_size, image_size)
    elif image_size is None:
        raise UsageError("the checkpoint has no absolute_pos_embed to tell the image size: give --image_size")
    arguments = checkpoint.run_arguments
    values: dict[str, Any] = dict(AUTHORS_REFERENCE_SETTINGS)
    values.update(
        image_size=int(image_size),
        num_channels=num_channels,
        patch_size=patch_size,
        embed_dim=embed_dim,
        depths=depths,
        num_heads=_agree("num_heads", heads, num_heads),
        window_size=windows,
        mlp_ratio=mlp_ratio,
        qkv_bias="layers.0.blocks.0.attn.qkv.bias" in state,
        hidden_act="gelu",
        backscatter_channel_mode=backscatter_channel_mode,
        backscatter_weight_scale=backscatter_weight_scale,
    )
    values["norm_pix_loss"] = bool(
        norm_pix_loss if norm_pix_loss is not None else arguments.get("norm_pix_loss", values["norm_pix_loss"])
    )
    values["mask_ratio"] = float(
        mask_ratio if mask_ratio is not None else arguments.get("mask_ratio", values["mask_ratio"])
    )
    if checkpoint.kind == "pretraining":
        decoder_dim = _shape(state, "decoder_embed.weight")[0]
        decoder_depth = len({m.group(1) for key in state if (m := re.match(r"decoder_blocks\.(\d+)\.", key))})
        if decoder_depth and _shape(state, "decoder_blocks.0.mlp.fc1.weight")[0] != round(mlp_ratio * decoder_dim):
            raise UsageError(
                "the decoder's MLP ratio differs from the encoder's; SarMixMAEConfig has one mlp_ratio for both"
            )
        if decoder_num_heads is None:
            decoder_num_heads = REFERENCE_DECODER_HEADS
            if decoder_dim % decoder_num_heads:
                raise UsageError(
                    f"the decoder is {decoder_dim} wide, which {REFERENCE_DECODER_HEADS} heads (the authors' models) "
                    "do not divide: give --decoder_num_heads"
                )
        values.update(
            decoder_embed_dim=decoder_dim, decoder_depth=decoder_depth, decoder_num_heads=int(decoder_num_heads)
        )
        pixels_per_unit = _shape(state, "decoder_pred.weight")[0]
        stride = patch_size * 2 ** (len(stages) - 1)
        if pixels_per_unit != stride**2 * num_channels:
            raise UsageError(
                f"decoder_pred predicts {pixels_per_unit} values per unit, but a {stride} px unit of {num_channels} "
                f"band(s) has {stride**2 * num_channels}"
            )
    try:
        config = SarMixMAEConfig(**values)
    except ValueError as err:
        raise UsageError(f"the checkpoint's dimensions make no valid SarMixMAEConfig: {err}") from err
    shrunk = [config.stage_window_size(stage) for stage in stages]
    if shrunk != windows:
        raise UsageError(f"the bias tables' windows {windows} do not fit the grids at {image_size} px ({shrunk})")
    return config


# ----------------------------------------------------------------------------------------------------------------------
# Tensors
# ----------------------------------------------------------------------------------------------------------------------
def _rename(key: str, rules: Sequence[tuple[str, str]]) -> str | None:
    for pattern, replacement in rules:
        if re.fullmatch(pattern, key):
            return re.sub(rf"^{pattern}$", replacement, key)
    return None


def _check_fixed(key: str, value: torch.Tensor, config: SarMixMAEConfig) -> None:
    """A fixed tensor of the checkpoint must be what our model computes in its place."""
    if key == "absolute_pos_embed":
        grid = config.stage_grid(0)
        expected = sincos_position_embedding_2d(grid, grid, config.embed_dim).unsqueeze(0)
    elif key == "decoder_pos_embed":
        grid = config.stage_grid(config.num_layers - 1)
        expected = sincos_position_embedding_2d(grid, grid, config.decoder_embed_dim).unsqueeze(0)
    else:
        stage = int(key.split(".")[1])
        window = config.stage_window_size(stage)
        expected = relative_position_index((window, window), window)
        if value.shape != expected.shape or not torch.equal(value.to(expected.dtype), expected):
            raise UsageError(f"{key} is not the relative position index of a {window}x{window} window")
        return
    if value.shape != expected.shape:
        raise UsageError(f"{key} has shape {tuple(value.shape)}, expected {tuple(expected.shape)}")
    difference = (value.float() - expected).abs().max().item()
    if difference > 1e-4:
        raise UsageError(
            f"{key} is not the fixed 2-D sin-cos table (column first) that the model computes (max difference "
            f"{difference:.3g}); an interpolated or learned table cannot be converted"
        )


def convert_reference_state_dict(
    checkpoint: ReferenceCheckpoint, config: SarMixMAEConfig
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The checkpoint's tensors under our names, for :class:`SarMixMAEForPreTraining` (a pretraining checkpoint) or
    the encoder (a fine-tuning one, every key prefixed ``sar_mixmae.`` as in a pretraining checkpoint, so that the
    encoder, the backbone and ``from_pretrained_encoder`` all load it).

    Returns the tensors and the names of those left out (the fixed tables our model recomputes, checked here, and a
    fine-tuning checkpoint's classifier). Raises :class:`UsageError` for an unknown tensor, a missing one or a shape
    that does not fit.
    """
    pretraining = checkpoint.kind == "pretraining"
    converted: dict[str, torch.Tensor] = {}
    left_out: list[str] = []
    unknown: list[str] = []
    for key, value in checkpoint.state_dict.items():
        if _FIXED.fullmatch(key):
            _check_fixed(key, value, config)
            left_out.append(key)
            continue
        if not pretraining and _CLASSIFIER.fullmatch(key):
            left_out.append(key)
            continue
        name = _rename(key, _ENCODER_RULES)
        if name is not None:
            converted[_ENCODER_PREFIX + name] = value.detach().clone().contiguous()
            continue
        name = _rename(key, _DECODER_RULES) if pretraining else None
        if name is None:
            unknown.append(key)
            continue
        converted[name] = value.detach().clone().contiguous()
    if unknown:
        raise UsageError(f"{len(unknown)} tensors of the checkpoint have no place in the model: {sorted(unknown)[:5]}")

    with torch.device("meta"):
        model = SarMixMAEForPreTraining(config) if pretraining else SarMixMAEModel(config)
    expected = {
        (key if pretraining else _ENCODER_PREFIX + key): tensor.shape for key, tensor in model.state_dict().items()
    }
    missing = sorted(set(expected) - set(converted))
    if missing:
        raise UsageError(f"the checkpoint lacks {len(missing)} tensors the model needs: {missing[:5]}")
    extra = sorted(set(converted) - set(expected))
    if extra:  # a rule produced a name the model does not have: more blocks or stages than the config says
        raise UsageError(f"{len(extra)} tensors of the checkpoint have no place in the model: {extra[:5]}")
    for key, shape in expected.items():
        if converted[key].shape != shape:
            raise UsageError(
                f"{key} has shape {tuple(converted[key].shape)} in the checkpoint, the model needs {tuple(shape)}"
            )
    return converted, left_out


# ----------------------------------------------------------------------------------------------------------------------
# Processor and the whole conversion
# ----------------------------------------------------------------------------------------------------------------------
def reference_image_processor(
    num_channels: int,
    statistics: str | None = "benv2",
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
    polarizations: Sequence[str] | None = None,
) -> SarImageProcessor:
    """The processor of the authors' input: dB in, their per-band statistics, no effective clipping, the band order.

    ``statistics`` names a :data:`REFERENCE_STATISTICS` entry; ``image_mean`` and ``image_std`` (given together)
    replace it. ``polarizations`` defaults to :data:`REFERENCE_POLARIZATIONS` with a preset.
    """
    if (image_mean is None) != (image_std is None):
        raise UsageError("give --image_mean and --image_std together")
    if image_mean is None:
        if statistics not in REFERENCE_STATISTICS:
            raise UsageError(f"--statistics {statistics!r} is not one of {sorted(REFERENCE_STATISTICS)}")
        image_mean, image_std = REFERENCE_STATISTICS[statistics]
        if polarizations is None:
            polarizations = REFERENCE_POLARIZATIONS
        # Both presets are BigEarthNet's Sentinel-1 patches: GRD sigma0 in dB on a 10 m grid.
        extra_record = {"backscatter": REFERENCE_BACKSCATTER, "gsd": REFERENCE_GSD}
    else:
        extra_record = {}
    if len(image_mean) != num_channels or len(image_std) != num_channels:
        raise UsageError(
            f"the checkpoint takes {num_channels} band(s) but the statistics have {len(image_mean)} mean(s) and "
            f"{len(image_std)} std(s): give --image_mean and --image_std with one value per band"
        )
    if polarizations is not None and len(polarizations) != num_channels:
        raise UsageError(f"--polarizations {list(polarizations)} names {len(polarizations)} bands, not {num_channels}")
    extra = dict(extra_record)
    if polarizations is not None:
        extra["polarizations"] = [str(p).upper() for p in polarizations]
    try:
        return SarImageProcessor(
            input_kind="db",
            clip_db=REFERENCE_CLIP_DB,
            image_mean=list(image_mean),
            image_std=list(image_std),
            num_channels=num_channels,
            nodata=None,
            **extra,
        )
    except ValueError as err:
        raise UsageError(f"invalid image processor settings: {err}") from err


@dataclass(frozen=True)
class ConvertedCheckpoint:
    """What :func:`convert_sarw_mixmae_checkpoint` wrote: the folder, the model class, the tensors left out."""

    output_dir: Path
    kind: str
    model_class: str
    num_tensors: int
    left_out: list[str]


def convert_sarw_mixmae_checkpoint(
    checkpoint_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    statistics: str | None = "benv2",
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
    polarizations: Sequence[str] | None = None,
    image_size: int | None = None,
    num_heads: Sequence[int] | None = None,
    decoder_num_heads: int | None = None,
    norm_pix_loss: bool | None = None,
    mask_ratio: float | None = None,
    backscatter_channel_mode: str = "per_channel",
    backscatter_weight_scale: float = 1.0,
    overwrite: bool = False,
) -> ConvertedCheckpoint:
    """Convert an authors' checkpoint into a ``save_pretrained`` folder (module docstring).

    A pretraining checkpoint becomes a :class:`SarMixMAEForPreTraining` (``AutoModelForPreTraining``), a fine-tuning
    one the encoder :class:`SarMixMAEModel` (``AutoModel``); both are what ``sarlulc finetune --pretrained`` takes.
    The folder also holds the image processor and ``conversion.json`` (the source, the tensors left out, the run's
    arguments). Raises :class:`UsageError` (see the module docstring), before anything is written.
    """
    destination = Path(output_dir)
    if destination.exists() and not (destination.is_dir() and not any(destination.iterdir())) and not overwrite:
        raise UsageError(f"{destination} exists and is not an empty folder: choose another or pass --overwrite")
    checkpoint = load_reference_checkpoint(checkpoint_path)
    config = reference_config(
        checkpoint,
        image_size=image_size,
        num_heads=num_heads,
        decoder_num_heads=decoder_num_heads,
        norm_pix_loss=norm_pix_loss,
        mask_ratio=mask_ratio,
        backscatter_channel_mode=backscatter_channel_mode,
        backscatter_weight_scale=backscatter_weight_scale,
    )
    processor = reference_image_processor(config.num_channels, statistics, image_mean, image_std, polarizations)
    tensors, left_out = convert_reference_state_dict(checkpoint, config)

    model_class = SarMixMAEForPreTraining if checkpoint.kind == "pretraining" else SarMixMAEModel
    with torch.device("meta"):
        model = model_class(config)
    model.config.architectures = [model_class.__name__]
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        model.save_pretrained(staging, state_dict=tensors)
        processor.save_pretrained(staging)
        write_json(
            staging / CONVERSION_INFO_FILENAME,
            {
                "source": str(Path(checkpoint_path).resolve()),
                "source_code": "acaglayan/SAR-W-MixMAE (MixMIM)",
                "kind": checkpoint.kind,
                "model_class": model_class.__name__,
                "statistics": None if image_mean is not None else statistics,
                "tensors_converted": len(tensors),
                "tensors_left_out": left_out,
                "run_arguments": checkpoint.run_arguments,
            },
        )
        os.chmod(staging, 0o777 & ~_umask())
        if destination.exists():
            shutil.rmtree(destination)
        os.replace(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ConvertedCheckpoint(destination, checkpoint.kind, model_class.__name__, len(tensors), left_out)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask
