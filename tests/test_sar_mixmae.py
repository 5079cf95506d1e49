"""SAR-W-MixMAE: mixing, group-masked attention, dual reconstruction, the weighted loss, transformers integration."""

import copy
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining
from transformers.testing_utils import CaptureLogger
from transformers.utils import logging as hf_logging

import sarlulc  # noqa: F401  (registers the Auto classes)
from sarlulc import SarMixMAEBackbone, SarMixMAEConfig, SarMixMAEForPreTraining, SarMixMAEModel
from sarlulc.models.modeling_sar_mixmae import (
    SarMixMAEMLP,
    SarMixMAEStage,
    gather_dual_reconstruction,
    mix_with_reversed_batch,
    random_mixing_mask,
    relative_position_index,
    sincos_position_embedding_2d,
    unmix_to_branches,
    window_partition,
    window_reverse,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_config(**overrides) -> SarMixMAEConfig:
    """128 px, 4 stages with grids 32/16/8/4 and windows 16/16/8/4: every stage needs the group mask."""
    kwargs = dict(
        image_size=128,
        embed_dim=16,
        depths=(1, 1, 1, 1),
        num_heads=(1, 2, 2, 4),
        window_size=(16, 16, 8, 4),
        decoder_embed_dim=32,
        decoder_depth=1,
        decoder_num_heads=2,
    )
    kwargs.update(overrides)
    return SarMixMAEConfig(**kwargs)


def fixed_mask(units=(4, 4), seed=0) -> torch.Tensor:
    return random_mixing_mask(units, 0.5, generator=torch.Generator().manual_seed(seed))


def as_db(pixels: torch.Tensor) -> torch.Tensor:
    """The clipped dB that the default processor (mean -12 dB, std 6 dB, clip [-35, 5] dB) standardizes into
    `pixels`: the `backscatter_db` input that goes with them."""
    return (pixels * 6.0 - 12.0).clamp(-35.0, 5.0)


# ---------------------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (dict(window_size=(12, 16, 8, 4)), "window_size[0]"),
        (dict(mask_ratio=0.0), "mask_ratio"),
        (dict(mask_ratio=1.2), "mask_ratio"),
        (dict(image_size=100), "image_size"),
        (dict(num_heads=(3, 2, 2, 4)), "num_heads[0]"),
        (dict(num_channels=3), "num_channels"),
        (dict(loss_weighting="speckle"), "loss_weighting"),
        (dict(backscatter_weight_scale=float("inf")), "backscatter_weight_scale"),
        (dict(backscatter_channel_mode="max"), "backscatter_channel_mode"),
        (dict(backscatter_power_source="speckle"), "backscatter_power_source"),
        (dict(decoder_num_heads=3), "decoder_num_heads"),
        (dict(range_mask_ratio=0.6), "range_mask_ratio"),
        (dict(depths=(1, 1, 1)), "num_heads"),
    ],
)
def test_config_rejects_nonsense_naming_the_field(overrides, field):
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        small_config(**overrides)


def test_hub_configs_load_with_autoconfig():
    tiny = AutoConfig.from_pretrained(os.path.join(REPO, "hub_configs", "sar-mixmae-tiny"))
    base = AutoConfig.from_pretrained(os.path.join(REPO, "hub_configs", "sar-mixmae-base"))
    assert isinstance(tiny, SarMixMAEConfig) and isinstance(base, SarMixMAEConfig)
    assert (base.embed_dim, base.depths, base.num_heads) == (128, [2, 2, 18, 2], [4, 8, 16, 32])
    assert (base.decoder_embed_dim, base.decoder_depth, base.decoder_num_heads) == (512, 8, 16)
    assert tiny.embed_dim <= 48 and tiny.depths == [1, 1, 2, 1]
    # they predate the move of the normalization to the image processor: the old fields are dropped on load
    assert not any(hasattr(c, "input_db_mean") or "input_clip_db" in c.to_dict() for c in (tiny, base))


def test_check_input_size_names_the_input_and_the_fix():
    config = small_config()
    config.check_input_size(128, 96)  # multiples of 32: nothing to say
    with pytest.raises(
        ValueError, match=r"^the tile is 100x70 pixels; .* stride 32 .*pad it to 128x96 or crop it to 96x64"
    ):
        config.check_input_size(100, 70, "the tile")
    with pytest.raises(ValueError, match=r"input is 16x64 pixels; .*pad it to 32x64 \(SarImageProcessor"):
        config.check_input_size(16, 64)  # too small to crop
    with pytest.raises(ValueError, match="stride 64"):
        small_config(patch_size=8, image_size=128, window_size=(8, 8, 4, 2)).check_input_size(96, 128)


def test_config_round_trips_through_json(tmp_path):
    config = small_config(
        loss_weighting="none",
        backscatter_weight_scale=0.5,
        backscatter_channel_mode="shared_avg",
        backscatter_power_source="pixel_values",
    )
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    # a checkpoint says what it was trained with
    assert (saved["backscatter_weight_scale"], saved["backscatter_channel_mode"]) == (0.5, "shared_avg")
    assert (saved["layer_norm_eps"], saved["backscatter_power_source"]) == (1e-5, "pixel_values")
    loaded = SarMixMAEConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()


def test_old_configs_with_the_normalization_still_load_and_drop_it(tmp_path):
    # configs saved before the normalization moved to the image processor carry these three fields
    config = small_config()
    config.save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    values = json.loads(path.read_text())
    values.update(input_db_mean=[-14.0], input_db_std=[5.0], input_clip_db=[-30.0, 0.0])
    path.write_text(json.dumps(values))
    loaded = SarMixMAEConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    for name in ("input_db_mean", "input_db_std", "input_clip_db"):
        assert not hasattr(loaded, name) and name not in loaded.to_dict()
    assert "input_db_mean" in values  # negative control: the file did carry them


