"""SarSegmentationPipeline: GeoTIFF and array inputs, outputs against the model's own argmax, saving the pipeline with a
checkpoint, and loading it where sarlulc is not importable (remote code only)."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, pipeline

from helpers_rasters import write_raster
from sarlulc.data import open_scene
from sarlulc.models.configuration_sar_lulc import SarLulcConfig
from sarlulc.models.configuration_sar_mixmae import SarMixMAEConfig
from sarlulc.models.image_processing_sar import SarImageProcessor, calibrate_to_db
from sarlulc.models.modeling_sar_lulc import SarLulcForSemanticSegmentation
from sarlulc.models.pipeline_sar_segmentation import (
    SAR_SEGMENTATION_CUSTOM_PIPELINES,
    SarSegmentationPipeline,
    register_sar_segmentation_pipeline,
    save_pipeline_files,
)

LABELS = {0: "Water", 1: "Built-up", 2: "Paddy", 3: "Forest"}
HEIGHT, WIDTH = 70, 90  # not multiples of 32: the processor pads, post-processing must crop


def _register() -> None:
    # What the package's __init__ does for the processor and the task (idempotent).
    AutoImageProcessor.register(
        SarLulcConfig,
        image_processor_classes={"pil": SarImageProcessor, "torchvision": SarImageProcessor},
        exist_ok=True,
    )
    SarImageProcessor.register_for_auto_class("AutoImageProcessor")
    register_sar_segmentation_pipeline()


def tiny_model() -> SarLulcForSemanticSegmentation:
    backbone = SarMixMAEConfig(
        image_size=64,
        embed_dim=8,
        depths=(1, 1, 1, 1),
        num_heads=(1, 1, 1, 1),
        window_size=(4, 4, 4, 2),
        decoder_embed_dim=8,
        decoder_depth=0,
        decoder_num_heads=1,
    )
    config = SarLulcConfig(
        backbone_config=backbone,
        decoder_hidden_size=8,
        pool_scales=(1, 2),
        highres_channels=4,
        refine_channels=(8, 4),
        id2label=LABELS,
        label2id={name: i for i, name in LABELS.items()},
    )
    # a seed whose random model predicts several classes on dn_scene (the tests below need more than one segment)
    torch.manual_seed(4)
    return SarLulcForSemanticSegmentation(config).eval()


def dn_scene() -> np.ndarray:
    """DNs with structure (dark stripe, bright block) and a nodata corner."""
    rng = np.random.default_rng(0)
    dn = rng.integers(800, 6000, size=(HEIGHT, WIDTH)).astype(np.uint16)
    dn[20:35] = rng.integers(30, 200, size=(15, WIDTH))
    dn[40:60, 50:80] = rng.integers(20000, 60000, size=(20, 30))
    dn[:6, :9] = 0
    return dn


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny segmentation checkpoint carrying its processor and pipeline, plus DN and dB GeoTIFFs of one scene."""
    _register()
    root = tmp_path_factory.mktemp("pipeline")
    model = tiny_model()
    model.save_pretrained(root / "ckpt")
    save_pipeline_files(root / "ckpt", SarImageProcessor(input_kind="dn"))
    dn = dn_scene()
    db = calibrate_to_db(dn, "dn")[0]
    db[~calibrate_to_db(dn, "dn")[1]] = -9999.0
    return {
        "dir": root / "ckpt",
        "model": model,
        "dn": dn,
        "dn_tif": write_raster(root / "dn.tif", dn, nodata=0, tags={"SARLULC_INPUT_KIND": "dn"}),
        "db_tif": write_raster(root / "db.tif", db, nodata=-9999.0, tags={"SARLULC_INPUT_KIND": "db"}),
        "untagged_tif": write_raster(root / "untagged.tif", dn),
    }


@pytest.fixture(scope="module")
def segmenter(checkpoint):
    return pipeline(
        "image-segmentation", model=str(checkpoint["dir"]), pipeline_class=SarSegmentationPipeline, device="cpu"
    )


