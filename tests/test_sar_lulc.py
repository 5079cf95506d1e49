"""Segmentation model: the three refinement switches, the alpha-scaled focal + dice loss, encoder loading, save/load,
and a short training run on a synthetic scene."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForSemanticSegmentation

import sarlulc  # noqa: F401  (registers the Auto classes)
from helpers_training import TINY_ENCODER_KWARGS
from sarlulc import LULC_9, WATER, SarLulcConfig, SarLulcForSemanticSegmentation, SarMixMAEConfig
from sarlulc.models.modeling_sar_lulc import (
    AlphaScaledFocalDiceLoss,
    BilinearUpHead,
    HighResInjection,
    RefineUpHead,
)
from sarlulc.models.modeling_sar_mixmae import SarMixMAEForPreTraining

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_backbone(**overrides) -> SarMixMAEConfig:
    kwargs = {**TINY_ENCODER_KWARGS, **overrides}
    return SarMixMAEConfig(**kwargs)


def small_config(**overrides) -> SarLulcConfig:
    kwargs = dict(
        backbone_config=small_backbone(),
        decoder_hidden_size=32,
        pool_scales=(1, 2),
        highres_channels=8,
        refine_channels=(8, 8),
        id2label=LULC_9.id2label,
        label2id=LULC_9.label2id,
    )
    kwargs.update(overrides)
    return SarLulcConfig(**kwargs)


def module_types(model):
    return {type(m) for m in model.modules()}


# ---------------------------------------------------------------------------------------------------------------------
# Configuration and architecture switches
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (dict(class_weight_alpha=1.5), "class_weight_alpha"),
        (dict(focal_gamma=-1.0), "focal_gamma"),
        (dict(dice_weight=-0.1), "dice_weight"),
        (dict(class_frequencies=[1, 2, 3]), "class_frequencies"),
        (dict(class_frequencies=[-1] * 9), "class_frequencies"),
        (dict(highres_sources=["edges"]), "highres_sources"),
        (dict(refine_steps=3), "refine_steps"),
        (dict(refine_channels=(8,)), "refine_channels"),
        (dict(ignore_index=3), "ignore_index"),
        (dict(pool_scales=(0, 2)), "pool_scales"),
        (dict(backbone_config={"model_type": "swin"}), "backbone_config"),
    ],
)
def test_config_rejects_nonsense_naming_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        small_config(**overrides)


@pytest.mark.parametrize("name", ["sar-lulc-tiny", "sar-lulc-base", "sar-water-base"])
def test_hub_configs_load(name):
    config = AutoConfig.from_pretrained(os.path.join(REPO, "hub_configs", name))
    assert isinstance(config, SarLulcConfig)
    expected = WATER if "water" in name else LULC_9
    assert config.id2label == expected.id2label
    assert isinstance(config.backbone_config, SarMixMAEConfig)
    assert config.backbone_config.out_features == ["stem", "stage1", "stage2", "stage3", "stage4"]


@pytest.mark.parametrize(
    "name", ["sar-mixmae-tiny", "sar-mixmae-base", "sar-lulc-tiny", "sar-lulc-base", "sar-water-base"]
)
def test_hub_configs_carry_their_image_processor(name):
    """Every ready-made configuration folder loads its preprocessing like its model config, through the Auto class,
    without remote code: the processor's band count is the encoder's."""
    from transformers import AutoImageProcessor

    from sarlulc import SarImageProcessor

    folder = os.path.join(REPO, "hub_configs", name)
    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=False)
    config = AutoConfig.from_pretrained(folder)
    encoder = getattr(config, "backbone_config", config)
    assert type(processor) is SarImageProcessor
    assert processor.num_channels == encoder.num_channels == len(processor.image_mean)
    # the file is the processor's own serialization (every field written), not a hand-made subset
    with open(os.path.join(folder, "preprocessor_config.json")) as handle:
        saved = json.load(handle)
    fields = {key: value for key, value in processor.to_dict().items() if not key.startswith("_")}
    assert {key: saved.get(key) for key in fields} == fields


def test_each_switch_changes_the_architecture():
    variants = {
        (inj, ref): SarLulcForSemanticSegmentation(small_config(use_highres_injection=inj, use_refine_up_head=ref))
        for inj in (False, True)
        for ref in (False, True)
    }
    counts = {key: sum(p.numel() for p in model.parameters()) for key, model in variants.items()}
    assert len(set(counts.values())) == 4  # every combination is a different network
    for (inj, ref), model in variants.items():
        types = module_types(model)
        assert (HighResInjection in types) == inj and (model.injection is not None) == inj
        assert (RefineUpHead in types) == ref and (BilinearUpHead in types) == (not ref)
        # the stem is only requested from the backbone when it is injected
        assert ("stem" in model.backbone.out_features) == inj
    # both sources of injection are separate modules too
    stem_only = SarLulcForSemanticSegmentation(small_config(highres_sources=["stem"]))
    assert stem_only.injection.detail_stem is None and stem_only.injection.use_stem
    assert stem_only.injection.projection.in_channels == 16
    detail_only = SarLulcForSemanticSegmentation(small_config(highres_sources=["detail"]))
    assert not detail_only.injection.use_stem and "stem" not in detail_only.backbone.out_features
    assert detail_only.injection.projection.in_channels == 8


@pytest.mark.parametrize(("height", "width"), [(64, 64), (96, 160), (128, 64)])
@pytest.mark.parametrize(("inj", "ref"), [(False, False), (True, True), (True, False), (False, True)])
def test_logits_have_the_input_resolution(height, width, inj, ref):
    model = SarLulcForSemanticSegmentation(small_config(use_highres_injection=inj, use_refine_up_head=ref)).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 1, height, width)).logits
    assert logits.shape == (2, 9, height, width)
    assert torch.isfinite(logits).all()


def test_sizes_not_a_multiple_of_32_are_a_clear_error():
    model = SarLulcForSemanticSegmentation(small_config())
    with pytest.raises(ValueError, match=r"input is 70x64 pixels.*multiples of the encoder stride 32.*pad it to 96x64"):
        model(torch.randn(1, 1, 70, 64))


def test_refine_head_with_one_step_stops_at_stride_two_then_upsamples():
    model = SarLulcForSemanticSegmentation(small_config(refine_steps=1, refine_channels=(8,))).eval()
    assert model.head.strides == [4]
    assert model(torch.randn(1, 1, 64, 96)).logits.shape == (1, 9, 64, 96)


# ---------------------------------------------------------------------------------------------------------------------
# The loss, computed independently
# ---------------------------------------------------------------------------------------------------------------------


def reference_weights(frequencies, alpha):
    counts = np.asarray(frequencies, dtype=np.float64)
    present = counts > 0
    freq = counts / counts.sum()
    raw = np.ones_like(freq)
    raw[present] = freq[present].mean() / freq[present]
    raw[present] /= raw[present].mean()
    return np.where(present, raw**alpha, 1.0)


def reference_loss(logits, labels, weights, gamma, dice_weight, ignore=255):
    """Focal + dice with class weights w_c ** alpha (refinement (iii)), with explicit loops over pixels and classes."""
    logits = logits.detach().double().numpy()
    labels = labels.numpy()
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    batch, classes, height, width = logits.shape
    focal_num = focal_den = 0.0
    inter, pred_sum, count = np.zeros(classes), np.zeros(classes), np.zeros(classes)
    for b in range(batch):
        for i in range(height):
            for j in range(width):
                y = labels[b, i, j]
                if y == ignore:
                    continue
                p = probs[b, :, i, j]
                focal_num += weights[y] * (1 - p[y]) ** gamma * -np.log(p[y])
                focal_den += weights[y]
                inter[y] += p[y]
                pred_sum += p
                count[y] += 1
    focal = focal_num / focal_den
    present = count > 0
    dice_c = (2 * inter + 1.0) / (pred_sum + count + 1.0)
    dice = (weights[present] * (1 - dice_c[present])).sum() / weights[present].sum()
    return focal + dice_weight * dice


@pytest.fixture
def tiny_batch():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 5, 6, generator=generator) * 2
    labels = torch.randint(0, 3, (2, 5, 6), generator=generator)  # class 3 absent from the batch
    labels[0, 0, :3] = 255
    return logits, labels


FREQUENCIES = [1000, 200, 50, 10]


def make_loss(alpha, gamma=2.0, dice_weight=1.0, frequencies=FREQUENCIES):
    config = SarLulcConfig(
        backbone_config=small_backbone(),
        id2label={i: str(i) for i in range(len(frequencies))},
        label2id={str(i): i for i in range(len(frequencies))},
        class_frequencies=frequencies,
        class_weight_alpha=alpha,
        focal_gamma=gamma,
        dice_weight=dice_weight,
    )
    return AlphaScaledFocalDiceLoss(config.class_weights(), gamma, dice_weight, 255), config


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize(("gamma", "dice_weight"), [(2.0, 1.0), (0.0, 0.5)])
def test_loss_equals_an_independent_computation(tiny_batch, alpha, gamma, dice_weight):
    logits, labels = tiny_batch
    loss_fn, config = make_loss(alpha, gamma, dice_weight)
    weights = reference_weights(FREQUENCIES, alpha)
    assert np.allclose(config.class_weights(), weights)
    expected = reference_loss(logits, labels, weights, gamma, dice_weight)
    assert loss_fn(logits, labels).item() == pytest.approx(expected, rel=1e-5)


def test_alpha_zero_is_unweighted_and_alpha_one_is_full_inverse_frequency(tiny_batch):
    logits, labels = tiny_batch
    _, config0 = make_loss(0.0)
    _, config1 = make_loss(1.0)
    _, config_half = make_loss(0.5)
    assert config0.class_weights() == [1.0, 1.0, 1.0, 1.0]
    freq = np.array(FREQUENCIES) / sum(FREQUENCIES)
    full = (1 / freq) / (1 / freq).mean()  # inverse frequency normalized to mean 1
    assert np.allclose(config1.class_weights(), full)
    half = np.array(config_half.class_weights())
    assert np.all((half >= np.minimum(1, full)) & (half <= np.maximum(1, full)))
    # in this batch the rare classes are the badly predicted ones, so weighting them raises the loss step by step
    values = [make_loss(a)[0](logits, labels).item() for a in (0.0, 0.5, 1.0)]
    assert min(values[0], values[2]) <= values[1] <= max(values[0], values[2])
    assert values[0] != pytest.approx(values[2])


def test_ignored_pixels_change_nothing(tiny_batch):
    logits, labels = tiny_batch
    loss_fn, _ = make_loss(0.5)
    before = loss_fn(logits, labels)
    changed = logits.clone()
    changed[0, :, 0, :3] = torch.randn(4, 3) * 10  # the ignored pixels
    assert loss_fn(changed, labels).item() == pytest.approx(before.item(), rel=1e-6)
    # a model-level pixel_mask ignores labels the same way
    model = SarLulcForSemanticSegmentation(small_config()).eval()
    pixels = torch.randn(1, 1, 64, 64)
    labels_full = torch.randint(0, 9, (1, 64, 64))
    mask = torch.ones(1, 64, 64, dtype=torch.bool)
    mask[:, :16] = False
    ignored = labels_full.masked_fill(~mask, 255)
    with torch.no_grad():
        a = model(pixels, labels=labels_full, pixel_mask=mask).loss
        b = model(pixels, labels=ignored).loss
    assert a.item() == pytest.approx(b.item(), rel=1e-6)


def test_gradients_are_finite_when_classes_are_absent():
    loss_fn, _ = make_loss(1.0)
    logits = torch.randn(1, 4, 4, 4, requires_grad=True)
    labels = torch.zeros(1, 4, 4, dtype=torch.long)  # only class 0 present
    loss_fn(logits, labels).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    logits.grad = None
    all_ignored = torch.full((1, 4, 4), 255)
    loss = loss_fn(logits, all_ignored)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()


def test_class_absent_from_training_data_gets_the_neutral_weight():
    _, config = make_loss(1.0, frequencies=[100, 0, 10, 5])
    weights = config.class_weights()
    assert weights[1] == 1.0
    assert np.allclose(weights, reference_weights([100, 0, 10, 5], 1.0))


# ---------------------------------------------------------------------------------------------------------------------
# Encoder weights from pretraining
# ---------------------------------------------------------------------------------------------------------------------


def test_encoder_weights_from_a_pretraining_checkpoint_are_loaded(tmp_path):
    torch.manual_seed(0)
    pretrained = SarMixMAEForPreTraining(small_backbone())
    pretrained.save_pretrained(tmp_path / "pretrain")
    model = SarLulcForSemanticSegmentation.from_pretrained_encoder(tmp_path / "pretrain", small_config())
    # every encoder tensor but the final LayerNorm, which only pretraining uses (the backbone has none)
    reference = {k: v for k, v in pretrained.sar_mixmae.state_dict().items() if not k.startswith("layernorm.")}
    loaded = model.backbone.sar_mixmae.state_dict()
    assert set(reference) == set(loaded) and len(reference) < len(pretrained.sar_mixmae.state_dict())
    for key, value in reference.items():
        assert torch.equal(loaded[key], value), key
    assert len(model.loaded_encoder_keys) == len(reference)
    # and a freshly built model does not happen to match
    fresh = SarLulcForSemanticSegmentation(small_config()).backbone.sar_mixmae.state_dict()
    assert not all(torch.equal(fresh[k], v) for k, v in reference.items())


def test_encoder_loading_fails_loudly(tmp_path):
    segmentation = SarLulcForSemanticSegmentation(small_config())
    segmentation.save_pretrained(tmp_path / "seg")
    with pytest.raises(ValueError, match="not a sar_mixmae pretraining checkpoint"):
        SarLulcForSemanticSegmentation.from_pretrained_encoder(tmp_path / "seg", small_config())
    with pytest.raises(ValueError, match=r"no config\.json"):
        SarLulcForSemanticSegmentation.from_pretrained_encoder(tmp_path / "nothing", small_config())
    # a pretraining checkpoint of other dimensions does not fit silently
    other = SarMixMAEForPreTraining(small_backbone(embed_dim=32, num_heads=(2, 2, 4, 4)))
    other.save_pretrained(tmp_path / "other")
    (tmp_path / "other" / "config.json").write_text(
        (tmp_path / "other" / "config.json").read_text().replace('"embed_dim": 32', '"embed_dim": 16')
    )
    with pytest.raises(ValueError, match="shapes"):
        SarLulcForSemanticSegmentation.from_pretrained_encoder(tmp_path / "other", small_config())


# ---------------------------------------------------------------------------------------------------------------------
# Save / load
# ---------------------------------------------------------------------------------------------------------------------


def test_save_and_auto_load_reproduce_outputs(tmp_path):
    torch.manual_seed(0)
    model = SarLulcForSemanticSegmentation(small_config(class_frequencies=list(range(1, 10)))).eval()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert set(config["auto_map"]) >= {"AutoConfig", "AutoModelForSemanticSegmentation"}
    loaded = AutoModelForSemanticSegmentation.from_pretrained(tmp_path).eval()
    assert type(loaded) is SarLulcForSemanticSegmentation
    pixels = torch.randn(2, 1, 64, 96)
    with torch.no_grad():
        assert torch.equal(loaded(pixels).logits, model(pixels).logits)
    assert torch.equal(loaded.loss_fn.class_weights, model.loss_fn.class_weights)


def test_remote_code_loading_without_the_package(tmp_path):
    torch.manual_seed(0)
    model = SarLulcForSemanticSegmentation(small_config()).eval()
    model.save_pretrained(tmp_path / "ckpt")
    pixels = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        torch.save({"pixels": pixels, "logits": model(pixels).logits}, tmp_path / "reference.pt")
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["sarlulc"] = None
        import torch
        from transformers import AutoModelForSemanticSegmentation
        ref = torch.load({str(tmp_path / "reference.pt")!r})
        model = AutoModelForSemanticSegmentation.from_pretrained({str(tmp_path / "ckpt")!r}, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        with torch.no_grad():
            # oneDNN convolutions may take another kernel path in another process (buffer alignment): float noise
            assert torch.allclose(model.eval()(ref["pixels"]).logits, ref["logits"], atol=1e-5)
        print("remote code OK")
        """
    )
    env = {
        **os.environ,
        "HF_HOME": str(tmp_path / "hf"),
        "HF_MODULES_CACHE": str(tmp_path / "mods"),
        "HF_HUB_OFFLINE": "1",
    }
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "remote code OK" in result.stdout


