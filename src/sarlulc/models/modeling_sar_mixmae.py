"""SAR-W-MixMAE: a hierarchical Swin-style encoder pretrained as a mixed-and-masked autoencoder on SAR backscatter.

Method: MixMAE (Liu et al., "MixMAE: Mixed and Masked Autoencoder for Efficient Pretraining of Hierarchical Vision
Transformers", CVPR 2023, arXiv:2205.13137) with the backscatter-weighted reconstruction loss of SAR-W-MixMAE
(Caglayan, Imamoglu, Kouyama, "SAR-W-MixMAE: SAR Foundation Model Training Using Backscatter Power Weighting",
IGARSS 2025, arXiv:2503.01181). Three models share one encoder, [`SarMixMAEModel`]:

- [`SarMixMAEModel`]: patch embedding -> four stages of (non-shifted) window attention with a learned relative
  position bias and patch merging between them -> final LayerNorm.
- [`SarMixMAEBackbone`]: the encoder as a transformers backbone for segmentation heads: normalized feature maps of
  the stages named in `config.out_features`, among them `"stem"` (the stride-4 patch embedding) for high-resolution
  feature injection.
- [`SarMixMAEForPreTraining`]: MixMAE pretraining with the SAR-W-MixMAE loss.

What pretraining computes, for a batch of `B` images and one binary mask `M` over the last stage's token grid (one
mask per batch, `mask_ratio` of its units set):

- Mixing: mixed image `i` keeps image `i`'s tokens where `M = 0` and takes image `B-1-i`'s where `M = 1`
  (`x_mix[i] = (1 - M) * x[i] + M * x[B-1-i]`; an odd batch's middle image is mixed with itself), after the patch
  embedding and before the fixed 2-D sine-cosine position embedding.
- Group-masked attention: inside a window, token `p` may attend to token `q` only if `M(p) == M(q)`, i.e. both come
  from the same source image: `softmax(q k^T / sqrt(d) + B_rel + G)` with `G[p, q] = 0` when `M(p) == M(q)` and
  `-inf` otherwise, `B_rel` the relative position bias; `M` is nearest-upsampled to every stage's grid.
- Dual reconstruction: the encoder output is unmixed into two decoder sequences per mixed image, branch 1 with the
  `M = 0` tokens and a learned mask token elsewhere, branch 2 with the `M = 1` tokens and the mask token elsewhere.
  Image `i`'s units with `M = 1` are predicted by branch 1 of mixed image `i`, its units with `M = 0` by branch 2 of
  mixed image `B-1-i`: every unit of every image is predicted from the branch in which it was hidden.
- Loss: `mean(w * (prediction - target)**2)` over all units, pixels and bands, the target being each
  `encoder_stride`-pixel patch normalized to zero mean and unit variance (`norm_pix_loss`), and `w` the
  SAR-W-MixMAE backscatter weight `exp(s * (1 - lin_n))` of [`BackscatterWeightedMSE`] (1 everywhere for plain
  MixMAE).

Parameter names differ from MixMAE's code, but the arithmetic and the parameter shapes are the same (the fixed
position embeddings put the column encoding in the first half of the channels, the LayerNorms use eps 1e-5, a window
larger than its stage's grid shrinks with its bias table), so `sarlulc.conversion` maps the authors' checkpoints
onto these classes tensor by tensor.

Layout note: MixMAE uses no shifted windows, so every block of a stage sees the same window partition. We therefore
partition once when a stage starts and keep the tokens in window order `(batch, windows, window_area, channels)` for
all of the stage's blocks (LayerNorm and MLP do not care about token order), instead of partitioning and reversing
in every block as shifted-window Swin must. A window's tokens are contiguous in memory, so the reorderings that
attention needs (heads out of the channels and back) move small blocks that stay in cache. The group mask is built
once per stage per forward, is shared by the whole batch (one mixing mask per batch), and is folded into each
block's relative position bias; without it, the bias is added to the scores by broadcasting, never copied per window.

Outputs follow the transformers conventions: `hidden_states` holds the patch embedding and then every stage's output
(before patch merging), aligned with `config.stage_names`, as `(batch, tokens, channels)`; `reshaped_hidden_states`
holds the same tensors as `(batch, channels, height, width)` maps. Both are views of the very tensors the next layer
consumes, so gradients reach them (`retain_grad()`, `torch.autograd.grad`). `attentions` holds one tensor per
attention block of the encoder, in order, each `(batch * num_windows, num_heads, window_area, window_area)`: the
softmax weights of every window, windows in row-major order within an image, images in batch order (Swin's layout).
A stage whose grid is not a multiple of its window is padded, and the padded keys get weight 0. Attention weights
are computed with the eager implementation only (with SDPA, `attentions` is empty and a warning says so, as for
transformers' Swin).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.backbone_utils import BackboneMixin
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BackboneOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.utils import ModelOutput, can_return_tuple, logging

from .configuration_sar_mixmae import SarMixMAEConfig

logger = logging.get_logger(__name__)

# ---------------------------------------------------------------------------------------------------------------------
# Output dataclasses
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class SarMixMAEModelOutput(ModelOutput):
    """
    Outputs of [`SarMixMAEModel`].

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, height * width, hidden_size)`):
            Last stage's tokens after the final LayerNorm (stride `config.encoder_stride`).
        hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            With `output_hidden_states=True`: one entry per name of `config.stage_names`, `(batch_size, tokens,
            channels)`: the patch embedding (after mixing and position embedding, stride `patch_size`), then each
            stage's output before patch merging. Part of the autograd graph.
        reshaped_hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            The same as maps, `(batch_size, channels, height, width)`.
        attentions (`tuple(torch.FloatTensor)`, *optional*):
            With `output_attentions=True` and eager attention: one entry per attention block of the encoder,
            `(batch_size * num_windows, num_heads, window_area, window_area)` (see the module docstring).
    """

    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    reshaped_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class SarMixMAEForPreTrainingOutput(ModelOutput):
    """
    Outputs of [`SarMixMAEForPreTraining`].

    Args:
        loss (`torch.FloatTensor` of shape `()`):
            Backscatter-weighted (or plain) dual-reconstruction MSE over every value of every image.
        logits (`torch.FloatTensor` of shape `(batch_size, num_units, encoder_stride**2 * num_channels)`):
            Per-image reconstruction of every mixing unit, each predicted by the decoder branch in which it was
            hidden, in the (per-patch normalized, if `norm_pix_loss`) target space. `unpatchify` turns it into images.
        mask (`torch.FloatTensor` of shape `(1, num_units)`):
            The mixing mask `M` shared by the batch: 1.0 where a mixed image holds its partner's token, 0.0 where it
            holds its own. A float, as `ViTMAEForPreTraining`'s mask, so that generic output utilities (which subtract
            and compare outputs) work on it; `mask.bool()` gives the boolean mask that `mixing_mask=` accepts.
        loss_weights (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
            Weight of the squared error of every pixel and band (0 on invalid pixels); with
            `backscatter_channel_mode="shared_avg"` every band holds the same map.
        hidden_states, reshaped_hidden_states, attentions:
            The encoder's, as in [`SarMixMAEModelOutput`], for the mixed batch (with group-masked attention). The
            decoder's attention weights are not returned (as in transformers' `ViTMAEForPreTraining`).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    mask: torch.BoolTensor | None = None
    loss_weights: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    reshaped_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class SarMixMAEEncoderOutput(ModelOutput):
    """
    Outputs of [`SarMixMAEEncoder`] (internal).

    Args:
        last_map (`torch.FloatTensor` of shape `(batch_size, height, width, hidden_size)`):
            The last stage's output map.
        hidden_states, reshaped_hidden_states, attentions: as in [`SarMixMAEModelOutput`], when requested.
    """

    last_map: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    reshaped_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


# ---------------------------------------------------------------------------------------------------------------------
# Helpers: position embeddings, windows, masks
# ---------------------------------------------------------------------------------------------------------------------


def sincos_position_embedding_2d(
    height: int, width: int, dim: int, device=None, dtype=torch.float32, temperature: float = 10000.0
) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding `(height * width, dim)`, tokens in row-major order.

    MAE's layout, which MixMAE's code uses for the encoder and the decoder: the first `dim / 2` channels encode the
    token's column (x), the last `dim / 2` its row (y), each as `[sin(pos * omega), cos(pos * omega)]` with
    `omega_i = 1 / temperature ** (i / (dim / 4))`, `i = 0 .. dim/4 - 1`. The order matters: with the halves swapped
    the model still trains, but it computes something else with a checkpoint of the reference code.
    """
    if dim % 4 != 0:
        raise ValueError(f"2-D sin-cos position embedding needs a width divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter)
    rows = torch.arange(height, device=device, dtype=torch.float32)[:, None] * omega[None, :]
    cols = torch.arange(width, device=device, dtype=torch.float32)[:, None] * omega[None, :]
    rows = torch.cat([rows.sin(), rows.cos()], dim=1)[:, None, :].expand(height, width, 2 * quarter)
    cols = torch.cat([cols.sin(), cols.cos()], dim=1)[None, :, :].expand(height, width, 2 * quarter)
    return torch.cat([cols, rows], dim=-1).reshape(height * width, dim).to(dtype)


def window_partition(hidden_states: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    """`(B, H, W, C)` -> `(B, num_windows, wh * ww, C)`: windows in row-major order, tokens row-major inside each."""
    batch, height, width, channels = hidden_states.shape
    wh, ww = window
    hidden_states = hidden_states.view(batch, height // wh, wh, width // ww, ww, channels)
    return hidden_states.permute(0, 1, 3, 2, 4, 5).reshape(batch, -1, wh * ww, channels)


def window_reverse(windows: torch.Tensor, window: tuple[int, int], height: int, width: int) -> torch.Tensor:
    """Inverse of [`window_partition`]: `(B, num_windows, wh * ww, C)` -> `(B, H, W, C)`."""
    wh, ww = window
    batch, channels = windows.shape[0], windows.shape[-1]
    windows = windows.view(batch, height // wh, width // ww, wh, ww, channels)
    return windows.permute(0, 1, 3, 2, 4, 5).reshape(batch, height, width, channels)


def upsample_unit_mask(mask: torch.Tensor, factor: int) -> torch.Tensor:
    """Nearest upsampling of a `(..., h, w)` mask by an integer factor."""
    if factor == 1:
        return mask
    return mask.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def relative_position_index(window: tuple[int, int], table_window: int) -> torch.Tensor:
    """Index into a `(2 * table_window - 1) ** 2` bias table for every (query, key) pair of a `window`-sized window.

    A window smaller than the table's (a stage grid smaller than the configured window) uses the central part of
    the table, so one learned table serves every input size.
    """
    wh, ww = window
    coords = torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")).flatten(1)  # 2, N
    relative = coords[:, :, None] - coords[:, None, :] + (table_window - 1)  # 2, N, N in [0, 2*table_window-2]
    return relative[0] * (2 * table_window - 1) + relative[1]


def random_mixing_mask(
    num_units: tuple[int, int],
    mask_ratio: float,
    device=None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One MixMAE mask for a whole batch: `(1, h, w)` bool with exactly `int(h * w * mask_ratio)` `True` units.

    The units with the smallest of `h * w` uniform draws are set, as in MixMAE's code: from the same random state
    (`generator`, or the global one) both draw the same mask.
    """
    h, w = num_units
    total = h * w
    num_masked = int(total * mask_ratio)
    noise = torch.rand(total, device=device, generator=generator)
    order = noise.argsort()
    mask = torch.zeros(total, dtype=torch.bool, device=device)
    mask[order[:num_masked]] = True
    return mask.view(1, h, w)


def mix_with_reversed_batch(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MixMAE mixing: sample `i` keeps its own values where `mask` is False and takes sample `B-1-i`'s where True.

    `values` `(B, C, H, W)` (pixels) or `(B, H, W, C)` (tokens); `mask` bool, broadcastable to one sample's grid
    (`(1, 1, H, W)` or `(1, H, W, 1)`). An odd batch's middle sample is mixed with itself. `torch.where` selects, so
    no gradient reaches the unselected sample.
    """
    return torch.where(mask, values.flip(0), values)


def unmix_to_branches(latent: torch.Tensor, mask: torch.Tensor, mask_token: torch.Tensor) -> torch.Tensor:
    """Two decoder sequences per mixed image, stacked along the batch: `(B, L, D)` -> `(2B, L, D)`.

    Branch 1 (rows `0..B-1`) keeps the tokens where `mask` is False (mixed image j's own) and puts `mask_token` where
    it is True; branch 2 (rows `B..2B-1`) keeps the tokens where `mask` is True (those of image B-1-j) and puts
    `mask_token` where it is False. `mask` `(1, L, 1)` bool.
    """
    mask_token = mask_token.to(latent.dtype)
    branch_own = torch.where(mask, mask_token, latent)
    branch_partner = torch.where(mask, latent, mask_token)
    return torch.cat([branch_own, branch_partner], dim=0)


def gather_dual_reconstruction(decoded: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-image predictions of every unit from the branch in which it was hidden: `(2B, L, D)` -> `(B, L, D)`.

    Image i's units with `mask` True were hidden in mixed image i (branch 1 of i); its units with `mask` False were
    hidden in mixed image B-1-i, whose branch 2 reconstructs image i. `mask` `(1, L, 1)` bool.
    """
    batch = decoded.shape[0] // 2
    return torch.where(mask, decoded[:batch], decoded[batch:].flip(0))


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain attention: `softmax(q k^T * scaling + mask) v`; returns `(batch, seq, heads, head_dim)` and weights."""
    # In place on the fresh score tensor: neither op's backward needs the scores, so this saves two full-size
    # allocations per call.
    attn_weights = torch.matmul(query, key.transpose(-1, -2)).mul_(scaling)
    if attention_mask is not None:
        attn_weights = attn_weights.add_(attention_mask)
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


# ---------------------------------------------------------------------------------------------------------------------
# Encoder modules
# ---------------------------------------------------------------------------------------------------------------------


class SarMixMAEDropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch of a sample with probability `drop_prob` (training only)."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return hidden_states
        keep = 1.0 - self.drop_prob
        shape = (hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)
        random = torch.empty(shape, dtype=hidden_states.dtype, device=hidden_states.device).bernoulli_(keep)
        return hidden_states * random / keep

    def extra_repr(self) -> str:
        return f"p={self.drop_prob}"


class SarMixMAEPatchEmbeddings(nn.Module):
    """Non-overlapping `patch_size` x `patch_size` patches -> tokens, then LayerNorm. Output `(B, H/p, W/p, C)`.

    The weights are an ordinary stride-`p` convolution's, but applied as one matrix product on unfolded patches: the
    same arithmetic, produced directly in the channels-last layout the encoder works in (a convolution's NCHW output
    would need a transposed copy before the LayerNorm, which costs more than the convolution itself on CPU).
    """

    def __init__(self, config: SarMixMAEConfig):
        super().__init__()
        self.patch_size = config.patch_size
        self.num_channels = config.num_channels
        self.projection = nn.Conv2d(
            config.num_channels, config.embed_dim, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.norm = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.num_channels:
            raise ValueError(
                f"pixel_values must be (batch, {self.num_channels}, height, width), got {tuple(pixel_values.shape)}"
            )
        batch, channels, height, width = pixel_values.shape
        p = self.patch_size
        patches = pixel_values.reshape(batch, channels, height // p, p, width // p, p)
        patches = patches.permute(0, 2, 4, 1, 3, 5).reshape(batch, height // p, width // p, channels * p * p)
        weight = self.projection.weight.reshape(self.projection.out_channels, -1)
        return self.norm(nn.functional.linear(patches, weight, self.projection.bias))


class SarMixMAEEmbeddings(nn.Module):
    """Patch embedding, optional MixMAE mixing of the batch with its reverse, fixed sin-cos position embedding."""

    def __init__(self, config: SarMixMAEConfig):
        super().__init__()
        self.patch_embeddings = SarMixMAEPatchEmbeddings(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.encoder_stride = config.encoder_stride

    def forward(self, pixel_values: torch.Tensor, mixing_mask: torch.Tensor | None = None) -> torch.Tensor:
        if mixing_mask is not None:
            # The patch embedding and its LayerNorm act on each patch alone and the mask is patch-aligned, so mixing
            # the pixels is exactly mixing the tokens after the patch embedding (MixMAE's definition), on fewer values.
            pixel_mask = upsample_unit_mask(mixing_mask.to(torch.bool), self.encoder_stride)
            pixel_values = mix_with_reversed_batch(pixel_values, pixel_mask[:, None])
        embeddings = self.patch_embeddings(pixel_values)
        _, height, width, channels = embeddings.shape
        position = sincos_position_embedding_2d(height, width, channels, embeddings.device, embeddings.dtype)
        embeddings = embeddings + position.view(1, height, width, channels)
        return self.dropout(embeddings)


class SarMixMAEWindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative position bias.

    Input `(batch, num_windows, window_area, dim)` (see [`window_partition`]). `window_mask` (bool,
    `(num_windows, window_area, window_area)`, `True` = may attend) carries MixMAE's group mask and/or the padding
    mask; it is shared by the whole batch and merged with the bias once per call, never copied per image.

    The windows are folded into the head axis, `(B, nW * heads, N, d)`, so one batched product covers a stage's
    windows, and the scores are viewed as `(B, nW, heads, N, N)`, so the `(heads, N, N)` bias (or the
    `(nW, heads, N, N)` bias with the mask merged in) is added by broadcasting: its gradient is one reduction over the
    batch and the windows. With `output_attentions=True` (eager only) the softmax weights are returned as
    `(B * nW, heads, N, N)`, Swin's layout: a view of the very tensor that multiplies the values (gradients reach it).
    """

    def __init__(self, config: SarMixMAEConfig, dim: int, num_heads: int, window_size: int):
        super().__init__()
        self.config = config
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scaling = self.head_dim**-0.5
        self.window_size = window_size
        self.attention_dropout = config.attention_probs_dropout_prob
        self.is_causal = False
        self.qkv = nn.Linear(dim, 3 * dim, bias=config.qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer(
            "relative_position_index",
            relative_position_index((window_size, window_size), window_size).flatten(),
            persistent=False,
        )

    def relative_position_bias(self, window: tuple[int, int]) -> torch.Tensor:
        """`(num_heads, N, N)` bias for a `window`-sized window (the configured one or a smaller one)."""
        area = window[0] * window[1]
        if window == (self.window_size, self.window_size):
            index = self.relative_position_index
        else:
            index = (
                relative_position_index(window, self.window_size).flatten().to(self.relative_position_bias_table.device)
            )
        # index_select, not indexing: its backward is deterministic on CPU (indexing's scatter-add is not)
        bias = self.relative_position_bias_table.index_select(0, index).view(area, area, self.num_heads)
        return bias.permute(2, 0, 1)

    def forward(
        self,
        hidden_states: torch.Tensor,
        window: tuple[int, int],
        window_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns the projected attention output `(B, nW, N, dim)` and, with `output_attentions=True` and eager
        attention, the weights `(B * nW, heads, N, N)` (else `None`)."""
        batch, num_windows, area, dim = hidden_states.shape
        heads, head_dim = self.num_heads, self.head_dim
        qkv = self.qkv(hidden_states).view(batch, num_windows, area, 3, heads, head_dim)
        qkv = qkv.permute(3, 0, 1, 4, 2, 5).reshape(3, batch, num_windows * heads, area, head_dim)
        query, key, value = qkv.unbind(0)
        bias = self.relative_position_bias(window).to(query.dtype)  # (heads, N, N)
        if window_mask is not None:
            bias = bias.masked_fill(~window_mask[:, None], torch.finfo(bias.dtype).min)  # (nW, heads, N, N)

        implementation = self.config._attn_implementation
        dropout = self.attention_dropout if self.training else 0.0
        weights = None
        if implementation == "sdpa" and query.device.type == "cpu" and bias.requires_grad:
            # PyTorch's CPU SDPA has no fused kernel that returns a gradient for an additive mask (our learned bias):
            # it falls back to an unfused path with extra safety passes, slower than the plain computation, which we
            # run instead. Inference, and CUDA (memory-efficient kernel with bias gradient), keep SDPA.
            implementation = "eager"
        if implementation == "eager":
            attn_output, probabilities = self._eager_attention(query, key, value, bias, dropout)
            if output_attentions:
                weights = probabilities.view(batch * num_windows, heads, area, area)
        else:
            mask = bias.expand(num_windows, heads, area, area).reshape(1, num_windows * heads, area, area)
            if implementation == "sdpa":
                attn_output = nn.functional.scaled_dot_product_attention(
                    query, key, value, attn_mask=mask, dropout_p=dropout, scale=self.scaling
                )
            else:  # a registered attention function: transformers' `(B, N, heads, d)` output convention
                attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
                    implementation, eager_attention_forward
                )
                attn_output, _ = attention_interface(
                    self, query, key, value, mask, dropout=dropout, scaling=self.scaling, is_causal=False
                )
                attn_output = attn_output.transpose(1, 2)
        # (B, nW * heads, N, d) -> (B, nW, N, heads * d): a transpose inside each window
        attn_output = attn_output.view(batch, num_windows, heads, area, head_dim).transpose(2, 3)
        return self.proj(attn_output.reshape(batch, num_windows, area, dim)), weights

    def _eager_attention(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bias: torch.Tensor, dropout: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`softmax(q k^T * scaling + bias) v` for `(B, nW * heads, N, d)` inputs and a `(heads, N, N)` or
        `(nW, heads, N, N)` bias; returns the output `(B, nW * heads, N, d)` and the (dropped-out) weights
        `(B, nW, heads, N, N)` that multiplied the values."""
        batch, folded, area, head_dim = query.shape
        heads = bias.shape[-3]
        windows = (batch, folded // heads, heads, area, head_dim)
        # The query is scaled before the product, as in MixMAE's code: a pass over the queries rather than over the
        # (larger, N > d) scores. The product of the 5-D views is a fresh tensor, not a view: adding the bias in
        # place on it needs no copy in the backward pass.
        query = (query * self.scaling).view(windows)
        scores = torch.matmul(query, key.view(windows).transpose(-1, -2)).add_(bias)
        probabilities = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
        probabilities = nn.functional.dropout(probabilities, p=dropout, training=self.training)
        attn_output = torch.matmul(probabilities, value.view(windows))
        return attn_output.view(batch, folded, area, head_dim), probabilities


class SarMixMAEMLP(nn.Module):
    """fc1 -> activation -> fc2. Without autograd, large inputs run in slices of tokens (see ``forward``)."""

    # Input elements per slice at inference: a slice's mlp_ratio-wide hidden activation (16 MB in float32) stays in
    # cache between fc1, the activation and fc2, and no tile-sized hidden tensor is allocated. Measured on a 2-core
    # CPU: 5-12% faster segmentation of 512 px tiles and a lower memory peak; with autograd the whole hidden
    # activation is needed for the backward pass anyway.
    inference_slice_elements = 2**20

    def __init__(self, config: SarMixMAEConfig, dim: int, mlp_ratio: float | None = None):
        super().__init__()
        hidden = int(dim * (config.mlp_ratio if mlp_ratio is None else mlp_ratio))
        self.fc1 = nn.Linear(dim, hidden)
        self.act = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or hidden_states.numel() <= self.inference_slice_elements:
            return self.dropout(self.fc2(self.act(self.fc1(hidden_states))))
        # Tokens are independent through the MLP, so slices give the same values as one call.
        tokens = hidden_states.reshape(-1, hidden_states.shape[-1])
        output = torch.empty_like(tokens)
        step = max(1, self.inference_slice_elements // tokens.shape[1])
        for start in range(0, tokens.shape[0], step):
            output[start : start + step] = self.fc2(self.act(self.fc1(tokens[start : start + step])))
        return self.dropout(output.view(hidden_states.shape))


class SarMixMAEBlock(GradientCheckpointingLayer):
    """Pre-norm transformer block with window attention, operating on window-ordered tokens."""

    def __init__(self, config: SarMixMAEConfig, dim: int, num_heads: int, window_size: int, drop_path: float):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.attention = SarMixMAEWindowAttention(config, dim, num_heads, window_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.drop_path = SarMixMAEDropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.layernorm_after = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.mlp = SarMixMAEMLP(config, dim)

    def forward(
        self,
        hidden_states: torch.Tensor,
        window: tuple[int, int],
        window_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Window-ordered tokens in and out; also the attention weights when asked (see the attention module)."""
        attention, weights = self.attention(
            self.layernorm_before(hidden_states), window, window_mask, output_attentions
        )
        hidden_states = hidden_states + self.drop_path(self.dropout(attention))
        return hidden_states + self.drop_path(self.mlp(self.layernorm_after(hidden_states))), weights


class SarMixMAEPatchMerging(nn.Module):
    """2x2 neighbouring tokens -> one token of twice the width: concat (4C), LayerNorm, linear to 2C."""

    def __init__(self, config: SarMixMAEConfig, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim, eps=config.layer_norm_eps)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch, height, width, channels = hidden_states.shape
        if height % 2 or width % 2:
            hidden_states = nn.functional.pad(hidden_states, (0, 0, 0, width % 2, 0, height % 2))
            height, width = height + height % 2, width + width % 2
        hidden_states = hidden_states.view(batch, height // 2, 2, width // 2, 2, channels)
        hidden_states = hidden_states.permute(0, 1, 3, 4, 2, 5).reshape(batch, height // 2, width // 2, 4 * channels)
        return self.reduction(self.norm(hidden_states))


class SarMixMAEStage(nn.Module):
    """Blocks of one resolution; tokens enter and leave as maps `(B, H, W, C)` and stay window-ordered inside."""

    def __init__(self, config: SarMixMAEConfig, stage: int, drop_path: list[float]):
        super().__init__()
        dim = config.embed_dim * 2**stage
        # Shrunk to the stage's grid at image_size, with the bias tables: the reference's parameter shapes.
        self.window_size = config.stage_window_size(stage)
        self.blocks = nn.ModuleList(
            [
                SarMixMAEBlock(config, dim, config.num_heads[stage], self.window_size, drop_path[i])
                for i in range(config.depths[stage])
            ]
        )

    def effective_window(self, height: int, width: int) -> tuple[int, int]:
        return min(self.window_size, height), min(self.window_size, width)

    def forward(
        self, hidden_states: torch.Tensor, group_mask: torch.Tensor | None = None, output_attentions: bool = False
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """`hidden_states` `(B, H, W, C)`; `group_mask` `(H, W)` bool source-image id per token, shared by the batch.

        Returns the output map `(B, H, W, C)` and the attention weights of the stage's blocks (empty unless asked).
        """
        height, width = hidden_states.shape[1:3]
        window = self.effective_window(height, width)
        pad_h, pad_w = (-height) % window[0], (-width) % window[1]
        padded_h, padded_w = height + pad_h, width + pad_w
        if pad_h or pad_w:
            hidden_states = nn.functional.pad(hidden_states, (0, 0, 0, pad_w, 0, pad_h))
        window_mask = self.window_mask(group_mask, (height, width), (pad_h, pad_w), window, hidden_states.device)

        windows = window_partition(hidden_states, window)
        attentions = ()
        for block in self.blocks:
            windows, weights = block(windows, window, window_mask, output_attentions)
            if weights is not None:
                attentions += (weights,)
        hidden_states = window_reverse(windows, window, padded_h, padded_w)
        if pad_h or pad_w:
            hidden_states = hidden_states[:, :height, :width].contiguous()
        return hidden_states, attentions

    @staticmethod
    def window_mask(
        group_mask: torch.Tensor | None,
        grid: tuple[int, int],
        padding: tuple[int, int],
        window: tuple[int, int],
        device: torch.device,
    ) -> torch.Tensor | None:
        """`(num_windows, N, N)` bool, `True` where query p may attend to key q, or `None` when nothing is masked.

        Built once per stage and forward pass: the same for every image of the batch and every block of the stage.
        """
        pad_h, pad_w = padding
        if group_mask is None and not (pad_h or pad_w):
            return None
        height, width = grid
        allowed = None
        if group_mask is not None:
            groups = group_mask.to(device=device, dtype=torch.int8)
            if pad_h or pad_w:
                groups = nn.functional.pad(groups, (0, pad_w, 0, pad_h))
            groups = window_partition(groups.view(1, height + pad_h, width + pad_w, 1), window)[0, :, :, 0]  # nW, N
            allowed = groups[:, :, None] == groups[:, None, :]
        if pad_h or pad_w:
            real = torch.ones(1, height, width, 1, dtype=torch.int8, device=device)
            real = nn.functional.pad(real, (0, 0, 0, pad_w, 0, pad_h))
            real_keys = window_partition(real, window)[0, :, :, 0].bool()[:, None, :]  # nW, 1, N
            allowed = real_keys if allowed is None else allowed & real_keys
            allowed = allowed.expand(-1, window[0] * window[1], -1)
        return allowed


class SarMixMAEEncoder(nn.Module):
    def __init__(self, config: SarMixMAEConfig):
        super().__init__()
        total = sum(config.depths)
        rates = [config.drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        self.stages = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        start = 0
        for stage in range(config.num_layers):
            depth = config.depths[stage]
            self.stages.append(SarMixMAEStage(config, stage, rates[start : start + depth]))
            start += depth
            if stage < config.num_layers - 1:
                self.downsamples.append(SarMixMAEPatchMerging(config, config.embed_dim * 2**stage))

    def forward(
        self,
        hidden_states: torch.Tensor,
        group_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> SarMixMAEEncoderOutput:
        """`hidden_states` `(B, H, W, C)` (the embeddings); `group_mask` `(h_last, w_last)` at the last stage's grid
        or `None`. Returns the last stage's map and, when asked, the hidden states (embeddings, then every stage's
        output before merging) and every block's attention weights."""
        tokens: list[torch.Tensor] = []
        maps: list[torch.Tensor] = []
        attentions: list[torch.Tensor] = []
        if output_hidden_states:
            hidden_states = self._record(hidden_states, tokens, maps)
        num_stages = len(self.stages)
        for index, stage in enumerate(self.stages):
            stage_mask = None
            unit = 2 ** (num_stages - 1 - index)  # tokens per mixing unit side at this stage
            # A window that tiles inside one mixing unit never sees two source images: no mask needed there.
            if group_mask is not None and unit % stage.window_size != 0:
                stage_mask = upsample_unit_mask(group_mask, unit)
            hidden_states, stage_attentions = stage(hidden_states, stage_mask, output_attentions)
            attentions.extend(stage_attentions)
            if output_hidden_states:
                hidden_states = self._record(hidden_states, tokens, maps)
            if index < num_stages - 1:
                hidden_states = self.downsamples[index](hidden_states)
        return SarMixMAEEncoderOutput(
            last_map=hidden_states,
            hidden_states=tuple(tokens) if output_hidden_states else None,
            reshaped_hidden_states=tuple(maps) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )

    @staticmethod
    def _record(hidden_states: torch.Tensor, tokens: list[torch.Tensor], maps: list[torch.Tensor]) -> torch.Tensor:
        """Append `hidden_states` `(B, H, W, C)` to `tokens` as `(B, H*W, C)` and to `maps` as `(B, C, H, W)`, and
        return a `(B, H, W, C)` view of them for the next layer to consume.

        All three are views of one memory (no copy). Because the next layer reads the returned view, the recorded
        tensors are its ancestors in the autograd graph: gradients reach them and `retain_grad()` works on them
        (views taken *after* the fact, beside the consumed tensor, would get no gradient).
        """
        batch, height, width, channels = hidden_states.shape
        flat = hidden_states.reshape(batch, height * width, channels)
        grid = flat.view(batch, height, width, channels).permute(0, 3, 1, 2)
        tokens.append(flat)
        maps.append(grid)
        return grid.permute(0, 2, 3, 1)


# ---------------------------------------------------------------------------------------------------------------------
# Pretrained model base
# ---------------------------------------------------------------------------------------------------------------------


# Every Auto class a sarlulc encoder checkpoint answers to, for loading with only `trust_remote_code=True`:
# transformers writes the saved class's entry alone.
SAR_MIXMAE_AUTO_MAP = {
    "AutoConfig": "configuration_sar_mixmae.SarMixMAEConfig",
    "AutoModel": "modeling_sar_mixmae.SarMixMAEModel",
    "AutoModelForPreTraining": "modeling_sar_mixmae.SarMixMAEForPreTraining",
    "AutoBackbone": "modeling_sar_mixmae.SarMixMAEBackbone",
}


class SarMixMAEPreTrainedModel(PreTrainedModel):
    config: SarMixMAEConfig
    config_class = SarMixMAEConfig
    base_model_prefix = "sar_mixmae"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["SarMixMAEBlock", "SarMixMAEDecoderBlock"]
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_flex_attn = False
    _supports_attention_backend = True
    _can_compile_fullgraph = True

    def save_pretrained(self, save_directory, *args, **kwargs):
        if self._auto_class is not None:  # registered for remote code (importing sarlulc does this)
            self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **SAR_MIXMAE_AUTO_MAP}
        return super().save_pretrained(save_directory, *args, **kwargs)

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):
            # Patch embedding as a linear layer on flattened patches (MAE's choice).
            fan_in = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
            bound = math.sqrt(6.0 / (fan_in + module.out_channels))
            init.uniform_(module.weight, -bound, bound)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, SarMixMAEWindowAttention):
            init.trunc_normal_(module.relative_position_bias_table, std=std)
            window = (module.window_size, module.window_size)
            init.copy_(module.relative_position_index, relative_position_index(window, module.window_size).flatten())
        elif isinstance(module, SarMixMAEForPreTraining):
            init.normal_(module.mask_token, std=std)


def _warn_if_attentions_unavailable(config: SarMixMAEConfig, output_attentions: bool) -> None:
    if output_attentions and config._attn_implementation != "eager":
        logger.warning_once(
            f"output_attentions=True with attn_implementation={config._attn_implementation!r}: only the eager "
            "implementation computes attention weights, so `attentions` is empty. Load the model with "
            'attn_implementation="eager" (or call model.set_attn_implementation("eager")) to get them.'
        )


class SarMixMAEModel(SarMixMAEPreTrainedModel):
    """The SAR-W-MixMAE encoder: patch embedding, four window-attention stages with patch merging, LayerNorm.

    `add_final_layernorm=False` (the backbone) leaves out the final LayerNorm, which only `last_hidden_state` uses.
    """

    def __init__(self, config: SarMixMAEConfig, add_final_layernorm: bool = True):
        super().__init__(config)
        self.embeddings = SarMixMAEEmbeddings(config)
        self.encoder = SarMixMAEEncoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if add_final_layernorm else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embeddings

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        mixing_mask: torch.Tensor | None = None,
        attention_group_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> SarMixMAEModelOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
            Normalized backscatter (see `SarImageProcessor`); height and width multiples of `config.encoder_stride`.
        mixing_mask (`torch.BoolTensor` of shape `(1, h, w)` at the last stage's grid, *optional*):
            MixMAE mixing: image `i` takes image `B-1-i`'s tokens where the mask is `True`.
        attention_group_mask (`torch.BoolTensor` of shape `(1, h, w)` or `(h, w)`, *optional*):
            Source-image id of every last-stage unit, shared by the batch; tokens attend only to tokens with the same
            id. Pass the mixing mask here to stop information flowing between mixed images.
        output_hidden_states (`bool`, *optional*):
            Return the patch embedding and every stage's output (`config.stage_names`), as tokens and as maps.
        output_attentions (`bool`, *optional*):
            Return every encoder block's attention weights (eager attention only).
        """
        height, width = pixel_values.shape[-2:]
        self.config.check_input_size(height, width)
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if output_attentions is None:
            output_attentions = self.config.output_attentions
        _warn_if_attentions_unavailable(self.config, output_attentions)
        group_mask = None
        if attention_group_mask is not None:
            group_mask = attention_group_mask.reshape(attention_group_mask.shape[-2:])
        embeddings = self.embeddings(pixel_values, mixing_mask)
        encoded = self.encoder(
            embeddings, group_mask, output_hidden_states=output_hidden_states, output_attentions=output_attentions
        )
        last_map = encoded.last_map
        last_hidden_state = last_map.reshape(last_map.shape[0], -1, last_map.shape[-1])
        if self.layernorm is not None:
            last_hidden_state = self.layernorm(last_hidden_state)
        return SarMixMAEModelOutput(
            last_hidden_state=last_hidden_state,
            hidden_states=encoded.hidden_states,
            reshaped_hidden_states=encoded.reshaped_hidden_states,
            attentions=encoded.attentions,
        )


class SarMixMAEBackbone(BackboneMixin, SarMixMAEPreTrainedModel):
    """The encoder as a backbone: LayerNorm-ed feature maps `(B, C, H, W)` (channels-last memory) of `out_features`.

    `"stem"` is the stride-`patch_size` patch embedding (high-resolution detail for injection), `"stageN"` the output
    of stage N before patch merging (strides 4, 8, 16, 32 by default). With `output_hidden_states=True`,
    `hidden_states` holds the un-normalized maps of every name in `stage_names` (as transformers' Swin backbone);
    with `output_attentions=True`, `attentions` holds every encoder block's weights (see [`SarMixMAEModelOutput`]).
    """

    # The backbone's encoder has no final LayerNorm (every feature map gets its own norm): a parameter no loss
    # reaches would make DistributedDataParallel fail. Pretraining checkpoints carry one; it is not loaded.
    _keys_to_ignore_on_load_unexpected = [r"^sar_mixmae\.layernorm\."]

    def __init__(self, config: SarMixMAEConfig):
        super().__init__(config)
        self.sar_mixmae = SarMixMAEModel(config, add_final_layernorm=False)
        self.num_features = [config.embed_dim] + [config.embed_dim * 2**i for i in range(config.num_layers)]
        self.hidden_states_norms = nn.ModuleDict(
            {
                stage: nn.LayerNorm(channels, eps=config.layer_norm_eps)
                for stage, channels in zip(self.out_features, self.channels)
            }
        )
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> BackboneOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
            Normalized backscatter; height and width multiples of `config.encoder_stride`.
        """
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        # The feature maps are the encoder's hidden states: always computed (views, no extra work), returned on demand.
        outputs = self.sar_mixmae(
            pixel_values, output_hidden_states=True, output_attentions=output_attentions, return_dict=True
        )
        maps = dict(zip(self.stage_names, outputs.reshaped_hidden_states))
        feature_maps = []
        for stage in self.out_features:
            feature = maps[stage].permute(0, 2, 3, 1)
            # (B, C, H, W) views of channels-last memory, as the encoder computes them: no copy, and the layout in
            # which convolutional heads run fastest.
            feature_maps.append(self.hidden_states_norms[stage](feature).permute(0, 3, 1, 2))
        return BackboneOutput(
            feature_maps=tuple(feature_maps),
            hidden_states=outputs.reshaped_hidden_states if output_hidden_states else None,
            attentions=outputs.attentions,
        )


# ---------------------------------------------------------------------------------------------------------------------
# Pretraining: decoder, loss
# ---------------------------------------------------------------------------------------------------------------------


class SarMixMAEDecoderAttention(nn.Module):
    """Full multi-head self-attention over the (few) last-stage tokens of one decoder branch."""

    def __init__(self, config: SarMixMAEConfig, dim: int, num_heads: int):
        super().__init__()
        self.config = config
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_probs_dropout_prob
        self.is_causal = False
        self.qkv = nn.Linear(dim, 3 * dim, bias=config.qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch, length, dim = hidden_states.shape
        qkv = self.qkv(hidden_states).view(batch, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        query, key, value = qkv.unbind(0)
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, _ = attention_interface(
            self,
            query,
            key,
            value,
            None,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            is_causal=False,
        )
        return self.proj(attn_output.reshape(batch, length, dim))


class SarMixMAEDecoderBlock(GradientCheckpointingLayer):
    def __init__(self, config: SarMixMAEConfig):
        super().__init__()
        dim = config.decoder_embed_dim
        self.layernorm_before = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.attention = SarMixMAEDecoderAttention(config, dim, config.decoder_num_heads)
        self.layernorm_after = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.mlp = SarMixMAEMLP(config, dim)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.attention(self.layernorm_before(hidden_states))
        return hidden_states + self.mlp(self.layernorm_after(hidden_states))


class BackscatterWeightedMSE(nn.Module):
    """SAR-W-MixMAE's pixel loss (the authors' form): the plain mean of `w * (prediction - target)**2`.

    `w = exp(s * (1 - lin_n))` per pixel and band, with `lin = 10 ** (dB / 10)` the linear backscatter power and
    `lin_n = (lin - min) / (max - min + 1e-6)` its min-max normalization over each image's height and width, for each
    band (`backscatter_channel_mode="per_channel"`) or for the band-averaged power (`"shared_avg"`, one map for all
    bands). So `w` lies in `[1, e**s]`, and dark pixels (water, smooth surfaces) weigh most. The dB values are read
    from the input `config.backscatter_power_source` names: the calibrated, clipped sigma0 in dB that the image
    processor returns as `backscatter_db` (physical power), or the model input itself (the authors' code). With
    `loss_weighting="none"` every value weighs 1 (plain MixMAE).

    Invalid pixels (`pixel_mask` False) weigh 0, are left out of the min and max, and are not counted in the mean;
    without a mask the loss is exactly `mean(w * error**2)` over every value. The weight is a constant of the loss:
    no gradient flows through it.
    """

    # Added to max - min in the normalization, as in the authors' code (it also keeps a flat image finite).
    normalization_eps = 1e-6

    def __init__(self, config: SarMixMAEConfig):
        super().__init__()
        self.weighting = config.loss_weighting
        self.power_source = config.backscatter_power_source
        self.channel_mode = config.backscatter_channel_mode
        self.scale = config.backscatter_weight_scale

    @property
    def needs_backscatter_db(self) -> bool:
        """Whether [`pixel_weights`] needs the `backscatter_db` input."""
        return self.weighting == "backscatter" and self.power_source == "backscatter_db"

    def pixel_weights(
        self, pixel_values: torch.Tensor, backscatter_db: torch.Tensor | None, pixel_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """`(B, C, H, W)` weights (float32, or float64 for float64 inputs), 0 where `pixel_mask` is False.

        `pixel_values` and `backscatter_db` are `(B, C, H, W)`; `backscatter_db` is read only when
        [`needs_backscatter_db`].
        """
        batch, channels, height, width = pixel_values.shape
        valid = None if pixel_mask is None else pixel_mask.reshape(batch, 1, height, width).to(torch.bool)
        if self.weighting == "none":
            dtype = torch.promote_types(pixel_values.dtype, torch.float32)
            ones = torch.ones(batch, channels, height, width, dtype=dtype, device=pixel_values.device)
            return ones if valid is None else ones * valid
        decibels = backscatter_db if self.power_source == "backscatter_db" else pixel_values
        # at least float32 (10 ** (dB / 10) spans decades: half precision would flatten it), float64 kept
        decibels = decibels.detach().to(torch.promote_types(decibels.dtype, torch.float32))
        power = torch.pow(10.0, decibels / 10.0)
        if self.channel_mode == "shared_avg":
            power = power.mean(dim=1, keepdim=True)
        if valid is None:
            low = power.amin(dim=(-2, -1), keepdim=True)
            high = power.amax(dim=(-2, -1), keepdim=True)
        else:
            low = power.masked_fill(~valid, math.inf).amin(dim=(-2, -1), keepdim=True)
            high = power.masked_fill(~valid, -math.inf).amax(dim=(-2, -1), keepdim=True)
        normalized = (power - low) / (high - low + self.normalization_eps)
        weights = torch.exp(self.scale * (1.0 - normalized))
        if valid is not None:
            # where, not a product: an image without a valid pixel has an infinite min and would give NaN * 0
            weights = torch.where(valid, weights, 0.0)
        return weights.expand(batch, channels, height, width)

    def forward(
        self,
        prediction: torch.Tensor,
        target: torch.Tensor,
        weights: torch.Tensor,
        num_valid_values: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`prediction`, `target`, `weights` `(B, L, P*P*C)`. `num_valid_values`: how many values have a valid pixel
        (with a `pixel_mask`); the mean is over those (the others weigh 0), else over every value."""
        dtype = torch.promote_types(prediction.dtype, torch.float32)
        weighted = (prediction.to(dtype) - target.to(dtype)).square_().mul_(weights)
        if num_valid_values is None:
            return weighted.mean()
        return weighted.sum() / num_valid_values.clamp_min(1)


class SarMixMAEForPreTraining(SarMixMAEPreTrainedModel):
    """MixMAE pretraining (Liu et al., CVPR 2023) with the SAR-W-MixMAE loss (Caglayan et al., IGARSS 2025).

    One random mask `M` per batch on the last stage's grid (`mask_ratio` of the units); image `i` is mixed with image
    `B-1-i`; one encoder pass with group-masked attention; unmixing into two decoder branches per mixed image (branch 1
    keeps the `M = 0` tokens, branch 2 the `M = 1` tokens, a learned mask token elsewhere); a light transformer
    decoder predicts `encoder_stride**2 * C` pixel values per unit. Every unit of every image is predicted from the
    branch in which it was hidden (dual reconstruction), and the backscatter-weighted MSE is taken over all of them
    (the module docstring gives the formulas).

    The backscatter weight needs the physical backscatter of every pixel, which the standardized `pixel_values` no
    longer state: pass `backscatter_db`, which the image processor returns beside `pixel_values`::

        inputs = processor(dn_tiles, return_tensors="pt", return_backscatter_db=True)
        loss = model(**inputs).loss
    """

    def __init__(self, config: SarMixMAEConfig):
        super().__init__(config)
        self.sar_mixmae = SarMixMAEModel(config)
        self.decoder_embed = nn.Linear(config.hidden_size, config.decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.decoder_embed_dim))
        self.decoder_blocks = nn.ModuleList([SarMixMAEDecoderBlock(config) for _ in range(config.decoder_depth)])
        self.decoder_norm = nn.LayerNorm(config.decoder_embed_dim, eps=config.layer_norm_eps)
        self.decoder_pred = nn.Linear(
            config.decoder_embed_dim, config.encoder_stride**2 * config.num_channels, bias=True
        )
        self.loss_fn = BackscatterWeightedMSE(config)
        self.post_init()

    # -- patch helpers ------------------------------------------------------------------------------------------------
    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """`(B, C, H, W)` -> `(B, L, p*p*C)` with `p = encoder_stride`, pixel-major then channel."""
        p = self.config.encoder_stride
        batch, channels, height, width = images.shape
        patches = images.reshape(batch, channels, height // p, p, width // p, p)
        return patches.permute(0, 2, 4, 3, 5, 1).reshape(batch, (height // p) * (width // p), p * p * channels)

    def unpatchify(self, patches: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Inverse of [`patchify`]: `(B, L, p*p*C)` -> `(B, C, H, W)`."""
        p = self.config.encoder_stride
        batch = patches.shape[0]
        channels = patches.shape[-1] // (p * p)
        images = patches.reshape(batch, height // p, width // p, p, p, channels)
        return images.permute(0, 5, 1, 3, 2, 4).reshape(batch, channels, height, width)

    def sample_mixing_mask(
        self, units: tuple[int, int], device: torch.device, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        ratio = self.config.mask_ratio
        if self.training and self.config.range_mask_ratio > 0:
            extra = torch.rand((), generator=generator, device=device).item() * self.config.range_mask_ratio
            ratio = ratio + extra
        return random_mixing_mask(units, ratio, device=device, generator=generator)

    def targets(self, pixel_values: torch.Tensor) -> torch.Tensor:
        target = self.patchify(pixel_values.to(torch.promote_types(pixel_values.dtype, torch.float32)))
        if self.config.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True, unbiased=True)
            target = (target - mean) / (var + 1.0e-6).sqrt()
        return target

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        pixel_mask: torch.Tensor | None = None,
        backscatter_db: torch.Tensor | None = None,
        mixing_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        generator: torch.Generator | None = None,
        **kwargs,
    ) -> SarMixMAEForPreTrainingOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
            Normalized backscatter, as produced by `SarImageProcessor`.
        pixel_mask (`torch.BoolTensor` of shape `(batch_size, height, width)`, *optional*):
            Valid pixels; invalid ones (nodata) weigh 0 in the loss, take no part in the backscatter weight's min and
            max, and are not counted in the mean. Without it every pixel is valid (the authors' code has no mask).
        backscatter_db (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`, *optional*):
            The calibrated sigma0 in dB, clipped to the processor's range, that `pixel_values` standardizes (0.0 where
            invalid): `SarImageProcessor(...)(images, return_backscatter_db=True)["backscatter_db"]`. The backscatter
            weight is computed from it; required when `config.loss_weighting="backscatter"` with
            `config.backscatter_power_source="backscatter_db"` (the defaults), unused otherwise.
        mixing_mask (`torch.BoolTensor` of shape `(1, h, w)` at the last stage's grid, *optional*):
            A given MixMAE mask (tests, analysis); a random one with `config.mask_ratio` otherwise.
        output_hidden_states (`bool`, *optional*):
            Return the encoder's hidden states (of the mixed batch).
        output_attentions (`bool`, *optional*):
            Return the encoder's attention weights (eager attention only; the decoder's are not returned).
        generator (`torch.Generator`, *optional*):
            Source of randomness for the mask.
        """
        height, width = pixel_values.shape[-2:]
        self.config.check_input_size(height, width)
        if self.loss_fn.needs_backscatter_db:
            if backscatter_db is None:
                raise ValueError(
                    "the backscatter-weighted loss (loss_weighting='backscatter') needs `backscatter_db`, the clipped "
                    "sigma0 in dB that pixel_values standardizes, shaped like pixel_values: get it from the image "
                    "processor with processor(images, return_tensors='pt', return_backscatter_db=True), or set "
                    "loss_weighting='none' (plain MixMAE) or backscatter_power_source='pixel_values'"
                )
            if backscatter_db.shape != pixel_values.shape:
                raise ValueError(
                    f"`backscatter_db` must have the shape of pixel_values {tuple(pixel_values.shape)}, "
                    f"got {tuple(backscatter_db.shape)}"
                )
        stride = self.config.encoder_stride
        units = (height // stride, width // stride)
        if mixing_mask is None:
            mixing_mask = self.sample_mixing_mask(units, pixel_values.device, generator)
        mixing_mask = mixing_mask.to(device=pixel_values.device, dtype=torch.bool).reshape(1, *units)

        outputs = self.sar_mixmae(
            pixel_values,
            mixing_mask=mixing_mask,
            attention_group_mask=mixing_mask,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )
        latent = self.decoder_embed(outputs.last_hidden_state)  # (B, L, D)
        flat_mask = mixing_mask.reshape(1, -1, 1)
        decoded = unmix_to_branches(latent, flat_mask, self.mask_token)
        position = sincos_position_embedding_2d(*units, latent.shape[-1], latent.device, latent.dtype)
        decoded = decoded + position.unsqueeze(0)
        for block in self.decoder_blocks:
            decoded = block(decoded)
        # Norm and head act per token, so picking each unit's branch first gives the same predictions for half the
        # work.
        logits = self.decoder_pred(self.decoder_norm(gather_dual_reconstruction(decoded, flat_mask)))

        weights = self.loss_fn.pixel_weights(pixel_values, backscatter_db, pixel_mask)
        num_valid_values = None if pixel_mask is None else pixel_mask.sum() * self.config.num_channels
        loss = self.loss_fn(logits, self.targets(pixel_values), self.patchify(weights), num_valid_values)

        return SarMixMAEForPreTrainingOutput(
            loss=loss,
            logits=logits,
            mask=mixing_mask.reshape(1, -1).to(logits.dtype),
            loss_weights=weights,
            hidden_states=outputs.hidden_states,
            reshaped_hidden_states=outputs.reshaped_hidden_states,
            attentions=outputs.attentions,
        )


__all__ = [
    "BackscatterWeightedMSE",
    "SarMixMAEBackbone",
    "SarMixMAEForPreTraining",
    "SarMixMAEModel",
    "SarMixMAEPreTrainedModel",
    "gather_dual_reconstruction",
    "mix_with_reversed_batch",
    "unmix_to_branches",
]