def reference_class_map(model, raw, **processor_kwargs) -> np.ndarray:
    """The model's own argmax on the processed input, cropped to the input, 255 on invalid pixels."""
    batch = SarImageProcessor(input_kind="dn")(raw, return_tensors="pt", **processor_kwargs)
    with torch.no_grad():
        logits = model(pixel_values=batch["pixel_values"]).logits
    height, width = np.shape(raw)[-2:]
    class_map = logits[0, :, :height, :width].argmax(0).numpy()
    return np.where(batch["pixel_mask"][0, :height, :width].numpy() == 1, class_map, 255)


def assert_segments_match(segments, class_map):
    present = [c for c in np.unique(class_map) if c != 255]
    assert len(present) >= 2, "the test model should predict several classes"
    assert [s["label"] for s in segments] == [LABELS[c] for c in present]
    for segment, class_id in zip(segments, present):
        assert segment["score"] is None
        assert isinstance(segment["mask"], Image.Image) and segment["mask"].mode == "L"
        assert segment["mask"].size == (WIDTH, HEIGHT)
        np.testing.assert_array_equal(np.asarray(segment["mask"]), (class_map == class_id).astype(np.uint8) * 255)


def test_geotiff_masks_equal_model_argmax(checkpoint, segmenter):
    expected = reference_class_map(checkpoint["model"], checkpoint["dn"])
    assert (expected[:6, :9] == 255).all() and (expected != 255).sum() == HEIGHT * WIDTH - 54
    assert_segments_match(segmenter(str(checkpoint["dn_tif"])), expected)
    class_map = segmenter(checkpoint["dn_tif"], return_class_map=True)
    assert class_map.dtype == np.uint8 and class_map.shape == (HEIGHT, WIDTH)
    np.testing.assert_array_equal(class_map, expected)
    # A dB GeoTIFF of the same scene, tagged as such, gives the same map with a DN processor.
    np.testing.assert_array_equal(segmenter(str(checkpoint["db_tif"]), return_class_map=True), expected)
    # Untagged integer raster: the processor's kind (DN); DN 0 is invalid even without declared nodata.
    np.testing.assert_array_equal(segmenter(str(checkpoint["untagged_tif"]), return_class_map=True), expected)


def test_raster_metadata(checkpoint, segmenter, tmp_path):
    dn = checkpoint["dn"]
    # The calibration factor tag of a DN scene is used; band 2 (HV) is ignored by a one-channel model.
    tagged = write_raster(
        tmp_path / "cf.tif",
        np.stack([dn, np.full_like(dn, 7)]),
        nodata=0,
        tags={"SARLULC_INPUT_KIND": "amplitude", "SARLULC_CALIBRATION_FACTOR": "-80.5"},
    )
    expected = reference_class_map(checkpoint["model"], dn, calibration_factor=-80.5)
    assert (expected != reference_class_map(checkpoint["model"], dn)).any()
    np.testing.assert_array_equal(segmenter(str(tagged), return_class_map=True), expected)
    bad = write_raster(tmp_path / "bad.tif", dn, tags={"SARLULC_INPUT_KIND": "gamma0"})
    with pytest.raises(ValueError, match=r"bad\.tif: tag SARLULC_INPUT_KIND='gamma0' is not one of"):
        segmenter(str(bad))
    bad_factor = write_raster(tmp_path / "bad_cf.tif", dn, tags={"SARLULC_CALIBRATION_FACTOR": "minus 83"})
    with pytest.raises(ValueError, match=r"bad_cf\.tif: tag SARLULC_CALIBRATION_FACTOR='minus 83' is not a number"):
        segmenter(str(bad_factor))