def test_configs_with_the_former_weight_fields_load_with_a_warning(tmp_path):
    config = small_config()
    config.save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    values = json.loads(path.read_text())
    values.update(backscatter_tau=1.0, backscatter_normalization="per_image", loss_reduction="weighted_mean")
    path.write_text(json.dumps(values))
    logger = hf_logging.get_logger("sarlulc.models.configuration_sar_mixmae")
    with CaptureLogger(logger) as captured:
        loaded = SarMixMAEConfig.from_pretrained(tmp_path)
    assert "former backscatter weight" in captured.out and "backscatter_tau" in captured.out
    assert loaded.to_dict() == config.to_dict()
    assert not any(hasattr(loaded, name) for name in ("backscatter_tau", "loss_reduction"))


def test_authors_reference_settings_are_valid_and_differ_from_the_defaults_only_in_the_weight_source():
    from sarlulc.models.configuration_sar_mixmae import AUTHORS_REFERENCE_SETTINGS

    config = small_config(**AUTHORS_REFERENCE_SETTINGS)
    default = small_config()
    differing = {key for key, value in AUTHORS_REFERENCE_SETTINGS.items() if getattr(default, key) != value}
    assert differing == {"backscatter_power_source"}
    assert config.backscatter_power_source == "pixel_values" and config.layer_norm_eps == 1e-5


# ---------------------------------------------------------------------------------------------------------------------
# The reference layout: position embeddings, LayerNorm eps, mask count, bias tables
# ---------------------------------------------------------------------------------------------------------------------


