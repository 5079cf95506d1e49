"""Configuration of the SAR-W-MixMAE encoder, its backbone and its pretraining model.

The encoder is MixMAE's hierarchical Swin-style transformer (Liu et al., "MixMAE: Mixed and Masked Autoencoder for
Efficient Pretraining of Hierarchical Vision Transformers", CVPR 2023, arXiv:2205.13137); the pretraining loss weights
every pixel by its backscatter as SAR-W-MixMAE does (Caglayan, Imamoglu, Kouyama, "SAR-W-MixMAE: SAR Foundation Model
Training Using Backscatter Power Weighting", IGARSS 2025, arXiv:2503.01181). The input normalization (clip range,
per-band dB mean and std) is not part of this config: it belongs to the image processor (`SarImageProcessor`), the one
place that turns backscatter into model input.
"""

from __future__ import annotations

import math

from transformers.backbone_utils import BackboneConfigMixin
from transformers.configuration_utils import PreTrainedConfig
from transformers.utils import logging

logger = logging.get_logger(__name__)

LOSS_WEIGHTINGS = ("none", "backscatter")
BACKSCATTER_POWER_SOURCES = ("backscatter_db", "pixel_values")
BACKSCATTER_CHANNEL_MODES = ("per_channel", "shared_avg")

AUTHORS_REFERENCE_SETTINGS = {
    "layer_norm_eps": 1e-5,
    "mask_ratio": 0.5,
    "range_mask_ratio": 0.0,
    "norm_pix_loss": True,
    "loss_weighting": "backscatter",
    "backscatter_power_source": "pixel_values",
    "backscatter_channel_mode": "per_channel",
    "backscatter_weight_scale": 1.0,
}
"""The config values with which [`SarMixMAEForPreTraining`] computes what the SAR-W-MixMAE authors' public code
(acaglayan/SAR-W-MixMAE: `models_mixmim.py`, `sarwmix/weighting.py`, run with `--norm_pix_loss --mask_ratio 0.5`)
computes: the same mixing, reconstruction, weight and loss. Everything else (widths, depths, heads, windows,
`patch_size=4`, `mlp_ratio=4`, `qkv_bias=True`, `hidden_act="gelu"`) is the model size, taken from a checkpoint's
tensors by `sarlulc.conversion`. Their code standardizes the dB input before it reaches the model and has no invalid
pixels: give no `pixel_mask` to reproduce it."""

# Fields of configs saved before the normalization moved to the image processor. They are dropped when such a
# config.json is loaded: the processor saved beside it holds the same numbers, and nothing reads them here any more.
_LEGACY_NORMALIZATION_FIELDS = ("input_db_mean", "input_db_std", "input_clip_db")

# Fields of the backscatter weight this package used before it followed the authors' code (`exp(-P_norm / tau)`,
# a weighted mean, optional global normalization). That form had no source in the papers or the code; it is gone,
# and a config that still names it is read with the authors' form (a warning says so when it weighted the loss).
_LEGACY_WEIGHT_FIELDS = ("backscatter_tau", "backscatter_normalization", "backscatter_global_max", "loss_reduction")


def _as_per_stage(value, num_stages: int, name: str) -> list[int]:
    if isinstance(value, int):
        return [value] * num_stages
    value = [int(v) for v in value]
    if len(value) != num_stages:
        raise ValueError(f"`{name}` must have one entry per stage ({num_stages}), got {value}")
    return value


