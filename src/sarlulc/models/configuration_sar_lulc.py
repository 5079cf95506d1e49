"""Configuration of the LULC / water segmentation model: SAR-W-MixMAE encoder, UperNet-style decoder, refinements.

The model is that of "Enhanced LULC Segmentation via Lightweight Model Refinements on ALOS-2 SAR Data" (from the group
of the SAR-W-MixMAE authors, Caglayan, Imamoglu and Kouyama); the three refinements are switches of this config.
"""

from __future__ import annotations

import math

from transformers.configuration_utils import PreTrainedConfig

from .configuration_sar_mixmae import SarMixMAEConfig

HIGHRES_SOURCES = ("stem", "detail")


class SarLulcConfig(PreTrainedConfig):
    r"""
    Configuration of [`SarLulcForSemanticSegmentation`]. The LULC task and the binary water task are both configs of
    this one model (`id2label` of `sarlulc.data.classes.LULC_9` or `WATER`).

    Args:
        backbone_config (`SarMixMAEConfig` or `dict`, *optional*):
            The encoder. Defaults to the tiny SAR-W-MixMAE encoder. Its `out_features` are set to what the decoder
            needs (the four stages, plus `"stem"` with high-resolution injection).
        decoder_hidden_size (`int`, defaults to 128):
            Channels of the UperNet-style decoder (pyramid pooling on stage 4, FPN over stages 1-4, fused at stride 4).
        pool_scales (`list[int]`, defaults to `(1, 2, 3, 6)`):
            Output sizes of the pyramid pooling module.
        use_highres_injection (`bool`, defaults to `True`):
            Refinement (i): project features at stride <= 4 and add them into the decoding, so thin structures and
            boundaries survive. Off = plain UperNet fusion (the module is absent).
        highres_sources (`list[str]`, defaults to `("stem", "detail")`):
            `"stem"`: the encoder's stride-4 patch embedding, projected and added to the fused stride-4 map;
            `"detail"`: a light convolutional stem on the input at stride 2, added to the fused map (pooled) and
            handed to the refine-up head's stride-2 block.
        highres_channels (`int`, defaults to 16):
            Channels of the detail stem.
        use_refine_up_head (`bool`, defaults to `True`):
            Refinement (ii): from the decoder's stride-4 prediction, alternate a 3x3 conv-BN-ReLU refinement block
            (fed the injected features of its stride) that adds a correction to the logits, and x2 upsampling
            (`refine_steps` times), then upsample to the input size. Off = a 1x1 classifier at stride 4 and one
            bilinear upsampling to the input size (the baseline; the module is absent).
        refine_steps (`int`, defaults to 2):
            Refinement blocks, at strides 4 and 2.
        refine_channels (`list[int]`, defaults to `(16, 8)`):
            Output channels of each refinement block (one per step). Narrow on purpose: they run at strides 4 and 2,
            where every channel costs 16x and 64x what it costs at the encoder's stride 32.
        class_weight_alpha (`float`, defaults to 0.5):
            Refinement (iii): per-class weights `w_c ** alpha` in the focal and dice terms, with `w_c` the inverse
            class frequency normalized to mean 1 over the classes present in `class_frequencies`. 0 = unweighted,
            1 = full inverse-frequency weights.
        focal_gamma (`float`, defaults to 2.0):
            Focusing exponent of the focal loss.
        dice_weight (`float`, defaults to 1.0):
            Weight of the soft dice term added to the focal term.
        class_frequencies (`list[int]`, *optional*):
            Pixel counts per class of the training data (`sarlulc.data.class_frequencies`); `None` = uniform weights.
        ignore_index (`int`, defaults to 255):
            Label value excluded from loss and metrics (nodata, unlabeled).
        initializer_range (`float`, defaults to 0.02):
            Standard deviation for the decoder's initialization.
    """

    model_type = "sar_lulc"
    sub_configs_defaults = {"backbone_config": SarMixMAEConfig}

    def __init__(
        self,
        backbone_config: SarMixMAEConfig | dict | None = None,
        decoder_hidden_size: int = 128,
        pool_scales: list[int] | tuple[int, ...] = (1, 2, 3, 6),
        use_highres_injection: bool = True,
        highres_sources: list[str] | tuple[str, ...] = HIGHRES_SOURCES,
        highres_channels: int = 16,
        use_refine_up_head: bool = True,
        refine_steps: int = 2,
        refine_channels: list[int] | tuple[int, ...] = (16, 8),
        class_weight_alpha: float = 0.5,
        focal_gamma: float = 2.0,
        dice_weight: float = 1.0,
        class_frequencies: list[int] | None = None,
        ignore_index: int = 255,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        if backbone_config is None:
            backbone_config = SarMixMAEConfig()
        elif isinstance(backbone_config, dict):
            backbone_config = dict(backbone_config)
            model_type = backbone_config.pop("model_type", SarMixMAEConfig.model_type)
            if model_type != SarMixMAEConfig.model_type:
                raise ValueError(f"`backbone_config` must be a {SarMixMAEConfig.model_type} config, got {model_type!r}")
            backbone_config = SarMixMAEConfig(**backbone_config)
        elif not isinstance(backbone_config, SarMixMAEConfig):
            raise ValueError(
                f"`backbone_config` must be a SarMixMAEConfig or a dict, got {type(backbone_config).__name__}"
            )
        self.backbone_config = backbone_config
        self.decoder_hidden_size = int(decoder_hidden_size)
        self.pool_scales = [int(s) for s in pool_scales]
        self.use_highres_injection = bool(use_highres_injection)
        self.highres_sources = [str(s) for s in highres_sources]
        self.highres_channels = int(highres_channels)
        self.use_refine_up_head = bool(use_refine_up_head)
        self.refine_steps = int(refine_steps)
        self.refine_channels = [int(c) for c in refine_channels]
        self.class_weight_alpha = float(class_weight_alpha)
        self.focal_gamma = float(focal_gamma)
        self.dice_weight = float(dice_weight)
        self.class_frequencies = None if class_frequencies is None else [int(c) for c in class_frequencies]
        self.ignore_index = int(ignore_index)
        self.initializer_range = float(initializer_range)
        super().__init__(**kwargs)
        self.backbone_config.out_features = self.required_backbone_features()
        self._validate()

    def required_backbone_features(self) -> list[str]:
        """The backbone outputs the decoder reads: the four stages, and the stem for `"stem"` injection."""
        stages = [f"stage{i}" for i in range(1, self.backbone_config.num_layers + 1)]
        if self.use_highres_injection and "stem" in self.highres_sources:
            return ["stem", *stages]
        return stages

    def class_weights(self) -> list[float]:
        """Per-class loss weights `w_c ** alpha` of refinement (iii), the alpha-scaled class re-weighting.

        `w_c = mean_frequency / frequency_c`, normalized to mean 1 over the classes present in `class_frequencies`;
        a class absent from the training data gets the neutral weight 1. Uniform weights without frequencies. Alpha
        tempers the re-weighting between none (`alpha = 0`, every `w_c ** 0 = 1`) and full inverse frequency
        (`alpha = 1`).
        """
        num_labels = self.num_labels
        if self.class_frequencies is None:
            return [1.0] * num_labels
        counts = self.class_frequencies
        total = sum(counts)
        present = [c for c in counts if c > 0]
        if not present:
            return [1.0] * num_labels
        frequencies = [c / total for c in counts]
        mean_frequency = sum(f for f in frequencies if f > 0) / len(present)
        raw = [mean_frequency / f if f > 0 else None for f in frequencies]
        mean_raw = sum(w for w in raw if w is not None) / len(present)
        return [1.0 if w is None else (w / mean_raw) ** self.class_weight_alpha for w in raw]

    def _validate(self) -> None:
        num_labels = self.num_labels
        if num_labels < 2:
            raise ValueError(f"`id2label` must name at least 2 classes (water: 2), got {num_labels}")
        if 0 <= self.ignore_index < num_labels:
            raise ValueError(f"`ignore_index`={self.ignore_index} collides with a class id (0..{num_labels - 1})")
        if self.decoder_hidden_size < 1:
            raise ValueError(f"`decoder_hidden_size` must be positive, got {self.decoder_hidden_size}")
        if not self.pool_scales or any(s < 1 for s in self.pool_scales):
            raise ValueError(f"`pool_scales` must be positive sizes, got {self.pool_scales}")
        if self.use_highres_injection:
            unknown = [s for s in self.highres_sources if s not in HIGHRES_SOURCES]
            if unknown or not self.highres_sources:
                raise ValueError(
                    f"`highres_sources` must be a non-empty subset of {list(HIGHRES_SOURCES)}, got {self.highres_sources}"
                )
            if self.highres_channels < 1:
                raise ValueError(f"`highres_channels` must be positive, got {self.highres_channels}")
        if self.use_refine_up_head:
            if self.refine_steps not in (1, 2):
                raise ValueError(f"`refine_steps` must be 1 (to stride 2) or 2 (to stride 1), got {self.refine_steps}")
            if len(self.refine_channels) != self.refine_steps or any(c < 1 for c in self.refine_channels):
                raise ValueError(
                    f"`refine_channels` needs one positive width per refine step ({self.refine_steps}), "
                    f"got {self.refine_channels}"
                )
        if not 0.0 <= self.class_weight_alpha <= 1.0:
            raise ValueError(f"`class_weight_alpha` must be in [0, 1], got {self.class_weight_alpha}")
        if not (self.focal_gamma >= 0 and math.isfinite(self.focal_gamma)):
            raise ValueError(f"`focal_gamma` must be >= 0, got {self.focal_gamma}")
        if not (self.dice_weight >= 0 and math.isfinite(self.dice_weight)):
            raise ValueError(f"`dice_weight` must be >= 0, got {self.dice_weight}")
        if self.class_frequencies is not None:
            if len(self.class_frequencies) != num_labels:
                raise ValueError(
                    f"`class_frequencies` has {len(self.class_frequencies)} counts but the model has {num_labels} "
                    "classes (id2label)"
                )
            if any(c < 0 for c in self.class_frequencies):
                raise ValueError(f"`class_frequencies` must be non-negative pixel counts, got {self.class_frequencies}")


__all__ = ["SarLulcConfig"]