# ---------------------------------------------------------------------------------------------------------------------
# Learning on a synthetic scene
# ---------------------------------------------------------------------------------------------------------------------


def test_short_training_beats_the_majority_class_on_held_out_tiles(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets_cache"))
    from sarlulc.data import SpatialSplit, class_frequencies, split_tile_dataset
    from sarlulc.data.synthetic import generate_scene
    from sarlulc.metrics import confusion_matrix, metrics_from_confusion
    from sarlulc.models.image_processing_sar import SarImageProcessor

    torch.manual_seed(0)
    scene = generate_scene(tmp_path / "scene", 512, seed=3, progress=False)
    splits = split_tile_dataset(
        (scene.scene, scene.labels),
        SpatialSplit(fractions={"train": 0.75, "test": 0.25}, group_size=1, seed=1),
        tile_size=64,
        cache_dir=str(tmp_path / "cache"),
        progress=False,
    )
    counts = class_frequencies(splits["train"], "lulc-9", progress=False).counts
    processor = SarImageProcessor(input_kind="db")

    def batch(split):
        rows = splits[split].with_format("numpy", dtype=None)[:]
        out = processor(
            list(rows["image"]),
            segmentation_maps=list(rows["label"]),
            valid_masks=list(rows["valid_mask"]),
            return_tensors="pt",
        )
        return out["pixel_values"], out["labels"]

    train_x, train_y = batch("train")
    test_x, test_y = batch("test")
    model = SarLulcForSemanticSegmentation(small_config(class_frequencies=[int(c) for c in counts]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(80):
        index = torch.randperm(len(train_x))[:8]
        loss = model(train_x[index], labels=train_y[index]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])

    model.eval()
    with torch.no_grad():
        predictions = model(test_x).logits.argmax(1).numpy()
    reference = test_y.numpy()
    ours = metrics_from_confusion(confusion_matrix(predictions, reference, 9), 9)["mean_iou"]
    majority = int(np.argmax(counts))
    baseline = metrics_from_confusion(confusion_matrix(np.full_like(reference, majority), reference, 9), 9)["mean_iou"]
    assert ours > baseline + 0.05, (ours, baseline)


def test_eval_mode_folds_batchnorm_into_the_convolution_with_the_same_result():
    from sarlulc.models.modeling_sar_lulc import SarLulcConvModule

    torch.manual_seed(0)
    module = SarLulcConvModule(6, 5, kernel_size=3, stride=2)
    norm = module[1]
    norm.running_mean.normal_()
    norm.running_var.uniform_(0.5, 2.0)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    features = torch.randn(2, 6, 16, 12)
    module.eval()
    expected = torch.relu(norm(module[0](features)))  # the three modules one after the other
    assert torch.allclose(module(features), expected, atol=1e-5)
    module.train()
    assert torch.allclose(module(features), torch.relu(norm(module[0](features))), atol=1e-6)


def _bilinear(tensor, size):
    return torch.nn.functional.interpolate(tensor, size=size, mode="bilinear", align_corners=False)


def test_refine_up_head_starts_from_the_baseline_prediction_and_adds_corrections():
    torch.manual_seed(0)
    model = SarLulcForSemanticSegmentation(small_config()).eval()
    head = model.head
    fused, detail = torch.randn(2, 32, 16, 24), torch.randn(2, 8, 32, 48)
    with torch.no_grad():
        # freshly initialized, the corrections are zero: the stride-4 prediction brought up x2, x2
        coarse = head.classifier(fused)
        expected = _bilinear(_bilinear(coarse, (32, 48)), (64, 96))
        assert torch.allclose(head(fused, {2: detail}, (64, 64 + 32)), expected, atol=1e-5)
        # with corrections: the block at stride 4 refines the decoder's map, the one at stride 2 also sees the detail
        for correction in head.corrections:
            torch.nn.init.normal_(correction.weight)
        features4 = head.blocks[0](fused)
        logits = coarse + head.corrections[0](features4)
        features2 = head.blocks[1](torch.cat([_bilinear(features4, (32, 48)), detail], dim=1))
        logits = _bilinear(logits, (32, 48)) + head.corrections[1](features2)
        assert torch.allclose(head(fused, {2: detail}, (64, 96)), _bilinear(logits, (64, 96)), atol=1e-5)


def test_refine_up_head_blocks_learn_from_the_first_steps():
    torch.manual_seed(0)
    model = SarLulcForSemanticSegmentation(small_config())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    pixels, labels = torch.randn(2, 1, 64, 64), torch.randint(0, 9, (2, 64, 64))
    for _ in range(2):
        model(pixels, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model(pixels, labels=labels).loss.backward()
    assert model.head.corrections[1].weight.abs().sum() > 0
    assert model.head.blocks[1][0].weight.grad.abs().sum() > 0  # gradient reaches the blocks through the corrections
