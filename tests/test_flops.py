"""The analytic FLOP counts of sarlulc.flops against PyTorch's own counter (FlopCounterMode) on real forward and
backward passes, for the pretraining model and every combination of the segmentation refinements."""

import itertools

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from sarlulc import LULC_9, SarLulcConfig, SarLulcForSemanticSegmentation, SarMixMAEConfig, SarMixMAEForPreTraining
from sarlulc.flops import pretraining_flops, segmentation_flops

ENCODER = dict(embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4), window_size=8, attn_implementation="eager")


def counted(call) -> int:
    """FLOPs PyTorch counts for ``call()``. Eager attention: the counter does not see the CPU flash-attention
    kernel that SDPA would use."""
    with FlopCounterMode(display=False) as counter:
        call()
    return counter.get_total_flops()


def pretraining_model() -> SarMixMAEForPreTraining:
    config = SarMixMAEConfig(image_size=128, decoder_embed_dim=32, decoder_depth=2, decoder_num_heads=2, **ENCODER)
    return SarMixMAEForPreTraining(config)


def test_pretraining_forward_and_training_step_flops_match_the_counter():
    torch.manual_seed(0)
    model = pretraining_model()
    pixels = torch.randn(4, 1, 128, 128)
    backscatter_db = pixels * 6.0 - 12.0  # the dB the loss weight reads (element-wise: no counted FLOPs)
    expected = pretraining_flops(model.config, batch=4, height=128, width=128)
    with torch.no_grad():
        forward = counted(lambda: model(pixels, backscatter_db=backscatter_db))
    training = counted(lambda: model(pixels, backscatter_db=backscatter_db).loss.backward())
    assert forward == pytest.approx(expected.forward, rel=0.02)
    assert training == pytest.approx(expected.training, rel=0.02)
    groups = expected.by_group()
    assert set(groups) == {"encoder", "decoder"} and sum(groups.values()) == expected.forward


@pytest.mark.parametrize(("highres", "refine"), list(itertools.product([False, True], repeat=2)))
def test_segmentation_flops_match_the_counter_for_every_refinement_switch(highres, refine):
    torch.manual_seed(0)
    config = SarLulcConfig(
        backbone_config=SarMixMAEConfig(image_size=128, **ENCODER),
        decoder_hidden_size=32,
        use_highres_injection=highres,
        use_refine_up_head=refine,
        id2label=LULC_9.id2label,
        label2id=LULC_9.label2id,
    )
    model = SarLulcForSemanticSegmentation(config).eval()
    for module in model.modules():  # the backbone keeps its own config
        if hasattr(module, "config"):
            module.config._attn_implementation = "eager"
    pixels = torch.randn(2, 1, 160, 192)
    expected = segmentation_flops(config, batch=2, height=160, width=192)
    with torch.no_grad():
        forward = counted(lambda: model(pixel_values=pixels))
    assert forward == pytest.approx(expected.forward, rel=0.02)
    # the switches add work only where they should
    base = segmentation_flops(
        SarLulcConfig(
            backbone_config=config.backbone_config,
            decoder_hidden_size=32,
            use_highres_injection=False,
            use_refine_up_head=False,
            id2label=LULC_9.id2label,
            label2id=LULC_9.label2id,
        ),
        batch=2,
        height=160,
        width=192,
    )
    assert (expected.forward > base.forward) == (highres or refine)
