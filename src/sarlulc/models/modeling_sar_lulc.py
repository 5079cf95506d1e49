"""LULC and water segmentation: SAR-W-MixMAE encoder + UperNet-style decoder + three lightweight refinements.

The model of "Enhanced LULC Segmentation via Lightweight Model Refinements on ALOS-2 SAR Data" (from the group of
the SAR-W-MixMAE authors, Caglayan, Imamoglu and Kouyama): a hierarchical encoder pretrained with SAR-W-MixMAE
(arXiv:2503.01181), an UperNet decoder, and three refinements, each a switch in [`SarLulcConfig`] whose module, when
off, is absent rather than bypassed:

[`SarLulcForSemanticSegmentation`] = [`SarMixMAEBackbone`] -> [`SarLulcUperDecoder`] (pyramid pooling on stage 4, FPN
over stages 1-4, fused at stride 4) -> optional [`HighResInjection`] -> [`RefineUpHead`] or [`BilinearUpHead`] ->
logits at the input resolution.

1. High-resolution feature injection ([`HighResInjection`]): features at stride <= 4 (the encoder's patch embedding,
   a light convolutional stem at stride 2) are projected and added to the fused stride-4 map, so that thin structures
   and boundaries survive the encoder's downsampling.
2. Progressive refine-up head ([`RefineUpHead`]): instead of one x4 bilinear upsampling of stride-4 logits, 3x3
   conv-BN-ReLU refinement blocks alternate with x2 upsampling (stride 4 -> 2 -> 1), each adding a correction to the
   logits.
3. Alpha-scaled class re-weighting ([`AlphaScaledFocalDiceLoss`]): focal loss plus soft dice, both weighted per class
   by `w_c ** alpha`, `w_c` the inverse class frequency normalized to mean 1: `alpha = 0` is unweighted, `alpha = 1`
   full inverse-frequency weighting, values between temper it for the rare classes (solar panels, bare land).

`hidden_states` of the output are the backbone's: the patch embedding and every stage's output as maps, aligned with
the encoder's `stage_names`; `attentions` every encoder block's weights (eager attention only).
"""

from __future__ import annotations

import json
import logging
import os

import torch
from torch import nn
from transformers import initialization as init
from transformers.modeling_outputs import SemanticSegmenterOutput
from transformers.modeling_utils import PreTrainedModel
from transformers.utils import can_return_tuple

from .configuration_sar_lulc import SarLulcConfig
from .modeling_sar_mixmae import SarMixMAEBackbone

logger = logging.getLogger(__name__)

# Every Auto class a segmentation checkpoint answers to, for loading with only `trust_remote_code=True`.
SAR_LULC_AUTO_MAP = {
    "AutoConfig": "configuration_sar_lulc.SarLulcConfig",
    "AutoModelForSemanticSegmentation": "modeling_sar_lulc.SarLulcForSemanticSegmentation",
}


def _upsample(features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return nn.functional.interpolate(features, size=size, mode="bilinear", align_corners=False)


class SarLulcClassifier(nn.Conv2d):
    """1x1 convolution to class logits, initialized small so training starts from near-uniform predictions."""

    def __init__(self, in_channels: int, num_labels: int):
        super().__init__(in_channels, num_labels, kernel_size=1)


class SarLulcConvModule(nn.Sequential):
    """Convolution (no bias) -> BatchNorm -> ReLU.

    In eval mode BatchNorm is an affine map with fixed statistics, so it is folded into the convolution's weights
    and bias on the fly: the same result without a pass over the (large) output. Parameters and state dict are those
    of the three modules, so training and checkpoints are unaffected.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        conv, norm, activation = self
        weight, bias = conv.weight, None
        if not self.training and norm.running_var is not None:
            scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
            weight = weight * scale.view(-1, 1, 1, 1).to(weight.dtype)
            bias = (norm.bias - norm.running_mean * scale).to(weight.dtype)
        # The sarlulc maps are channels-last; a weight in the other layout sends oneDNN down a slow path.
        if features.is_contiguous(memory_format=torch.channels_last):
            weight = weight.contiguous(memory_format=torch.channels_last)
        output = nn.functional.conv2d(features, weight, bias, conv.stride, conv.padding)
        return activation(output if bias is not None else norm(output))


# ---------------------------------------------------------------------------------------------------------------------
# Decoder
# ---------------------------------------------------------------------------------------------------------------------


class SarLulcPyramidPooling(nn.Module):
    """Pyramid pooling on the last stage: average pools to each scale, 1x1 conv, back to the stage's size, concat."""

    def __init__(self, pool_scales: list[int], in_channels: int, channels: int):
        super().__init__()
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(scale), SarLulcConvModule(in_channels, channels, kernel_size=1))
            for scale in pool_scales
        )
        self.bottleneck = SarLulcConvModule(in_channels + len(pool_scales) * channels, channels, kernel_size=3)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        size = features.shape[-2:]
        pooled = [_upsample(stage(features), size) for stage in self.stages]
        return self.bottleneck(torch.cat([features, *pooled], dim=1))


