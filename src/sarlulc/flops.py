"""Analytic FLOP counts of the sarlulc models, layer by layer.

Counts follow the convention of `torch.utils.flop_counter.FlopCounterMode`: 2 FLOPs per multiply-accumulate in
matrix products, convolutions and attention (`q k^T` and `p v`); element-wise work (norms, activations, softmax,
pooling, interpolation) is not counted. A training step counts the backward pass as twice the forward for every
product whose inputs need gradients; the patch embedding's input (the pixels) needs none, so its backward is half.

Use them to turn a measured step time into achieved FLOP/s and, on a GPU, model FLOP utilization (MFU)::

    flops = pretraining_flops(config, batch=8, height=256, width=256)
    achieved = flops.training / seconds_per_step
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["LayerFlops", "ModelFlops", "encoder_flops", "pretraining_flops", "segmentation_flops"]


@dataclass
class LayerFlops:
    name: str
    forward: int
    # FLOPs of the backward pass: 2x forward, or 1x for a product whose input needs no gradient.
    backward: int


@dataclass
class ModelFlops:
    """Per-layer forward/backward FLOPs of one call; `forward`, `training` (forward + backward) are totals."""

    layers: list[LayerFlops] = field(default_factory=list)

    def add(self, name: str, forward: int, input_needs_grad: bool = True) -> None:
        self.layers.append(LayerFlops(name, int(forward), int(forward) * (2 if input_needs_grad else 1)))

    def extend(self, other: ModelFlops, prefix: str = "") -> None:
        self.layers.extend(LayerFlops(prefix + layer.name, layer.forward, layer.backward) for layer in other.layers)

    @property
    def forward(self) -> int:
        return sum(layer.forward for layer in self.layers)

    @property
    def training(self) -> int:
        return sum(layer.forward + layer.backward for layer in self.layers)

    def by_group(self, depth: int = 1) -> dict[str, int]:
        """Forward FLOPs summed by the first `depth` dotted parts of the layer names."""
        groups: dict[str, int] = {}
        for layer in self.layers:
            key = ".".join(layer.name.split(".")[:depth])
            groups[key] = groups.get(key, 0) + layer.forward
        return groups


def _linear(tokens: int, fan_in: int, fan_out: int) -> int:
    return 2 * tokens * fan_in * fan_out


def _conv(batch: int, height: int, width: int, c_in: int, c_out: int, kernel: int) -> int:
    return 2 * batch * height * width * c_in * c_out * kernel * kernel


def encoder_flops(config, batch: int, height: int, width: int) -> ModelFlops:
    """The SAR-W-MixMAE encoder (`SarMixMAEModel`) on a `(batch, C, height, width)` input.

    Each stage's window is `config.stage_window_size(stage)` (shrunk to the grid at `config.image_size`), and shrinks
    further to a smaller grid; grids that are not a multiple of the window are padded, and the padded tokens are
    computed too (as the model does).
    """
    flops = ModelFlops()
    p = config.patch_size
    grid_h, grid_w = height // p, width // p
    flops.add("patch_embed", _linear(batch * grid_h * grid_w, config.num_channels * p * p, config.embed_dim), False)
    for stage in range(config.num_layers):
        dim = config.embed_dim * 2**stage
        window_h = min(config.stage_window_size(stage), grid_h)
        window_w = min(config.stage_window_size(stage), grid_w)
        padded = batch * math.ceil(grid_h / window_h) * window_h * math.ceil(grid_w / window_w) * window_w
        area = window_h * window_w
        hidden = int(dim * config.mlp_ratio)
        for block in range(config.depths[stage]):
            name = f"stage{stage + 1}.block{block}"
            flops.add(f"{name}.qkv", _linear(padded, dim, 3 * dim))
            flops.add(f"{name}.attention", 2 * 2 * padded * area * dim)  # q k^T and p v over each window
            flops.add(f"{name}.proj", _linear(padded, dim, dim))
            flops.add(f"{name}.mlp", _linear(padded, dim, hidden) + _linear(padded, hidden, dim))
        if stage < config.num_layers - 1:
            grid_h, grid_w = math.ceil(grid_h / 2), math.ceil(grid_w / 2)
            flops.add(f"stage{stage + 1}.merge", _linear(batch * grid_h * grid_w, 4 * dim, 2 * dim))
    return flops


def pretraining_flops(config, batch: int, height: int, width: int) -> ModelFlops:
    """`SarMixMAEForPreTraining`: encoder on the B mixed images, decoder on 2B branches, head on B gathered rows."""
    flops = ModelFlops()
    flops.extend(encoder_flops(config, batch, height, width), "encoder.")
    stride = config.encoder_stride
    units = (height // stride) * (width // stride)
    decoder = config.decoder_embed_dim
    hidden = int(decoder * config.mlp_ratio)
    flops.add("decoder.embed", _linear(batch * units, config.hidden_size, decoder))
    sequences = 2 * batch
    for block in range(config.decoder_depth):
        name = f"decoder.block{block}"
        flops.add(f"{name}.qkv", _linear(sequences * units, decoder, 3 * decoder))
        flops.add(f"{name}.attention", 2 * 2 * sequences * units * units * decoder)
        flops.add(f"{name}.proj", _linear(sequences * units, decoder, decoder))
        flops.add(
            f"{name}.mlp", _linear(sequences * units, decoder, hidden) + _linear(sequences * units, hidden, decoder)
        )
    flops.add("decoder.pred", _linear(batch * units, decoder, stride * stride * config.num_channels))
    return flops


def segmentation_flops(config, batch: int, height: int, width: int) -> ModelFlops:
    """`SarLulcForSemanticSegmentation` (a `SarLulcConfig`) on a `(batch, C, height, width)` input, forward."""
    backbone = config.backbone_config
    flops = ModelFlops()
    flops.extend(encoder_flops(backbone, batch, height, width), "backbone.")
    channels = config.decoder_hidden_size
    stage_channels = [backbone.embed_dim * 2**i for i in range(backbone.num_layers)]
    sizes = [(height // (backbone.patch_size * 2**i), width // (backbone.patch_size * 2**i)) for i in range(4)]
    top_h, top_w = sizes[-1]
    for scale in config.pool_scales:
        flops.add(f"decoder.ppm{scale}", _conv(batch, scale, scale, stage_channels[-1], channels, 1))
    flops.add(
        "decoder.ppm_bottleneck",
        _conv(batch, top_h, top_w, stage_channels[-1] + len(config.pool_scales) * channels, channels, 3),
    )
    for level, (c_in, (h, w)) in enumerate(zip(stage_channels[:-1], sizes[:-1])):
        flops.add(f"decoder.lateral{level}", _conv(batch, h, w, c_in, channels, 1))
        flops.add(f"decoder.fpn{level}", _conv(batch, h, w, channels, channels, 3))
    h4, w4 = sizes[0]
    flops.add("decoder.fpn_bottleneck", _conv(batch, h4, w4, len(stage_channels) * channels, channels, 3))

    skip_channels: dict[int, int] = {}
    if config.use_highres_injection:
        projected = backbone.embed_dim if "stem" in config.highres_sources else 0
        if "detail" in config.highres_sources:
            detail = config.highres_channels
            flops.add(
                "injection.detail_stem", _conv(batch, height // 2, width // 2, backbone.num_channels, detail, 3), False
            )
            projected += detail
            skip_channels = {2: detail}
        flops.add("injection.projection", _conv(batch, h4, w4, projected, channels, 1))
    if config.use_refine_up_head:
        flops.add("head.classifier", _conv(batch, h4, w4, channels, config.num_labels, 1))
        c_in, stride = channels, 4
        for step, c_out in enumerate(config.refine_channels):
            h, w = height // stride, width // stride
            flops.add(f"head.refine{step}", _conv(batch, h, w, c_in + skip_channels.get(stride, 0), c_out, 3))
            flops.add(f"head.correction{step}", _conv(batch, h, w, c_out, config.num_labels, 1))
            c_in, stride = c_out, stride // 2
    else:
        flops.add("head.classifier", _conv(batch, h4, w4, channels, config.num_labels, 1))
    return flops