def test_array_and_dict_inputs(checkpoint, segmenter):
    dn = checkpoint["dn"]
    expected = reference_class_map(checkpoint["model"], dn)
    assert_segments_match(segmenter(dn), expected)
    # A data-layer tile: sigma0 dB with a separate valid mask.
    with open_scene(checkpoint["dn_tif"]) as scene:
        db, valid = scene.read_db()
    tile = {"image": db, "valid_mask": valid, "input_kind": "db"}
    np.testing.assert_array_equal(segmenter(tile, return_class_map=True), expected)
    # Call parameters override the processor's kind and nodata.
    db[:, ~valid] = -9999.0
    np.testing.assert_array_equal(segmenter(db, input_kind="db", nodata=-9999.0, return_class_map=True), expected)
    # mask_invalid=False: every pixel gets its argmax, like the stock pipeline.
    full = segmenter(dn, return_class_map=True, mask_invalid=False)
    assert (full != 255).all()
    np.testing.assert_array_equal(full[expected != 255], expected[expected != 255])


def test_batches(checkpoint, segmenter):
    expected = reference_class_map(checkpoint["model"], checkpoint["dn"])
    maps = segmenter([str(checkpoint["dn_tif"]), checkpoint["dn"]], batch_size=2, return_class_map=True)
    assert len(maps) == 2
    for class_map in maps:
        np.testing.assert_array_equal(class_map, expected)


def test_bad_inputs(segmenter):
    with pytest.raises(ValueError, match="PIL images and URLs"):
        segmenter(Image.new("L", (8, 8)))
    with pytest.raises(ValueError, match="semantic segmentation only"):
        segmenter(np.ones((32, 32)), subtask="panoptic")
    with pytest.raises(ValueError, match="2 bands"):
        segmenter(np.ones((2, 32, 32)))


def test_checkpoint_carries_pipeline_and_processor(checkpoint):
    files = set(os.listdir(checkpoint["dir"]))
    assert {"pipeline_sar_segmentation.py", "image_processing_sar.py", "preprocessor_config.json"} <= files
    config = json.loads((checkpoint["dir"] / "config.json").read_text())
    assert config["custom_pipelines"] == SAR_SEGMENTATION_CUSTOM_PIPELINES
    assert config["auto_map"]["AutoModelForSemanticSegmentation"] == "modeling_sar_lulc.SarLulcForSemanticSegmentation"
    # With the package, the registered task resolves to the local class when the pipeline class is given.
    local = pipeline(
        "sar-segmentation", model=str(checkpoint["dir"]), pipeline_class=SarSegmentationPipeline, device="cpu"
    )
    assert type(local) is SarSegmentationPipeline and type(local.image_processor) is SarImageProcessor


def test_save_pipeline_files_needs_a_saved_model(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        save_pipeline_files(tmp_path)


def test_remote_code_pipeline_without_the_package(checkpoint, tmp_path):
    expected = reference_class_map(checkpoint["model"], checkpoint["dn"])
    np.save(tmp_path / "expected.npy", expected)
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
        import numpy as np
        from transformers import pipeline

        segmenter = pipeline("sar-segmentation", model={str(checkpoint["dir"])!r}, trust_remote_code=True, device="cpu")
        for part in (segmenter, segmenter.model, segmenter.image_processor):
            assert type(part).__module__.startswith("transformers_modules"), type(part).__module__
        expected = np.load({str(tmp_path / "expected.npy")!r})
        np.testing.assert_array_equal(segmenter({str(checkpoint["dn_tif"])!r}, return_class_map=True), expected)
        segments = segmenter({str(checkpoint["db_tif"])!r})
        present = [c for c in np.unique(expected) if c != 255]
        assert [s["label"] for s in segments] == [segmenter.model.config.id2label[c] for c in present]
        for segment, class_id in zip(segments, present):
            np.testing.assert_array_equal(np.asarray(segment["mask"]), (expected == class_id) * 255)
        print("remote pipeline OK")
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
    assert "remote pipeline OK" in result.stdout