class SarLulcUperDecoder(nn.Module):
    """UperNet-style decoder: PPM on the last stage, a top-down FPN over all stages, fused at the first stage's
    stride (4) by a 3x3 conv over the concatenated levels. Output `(B, decoder_hidden_size, H/4, W/4)`."""

    def __init__(self, config: SarLulcConfig, in_channels: list[int]):
        super().__init__()
        channels = config.decoder_hidden_size
        self.pyramid_pooling = SarLulcPyramidPooling(config.pool_scales, in_channels[-1], channels)
        self.lateral_convs = nn.ModuleList(SarLulcConvModule(c, channels, kernel_size=1) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(SarLulcConvModule(channels, channels, kernel_size=3) for _ in in_channels[:-1])
        self.fpn_bottleneck = SarLulcConvModule(len(in_channels) * channels, channels, kernel_size=3)

    def forward(self, stage_features: list[torch.Tensor]) -> torch.Tensor:
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, stage_features[:-1])]
        laterals.append(self.pyramid_pooling(stage_features[-1]))
        for level in range(len(laterals) - 1, 0, -1):
            laterals[level - 1] = laterals[level - 1] + _upsample(laterals[level], laterals[level - 1].shape[-2:])
        outputs = [conv(lateral) for conv, lateral in zip(self.fpn_convs, laterals[:-1])]
        outputs.append(laterals[-1])
        size = outputs[0].shape[-2:]
        outputs = [outputs[0]] + [_upsample(o, size) for o in outputs[1:]]
        return self.fpn_bottleneck(torch.cat(outputs, dim=1))


# ---------------------------------------------------------------------------------------------------------------------
# Refinement (i): high-resolution feature injection
# ---------------------------------------------------------------------------------------------------------------------


