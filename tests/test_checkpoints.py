"""The one segmentation-checkpoint loader (sarlulc.checkpoints): folders, loaded models, Hub ids, processor
precedence and every refusal."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from transformers import BertConfig

from helpers_training import TINY_ENCODER_KWARGS
from sarlulc import (
    LULC_9,
    SarImageProcessor,
    SarLulcConfig,
    SarLulcForSemanticSegmentation,
    SarMixMAEConfig,
    SarMixMAEForPreTraining,
)
from sarlulc.checkpoints import LoadedCheckpoint, load_segmentation_checkpoint, model_num_channels
from sarlulc.models.image_processing_sar import DEFAULT_CLIP_DB, DEFAULT_IMAGE_MEAN_DB, DEFAULT_IMAGE_STD_DB


def tiny_config(num_channels: int = 1) -> SarLulcConfig:
    return SarLulcConfig(
        backbone_config=SarMixMAEConfig(
            **TINY_ENCODER_KWARGS,
            num_channels=num_channels,
            input_db_mean=[-12.0] * num_channels,
            input_db_std=[6.0] * num_channels,
        ),
        decoder_hidden_size=16,
        pool_scales=(1, 2),
        highres_channels=8,
        refine_channels=(8, 8),
        id2label=LULC_9.id2label,
        label2id=LULC_9.label2id,
    )


@pytest.fixture(autouse=True)
def hf_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def model() -> SarLulcForSemanticSegmentation:
    torch.manual_seed(0)
    return SarLulcForSemanticSegmentation(tiny_config()).eval()


@pytest.fixture(scope="module")
def processor() -> SarImageProcessor:
    # Not the defaults, so that a processor read back from the folder is recognizably this one.
    return SarImageProcessor(input_kind="dn", clip_db=(-30.0, 0.0), image_mean=-15.0, image_std=4.0)


@pytest.fixture(scope="module")
def checkpoint(model, processor, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("checkpoint")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def same_weights(first: torch.nn.Module, second: torch.nn.Module) -> bool:
    ours, theirs = first.state_dict(), second.state_dict()
    return ours.keys() == theirs.keys() and all(torch.equal(ours[key], theirs[key]) for key in ours)


def test_a_folder_gives_its_model_in_eval_mode_and_its_processor(model, processor, checkpoint):
    loaded = load_segmentation_checkpoint(checkpoint)
    assert isinstance(loaded, LoadedCheckpoint) and loaded.folder == checkpoint
    assert isinstance(loaded.model, SarLulcForSemanticSegmentation) and not loaded.model.training
    assert loaded.model is not model and same_weights(loaded.model, model)
    assert loaded.processor.to_dict() == processor.to_dict()
    assert loaded.processor.to_dict() != SarImageProcessor().to_dict()  # the check can tell processors apart
    explicit = SarImageProcessor(input_kind="db")
    assert load_segmentation_checkpoint(checkpoint, image_processor=explicit).processor is explicit
    from_folder = load_segmentation_checkpoint(checkpoint, image_processor=checkpoint).processor
    assert from_folder.to_dict() == processor.to_dict()
    on_cpu = load_segmentation_checkpoint(str(checkpoint), device="cpu").model
    assert next(on_cpu.parameters()).device == torch.device("cpu")


def test_a_loaded_model_is_used_as_it_is(model, processor, checkpoint):
    model.train()
    try:
        loaded = load_segmentation_checkpoint(model, image_processor=processor)
        assert loaded.model is model and loaded.model.training  # its mode is the caller's
    finally:
        model.eval()
    assert loaded.processor is processor and loaded.folder is None
    # A model from_pretrained recorded its folder: the processor saved there is found.
    reloaded = SarLulcForSemanticSegmentation.from_pretrained(checkpoint)
    found = load_segmentation_checkpoint(reloaded)
    assert found.folder == checkpoint and found.processor.to_dict() == processor.to_dict()


def test_without_a_processor_the_defaults_come_with_a_warning_naming_them(model, tmp_path):
    folder = tmp_path / "bare"
    model.save_pretrained(folder)
    low, high = DEFAULT_CLIP_DB
    expected = f"clip [{low:g}, {high:g}] dB, mean {DEFAULT_IMAGE_MEAN_DB:g} dB, std {DEFAULT_IMAGE_STD_DB:g} dB"
    with pytest.warns(UserWarning, match="no preprocessor_config.json") as caught:
        loaded = load_segmentation_checkpoint(folder)
    assert expected in str(caught[0].message)
    assert loaded.processor.to_dict() == SarImageProcessor(num_channels=1).to_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a processor in the folder: no warning
        load_segmentation_checkpoint(folder, image_processor=SarImageProcessor())


def test_a_dual_pol_model_gets_dual_pol_default_processor(tmp_path):
    dual = SarLulcForSemanticSegmentation(tiny_config(num_channels=2))
    assert model_num_channels(dual.config) == 2
    with pytest.warns(UserWarning):
        loaded = load_segmentation_checkpoint(dual)
    assert loaded.processor.num_channels == 2


def test_a_hub_model_id_is_downloaded_with_config_weights_and_processor_only(checkpoint, model, monkeypatch):
    import huggingface_hub

    requested = []

    def fake_snapshot_download(repo_id, **kwargs):  # the Hub's cache folder of a downloaded repository
        requested.append((repo_id, kwargs.get("allow_patterns")))
        if repo_id != "me/sar-lulc-tiny":
            raise OSError(f"{repo_id} not found")
        return str(checkpoint)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    loaded = load_segmentation_checkpoint("me/sar-lulc-tiny")
    assert requested == [("me/sar-lulc-tiny", ["*.json", "*.safetensors"])]
    assert loaded.folder == checkpoint and same_weights(loaded.model, model)
    with pytest.raises(ValueError, match=r"me/no-such-model is not a local folder, and downloading it .*not found"):
        load_segmentation_checkpoint("me/no-such-model")


def test_checkpoints_that_cannot_be_used_are_clear_errors(model, tmp_path):
    with pytest.raises(ValueError, match="does not exist or is not a folder"):
        load_segmentation_checkpoint(tmp_path / "runs" / "lulc" / "best")
    with pytest.raises(ValueError, match="does not exist or is not a folder"):
        load_segmentation_checkpoint(tmp_path / "scene.tif")

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=rf"checkpoint {empty} has no config.json"):
        load_segmentation_checkpoint(empty)

    pretraining = SarMixMAEForPreTraining(SarMixMAEConfig(**TINY_ENCODER_KWARGS))
    pretrained_folder = tmp_path / "pretrained"
    pretraining.save_pretrained(pretrained_folder)
    for source in (pretrained_folder, pretraining):
        with pytest.raises(ValueError, match=r"is a sar_mixmae model .*not a segmentation model; fine-tune it"):
            load_segmentation_checkpoint(source)

    bert = tmp_path / "bert"
    BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8).save_pretrained(bert)
    with pytest.raises(ValueError, match="is a bert model, not a semantic-segmentation model"):
        load_segmentation_checkpoint(bert)

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot be read as a model config"):
        load_segmentation_checkpoint(broken)

    with pytest.raises(ValueError, match=r"expects 2 band\(s\) but the model takes 1"):
        load_segmentation_checkpoint(model, image_processor=SarImageProcessor(num_channels=2))
    with pytest.raises(ValueError, match=r"is not a folder with a preprocessor_config\.json"):
        load_segmentation_checkpoint(model, image_processor=empty)
