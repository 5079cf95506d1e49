"""The transformers model contract of the four sarlulc model classes.

- `attentions`: one tensor per attention block of the encoder, `(batch * windows, heads, N, N)` (Swin's layout), real
  softmax rows, zero weight on pairs that group-masked attention forbids and on padded keys; eager only (SDPA: empty,
  with a warning).
- `hidden_states`: the patch embedding, then every stage, aligned with `config.stage_names`, on every output class;
  `reshaped_hidden_states` the same as maps.
- The hidden states are part of the autograd graph (`retain_grad()`, `torch.autograd.grad`).
- The backbone's default outputs are the last stage, as for every transformers backbone.

Expected values are computed here independently of the model's own code (windows cut from the maps by hand, the
relative position offsets, the group of every token), and each property has a negative control where one is natural.
"""

import pytest
import torch
from transformers.testing_utils import CaptureLogger
from transformers.utils import logging as hf_logging

from sarlulc import (
    LULC_9,
    SarLulcConfig,
    SarLulcForSemanticSegmentation,
    SarMixMAEBackbone,
    SarMixMAEConfig,
    SarMixMAEForPreTraining,
    SarMixMAEModel,
)
from sarlulc.models.modeling_sar_mixmae import random_mixing_mask

SIZE = 128  # token grids 32/16/8/4; windows 16/16/8/4: 4 windows in stage 1, one in every other stage
BATCH = 2


def encoder_config(**overrides) -> SarMixMAEConfig:
    kwargs = dict(
        image_size=SIZE,
        embed_dim=16,
        depths=(2, 1, 1, 1),  # 5 blocks in 4 stages: one attention per block is not one per stage
        num_heads=(1, 2, 2, 4),
        window_size=(16, 16, 8, 4),
        decoder_embed_dim=32,
        decoder_depth=1,
        decoder_num_heads=2,
        attn_implementation="eager",
    )
    kwargs.update(overrides)
    return SarMixMAEConfig(**kwargs)


def segmentation_config(**overrides) -> SarLulcConfig:
    kwargs = dict(
        backbone_config=encoder_config(),
        decoder_hidden_size=16,
        pool_scales=(1, 2),
        highres_channels=8,
        refine_channels=(8, 8),
        id2label=LULC_9.id2label,
        label2id=LULC_9.label2id,
        attn_implementation="eager",
    )
    kwargs.update(overrides)
    return SarLulcConfig(**kwargs)


def mixing_mask() -> torch.Tensor:
    return random_mixing_mask((SIZE // 32, SIZE // 32), 0.5, generator=torch.Generator().manual_seed(0))


def build(name: str, **overrides):
    """A model of each output class and the inputs it needs."""
    torch.manual_seed(0)
    pixels = torch.randn(BATCH, 1, SIZE, SIZE)
    if name == "model":
        return SarMixMAEModel(encoder_config(**overrides)).eval(), {"pixel_values": pixels}
    if name == "backbone":
        config = encoder_config(out_features=["stem", "stage1", "stage2", "stage3", "stage4"], **overrides)
        return SarMixMAEBackbone(config).eval(), {"pixel_values": pixels}
    if name == "pretraining":
        inputs = {"pixel_values": pixels, "backscatter_db": pixels * 6 - 12, "mixing_mask": mixing_mask()}
        return SarMixMAEForPreTraining(encoder_config(**overrides)).eval(), inputs
    return SarLulcForSemanticSegmentation(segmentation_config(**overrides)).eval(), {"pixel_values": pixels}


def encoder_of(model):
    return model if isinstance(model, SarMixMAEModel) else getattr(model, "backbone", model).sar_mixmae


def expected_blocks(config: SarMixMAEConfig, height: int = SIZE, width: int = SIZE):
    """(stage, window (h, w), windows per image, heads) of every attention block, from the config alone."""
    blocks = []
    for stage, depth in enumerate(config.depths):
        grid_h, grid_w = height // 4 // 2**stage, width // 4 // 2**stage
        window = (min(config.window_size[stage], grid_h), min(config.window_size[stage], grid_w))
        windows = -(-grid_h // window[0]) * -(-grid_w // window[1])  # grids that do not tile are padded
        blocks += [(stage, window, windows, config.num_heads[stage])] * depth
    return blocks


def cut_windows(grid: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    """`(H, W, ...)` -> `(windows, wh * ww, ...)`: windows in row-major order, tokens row-major inside each."""
    wh, ww = window
    cells = []
    for top in range(0, grid.shape[0], wh):
        for left in range(0, grid.shape[1], ww):
            cells.append(grid[top : top + wh, left : left + ww].reshape(wh * ww, *grid.shape[2:]))
    return torch.stack(cells)


# ---------------------------------------------------------------------------------------------------------------------
# attentions
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["model", "backbone", "pretraining", "segmentation"])
def test_one_attention_tensor_per_block_in_swin_layout(name):
    model, inputs = build(name)
    with torch.no_grad():
        outputs = model(**inputs, output_attentions=True)
    config = encoder_of(model).config
    blocks = expected_blocks(config)
    assert len(outputs.attentions) == sum(config.depths) == 5
    for weights, (_, window, windows, heads) in zip(outputs.attentions, blocks):
        area = window[0] * window[1]
        assert weights.shape == (BATCH * windows, heads, area, area)
        # real softmax rows: non-negative, each summing to 1
        assert (weights >= 0).all()
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]), atol=1e-5, rtol=0)
    assert model(**inputs).attentions is None  # only on request