class HighResInjection(nn.Module):
    """Bring fine spatial detail (stride <= 4) into the decoding so thin structures and boundaries survive.

    - `"stem"`: the encoder's stride-4 patch embedding (LayerNorm-ed by the backbone);
    - `"detail"`: a light conv stem on the input (one strided 3x3 conv-BN-ReLU) gives stride-2 features, also handed
      to the refine-up head's stride-2 block. (The raw input is not handed on at stride 1: its speckle would go
      straight into the per-pixel logits.)

    The stride-4 sources (the stem, the detail features 2x2-average-pooled) are concatenated and projected by one
    1x1 convolution onto the decoder's channels, then added to its fused map: a single pass over that wide map.
    `forward` returns the enriched stride-4 map and `{stride: features}` skips for the head.
    """

    def __init__(self, config: SarLulcConfig, stem_channels: int, num_channels: int):
        super().__init__()
        self.use_stem = "stem" in config.highres_sources
        self.detail_stem = None
        projected = stem_channels if self.use_stem else 0
        if "detail" in config.highres_sources:
            self.detail_stem = SarLulcConvModule(num_channels, config.highres_channels, kernel_size=3, stride=2)
            self.detail_pool = nn.AvgPool2d(kernel_size=2)
            projected += config.highres_channels
        self.projection = nn.Conv2d(projected, config.decoder_hidden_size, kernel_size=1)
        self.skip_channels = {2: config.highres_channels} if self.detail_stem is not None else {}

    def forward(
        self, fused: torch.Tensor, stem: torch.Tensor | None, pixel_values: torch.Tensor
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        sources = [stem] if self.use_stem else []
        skips: dict[int, torch.Tensor] = {}
        if self.detail_stem is not None:
            # A one-band input is both NCHW- and NHWC-contiguous, and the convolution then answers in NCHW: pin the
            # detail features to channels-last so that every later map of the head stays in the fast layout.
            detail = self.detail_stem(pixel_values).contiguous(memory_format=torch.channels_last)
            sources.append(self.detail_pool(detail))
            skips = {2: detail}
        injected = self.projection(sources[0] if len(sources) == 1 else torch.cat(sources, dim=1))
        return fused + injected, skips


# ---------------------------------------------------------------------------------------------------------------------
# Refinement (ii): progressive refine-up head, and the baseline head
# ---------------------------------------------------------------------------------------------------------------------


class SarLulcCorrection(nn.Conv2d):
    """1x1 convolution from refined features to a logit correction; zero-initialized, so that a refine-up head starts
    out predicting exactly what the baseline head does and its blocks learn only corrections."""

    def __init__(self, in_channels: int, num_labels: int):
        super().__init__(in_channels, num_labels, kernel_size=1)


class RefineUpHead(nn.Module):
    """Progressive refine-up: refinement blocks alternate with x2 upsampling, each correcting the prediction.

    The decoder's stride-4 map is classified as in the baseline; then, for each refinement step (`refine_steps`, at
    strides 4 and 2), a 3x3 conv-BN-ReLU block refines the features (concatenating the injected high-resolution
    features of its stride, e.g. the detail stem's at stride 2) and a 1x1 correction is added to the logits brought
    to that stride by x2 bilinear upsampling; the last logits are upsampled to the input size.

    Why corrections rather than classifying the last block's features: those blocks are narrow (they run at high
    resolution), and classifying 9 classes from a few channels starves the classifier; correcting a prediction made
    from the decoder's full width is an easier job for them, and with zero-initialized corrections training starts
    from exactly the baseline head. Only logits (a few channels) ever reach full resolution.
    """

    def __init__(self, config: SarLulcConfig, skip_channels: dict[int, int]):
        super().__init__()
        self.classifier = SarLulcClassifier(config.decoder_hidden_size, config.num_labels)
        self.blocks = nn.ModuleList()
        self.corrections = nn.ModuleList()
        self.strides = []
        in_channels, stride = config.decoder_hidden_size, 4
        for out_channels in config.refine_channels:
            self.strides.append(stride)
            self.blocks.append(SarLulcConvModule(in_channels + skip_channels.get(stride, 0), out_channels, 3))
            self.corrections.append(SarLulcCorrection(out_channels, config.num_labels))
            in_channels, stride = out_channels, stride // 2

    def forward(
        self, fused: torch.Tensor, skips: dict[int, torch.Tensor], output_size: tuple[int, int]
    ) -> torch.Tensor:
        height, width = output_size
        logits = self.classifier(fused)
        features = fused
        for stride, block, correction in zip(self.strides, self.blocks, self.corrections):
            size = (height // stride, width // stride)
            if features.shape[-2:] != size:
                features = _upsample(features, size)
                logits = _upsample(logits, size)
            if stride in skips:
                features = torch.cat([features, skips[stride]], dim=1)
            features = block(features)
            logits = logits + correction(features)
        # contiguous at the last block's stride, where the few logit channels are cheap to reorder
        return _upsample(logits.contiguous(), output_size)


class BilinearUpHead(nn.Module):
    """The baseline head: a 1x1 classifier at stride 4, then one bilinear upsampling to the input size."""

    def __init__(self, config: SarLulcConfig):
        super().__init__()
        self.classifier = SarLulcClassifier(config.decoder_hidden_size, config.num_labels)

    def forward(
        self, fused: torch.Tensor, skips: dict[int, torch.Tensor], output_size: tuple[int, int]
    ) -> torch.Tensor:
        # contiguous before upsampling: the few logit channels are cheap to reorder at stride 4, not at stride 1
        return _upsample(self.classifier(fused).contiguous(), output_size)


# ---------------------------------------------------------------------------------------------------------------------
# Refinement (iii): alpha-scaled class re-weighting in a focal + dice loss
# ---------------------------------------------------------------------------------------------------------------------


class AlphaScaledFocalDiceLoss(nn.Module):
    """Weighted focal loss + `dice_weight` x weighted soft dice, with per-class weights `w_c ** alpha`.

    With `p` the softmax probabilities over the valid pixels `V` (label != ignore_index) and `y` the labels:

    - focal = sum_{i in V} w_{y_i} (1 - p_{i,y_i})^gamma (-log p_{i,y_i}) / sum_{i in V} w_{y_i};
    - dice  = sum_{c in P} w_c (1 - D_c) / sum_{c in P} w_c, D_c = (2 sum_V p_ic g_ic + s) / (sum_V p_ic + n_c + s),
      over the classes `P` present among the batch's valid labels (`n_c > 0`), smoothing `s = 1`. Classes absent
      from the batch are left out of the dice term (their predictions are still pushed down by the focal term), so
      no 0/0 arises; a batch without valid pixels gives a zero loss with zero (finite) gradients.

    `class_weights` come from [`SarLulcConfig.class_weights`]: alpha = 0 gives the unweighted loss.
    """

    def __init__(self, class_weights: list[float], gamma: float, dice_weight: float, ignore_index: int):
        super().__init__()
        self.register_buffer("class_weights", torch.tensor(class_weights, dtype=torch.float32), persistent=False)
        self.gamma = gamma
        self.dice_weight = dice_weight
        self.ignore_index = ignore_index
        self.smooth = 1.0

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        num_classes = logits.shape[1]
        logits = logits.float()
        valid = labels != self.ignore_index
        # Denominators are clamped instead of branching on "any valid pixel?": a batch without one then gives 0 with
        # zero gradients, and the loss stays a single graph for torch.compile (a data-dependent branch breaks it).
        tiny = torch.finfo(logits.dtype).tiny
        log_probs = torch.log_softmax(logits, dim=1)
        target = torch.where(valid, labels, torch.zeros_like(labels)).long()
        weights = self.class_weights.to(logits.device)

        log_p_true = log_probs.gather(1, target.unsqueeze(1)).squeeze(1)  # (B, H, W)
        pixel_weights = weights[target] * valid
        focal_terms = -((1.0 - log_p_true.exp()).clamp_min(0.0) ** self.gamma) * log_p_true
        focal = (pixel_weights * focal_terms).sum() / pixel_weights.sum().clamp_min(tiny)
        if self.dice_weight == 0:
            return focal

        probs = log_probs.exp() * valid.unsqueeze(1)  # (B, K, H, W), zero on ignored pixels
        one_hot = nn.functional.one_hot(target, num_classes).permute(0, 3, 1, 2) * valid.unsqueeze(1)
        intersection = (probs * one_hot).sum(dim=(0, 2, 3))
        predicted = probs.sum(dim=(0, 2, 3))
        counts = one_hot.sum(dim=(0, 2, 3)).to(probs.dtype)
        dice_coefficient = (2.0 * intersection + self.smooth) / (predicted + counts + self.smooth)
        present = (counts > 0).to(probs.dtype)
        class_weights = weights * present
        dice = (class_weights * (1.0 - dice_coefficient)).sum() / class_weights.sum().clamp_min(tiny)
        return focal + self.dice_weight * dice


# ---------------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------------


class SarLulcPreTrainedModel(PreTrainedModel):
    config: SarLulcConfig
    config_class = SarLulcConfig
    base_model_prefix = "sar_lulc"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["SarMixMAEBlock"]
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_flex_attn = False
    _supports_attention_backend = True

    def save_pretrained(self, save_directory, *args, **kwargs):
        remote_code = self._auto_class is not None  # registered for remote code (importing sarlulc does this)
        if remote_code:
            self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **SAR_LULC_AUTO_MAP}
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if remote_code and kwargs.get("is_main_process", True):
            # The checkpoint also carries the SAR pipeline's code, for pipeline("sar-segmentation", model=dir).
            # Imported here: transformers.pipelines is heavy and only needed when saving.
            from .pipeline_sar_segmentation import save_pipeline_files

            save_pipeline_files(save_directory)
        return result

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, SarMixMAEBackbone):
            return  # initialized by its own _init_weights (or loaded from pretraining)
        if isinstance(module, SarLulcClassifier):
            init.normal_(module.weight, std=0.01)
            init.zeros_(module.bias)
        elif isinstance(module, SarLulcCorrection):
            init.zeros_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            if module.running_mean is not None:
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)
        elif isinstance(module, AlphaScaledFocalDiceLoss):
            init.copy_(module.class_weights, torch.tensor(self.config.class_weights(), dtype=torch.float32))