class SarMixMAEConfig(BackboneConfigMixin, PreTrainedConfig):
    r"""
    Configuration of [`SarMixMAEModel`] (a hierarchical Swin-style encoder with non-shifted window attention),
    [`SarMixMAEBackbone`] and [`SarMixMAEForPreTraining`] (MixMAE with a backscatter-weighted pixel loss).

    Defaults are the tiny model (CPU tests, the demo). MixMAE-B at 256 px: `embed_dim=128, depths=(2, 2, 18, 2),
    num_heads=(4, 8, 16, 32), window_size=(16, 16, 16, 8), decoder_embed_dim=512, decoder_depth=8,
    decoder_num_heads=16` (see `hub_configs/sar-mixmae-base`).

    Reproducing the SAR-W-MixMAE authors' code exactly: `layer_norm_eps=1e-5, mask_ratio=0.5, range_mask_ratio=0.0,
    norm_pix_loss=True, loss_weighting="backscatter", backscatter_power_source="pixel_values",
    backscatter_channel_mode="per_channel", backscatter_weight_scale=1.0` ([`AUTHORS_REFERENCE_SETTINGS`]), with
    their model size (`mixmim_base` on Sentinel-1 VH/VV at 128 px: `image_size=128, num_channels=2, embed_dim=128,
    depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=(8, 8, 8, 4), decoder_embed_dim=512,
    decoder_depth=8, decoder_num_heads=16`) and no `pixel_mask`. The defaults differ from it in one field only,
    `backscatter_power_source="backscatter_db"`: the weight reads physical dB rather than the standardized input.

    Args:
        image_size (`int`, defaults to 256):
            Pretraining tile size in pixels. Must be a multiple of the encoder stride (`patch_size * 2**(stages-1)`,
            32 by default), which is also the mixing unit. Fine-tuning and inference accept other multiples of 32.
        num_channels (`int`, defaults to 1):
            Input bands: 1 = HH (the paper), 2 = HH + HV.
        patch_size (`int`, defaults to 4):
            Side of the square patch embedded into one token (stride of the first stage).
        embed_dim (`int`, defaults to 48):
            Width of the first stage; stage `s` has `embed_dim * 2**s` channels.
        depths (`list[int]`, defaults to `(1, 1, 2, 1)`):
            Number of transformer blocks per stage.
        num_heads (`list[int]`, defaults to `(2, 4, 8, 16)`):
            Attention heads per stage; each stage's width must be divisible by its head count.
        window_size (`int` or `list[int]`, defaults to `(16, 16, 16, 8)`):
            Attention window side per stage. MixMAE uses no shifted windows but large ones. A window larger than a
            stage's token grid at `image_size` shrinks to the grid, and so does that stage's relative position bias
            table (`(2 * window - 1) ** 2` rows, the parameter shapes of MixMAE's code): see `stage_window_size`. At
            `image_size`, every stage's grid must be a multiple of its (shrunk) window. Other input sizes keep that
            window where their grid is at least as large (padding the grid to a multiple and masking the padding),
            and use a grid-sized window, with the central part of the bias table, where their grid is smaller.
        mlp_ratio (`float`, defaults to 4.0):
            Hidden width of the MLPs relative to the block width.
        qkv_bias (`bool`, defaults to `True`):
            Bias in the query/key/value projection.
        hidden_act (`str`, defaults to `"gelu"`):
            MLP activation.
        hidden_dropout_prob (`float`, defaults to 0.0):
            Dropout on the outputs of attention and MLPs.
        attention_probs_dropout_prob (`float`, defaults to 0.0):
            Dropout on attention probabilities.
        drop_path_rate (`float`, defaults to 0.0):
            Stochastic depth rate, increased linearly over the encoder's blocks.
        layer_norm_eps (`float`, defaults to 1e-5):
            Epsilon of every LayerNorm (PyTorch's default, as in MixMAE's code).
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the truncated normal used for linear weights, mask token and bias tables.
        mask_ratio (`float`, defaults to 0.5):
            Fraction of mixing units (tokens of the last stage) taken from the partner image: the mask has
            `int(num_units * mask_ratio)` ones (rounded down, as MixMAE's code). MixMAE uses 0.5.
        range_mask_ratio (`float`, defaults to 0.0):
            During training, a random extra in `[0, range_mask_ratio]` is added to `mask_ratio` for each batch.
        decoder_embed_dim (`int`, defaults to 128), decoder_depth (`int`, defaults to 2),
        decoder_num_heads (`int`, defaults to 4):
            Width, depth and heads of the light transformer decoder used for pretraining only.
        norm_pix_loss (`bool`, defaults to `True`):
            Reconstruct per-patch normalized pixels (mean 0, unit variance per 32x32 target patch).
        loss_weighting (`str`, defaults to `"backscatter"`):
            `"backscatter"` (SAR-W-MixMAE, the authors' form): the squared error of every reconstructed value is
            multiplied by `w = exp(s * (1 - lin_n))`, where `lin = 10 ** (dB / 10)` is the linear backscatter power
            and `lin_n = (lin - min) / (max - min + 1e-6)` its min-max normalization over the height and width of
            each image (and each band, see `backscatter_channel_mode`), so `w` lies in `[1, e**s]` and the darkest
            pixels (water, smooth surfaces) weigh most. The loss is the plain mean of `w * error**2` over every value
            of the dual reconstruction (all units, pixels and bands), not divided by the sum of the weights.
            `"none"`: plain MixMAE, every value weighs 1. Invalid pixels (`pixel_mask` False) weigh 0, take no part
            in the min and max, and are not counted in the mean.
        backscatter_weight_scale (`float`, defaults to 1.0):
            `s` of the weight above (the authors' `exp_scale`; 1.0 is their manuscript's). 0 weighs every value 1.
        backscatter_channel_mode (`str`, defaults to `"per_channel"`):
            `"per_channel"`: each band gets its own weight map from its own power (the authors' default).
            `"shared_avg"`: the linear power is averaged over the bands, normalized, and that one map weighs every
            band. With one band (HH) both are the same.
        backscatter_power_source (`str`, defaults to `"backscatter_db"`):
            Where the weight's dB values come from. `"backscatter_db"` (our documented choice): the `backscatter_db`
            input of [`SarMixMAEForPreTraining`], the calibrated and clipped sigma0 in dB that the image processor
            standardized into `pixel_values` (it returns it with `return_backscatter_db=True`): physical power.
            `"pixel_values"`: the model input itself, the standardized dB read as if it were dB, which is what the
            authors' code does (their weight is computed from the normalized tensor the model sees); it needs no
            extra input.
        out_features (`list[str]`, *optional*), out_indices (`list[int]`, *optional*):
            Backbone outputs, among `stage_names` = `["stem", "stage1", "stage2", "stage3", "stage4"]` (`"stem"`: the
            patch embedding). As for every transformers backbone, the last stage alone when neither is given.
            [`SarLulcConfig`] sets what its decoder needs.
    """

    model_type = "sar_mixmae"
    attribute_map = {"num_attention_heads": "num_heads", "num_hidden_layers": "num_layers"}

    def __init__(
        self,
        image_size: int = 256,
        num_channels: int = 1,
        patch_size: int = 4,
        embed_dim: int = 48,
        depths: list[int] | tuple[int, ...] = (1, 1, 2, 1),
        num_heads: list[int] | tuple[int, ...] = (2, 4, 8, 16),
        window_size: int | list[int] | tuple[int, ...] = (16, 16, 16, 8),
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.0,
        attention_probs_dropout_prob: float = 0.0,
        drop_path_rate: float = 0.0,
        layer_norm_eps: float = 1e-5,
        initializer_range: float = 0.02,
        mask_ratio: float = 0.5,
        range_mask_ratio: float = 0.0,
        decoder_embed_dim: int = 128,
        decoder_depth: int = 2,
        decoder_num_heads: int = 4,
        norm_pix_loss: bool = True,
        loss_weighting: str = "backscatter",
        backscatter_weight_scale: float = 1.0,
        backscatter_channel_mode: str = "per_channel",
        backscatter_power_source: str = "backscatter_db",
        out_features: list[str] | None = None,
        out_indices: list[int] | None = None,
        **kwargs,
    ):
        self.image_size = int(image_size)
        self.num_channels = int(num_channels)
        self.patch_size = int(patch_size)
        self.embed_dim = int(embed_dim)
        self.depths = [int(d) for d in depths]
        self.num_layers = len(self.depths)
        self.num_heads = _as_per_stage(num_heads, self.num_layers, "num_heads")
        self.window_size = _as_per_stage(window_size, self.num_layers, "window_size")
        self.mlp_ratio = float(mlp_ratio)
        self.qkv_bias = bool(qkv_bias)
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = float(hidden_dropout_prob)
        self.attention_probs_dropout_prob = float(attention_probs_dropout_prob)
        self.drop_path_rate = float(drop_path_rate)
        self.layer_norm_eps = float(layer_norm_eps)
        self.initializer_range = float(initializer_range)
        self.mask_ratio = float(mask_ratio)
        self.range_mask_ratio = float(range_mask_ratio)
        self.decoder_embed_dim = int(decoder_embed_dim)
        self.decoder_depth = int(decoder_depth)
        self.decoder_num_heads = int(decoder_num_heads)
        self.norm_pix_loss = bool(norm_pix_loss)
        self.loss_weighting = loss_weighting
        self.backscatter_weight_scale = float(backscatter_weight_scale)
        self.backscatter_channel_mode = backscatter_channel_mode
        self.backscatter_power_source = backscatter_power_source
        # Width after the last stage, the name other transformers code looks for.
        self.hidden_size = self.embed_dim * 2 ** (self.num_layers - 1)
        self.stage_names = ["stem"] + [f"stage{i}" for i in range(1, self.num_layers + 1)]
        self._validate()
        # Saved configs carry these derived values too; recomputed above, they must not be overwritten by stale ones.
        for derived in ("hidden_size", "num_layers", "stage_names", *_LEGACY_NORMALIZATION_FIELDS):
            kwargs.pop(derived, None)
        legacy_weight = [name for name in _LEGACY_WEIGHT_FIELDS if kwargs.pop(name, None) is not None]
        if legacy_weight and self.loss_weighting == "backscatter":
            logger.warning(
                f"this config names the former backscatter weight ({', '.join(legacy_weight)}: exp(-P_norm / tau), "
                "a weighted mean), which no longer exists; the loss now uses the SAR-W-MixMAE authors' weight "
                "exp(s * (1 - lin_n)) with a plain mean (backscatter_weight_scale, backscatter_channel_mode). This "
                "matters only when pretraining continues from this config."
            )
        super().__init__(**kwargs)
        self.set_output_features_output_indices(out_features=out_features, out_indices=out_indices)

    # ----------------------------------------------------------------------------------------------------------------
    @property
    def encoder_stride(self) -> int:
        """Pixels per token of the last stage: the input must be a multiple of it; the mixing unit of MixMAE."""
        return self.patch_size * 2 ** (self.num_layers - 1)

    def check_input_size(self, height: int, width: int, what: str = "input") -> None:
        """Raise `ValueError` unless `height` x `width` pixels can be encoded: both multiples of `encoder_stride`.

        Every stage halves the token grid and MixMAE mixes whole last-stage tokens, so the input must tile into
        `encoder_stride`-pixel units. `what` names the input in the message (e.g. `"the training tile size"`).
        """
        stride = self.encoder_stride
        if height % stride == 0 and width % stride == 0:
            return
        padded = f"{-(-height // stride) * stride}x{-(-width // stride) * stride}"
        cropped = f"{height // stride * stride}x{width // stride * stride}"
        fix = f"pad it to {padded}" + (f" or crop it to {cropped}" if height >= stride and width >= stride else "")
        raise ValueError(
            f"{what} is {height}x{width} pixels; height and width must be multiples of the encoder stride {stride} "
            f"(patch size {self.patch_size}, doubled by each of {self.num_layers - 1} patch mergings): {fix} "
            "(SarImageProcessor pads tiles to a multiple, predict_scene tiles whole scenes)"
        )

    def stage_grid(self, stage: int, image_size: int | None = None) -> int:
        """Token grid side of `stage` (0-based) for a square input of `image_size` pixels."""
        size = self.image_size if image_size is None else image_size
        return size // self.patch_size // 2**stage

    def stage_window_size(self, stage: int) -> int:
        """The attention window side of `stage` (0-based): `window_size[stage]`, shrunk to the stage's grid at
        `image_size` when it is larger (as MixMAE's code does). It sizes the stage's relative position bias table,
        so a checkpoint's parameter shapes depend on it, and it is the largest window the stage uses at any input
        size (a smaller grid uses a grid-sized window)."""
        return min(self.window_size[stage], self.stage_grid(stage))

    def _validate(self) -> None:
        if self.num_layers < 1:
            raise ValueError("`depths` must list at least one stage")
        if any(d < 1 for d in self.depths):
            raise ValueError(f"`depths` must be positive, got {self.depths}")
        if self.num_channels not in (1, 2):
            raise ValueError(f"`num_channels` must be 1 (HH) or 2 (HH+HV), got {self.num_channels}")
        if self.patch_size < 1 or self.embed_dim < 1:
            raise ValueError("`patch_size` and `embed_dim` must be positive")
        if self.image_size % self.encoder_stride != 0:
            raise ValueError(
                f"`image_size`={self.image_size} cannot be tiled by the last stage: it must be a multiple of the "
                f"encoder stride patch_size * 2**(stages-1) = {self.encoder_stride}"
            )
        for stage in range(self.num_layers):
            width = self.embed_dim * 2**stage
            heads = self.num_heads[stage]
            if heads < 1 or width % heads != 0:
                raise ValueError(
                    f"`num_heads[{stage}]`={heads} must divide stage {stage + 1}'s width {width} (embed_dim * 2**stage)"
                )
            window = self.window_size[stage]
            if window < 1:
                raise ValueError(f"`window_size[{stage}]` must be positive, got {window}")
            grid = self.stage_grid(stage)
            effective = self.stage_window_size(stage)
            if grid % effective != 0:
                raise ValueError(
                    f"`window_size[{stage}]`={window} does not divide stage {stage + 1}'s token grid {grid}x{grid} at "
                    f"image_size={self.image_size}; choose a window that divides {grid}"
                )
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"`mask_ratio` must be in (0, 1), got {self.mask_ratio}")
        if not 0.0 <= self.range_mask_ratio < 1.0 - self.mask_ratio:
            raise ValueError(
                f"`range_mask_ratio` must be in [0, 1 - mask_ratio) = [0, {1 - self.mask_ratio:g}), "
                f"got {self.range_mask_ratio}"
            )
        num_units = self.stage_grid(self.num_layers - 1) ** 2
        if int(num_units * self.mask_ratio) in (0, num_units):
            raise ValueError(
                f"`mask_ratio`={self.mask_ratio} of {num_units} mixing units mixes nothing; use a larger image_size or "
                "a ratio nearer 0.5"
            )
        if self.mlp_ratio <= 0:
            raise ValueError(f"`mlp_ratio` must be positive, got {self.mlp_ratio}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "drop_path_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"`{name}` must be in [0, 1), got {getattr(self, name)}")
        if self.decoder_depth < 0 or self.decoder_embed_dim < 1:
            raise ValueError("`decoder_depth` must be >= 0 and `decoder_embed_dim` positive")
        if self.decoder_num_heads < 1 or self.decoder_embed_dim % self.decoder_num_heads != 0:
            raise ValueError(
                f"`decoder_num_heads`={self.decoder_num_heads} must divide `decoder_embed_dim`={self.decoder_embed_dim}"
            )
        if self.loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"`loss_weighting` must be one of {LOSS_WEIGHTINGS}, got {self.loss_weighting!r}")
        if not math.isfinite(self.backscatter_weight_scale):
            raise ValueError(f"`backscatter_weight_scale` must be a finite number, got {self.backscatter_weight_scale}")
        if self.backscatter_channel_mode not in BACKSCATTER_CHANNEL_MODES:
            raise ValueError(
                f"`backscatter_channel_mode` must be one of {BACKSCATTER_CHANNEL_MODES}, "
                f"got {self.backscatter_channel_mode!r}"
            )
        if self.backscatter_power_source not in BACKSCATTER_POWER_SOURCES:
            raise ValueError(
                f"`backscatter_power_source` must be one of {BACKSCATTER_POWER_SOURCES}, "
                f"got {self.backscatter_power_source!r}"
            )


__all__ = ["AUTHORS_REFERENCE_SETTINGS", "SarMixMAEConfig"]