def test_attention_weights_equal_an_independent_computation():
    model, inputs = build("model")
    table_window = model.config.window_size[0]
    with torch.no_grad():
        outputs = model(**inputs, output_hidden_states=True, output_attentions=True)
        block = model.encoder.stages[0].blocks[0]
        attention = block.attention
        tokens = block.layernorm_before(outputs.hidden_states[0].view(BATCH, 32, 32, -1))  # the block's input
        cells = [(r, c) for r in range(16) for c in range(16)]  # row-major inside the window
        span = 2 * table_window - 1
        offsets = torch.tensor(
            [
                [(ri - rj + table_window - 1) * span + (ci - cj + table_window - 1) for rj, cj in cells]
                for ri, ci in cells
            ]
        )
        bias = attention.relative_position_bias_table[offsets]  # (N, N, heads)
        head_dim = attention.head_dim
        for image in range(BATCH):
            for index, window_tokens in enumerate(cut_windows(tokens[image], (16, 16))):
                query, key, _ = (window_tokens @ attention.qkv.weight.T + attention.qkv.bias).split(16, dim=-1)
                for head in range(attention.num_heads):
                    part = slice(head * head_dim, (head + 1) * head_dim)
                    scores = query[:, part] @ key[:, part].T * head_dim**-0.5 + bias[..., head]
                    expected = scores.softmax(-1)
                    actual = outputs.attentions[0][image * 4 + index, head]
                    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-4)


def token_groups(mask: torch.Tensor, grid: int) -> torch.Tensor:
    """Source image id (0: own, 1: partner) of every token of a `grid` x `grid` stage map."""
    factor = grid // mask.shape[-1]
    return mask[0].repeat_interleave(factor, 0).repeat_interleave(factor, 1)