class SarLulcForSemanticSegmentation(SarLulcPreTrainedModel):
    """SAR-W-MixMAE encoder + UperNet-style decoder + (optional) high-resolution injection + refine-up head.

    Input `pixel_values` `(B, C, H, W)` normalized backscatter (`SarImageProcessor`), H and W multiples of 32 (the
    processor pads). Output logits `(B, num_labels, H, W)`.

    Examples:
        >>> import torch
        >>> from transformers import AutoModelForSemanticSegmentation
        >>> from sarlulc import LULC_9, SarLulcConfig, SarLulcForSemanticSegmentation
        >>> model = SarLulcForSemanticSegmentation(SarLulcConfig(id2label=LULC_9.id2label))  # the tiny defaults
        >>> model.save_pretrained("lulc-model")  # weights, config and this model's code (trust_remote_code)
        >>> model = SarLulcForSemanticSegmentation.from_pretrained("lulc-model")  # a folder or a Hub id
        >>> model = AutoModelForSemanticSegmentation.from_pretrained("lulc-model")  # the same, through the Auto class
        >>> model(pixel_values=torch.zeros(1, 1, 64, 64)).logits.shape  # one normalized HH tile -> 9 class logits
        torch.Size([1, 9, 64, 64])
    """

    def __init__(self, config: SarLulcConfig):
        super().__init__(config)
        backbone_config = config.backbone_config
        self.backbone = SarMixMAEBackbone(backbone_config)
        stage_channels = [backbone_config.embed_dim * 2**i for i in range(backbone_config.num_layers)]
        self.decoder = SarLulcUperDecoder(config, stage_channels)
        self.injection = (
            HighResInjection(config, backbone_config.embed_dim, backbone_config.num_channels)
            if config.use_highres_injection
            else None
        )
        skip_channels = self.injection.skip_channels if self.injection is not None else {}
        self.head = RefineUpHead(config, skip_channels) if config.use_refine_up_head else BilinearUpHead(config)
        self.loss_fn = AlphaScaledFocalDiceLoss(
            config.class_weights(), config.focal_gamma, config.dice_weight, config.ignore_index
        )
        self.post_init()

    @classmethod
    def from_pretrained_encoder(
        cls, pretraining_checkpoint_dir: str | os.PathLike, config: SarLulcConfig | None = None, **config_kwargs
    ) -> SarLulcForSemanticSegmentation:
        """A segmentation model whose encoder carries the weights of a `SarMixMAEForPreTraining` checkpoint.

        `config` gives the decoder, refinements and classes (its `backbone_config` is replaced by the checkpoint's,
        keeping the feature outputs the decoder needs); without it a default config is built with `config_kwargs`.
        Logs how many encoder tensors were loaded; raises `ValueError` when the checkpoint has no encoder weights or
        their shapes do not match.
        """
        from safetensors.torch import load_file

        directory = os.fspath(pretraining_checkpoint_dir)
        config_path = os.path.join(directory, "config.json")
        if not os.path.isfile(config_path):
            raise ValueError(f"{directory} is not a pretraining checkpoint: it has no config.json")
        with open(config_path) as handle:
            pretrained = json.load(handle)
        if pretrained.get("model_type") != "sar_mixmae":
            raise ValueError(
                f"{directory} holds a {pretrained.get('model_type')!r} model, not a sar_mixmae pretraining checkpoint"
            )
        if config is None:
            config = SarLulcConfig(backbone_config=pretrained, **config_kwargs)
        else:
            config = SarLulcConfig.from_dict({**config.to_dict(), "backbone_config": pretrained})
        model = cls(config)

        state = {}
        weight_files = sorted(f for f in os.listdir(directory) if f.endswith(".safetensors"))
        if not weight_files:
            raise ValueError(f"{directory} has no .safetensors weights")
        for name in weight_files:
            try:
                state.update(load_file(os.path.join(directory, name)))
            except Exception as err:  # safetensors' own error type: a truncated or damaged file
                raise ValueError(
                    f"{os.path.join(directory, name)} cannot be read as safetensors weights ({err})"
                ) from err
        prefix = SarMixMAEBackbone.base_model_prefix + "."
        # the encoder's final LayerNorm serves pretraining only; the backbone normalizes each feature map itself
        encoder_state = {
            key[len(prefix) :]: value
            for key, value in state.items()
            if key.startswith(prefix) and not key.startswith(prefix + "layernorm.")
        }
        if not encoder_state:
            raise ValueError(f"no encoder weights (keys starting with {prefix!r}) in {directory}")
        target = model.backbone.sar_mixmae
        expected = target.state_dict()
        unknown = sorted(set(encoder_state) - set(expected))
        if unknown:
            raise ValueError(
                f"{len(unknown)} encoder weights of {directory} have no place in the backbone: {unknown[:5]}"
            )
        mismatched = [k for k, v in encoder_state.items() if v.shape != expected[k].shape]
        if mismatched:
            raise ValueError(f"encoder weights of {directory} do not fit the backbone's shapes: {mismatched[:5]}")
        missing = sorted(set(expected) - set(encoder_state))
        if missing:
            raise ValueError(f"{directory} lacks {len(missing)} encoder weights: {missing[:5]}")
        target.load_state_dict(encoder_state, strict=True)
        logger.info("loaded %d encoder tensors from %s", len(encoder_state), directory)
        model.loaded_encoder_keys = sorted(encoder_state)
        return model

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> SemanticSegmenterOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
            Normalized backscatter; height and width multiples of the encoder stride (32).
        labels (`torch.LongTensor` of shape `(batch_size, height, width)`, *optional*):
            Class ids, `config.ignore_index` for pixels to ignore.
        pixel_mask (`torch.BoolTensor` of shape `(batch_size, height, width)`, *optional*):
            Valid input pixels; labels of invalid (nodata, padding) pixels are ignored by the loss.
        output_hidden_states (`bool`, *optional*):
            Return the encoder's maps: patch embedding, then every stage (the backbone's `stage_names`).
        output_attentions (`bool`, *optional*):
            Return every encoder block's attention weights (eager attention only).
        """
        height, width = pixel_values.shape[-2:]
        self.config.backbone_config.check_input_size(height, width)
        outputs = self.backbone(
            pixel_values,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )
        features = dict(zip(self.backbone.out_features, outputs.feature_maps))
        stages = [features[f"stage{i}"] for i in range(1, self.config.backbone_config.num_layers + 1)]
        # Decoder and refinements run on channels-last maps (the backbone's already are): on CPU its convolutions
        # are ~10% faster, the narrow high-resolution ones 2-3x; on GPU it is the layout tensor cores want.
        channels_last = torch.channels_last
        stages = [stage.contiguous(memory_format=channels_last) for stage in stages]
        fused = self.decoder(stages)
        skips: dict[int, torch.Tensor] = {}
        if self.injection is not None:
            stem = features.get("stem")
            stem = None if stem is None else stem.contiguous(memory_format=channels_last)
            fused, skips = self.injection(fused, stem, pixel_values.contiguous(memory_format=channels_last))
        logits = self.head(fused, skips, (height, width)).contiguous()

        loss = None
        if labels is not None:
            if labels.shape != (pixel_values.shape[0], height, width):
                raise ValueError(f"labels must be (batch, {height}, {width}), got {tuple(labels.shape)}")
            if pixel_mask is not None:
                labels = labels.masked_fill(~pixel_mask.to(torch.bool), self.config.ignore_index)
            loss = self.loss_fn(logits, labels)
        return SemanticSegmenterOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


__all__ = [
    "AlphaScaledFocalDiceLoss",
    "BilinearUpHead",
    "HighResInjection",
    "RefineUpHead",
    "SarLulcCorrection",
    "SarLulcForSemanticSegmentation",
    "SarLulcPreTrainedModel",
    "SarLulcUperDecoder",
]
