"""torch.compile compatibility: no graph breaks in the models' forward passes (fast, by tracing), and compiled models
that match eager ones (slow: inductor compiles C++ on CPU)."""

import pytest
import torch
import torch._dynamo as dynamo

from sarlulc import LULC_9, SarLulcConfig, SarLulcForSemanticSegmentation, SarMixMAEConfig, SarMixMAEForPreTraining
from sarlulc.models.modeling_sar_mixmae import SarMixMAEModel, SarMixMAEStage, random_mixing_mask, window_partition


def tiny_encoder_config() -> SarMixMAEConfig:
    return SarMixMAEConfig(
        image_size=128,
        embed_dim=16,
        depths=(1, 1, 1, 1),
        num_heads=(1, 2, 2, 4),
        window_size=(16, 16, 8, 4),
        decoder_embed_dim=32,
        decoder_depth=1,
        decoder_num_heads=2,
    )


def tiny_segmentation() -> SarLulcForSemanticSegmentation:
    config = SarLulcConfig(
        backbone_config=tiny_encoder_config(),
        decoder_hidden_size=32,
        pool_scales=(1, 2),
        highres_channels=8,
        id2label=LULC_9.id2label,
        label2id=LULC_9.label2id,
    )
    return SarLulcForSemanticSegmentation(config)


def graph_breaks(function, *args, **kwargs) -> int:
    dynamo.reset()
    return dynamo.explain(function)(*args, **kwargs).graph_break_count


def test_encoder_block_traces_without_graph_breaks():
    encoder = SarMixMAEModel(tiny_encoder_config())
    block = encoder.encoder.stages[0].blocks[0]
    windows = window_partition(torch.randn(2, 32, 32, 16), (16, 16))
    groups = torch.rand(32, 32) > 0.5
    mask = SarMixMAEStage.window_mask(groups, (32, 32), (0, 0), (16, 16), windows.device)
    assert graph_breaks(block, windows, (16, 16), None) == 0
    assert graph_breaks(block, windows, (16, 16), mask) == 0


def test_models_trace_without_graph_breaks():
    pixels = torch.randn(2, 1, 128, 128)
    backscatter_db = pixels * 6.0 - 12.0
    pretraining = SarMixMAEForPreTraining(tiny_encoder_config())
    assert graph_breaks(pretraining, pixels, backscatter_db=backscatter_db) == 0  # random mask drawn inside
    mask = random_mixing_mask((4, 4), 0.5)
    assert graph_breaks(pretraining, pixels, backscatter_db=backscatter_db, mixing_mask=mask) == 0
    segmentation = tiny_segmentation()
    labels = torch.randint(0, 9, (2, 128, 128))
    assert graph_breaks(segmentation, pixels, labels=labels) == 0  # forward + loss
    assert graph_breaks(segmentation.eval(), pixels) == 0


@pytest.mark.slow
def test_compiled_models_match_eager():
    torch.manual_seed(0)
    dynamo.reset()
    pixels = torch.randn(2, 1, 128, 128)
    mask = random_mixing_mask((4, 4), 0.5)
    backscatter_db = pixels * 6.0 - 12.0
    pretraining = SarMixMAEForPreTraining(tiny_encoder_config())
    compiled = torch.compile(pretraining, fullgraph=True)
    eager_out = pretraining(pixels, backscatter_db=backscatter_db, mixing_mask=mask)
    compiled_out = compiled(pixels, backscatter_db=backscatter_db, mixing_mask=mask)
    assert torch.allclose(eager_out.loss, compiled_out.loss, rtol=1e-4, atol=1e-5)
    compiled_out.loss.backward()  # the compiled backward runs too
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in pretraining.parameters())

    segmentation = tiny_segmentation().eval()
    compiled_segmentation = torch.compile(segmentation, fullgraph=True)
    with torch.no_grad():
        expected = segmentation(pixels).logits
        actual = compiled_segmentation(pixels).logits
    assert torch.allclose(expected, actual, rtol=1e-4, atol=1e-4)