@pytest.mark.parametrize("group_masked", [True, False])
def test_group_masked_pairs_get_zero_weight_during_mixing(group_masked):
    model, inputs = build("model")
    mask = mixing_mask()
    with torch.no_grad():
        outputs = model(
            **inputs,
            mixing_mask=mask,
            attention_group_mask=mask if group_masked else None,
            output_attentions=True,
        )
    cross_weight = 0.0
    for weights, (stage, window, _, _) in zip(outputs.attentions, expected_blocks(model.config)):
        groups = cut_windows(token_groups(mask, SIZE // 4 // 2**stage), window)  # (windows, N)
        other = groups[:, :, None] != groups[:, None, :]  # (windows, N, N): query and key from different images
        other = other.repeat(BATCH, 1, 1)[:, None].expand_as(weights)
        assert other.any()  # every stage mixes two sources within a window here
        cross_weight += weights[other].abs().sum().item()
    if group_masked:
        assert cross_weight == 0.0  # exactly: the forbidden pairs' scores are the most negative float
    else:
        assert cross_weight > 1.0  # negative control: plain attention does mix the images


def test_the_pretraining_model_reports_its_group_masked_attention():
    model, inputs = build("pretraining")
    with torch.no_grad():
        outputs = model(**inputs, output_attentions=True)
    mask = inputs["mixing_mask"]
    for weights, (stage, window, _, _) in zip(outputs.attentions, expected_blocks(model.config)):
        groups = cut_windows(token_groups(mask, SIZE // 4 // 2**stage), window)
        other = (groups[:, :, None] != groups[:, None, :]).repeat(BATCH, 1, 1)[:, None].expand_as(weights)
        assert (weights[other] == 0).all()
    # the decoder's attention is not part of `attentions` (as ViTMAE): five encoder blocks, one decoder block
    assert len(outputs.attentions) == 5 and model.config.decoder_depth == 1


def test_padded_keys_get_zero_weight():
    model, _ = build("model")
    height, width = 160, 96  # stage 1 grid 40 x 24, window 16: padded to 48 x 32, 3 x 2 windows
    with torch.no_grad():
        outputs = model(torch.randn(BATCH, 1, height, width), output_attentions=True)
    weights = outputs.attentions[0]
    assert weights.shape == (BATCH * 6, 1, 256, 256)
    real = torch.zeros(48, 32, dtype=torch.bool)
    real[:40, :24] = True
    real_keys = cut_windows(real, (16, 16)).repeat(BATCH, 1)  # (B * windows, N)
    padded = ~real_keys[:, None, None, :].expand_as(weights)
    assert padded.any() and (weights[padded] == 0).all()
    assert (weights[~padded] > 0).all()


def test_asking_for_attentions_changes_no_output():
    for name in ("model", "pretraining", "segmentation"):
        model, inputs = build(name)
        with torch.no_grad():
            plain, with_weights = model(**inputs), model(**inputs, output_attentions=True)
        key = "last_hidden_state" if name == "model" else "logits"
        torch.testing.assert_close(plain[key], with_weights[key], atol=1e-5, rtol=1e-5)


def test_output_attentions_from_the_config():
    model, inputs = build("model")
    model.config.output_attentions = True
    with torch.no_grad():
        assert len(model(**inputs).attentions) == 5


def test_sdpa_returns_no_attention_weights_and_says_so():
    model, inputs = build("model", attn_implementation="sdpa")
    eager, _ = build("model")
    hf_logging.warning_once.cache_clear()  # the warning is given once per message and process
    with CaptureLogger(hf_logging.get_logger(SarMixMAEModel.__module__)) as captured:
        with torch.no_grad():
            outputs = model(**inputs, output_attentions=True)
    assert outputs.attentions == ()  # as transformers' Swin with SDPA
    assert 'attn_implementation="eager"' in captured.out
    with torch.no_grad():
        torch.testing.assert_close(outputs.last_hidden_state, eager(**inputs).last_hidden_state, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# hidden states
# ---------------------------------------------------------------------------------------------------------------------


def reference_maps(model, inputs) -> list[torch.Tensor]:
    """The patch embedding and every stage's output `(B, H, W, C)`, captured by hooks on the modules themselves."""
    encoder = encoder_of(model)
    captured = []
    hooks = [encoder.embeddings.register_forward_hook(lambda m, i, o: captured.append(o))]
    hooks += [stage.register_forward_hook(lambda m, i, o: captured.append(o[0])) for stage in encoder.encoder.stages]
    with torch.no_grad():
        model(**inputs)
    for hook in hooks:
        hook.remove()
    return captured


@pytest.mark.parametrize("name", ["model", "backbone", "pretraining", "segmentation"])
def test_hidden_states_are_the_embedding_then_every_stage(name):
    model, inputs = build(name)
    references = reference_maps(model, inputs)
    with torch.no_grad():
        outputs = model(**inputs, output_hidden_states=True)
    stage_names = encoder_of(model).config.stage_names
    assert stage_names == ["stem", "stage1", "stage2", "stage3", "stage4"]
    sides, widths = [32, 32, 16, 8, 4], [16, 16, 32, 64, 128]
    if name in ("model", "pretraining"):
        assert len(outputs.hidden_states) == len(outputs.reshaped_hidden_states) == len(stage_names)
        for tokens, grid, reference, side, width in zip(
            outputs.hidden_states, outputs.reshaped_hidden_states, references, sides, widths
        ):
            assert tokens.shape == (BATCH, side * side, width) and grid.shape == (BATCH, width, side, side)
            torch.testing.assert_close(tokens, reference.reshape(BATCH, side * side, width), atol=0, rtol=0)
            torch.testing.assert_close(grid, reference.permute(0, 3, 1, 2), atol=0, rtol=0)
    else:  # backbone and segmentation: maps, as transformers' Swin backbone and UperNet
        assert len(outputs.hidden_states) == len(stage_names)
        for grid, reference, side, width in zip(outputs.hidden_states, references, sides, widths):
            assert grid.shape == (BATCH, width, side, side)
            torch.testing.assert_close(grid, reference.permute(0, 3, 1, 2), atol=0, rtol=0)
    assert model(**inputs).hidden_states is None  # only on request


def test_the_backbone_stem_feature_is_the_normalized_patch_embedding():
    model, inputs = build("backbone")
    with torch.no_grad():
        outputs = model(**inputs, output_hidden_states=True)
    stem = model.hidden_states_norms["stem"](outputs.hidden_states[0].permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    torch.testing.assert_close(outputs.feature_maps[0], stem)


def test_asking_for_hidden_states_changes_no_output():
    for name in ("model", "pretraining"):
        model, inputs = build(name)
        with torch.no_grad():
            plain, with_states = model(**inputs), model(**inputs, output_hidden_states=True)
        key = "last_hidden_state" if name == "model" else "loss"
        assert torch.equal(plain[key], with_states[key])


def loss_of(name, outputs):
    return outputs.last_hidden_state.pow(2).mean() if name == "model" else outputs.loss


@pytest.mark.parametrize("name", ["model", "pretraining"])
def test_hidden_states_are_in_the_autograd_graph(name):
    model, inputs = build(name)
    outputs = model(**inputs, output_hidden_states=True)
    states = [*outputs.hidden_states, *outputs.reshaped_hidden_states]
    for state in states:
        state.retain_grad()
    loss = loss_of(name, outputs)
    grads = torch.autograd.grad(loss, states, retain_graph=True)
    loss.backward()
    for state, grad in zip(states, grads):
        assert state.grad is not None and state.grad.abs().sum() > 0
        torch.testing.assert_close(state.grad, grad)


def test_the_retained_gradient_is_the_true_one():
    # d loss / d h for the last stage's tokens h, recomputed from a detached copy of h through the final LayerNorm
    model, inputs = build("model")
    outputs = model(**inputs, output_hidden_states=True)
    last = outputs.hidden_states[-1]
    last.retain_grad()
    outputs.last_hidden_state.pow(2).mean().backward()
    copy = last.detach().requires_grad_(True)
    model.layernorm(copy).pow(2).mean().backward()
    torch.testing.assert_close(last.grad, copy.grad)


def test_a_view_taken_beside_the_graph_gets_no_gradient():
    # Negative control: what the outputs used to be, views made after the fact from the consumed tensors.
    model, inputs = build("model")
    outputs = model(**inputs, output_hidden_states=True)
    beside = outputs.reshaped_hidden_states[2].flatten(2).transpose(1, 2)
    beside.retain_grad()
    loss = outputs.last_hidden_state.pow(2).mean()
    with pytest.raises(RuntimeError, match="not have been used in the graph"):
        torch.autograd.grad(loss, beside, retain_graph=True)
    loss.backward()
    assert beside.grad is None


def test_the_backbone_feature_stages_are_in_the_graph_too():
    model, inputs = build("backbone")
    outputs = model(**inputs, output_hidden_states=True)
    grads = torch.autograd.grad(sum(f.pow(2).mean() for f in outputs.feature_maps), list(outputs.hidden_states))
    assert all(g.abs().sum() > 0 for g in grads)


# ---------------------------------------------------------------------------------------------------------------------
# backbone outputs
# ---------------------------------------------------------------------------------------------------------------------


def test_the_backbone_outputs_the_last_stage_by_default():
    for config in (SarMixMAEConfig(), SarMixMAEConfig(out_features=None, out_indices=None)):
        assert (config.out_features, config.out_indices) == (["stage4"], [4])
    backbone = SarMixMAEBackbone(encoder_config()).eval()
    with torch.no_grad():
        maps = backbone(torch.randn(BATCH, 1, SIZE, SIZE)).feature_maps
    assert [tuple(m.shape) for m in maps] == [(BATCH, 128, 4, 4)] and backbone.channels == [128]
    # negative control: named stages are honoured, so the check above does see the default
    assert len(SarMixMAEBackbone(encoder_config(out_indices=[1, 2, 3, 4])).channels) == 4


def test_the_segmentation_model_still_gets_the_stages_its_decoder_needs(tmp_path):
    assert segmentation_config().backbone_config.out_features == ["stem", "stage1", "stage2", "stage3", "stage4"]
    plain = segmentation_config(use_highres_injection=False)
    assert plain.backbone_config.out_features == ["stage1", "stage2", "stage3", "stage4"]
    # an encoder saved with the default (last stage only) still serves a full decoder
    pretrained = SarMixMAEForPreTraining(encoder_config())
    assert pretrained.config.out_features == ["stage4"]
    pretrained.save_pretrained(tmp_path)
    model = SarLulcForSemanticSegmentation.from_pretrained_encoder(tmp_path, segmentation_config()).eval()
    assert model.backbone.out_features == ["stem", "stage1", "stage2", "stage3", "stage4"]
    with torch.no_grad():
        assert model(torch.randn(1, 1, SIZE, SIZE)).logits.shape == (1, 9, SIZE, SIZE)


# ---------------------------------------------------------------------------------------------------------------------
# outputs that generic transformers utilities can compare
# ---------------------------------------------------------------------------------------------------------------------


def test_the_pretraining_mask_is_a_float_that_round_trips_as_the_mixing_mask():
    """transformers' output-equivalence checks subtract outputs, which a bool tensor refuses: the mask is a float, as
    ViTMAE's, and `mask.bool()` reproduces the mixing mask that was used (the same loss when passed back in)."""
    model, inputs = build("pretraining")
    with torch.no_grad():
        outputs = model(**inputs)
        again = model(**{**inputs, "mixing_mask": outputs.mask.bool().reshape(inputs["mixing_mask"].shape)})
    assert outputs.mask.dtype == torch.float32
    assert torch.equal(outputs.mask.bool(), inputs["mixing_mask"].reshape(1, -1))
    assert (outputs.mask - outputs.mask).abs().max() == 0  # the subtraction the common tests make
    assert torch.equal(again.loss, outputs.loss)