def mae_sincos_table(dim: int, grid: int, column_first: bool = True) -> np.ndarray:
    """MAE's `get_2d_sincos_pos_embed` as its paper's code defines it, written out in numpy float64: the token at row
    i, column j (row-major) gets `[sin(j w), cos(j w), sin(i w), cos(i w)]`, `w_k = 1 / 10000 ** (k / (dim / 4))`."""
    omega = 1.0 / 10000.0 ** (np.arange(dim // 4) / (dim / 4))
    rows, cols = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")

    def encode(positions):
        angles = positions.reshape(-1)[:, None] * omega[None, :]
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    first, second = (cols, rows) if column_first else (rows, cols)
    return np.concatenate([encode(first), encode(second)], axis=1)


@pytest.mark.parametrize(("dim", "grid"), [(16, 8), (128, 32), (512, 4)])
def test_sincos_position_embedding_puts_the_column_first_as_mae(dim, grid):
    ours = sincos_position_embedding_2d(grid, grid, dim).double().numpy()
    np.testing.assert_allclose(ours, mae_sincos_table(dim, grid), atol=2e-5)
    # negative control: the row-first layout is another table
    assert np.abs(ours - mae_sincos_table(dim, grid, column_first=False)).max() > 0.5


def test_sincos_position_embedding_of_a_rectangular_grid_keeps_the_layout():
    table = sincos_position_embedding_2d(3, 5, 8).view(3, 5, 8)
    # first half: the column (same along a column of tokens), second half: the row
    assert torch.equal(table[0, :, :4], table[2, :, :4]) and not torch.equal(table[0, 0, :4], table[0, 1, :4])
    assert torch.equal(table[:, 0, 4:], table[:, 4, 4:]) and not torch.equal(table[0, 0, 4:], table[1, 0, 4:])


def test_every_layer_norm_uses_the_reference_eps_by_default():
    model = SarMixMAEForPreTraining(small_config())
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) > 10 and all(norm.eps == 1e-5 for norm in norms)


def test_the_mask_has_int_of_units_times_ratio_ones():
    # 16 units at 0.6: int(9.6) = 9 (rounding would give 10)
    for seed in range(3):
        mask = random_mixing_mask((4, 4), 0.6, generator=torch.Generator().manual_seed(seed))
        assert int(mask.sum()) == 9
    assert int(random_mixing_mask((7, 7), 0.5).sum()) == 24  # MixMAE at 224 px: 49 units


def test_the_mask_is_the_one_the_reference_draws_from_the_same_random_state():
    # the reference: noise = rand(L); the int(L * ratio) units with the smallest noise are mixed
    generator = torch.Generator().manual_seed(11)
    noise = torch.rand(1, 1, 16, generator=generator)
    expected = torch.zeros(16)
    expected[noise.argsort(dim=2)[0, 0, :8]] = 1
    ours = random_mixing_mask((4, 4), 0.5, generator=torch.Generator().manual_seed(11))
    assert torch.equal(ours.reshape(-1).float(), expected)


def test_a_window_larger_than_its_grid_shrinks_with_its_bias_table():
    # 64 px: grids 16/8/4/2; windows 16/16/8/4 shrink to 16/8/4/2, tables (2w-1)^2 rows as in the reference
    config = small_config(image_size=64)
    assert [config.stage_window_size(s) for s in range(4)] == [16, 8, 4, 2]
    model = SarMixMAEModel(config)
    for stage, window in zip(model.encoder.stages, [16, 8, 4, 2]):
        assert stage.window_size == window
        for block in stage.blocks:
            assert block.attention.relative_position_bias_table.shape == (
                (2 * window - 1) ** 2,
                block.attention.num_heads,
            )
    # a larger input keeps the shrunk window (the grid is padded and tiled), a smaller one uses the table's centre
    assert model.encoder.stages[1].effective_window(16, 16) == (8, 8)
    assert model.encoder.stages[1].effective_window(4, 4) == (4, 4)
    outputs = model(torch.randn(1, 1, 128, 96), output_hidden_states=True)
    assert outputs.last_hidden_state.shape == (1, 12, 128)


# ---------------------------------------------------------------------------------------------------------------------
# Mixing and unmixing
# ---------------------------------------------------------------------------------------------------------------------


def test_mixing_then_unmixing_recovers_each_images_visible_tokens():
    batch, length, dim = 5, 16, 8
    tokens = torch.randn(batch, length, dim)
    mask = fixed_mask().reshape(1, length, 1)
    mask_token = torch.randn(1, 1, dim)
    mixed = mix_with_reversed_batch(tokens, mask)
    branches = unmix_to_branches(mixed, mask, mask_token)
    m = mask[0, :, 0]
    for j in range(batch):
        # branch 1 of mixed image j shows image j where M = 0 and the mask token elsewhere
        assert torch.equal(branches[j][~m], tokens[j][~m])
        assert torch.equal(branches[j][m], mask_token[0].expand(int(m.sum()), dim))
        # branch 2 of mixed image j shows image B-1-j where M = 1 and the mask token elsewhere
        assert torch.equal(branches[batch + j][m], tokens[batch - 1 - j][m])
        assert torch.equal(branches[batch + j][~m], mask_token[0].expand(int((~m).sum()), dim))
    # the odd batch's middle image is mixed with itself
    assert torch.equal(mixed[batch // 2], tokens[batch // 2])


def test_pixel_mixing_equals_token_mixing_after_patch_embedding():
    model = SarMixMAEModel(small_config()).eval()
    pixels = torch.randn(4, 1, 128, 128)
    mask = fixed_mask()
    embeddings = model.embeddings
    mixed = embeddings(pixels, mask)
    tokens = embeddings.patch_embeddings(pixels)  # (B, 32, 32, C)
    token_mask = mask.repeat_interleave(8, 1).repeat_interleave(8, 2)[..., None]
    expected = mix_with_reversed_batch(tokens, token_mask)
    position = sincos_position_embedding_2d(32, 32, tokens.shape[-1]).view(1, 32, 32, -1)
    assert torch.allclose(mixed, expected + position, atol=1e-5)


def test_dual_reconstruction_takes_each_unit_from_the_branch_where_it_was_hidden():
    batch, length, dim = 3, 16, 4
    decoded = torch.randn(2 * batch, length, dim)
    mask = fixed_mask().reshape(1, length, 1)
    gathered = gather_dual_reconstruction(decoded, mask)
    for i in range(batch):
        for unit in range(length):
            if mask[0, unit, 0]:
                source = decoded[i, unit]  # hidden in mixed image i, predicted by its branch 1
            else:
                source = decoded[batch + (batch - 1 - i), unit]  # hidden in mixed image B-1-i, its branch 2
            assert torch.equal(gathered[i, unit], source)


# ---------------------------------------------------------------------------------------------------------------------
# Window attention against a per-window reference
# ---------------------------------------------------------------------------------------------------------------------


def reference_window_attention(attention, x, window, groups=None):
    """Loop over windows; attend among the real tokens of a window (and of the same group), using the module's
    weights and an independently computed relative position offset."""
    batch, height, width, dim = x.shape
    heads, head_dim = attention.num_heads, attention.head_dim
    table = attention.relative_position_bias_table
    w_table = attention.window_size
    out = torch.zeros_like(x)
    weight, bias = attention.qkv.weight, attention.qkv.bias
    for b in range(batch):
        for top in range(0, height, window[0]):
            for left in range(0, width, window[1]):
                cells = [
                    (r, c)
                    for r in range(top, min(top + window[0], height))
                    for c in range(left, min(left + window[1], width))
                ]
                tokens = torch.stack([x[b, r, c] for r, c in cells])
                qkv = tokens @ weight.T + bias
                q, k, v = qkv.split(dim, dim=-1)
                result = []
                for h in range(heads):
                    sl = slice(h * head_dim, (h + 1) * head_dim)
                    scores = (q[:, sl] @ k[:, sl].T) * head_dim**-0.5
                    for i, (ri, ci) in enumerate(cells):
                        for j, (rj, cj) in enumerate(cells):
                            offset = (ri - rj + w_table - 1) * (2 * w_table - 1) + (ci - cj + w_table - 1)
                            scores[i, j] = scores[i, j] + table[offset, h]
                    if groups is not None:
                        same = torch.tensor(
                            [[groups[ri, ci] == groups[rj, cj] for rj, cj in cells] for ri, ci in cells]
                        )
                        scores = scores.masked_fill(~same, float("-inf"))
                    result.append(scores.softmax(-1) @ v[:, sl])
                projected = attention.proj(torch.cat(result, dim=-1))
                for i, (r, c) in enumerate(cells):
                    out[b, r, c] = projected[i]
    return out


@pytest.mark.parametrize(("size", "use_groups"), [((8, 8), False), ((8, 8), True), ((6, 10), False), ((6, 10), True)])
def test_window_attention_matches_per_window_reference(size, use_groups):
    torch.manual_seed(0)
    config = small_config()
    stage = SarMixMAEStage(config, stage=2, drop_path=[0.0])  # window 8
    attention = stage.blocks[0].attention
    torch.nn.init.normal_(attention.relative_position_bias_table, std=0.5)
    height, width = size
    window = stage.effective_window(height, width)
    x = torch.randn(2, height, width, attention.qkv.in_features)
    groups = (torch.rand(height, width) > 0.5) if use_groups else None
    pad_h, pad_w = (-height) % window[0], (-width) % window[1]
    padded = torch.nn.functional.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    mask = stage.window_mask(groups, (height, width), (pad_h, pad_w), window, x.device)
    with torch.no_grad():
        out, weights = attention(window_partition(padded, window), window, mask)
        assert weights is None  # not asked for
        out = window_reverse(out, window, height + pad_h, width + pad_w)[:, :height, :width]
        expected = reference_window_attention(attention, x, window, groups)
    assert torch.allclose(out, expected, atol=1e-5)


def test_relative_position_index_of_a_shrunk_window_uses_the_table_centre():
    full = relative_position_index((5, 5), 5)
    small = relative_position_index((3, 3), 5)
    # query (0,0) and key (1,2) of a 3x3 window are offset (-1,-2) exactly as query (0,0) and key (1,2) of a 5x5 one
    assert small[0, 1 * 3 + 2] == full[0, 1 * 5 + 2]
    assert small.max() < (2 * 5 - 1) ** 2 and small.min() >= 0


def test_windows_inside_one_mixing_unit_need_no_group_mask():
    # mixing unit 8 tokens, window 4: every window sees a single source image, so the built mask is all True
    groups = fixed_mask((2, 2)).reshape(2, 2).repeat_interleave(8, 0).repeat_interleave(8, 1)
    allowed = SarMixMAEStage.window_mask(groups, (16, 16), (0, 0), (4, 4), torch.device("cpu"))
    assert bool(allowed.all())
    allowed = SarMixMAEStage.window_mask(groups, (16, 16), (0, 0), (16, 16), torch.device("cpu"))
    assert not bool(allowed.all())


# ---------------------------------------------------------------------------------------------------------------------
# No leakage between mixed images
# ---------------------------------------------------------------------------------------------------------------------


def _leak_gradient(use_group_mask: bool) -> torch.Tensor:
    torch.manual_seed(0)
    model = SarMixMAEModel(small_config()).eval()
    image_a = torch.randn(1, 1, 128, 128, requires_grad=True)
    image_b = torch.randn(1, 1, 128, 128, requires_grad=True)
    mask = fixed_mask()
    outputs = model(
        torch.cat([image_a, image_b]),
        mixing_mask=mask,
        attention_group_mask=mask if use_group_mask else None,
        output_hidden_states=True,
    )
    # Mixed image 0 holds image A where M = 0. Sum the embedding's and every stage's A-tokens and the final tokens of A.
    total = outputs.last_hidden_state[0][~mask.reshape(-1)].sum()
    for hidden in outputs.reshaped_hidden_states:
        factor = hidden.shape[-1] // 4  # tokens per mixing unit side: 4 units a side
        token_mask = mask[0].repeat_interleave(factor, 0).repeat_interleave(factor, 1)
        total = total + hidden[0][:, ~token_mask].sum()
    total.backward()
    return image_b.grad


def test_group_masked_attention_stops_information_between_mixed_images():
    grad = _leak_gradient(use_group_mask=True)
    assert torch.count_nonzero(grad) == 0


def test_leakage_test_detects_a_disabled_group_mask():
    grad = _leak_gradient(use_group_mask=False)
    assert torch.count_nonzero(grad) > 0


# ---------------------------------------------------------------------------------------------------------------------
# The loss, computed independently
# ---------------------------------------------------------------------------------------------------------------------


def reference_loss(pixels, logits, config, pixel_mask=None, backscatter_db=None):
    """The SAR-W-MixMAE loss in plain numpy (float64), unit by unit: per-unit targets (per-patch normalized), the
    weight `exp(s * (1 - lin_n))` of linear power min-max normalized per image (and per band, or of the band-averaged
    power), the mean of `w * error**2` over the valid values. Returns the loss and the weights `(B, C, H, W)`."""
    x = pixels.double().numpy()
    pred = logits.detach().double().numpy()
    batch, channels, height, width = x.shape
    p = config.encoder_stride
    valid = np.ones((batch, height, width), bool) if pixel_mask is None else pixel_mask.numpy().astype(bool)
    db = x if config.backscatter_power_source == "pixel_values" else backscatter_db.double().numpy()
    power = 10.0 ** (db / 10.0)  # (B, C, H, W) linear power
    if config.backscatter_channel_mode == "shared_avg":
        power = power.mean(axis=1, keepdims=True)
    weights = np.zeros((batch, channels, height, width))
    for b in range(batch):
        for band in range(power.shape[1]):
            if config.loss_weighting == "none":
                w = np.ones((height, width))
            else:
                lin = power[b, band]
                lo, hi = lin[valid[b]].min(), lin[valid[b]].max()
                w = np.exp(config.backscatter_weight_scale * (1.0 - (lin - lo) / (hi - lo + 1e-6)))
            targets = range(channels) if power.shape[1] == 1 else [band]
            for c in targets:
                weights[b, c] = np.where(valid[b], w, 0.0)
    total, count = 0.0, 0
    for b in range(batch):
        for r in range(height // p):
            for c in range(width // p):
                window = (slice(r * p, (r + 1) * p), slice(c * p, (c + 1) * p))
                patch = x[b][(slice(None), *window)].transpose(1, 2, 0).reshape(-1)  # pixel-major, then band
                if config.norm_pix_loss:
                    patch = (patch - patch.mean()) / np.sqrt(patch.var(ddof=1) + 1e-6)
                w = weights[b][(slice(None), *window)].transpose(1, 2, 0).reshape(-1)
                error = (pred[b, r * (width // p) + c] - patch) ** 2
                total += (w * error).sum()
                count += channels * valid[b][window].sum()
    return total / count, weights


@pytest.mark.parametrize(
    ("weighting", "source", "mode", "channels"),
    [
        ("backscatter", "backscatter_db", "per_channel", 1),
        ("backscatter", "pixel_values", "per_channel", 1),
        ("backscatter", "backscatter_db", "per_channel", 2),
        ("backscatter", "backscatter_db", "shared_avg", 2),
        ("backscatter", "pixel_values", "shared_avg", 2),
        ("none", None, "per_channel", 2),
    ],
)
@pytest.mark.parametrize("with_nodata", [False, True])
def test_loss_equals_an_independent_computation(weighting, source, mode, channels, with_nodata):
    torch.manual_seed(1)
    config = small_config(
        num_channels=channels,
        loss_weighting=weighting,
        backscatter_weight_scale=0.7,
        backscatter_channel_mode=mode,
        backscatter_power_source=source or "backscatter_db",
    )
    model = SarMixMAEForPreTraining(config).eval()
    pixels = torch.randn(3, channels, 128, 128)
    backscatter_db = as_db(pixels)
    pixel_mask = None
    if with_nodata:
        pixel_mask = torch.ones(3, 128, 128, dtype=torch.bool)
        pixel_mask[:, :20, :] = False
        pixel_mask[2] = False  # an image without a single valid pixel weighs nothing, and makes no NaN
        pixels = pixels.masked_fill(~pixel_mask[:, None], 0.0)
        backscatter_db = backscatter_db.masked_fill(~pixel_mask[:, None], 0.0)
    # backscatter_db is only needed (and only given) when the weight reads it
    extra = {"backscatter_db": backscatter_db} if source == "backscatter_db" else {}
    out = model(pixels, pixel_mask=pixel_mask, mixing_mask=fixed_mask(), **extra)
    if with_nodata:  # the reference normalizes over valid pixels only: leave the empty image out of it
        expected, weights = reference_loss(pixels[:2], out.logits[:2], config, pixel_mask[:2], backscatter_db[:2])
        assert (out.loss_weights[2] == 0).all()
        # the empty image adds no values to the mean either
        assert out.loss.item() == pytest.approx(expected, rel=1e-5)
        assert np.allclose(out.loss_weights[:2].numpy(), weights, atol=1e-5)
    else:
        expected, weights = reference_loss(pixels, out.logits, config, pixel_mask, backscatter_db)
        assert out.loss.item() == pytest.approx(expected, rel=1e-5)
        assert np.allclose(out.loss_weights.numpy(), weights, atol=1e-5)
    assert out.loss_weights.shape == (3, channels, 128, 128)


def authors_weights(sar_db: torch.Tensor, mode: str, exp_scale: float) -> torch.Tensor:
    """The SAR-W-MixMAE authors' weight as their paper and code state it, written out here: `lin = 10^(x/10)`,
    min-max per image over H x W with `+1e-6`, `exp(exp_scale * (1 - lin_n))`; per channel, or once for the
    channel-averaged power and broadcast to every channel."""
    lin = torch.pow(10.0, sar_db / 10.0)
    if mode == "shared_avg":
        lin = lin.mean(dim=1, keepdim=True)
    low = lin.flatten(2).min(dim=2).values[..., None, None]
    high = lin.flatten(2).max(dim=2).values[..., None, None]
    return torch.exp(exp_scale * (1.0 - (lin - low) / (high - low + 1e-6))).expand_as(sar_db)


def authors_loss(x: torch.Tensor, reconstruction: torch.Tensor, weights: torch.Tensor, p: int) -> torch.Tensor:
    """Their `forward_loss` after unmixing: targets `nchpwq -> nhwpqc` patches of the model input, per-patch
    normalized with the unbiased variance, loss the plain mean of `weights * (reconstruction - target)**2`."""
    batch, channels, height, width = x.shape

    def patchify(images):
        patches = images.reshape(batch, channels, height // p, p, width // p, p)
        return torch.einsum("nchpwq->nhwpqc", patches).reshape(batch, -1, p * p * channels)

    target = patchify(x)
    target = (target - target.mean(dim=-1, keepdim=True)) / (target.var(dim=-1, keepdim=True) + 1.0e-6) ** 0.5
    return (patchify(weights) * (reconstruction - target) ** 2).mean()


@pytest.mark.parametrize("mode", ["per_channel", "shared_avg"])
def test_authors_reference_settings_reproduce_their_formula(mode):
    from sarlulc.models.configuration_sar_mixmae import AUTHORS_REFERENCE_SETTINGS

    torch.manual_seed(5)
    settings = {**AUTHORS_REFERENCE_SETTINGS, "backscatter_channel_mode": mode}
    model = SarMixMAEForPreTraining(small_config(num_channels=2, **settings)).eval()
    # their input: dB standardized with the dataset statistics (VH, VV), no invalid pixels, no backscatter_db
    db = torch.stack([torch.empty(4, 128, 128).uniform_(-30, -5), torch.empty(4, 128, 128).uniform_(-22, 2)], 1)
    mean, std = torch.tensor([-19.1966, -12.5144]).view(1, 2, 1, 1), torch.tensor([5.4501, 5.0019]).view(1, 2, 1, 1)
    x = (db - mean) / std
    with torch.no_grad():
        out = model(x, mixing_mask=fixed_mask())
    weights = authors_weights(x, mode, exp_scale=1.0)
    torch.testing.assert_close(out.loss_weights, weights, rtol=1e-6, atol=1e-6)
    expected = authors_loss(x, out.logits, weights, model.config.encoder_stride)
    torch.testing.assert_close(out.loss, expected, rtol=1e-6, atol=0)
    # negative controls: our documented default (physical dB) and the other channel mode compute something else
    with torch.no_grad():
        physical = SarMixMAEForPreTraining(small_config(num_channels=2, backscatter_channel_mode=mode))
        physical.load_state_dict(model.state_dict())
        other = physical.eval()(x, backscatter_db=db, mixing_mask=fixed_mask())
    assert not torch.allclose(other.loss_weights, weights, atol=1e-2)
    other_mode = "shared_avg" if mode == "per_channel" else "per_channel"
    assert not torch.allclose(authors_weights(x, other_mode, 1.0), weights, atol=1e-2)


def test_a_float64_model_computes_the_weight_and_the_loss_in_float64():
    # Half precision would flatten 10 ** (dB / 10), so the weight is computed in at least float32; a float64 model
    # (used to compare with reference code to the last digits) keeps float64 rather than being rounded to float32.
    from sarlulc.models.configuration_sar_mixmae import AUTHORS_REFERENCE_SETTINGS

    torch.manual_seed(7)
    model = SarMixMAEForPreTraining(small_config(num_channels=2, **AUTHORS_REFERENCE_SETTINGS)).double().eval()
    x = torch.randn(2, 2, 128, 128, dtype=torch.float64)
    with torch.no_grad():
        out = model(x, mixing_mask=fixed_mask())
    expected = authors_weights(x, "per_channel", exp_scale=1.0)
    assert out.loss_weights.dtype == torch.float64 and out.loss.dtype == torch.float64
    torch.testing.assert_close(out.loss_weights, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.loss, authors_loss(x, out.logits, expected, 32), rtol=1e-12, atol=0)
    # negative control: the same weight computed in float32 is off by far more than that bound
    rounded = authors_weights(x.float(), "per_channel", exp_scale=1.0).double()
    assert (rounded - expected).abs().max() > 1e-9


def test_the_weight_follows_backscatter_db_not_the_normalization():
    # The same pixel_values standardized with other statistics are other physical dB values: the physical weight
    # changes with backscatter_db; the authors' model-input weight (pixel_values) cannot see the difference.
    torch.manual_seed(1)
    pixels, mask = torch.randn(2, 1, 128, 128), fixed_mask()
    physical = SarMixMAEForPreTraining(small_config()).eval()
    db_a, db_b = as_db(pixels), (pixels * 2.0 - 20.0).clamp(-35.0, 5.0)
    weights_a = physical(pixels, backscatter_db=db_a, mixing_mask=mask).loss_weights
    weights_b = physical(pixels, backscatter_db=db_b, mixing_mask=mask).loss_weights
    assert not torch.allclose(weights_a, weights_b, atol=1e-3)
    authors = SarMixMAEForPreTraining(small_config(backscatter_power_source="pixel_values")).eval()
    assert torch.equal(
        authors(pixels, backscatter_db=db_a, mixing_mask=mask).loss_weights,
        authors(pixels, backscatter_db=db_b, mixing_mask=mask).loss_weights,
    )


def test_missing_backscatter_db_is_a_clear_error_unless_the_weight_does_not_need_it():
    pixels = torch.randn(2, 1, 128, 128)
    model = SarMixMAEForPreTraining(small_config()).eval()
    with pytest.raises(ValueError, match=r"needs `backscatter_db`.*return_backscatter_db=True"):
        model(pixels, mixing_mask=fixed_mask())
    with pytest.raises(ValueError, match="shape of pixel_values"):
        model(pixels, backscatter_db=as_db(pixels)[:, :, :64], mixing_mask=fixed_mask())
    for overrides in (dict(loss_weighting="none"), dict(backscatter_power_source="pixel_values")):
        loss = SarMixMAEForPreTraining(small_config(**overrides)).eval()(pixels, mixing_mask=fixed_mask()).loss
        assert torch.isfinite(loss)


def test_processor_outputs_feed_the_pretraining_model():
    from sarlulc.models.image_processing_sar import SarImageProcessor

    rng = np.random.default_rng(0)
    dn = rng.integers(200, 20000, size=(2, 1, 128, 128)).astype(np.uint16)
    dn[0, 0, :5, :7] = 0  # nodata
    processor = SarImageProcessor(input_kind="dn", image_mean=[-14.0], image_std=[4.0])
    inputs = processor(dn, return_tensors="pt", return_backscatter_db=True)
    model = SarMixMAEForPreTraining(small_config()).eval()
    torch.manual_seed(0)
    out = model(**inputs, mixing_mask=fixed_mask())
    expected, weights = reference_loss(
        inputs["pixel_values"], out.logits, model.config, inputs["pixel_mask"].bool(), inputs["backscatter_db"]
    )
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    assert np.allclose(out.loss_weights.numpy(), weights, atol=1e-5)
    assert (out.loss_weights[0, 0, :5, :7] == 0).all()


@pytest.mark.parametrize("scale", [1.0, 2.5])
def test_backscatter_weights_are_largest_where_backscatter_is_lowest(scale):
    model = SarMixMAEForPreTraining(small_config(backscatter_weight_scale=scale)).eval()
    pixels = torch.randn(2, 1, 128, 128)
    weights = model(pixels, backscatter_db=as_db(pixels), mixing_mask=fixed_mask()).loss_weights[:, 0]
    for b in range(2):
        order = pixels[b, 0].flatten().argsort()
        w_sorted = weights[b].flatten()[order]
        assert torch.all(w_sorted[1:] <= w_sorted[:-1] * (1 + 1e-6))  # non-increasing in backscatter
        # the darkest pixel weighs e^s, the brightest 1 (up to the 1e-6 of the normalization)
        assert w_sorted[0] == pytest.approx(np.exp(scale), rel=1e-5) and w_sorted[-1] == pytest.approx(1.0, abs=1e-5)


def test_shared_avg_weighs_every_band_with_the_map_of_the_mean_power():
    torch.manual_seed(6)
    pixels = torch.randn(2, 2, 128, 128)
    db = as_db(pixels)
    shared = SarMixMAEForPreTraining(small_config(num_channels=2, backscatter_channel_mode="shared_avg")).eval()
    weights = shared(pixels, backscatter_db=db, mixing_mask=fixed_mask()).loss_weights
    assert torch.equal(weights[:, 0], weights[:, 1])
    mean_db = 10 * torch.log10(torch.pow(10.0, db / 10).mean(1, keepdim=True))
    single = SarMixMAEForPreTraining(small_config(num_channels=1)).eval()
    expected = single(pixels[:, :1], backscatter_db=mean_db, mixing_mask=fixed_mask()).loss_weights
    torch.testing.assert_close(weights[:, :1], expected, rtol=1e-5, atol=1e-5)
    per_channel = SarMixMAEForPreTraining(small_config(num_channels=2)).eval()
    separate = per_channel(pixels, backscatter_db=db, mixing_mask=fixed_mask()).loss_weights
    assert not torch.allclose(separate[:, 0], separate[:, 1])  # negative control: each band its own map


def test_predictions_come_from_the_branch_where_each_unit_was_hidden():
    torch.manual_seed(2)
    model = SarMixMAEForPreTraining(small_config()).eval()
    pixels = torch.randn(3, 1, 128, 128)
    captured = {}
    model.decoder_blocks[-1].register_forward_hook(lambda m, i, o: captured.__setitem__("decoded", o))
    mask = fixed_mask()
    with torch.no_grad():
        logits = model(pixels, backscatter_db=as_db(pixels), mixing_mask=mask).logits
        decoded = captured["decoded"]
        batch, flat = 3, mask.reshape(-1)
        for i in range(batch):
            rows = torch.where(flat[:, None], decoded[i], decoded[batch + batch - 1 - i])
            expected = model.decoder_pred(model.decoder_norm(rows))
            assert torch.allclose(logits[i], expected, atol=1e-6)


def test_patchify_and_unpatchify_are_inverse():
    model = SarMixMAEForPreTraining(small_config(num_channels=2))
    images = torch.randn(2, 2, 128, 96)
    assert torch.equal(model.unpatchify(model.patchify(images), 128, 96), images)


# ---------------------------------------------------------------------------------------------------------------------
# Attention implementations, outputs, training
# ---------------------------------------------------------------------------------------------------------------------


def test_eager_and_sdpa_attention_agree():
    torch.manual_seed(3)
    eager = SarMixMAEForPreTraining(small_config(attn_implementation="eager"))
    sdpa = SarMixMAEForPreTraining(small_config(attn_implementation="sdpa"))
    sdpa.load_state_dict(eager.state_dict())
    assert eager.config._attn_implementation == "eager" and sdpa.config._attn_implementation == "sdpa"
    pixels, mask = torch.randn(3, 1, 128, 128), fixed_mask()
    inputs = dict(pixel_values=pixels, backscatter_db=as_db(pixels), mixing_mask=mask)
    with torch.no_grad():  # no bias gradient: SDPA runs its fused CPU kernel
        a, b = eager.eval()(**inputs), sdpa.eval()(**inputs)
    assert torch.allclose(a.logits, b.logits, atol=1e-5)
    assert torch.allclose(a.loss, b.loss, atol=1e-5)
    # training: gradients agree too (the decoder's attention runs SDPA's fused kernel, the encoder's its fallback)
    eager.train()(**inputs).loss.backward()
    sdpa.train()(**inputs).loss.backward()
    for (name, p_e), (_, p_s) in zip(eager.named_parameters(), sdpa.named_parameters()):
        assert torch.allclose(p_e.grad, p_s.grad, atol=1e-5, rtol=1e-4), name


def test_inference_mlp_in_token_slices_equals_one_call(monkeypatch):
    torch.manual_seed(4)
    mlp = SarMixMAEMLP(small_config(), dim=24).eval()
    monkeypatch.setattr(SarMixMAEMLP, "inference_slice_elements", 24 * 50)  # 50 tokens per slice, uneven last one
    tokens = torch.randn(2, 37, 3, 24)  # (batch, window area, windows, channels): 222 tokens
    expected = torch.nn.functional.linear(
        torch.nn.functional.gelu(torch.nn.functional.linear(tokens, mlp.fc1.weight, mlp.fc1.bias)),
        mlp.fc2.weight,
        mlp.fc2.bias,
    )
    with torch.no_grad():
        sliced = mlp(tokens)
    assert sliced.shape == tokens.shape
    torch.testing.assert_close(sliced, expected, atol=1e-6, rtol=1e-5)
    with torch.enable_grad():  # training keeps one call (the backward needs the whole hidden activation)
        assert torch.allclose(mlp(tokens), expected, atol=1e-6)


def test_tuple_and_dict_outputs_agree():
    model = SarMixMAEForPreTraining(small_config()).eval()
    pixels, mask = torch.randn(2, 1, 128, 128), fixed_mask()
    as_dict = model(pixels, backscatter_db=as_db(pixels), mixing_mask=mask)
    as_tuple = model(pixels, backscatter_db=as_db(pixels), mixing_mask=mask, return_dict=False)
    assert isinstance(as_tuple, tuple)
    assert torch.equal(as_tuple[0], as_dict.loss) and torch.equal(as_tuple[1], as_dict.logits)
    encoder = SarMixMAEModel(small_config()).eval()
    d = encoder(pixels, output_hidden_states=True)
    t = encoder(pixels, output_hidden_states=True, return_dict=False)
    assert torch.equal(t[0], d.last_hidden_state) and len(t) == 3  # last, hidden states, reshaped hidden states


def test_output_hidden_states_are_the_embedding_then_one_entry_per_stage():
    config = small_config()
    outputs = SarMixMAEModel(config)(torch.randn(2, 1, 128, 128), output_hidden_states=True)
    assert len(outputs.hidden_states) == len(outputs.reshaped_hidden_states) == len(config.stage_names) == 5
    sides = [32, 32, 16, 8, 4]
    widths = [config.embed_dim] + [config.embed_dim * 2**stage for stage in range(4)]
    for flat, grid, side, channels in zip(outputs.hidden_states, outputs.reshaped_hidden_states, sides, widths):
        assert grid.shape == (2, channels, side, side) and flat.shape == (2, side * side, channels)
        assert torch.equal(grid.flatten(2).transpose(1, 2), flat)
    assert SarMixMAEModel(config)(torch.randn(1, 1, 128, 128)).hidden_states is None


def test_backbone_gives_normalized_feature_maps_and_the_stem():
    config = small_config(out_features=["stem", "stage1", "stage2", "stage3", "stage4"])
    backbone = SarMixMAEBackbone(config)
    maps = backbone(torch.randn(2, 1, 160, 96)).feature_maps  # not the pretraining size: windows pad
    assert [tuple(m.shape) for m in maps] == [
        (2, 16, 40, 24),
        (2, 16, 40, 24),
        (2, 32, 20, 12),
        (2, 64, 10, 6),
        (2, 128, 5, 3),
    ]
    assert backbone.channels == [16, 16, 32, 64, 128]
    assert all(torch.isfinite(m).all() for m in maps)


def test_input_not_a_multiple_of_the_stride_is_a_clear_error():
    with pytest.raises(
        ValueError, match=r"input is 100x128 pixels.*multiples of the encoder stride 32.*pad it to 128x128"
    ):
        SarMixMAEModel(small_config())(torch.randn(1, 1, 100, 128))
    with pytest.raises(ValueError, match="pixel_values must be"):
        SarMixMAEModel(small_config())(torch.randn(1, 3, 128, 128))


def test_odd_batch_trains():
    model = SarMixMAEForPreTraining(small_config())
    pixels = torch.randn(3, 1, 128, 128)
    out = model(pixels, backscatter_db=as_db(pixels))
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.logits.shape == (3, 16, 32 * 32)
    assert out.mask.shape == (1, 16) and int(out.mask.sum()) == 8


def test_training_reduces_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = SarMixMAEForPreTraining(small_config(decoder_embed_dim=128, decoder_num_heads=4))  # the tiny decoder
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    pixels, mask = torch.randn(4, 1, 128, 128), fixed_mask()
    losses = []
    for _ in range(20):
        loss = model(pixels, backscatter_db=as_db(pixels), mixing_mask=mask).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = SarMixMAEForPreTraining(small_config())
    checkpointed = copy.deepcopy(plain)
    checkpointed.activation_checkpointing_enable()
    pixels, mask = torch.randn(2, 1, 128, 128), fixed_mask()
    plain(pixels, backscatter_db=as_db(pixels), mixing_mask=mask).loss.backward()
    checkpointed(pixels, backscatter_db=as_db(pixels), mixing_mask=mask).loss.backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), checkpointed.named_parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name


# ---------------------------------------------------------------------------------------------------------------------
# Save / load
# ---------------------------------------------------------------------------------------------------------------------


def test_save_and_auto_load_reproduce_outputs_exactly(tmp_path):
    torch.manual_seed(0)
    model = SarMixMAEForPreTraining(small_config()).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert set(auto_map) == {"AutoConfig", "AutoModel", "AutoModelForPreTraining", "AutoBackbone"}
    pixels, mask = torch.randn(2, 1, 128, 128), fixed_mask()
    with torch.no_grad():
        reference = model(pixels, backscatter_db=as_db(pixels), mixing_mask=mask)
        loaded = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
        assert type(loaded) is SarMixMAEForPreTraining
        again = loaded(pixels, backscatter_db=as_db(pixels), mixing_mask=mask)
        assert torch.equal(again.logits, reference.logits) and torch.equal(again.loss, reference.loss)
        encoder = AutoModel.from_pretrained(tmp_path).eval()
        assert type(encoder) is SarMixMAEModel
        assert torch.equal(encoder(pixels).last_hidden_state, model.sar_mixmae(pixels).last_hidden_state)
    # non-persistent buffers built on the meta device are recomputed, not garbage
    for a, b in zip(loaded.buffers(), model.buffers()):
        assert torch.equal(a, b)


def test_remote_code_loading_without_the_package(tmp_path):
    torch.manual_seed(0)
    model = SarMixMAEForPreTraining(small_config()).eval()
    model.save_pretrained(tmp_path / "ckpt")
    pixels, mask = torch.randn(2, 1, 128, 128), fixed_mask()
    with torch.no_grad():
        torch.save(
            {
                "pixels": pixels,
                "backscatter_db": as_db(pixels),
                "mask": mask,
                "logits": model(pixels, backscatter_db=as_db(pixels), mixing_mask=mask).logits,
                "encoded": model.sar_mixmae(pixels).last_hidden_state,
            },
            tmp_path / "reference.pt",
        )
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["sarlulc"] = None  # the package must not be importable here
        try:
            import sarlulc
        except ImportError:
            pass
        else:
            raise SystemExit("sarlulc is importable")
        import torch
        from transformers import AutoModel, AutoModelForPreTraining
        ref = torch.load({str(tmp_path / "reference.pt")!r})
        with torch.no_grad():
            model = AutoModelForPreTraining.from_pretrained({str(tmp_path / "ckpt")!r}, trust_remote_code=True).eval()
            assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
            outputs = model(ref["pixels"], backscatter_db=ref["backscatter_db"], mixing_mask=ref["mask"])
            assert torch.equal(outputs.logits, ref["logits"])
            encoder = AutoModel.from_pretrained({str(tmp_path / "ckpt")!r}, trust_remote_code=True).eval()
            assert torch.equal(encoder(ref["pixels"]).last_hidden_state, ref["encoded"])
        print("remote code OK")
        """
    )
    env = {
        **os.environ,
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_MODULES_CACHE": str(tmp_path / "hf_modules"),
        "HF_HUB_OFFLINE": "1",
    }
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "remote code OK" in result.stdout
