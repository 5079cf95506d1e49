"""SarImageProcessor: calibration, invalid pixels, clipping, standardization, padding, labels, post-processing, saving.

Expected values are computed here by hand from the ALOS-2 calibration and the processor's documented steps
(sigma0_dB = 10*log10(DN^2) + CF, clip, (x - mean) / std), independently of the processor's code.
"""

import json

import numpy as np
import pytest
import torch
from transformers import AutoImageProcessor

from helpers_rasters import write_raster
from sarlulc.data import SarLulcDataError, open_scene
from sarlulc.data.tiles import DEFAULT_CLIP_RANGE_DB, BandStatistics
from sarlulc.models.configuration_sar_lulc import SarLulcConfig
from sarlulc.models.image_processing_sar import (
    DEFAULT_CLIP_DB,
    SarImageProcessor,
    calibrate_to_db,
    calibration_factor_from_tags,
    dn_to_db,
    input_kind_from_metadata,
    merge_raster_tags,
)


def expected_from_dn(dn, cf=-83.0, clip=(-35.0, 5.0), mean=-12.0, std=6.0):
    """Hand computation for valid DNs (> 0): calibrate, clip, standardize."""
    db = 10.0 * np.log10(np.asarray(dn, dtype=np.float64) ** 2) + cf
    return (np.clip(db, *clip) - mean) / std


def test_dn_to_normalized_values_by_hand():
    # DN 1000 -> -23 dB; DN 10000 -> -3 dB; DN 100 -> -43 dB (clipped to -35); DN 10**5 -> +17 dB (clipped to +5).
    dn = np.array([[1000, 10000], [100, 65535]], dtype=np.uint16)
    out = SarImageProcessor(input_kind="dn", pad_to_multiple_of=None)(dn, return_tensors="np")
    assert out["pixel_values"].shape == (1, 1, 2, 2) and out["pixel_values"].dtype == np.float32
    np.testing.assert_allclose(out["pixel_values"][0, 0], expected_from_dn(dn), atol=1e-5)
    np.testing.assert_allclose(out["pixel_values"][0, 0, 0], [(-23.0 + 12) / 6, (-3.0 + 12) / 6], atol=1e-5)
    np.testing.assert_allclose(out["pixel_values"][0, 0, 1, 0], (-35.0 + 12) / 6, atol=1e-6)
    assert out["pixel_mask"].dtype == np.int64 and out["pixel_mask"].all()


def test_other_calibration_factor_mean_std_and_linear_input():
    processor = SarImageProcessor(
        input_kind="dn", calibration_factor=-80.0, image_mean=[-10.0], image_std=[2.5], pad_to_multiple_of=None
    )
    dn = np.array([[500.0, 2000.0, 7000.0]])
    np.testing.assert_allclose(
        processor(dn)["pixel_values"][0, 0], expected_from_dn(dn, cf=-80.0, mean=-10.0, std=2.5), atol=1e-5
    )
    power = np.array([[0.01, 0.1, 1.0]])  # -20, -10, 0 dB
    out = processor(power, input_kind="linear")["pixel_values"][0, 0]
    np.testing.assert_allclose(out, (np.array([[-20.0, -10.0, 0.0]]) + 10.0) / 2.5, atol=1e-5)


def test_invalid_pixels_are_masked_and_zero():
    dn = np.full((4, 4), 3000.0)
    dn[0, 0], dn[0, 1], dn[0, 2], dn[0, 3], dn[1, 0] = 0.0, np.nan, np.inf, -np.inf, -7.0
    out = SarImageProcessor(input_kind="dn", pad_to_multiple_of=None)(dn)
    invalid = np.zeros((4, 4), dtype=bool)
    invalid[0, :], invalid[1, 0] = True, True
    np.testing.assert_array_equal(out["pixel_mask"][0], (~invalid).astype(np.int64))
    assert (out["pixel_values"][0, 0][invalid] == 0.0).all()
    np.testing.assert_allclose(out["pixel_values"][0, 0][~invalid], expected_from_dn(3000.0), atol=1e-5)
    assert np.isfinite(out["pixel_values"]).all()


@pytest.mark.parametrize("cf", [-83.0, -82.5, 0.0])
def test_dn_to_db_of_every_uint16_dn_is_within_2e5_db_of_float64(cf):
    dn = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    valid = dn > 0
    db = dn_to_db(dn, valid, cf)
    expected = 10.0 * np.log10(np.maximum(dn.astype(np.float64), 1.0) ** 2) + cf  # independent, in float64
    assert db.dtype == np.float32 and db.shape == (256, 256)
    assert np.abs(db[valid] - expected[valid]).max() <= 2e-5
    assert db[0, 0] == 0.0 and not np.signbit(db[0, 0])  # DN 0: +0.0, never -inf or -0.0
    # negative control: the comparison does see an error of one thousandth of a dB
    assert np.abs(db[valid] + np.float32(1e-3) - expected[valid]).max() > 2e-5


def test_dn_to_db_bands_share_one_validity_and_every_form_gives_the_same_values():
    rng = np.random.default_rng(0)
    bands = rng.integers(0, 20000, size=(2, 40, 30), dtype=np.uint16)
    valid = (bands != 0).all(axis=0) & (rng.random((40, 30)) > 0.3)  # e.g. a mask file's layover and shadow
    stacked = dn_to_db(bands, valid, -83.0)
    assert stacked.shape == (2, 40, 30)
    np.testing.assert_array_equal(dn_to_db([bands[0], bands[1]], valid, -83.0), stacked)
    np.testing.assert_array_equal(dn_to_db(bands[1], valid, -83.0), stacked[1])
    assert (stacked[:, ~valid] == 0.0).all() and not np.signbit(stacked[:, ~valid]).any()
    expected = 20.0 * np.log10(bands[:, valid].astype(np.float64)) - 83.0
    np.testing.assert_allclose(stacked[:, valid], expected, atol=2e-5, rtol=0)


def test_declared_nodata_and_valid_masks():
    dn = np.array([[65535, 1000], [1000, 1000]], dtype=np.uint16)
    out = SarImageProcessor(input_kind="dn", nodata=65535, pad_to_multiple_of=None)(dn)
    np.testing.assert_array_equal(out["pixel_mask"][0], [[0, 1], [1, 1]])
    # dB tiles with a separate mask, as the data layer stores them: 0.0 dB is a legitimate value, not nodata, even for
    # a processor configured for DN (whose nodata is DN 0).
    db = np.array([[0.0, -12.0], [-30.0, 3.0]], dtype=np.float32)
    mask = np.array([[True, True], [False, True]])
    out = SarImageProcessor(input_kind="dn", pad_to_multiple_of=None)(db, valid_masks=mask, input_kind="db")
    np.testing.assert_array_equal(out["pixel_mask"][0], [[1, 1], [0, 1]])
    np.testing.assert_allclose(out["pixel_values"][0, 0], [[2.0, 0.0], [0.0, 2.5]], atol=1e-6)
    out = SarImageProcessor(input_kind="db", nodata=-9999.0, pad_to_multiple_of=None)(np.array([[-9999.0, -6.0]]))
    np.testing.assert_array_equal(out["pixel_mask"][0], [[0, 1]])


def test_clip_range_respected_without_normalization():
    db = np.linspace(-60.0, 30.0, 91, dtype=np.float32).reshape(7, 13)
    processor = SarImageProcessor(input_kind="db", clip_db=[-30.0, 0.0], do_normalize=False, pad_to_multiple_of=None)
    values = processor(db)["pixel_values"][0, 0]
    assert values.min() == -30.0 and values.max() == 0.0
    np.testing.assert_allclose(values, np.clip(db, -30.0, 0.0))


def test_hh_hv_two_channels():
    rng = np.random.default_rng(1)
    dn = rng.integers(50, 20000, size=(2, 5, 6)).astype(np.uint16)
    dn[1, 2, 3] = 0  # invalid in HV only -> the pixel is invalid in both bands
    processor = SarImageProcessor(input_kind="dn", image_mean=[-11.0, -19.0], image_std=[5.0, 4.0])
    assert processor.num_channels == 2
    out = processor(dn, return_tensors="pt")
    assert out["pixel_values"].shape == (1, 2, 32, 32)
    for band, (mean, std) in enumerate([(-11.0, 5.0), (-19.0, 4.0)]):
        expected = expected_from_dn(np.maximum(dn[band], 1), mean=mean, std=std)
        expected[2, 3] = 0.0
        np.testing.assert_allclose(out["pixel_values"][0, band, :5, :6].numpy(), expected, atol=1e-5)
    assert out["pixel_mask"][0, 2, 3] == 0 and out["pixel_mask"][0, :5, :6].sum() == 29
    with pytest.raises(ValueError, match=r"1 bands.*num_channels=2"):
        processor(dn[:1])
    with pytest.raises(ValueError, match="image_mean has 2 values but num_channels is 1"):
        SarImageProcessor(image_mean=[-11.0, -19.0], num_channels=1)


def test_backscatter_db_is_the_clipped_db_that_pixel_values_standardize():
    # DN 1000 -> -23 dB; DN 10 -> -63 dB (clipped to -35); DN 0 -> nodata; 40000 -> +9 dB (clipped to +5).
    dn = np.array([[1000, 10, 0, 40000]], dtype=np.uint16)
    processor = SarImageProcessor(input_kind="dn", image_mean=[-15.0], image_std=[4.0], pad_to_multiple_of=8)
    out = processor(dn, return_tensors="pt", return_backscatter_db=True)
    assert out["backscatter_db"].shape == out["pixel_values"].shape == (1, 1, 8, 8)
    assert out["backscatter_db"].dtype == torch.float32
    np.testing.assert_allclose(out["backscatter_db"][0, 0, 0, :4].numpy(), [-23.0, -35.0, 0.0, 5.0], atol=1e-4)
    assert (out["backscatter_db"][0, 0, 1:] == 0).all() and (out["backscatter_db"][0, 0, :, 4:] == 0).all()  # padding
    valid = out["pixel_mask"].bool()[:, None]
    standardized = (out["backscatter_db"] - (-15.0)) / 4.0
    torch.testing.assert_close(out["pixel_values"][valid], standardized[valid])
    assert "backscatter_db" not in processor(dn)  # only on request


def test_the_clip_range_has_one_home():
    assert DEFAULT_CLIP_RANGE_DB is DEFAULT_CLIP_DB
    assert SarImageProcessor().clip_db == list(DEFAULT_CLIP_DB)


def test_input_kind_from_metadata_rules():
    assert input_kind_from_metadata({"sarlulc_input_kind": "Amplitude", "UNITS": "dB"}) == "dn"  # our tag first
    assert input_kind_from_metadata({"UNITS": "m", "SIGMA0_UNIT": "power"}) == "linear"  # SIGMA0_UNIT before UNITS
    assert input_kind_from_metadata({"UNITS": "m"}, units="dB") == "db"  # unrecognised values do not decide
    assert input_kind_from_metadata({"UNITS": "m"}, units="metre") is None
    assert input_kind_from_metadata({}) is None
    with pytest.raises(ValueError, match=r"tag SARLULC_INPUT_KIND='gamma0' is not one of"):
        input_kind_from_metadata({"SARLULC_INPUT_KIND": "gamma0", "UNITS": "dB"})


def test_calibration_factor_from_tags_rules():
    assert calibration_factor_from_tags({"calibration_factor": "-80.5"}) == -80.5
    assert calibration_factor_from_tags({"CALIBRATION_FACTOR": "-80", "SARLULC_CALIBRATION_FACTOR": "-82"}) == -82.0
    assert calibration_factor_from_tags({"UNITS": "dB"}) is None
    for bad in ("minus 83", "nan", "inf"):
        with pytest.raises(ValueError, match=rf"tag CALIBRATION_FACTOR='{bad}' is not a number"):
            calibration_factor_from_tags({"CALIBRATION_FACTOR": bad})


def test_merged_tags_let_the_dataset_level_win():
    merged = merge_raster_tags({"units": "dB", "A": "1"}, {"UNITS": "amplitude", "b": "2"})
    assert merged == {"UNITS": "dB", "A": "1", "B": "2"}


@pytest.mark.parametrize(
    ("tags", "argument", "factor", "source"),
    [
        ({"SARLULC_CALIBRATION_FACTOR": "-80.5"}, None, -80.5, "tag"),
        ({"SARLULC_CALIBRATION_FACTOR": "-80.5"}, -81.0, -81.0, "argument"),
        (None, None, -83.0, "default"),
    ],
)
def test_scene_calibration_factor_source(tmp_path, tags, argument, factor, source):
    path = write_raster(tmp_path / "scene.tif", np.full((8, 8), 1000, np.uint16), nodata=0, tags=tags)
    with open_scene(path, calibration_factor=argument) as scene:
        assert (scene.calibration_factor, scene.calibration_factor_source) == (factor, source)
        np.testing.assert_allclose(scene.read_db()[0], 60.0 + factor, atol=1e-4)


def test_scene_with_a_bad_calibration_tag_names_the_file_and_the_tag(tmp_path):
    path = write_raster(tmp_path / "scene.tif", np.full((8, 8), 1000, np.uint16), tags={"CALIBRATION_FACTOR": "x"})
    with pytest.raises(SarLulcDataError, match=r"scene\.tif: tag CALIBRATION_FACTOR='x' is not a number"):
        open_scene(path)


def test_padding_to_multiple_of_32_and_labels():
    rng = np.random.default_rng(2)
    dn = rng.integers(1, 20000, size=(50, 70)).astype(np.uint16)
    dn[10, 20] = 0
    labels = rng.integers(0, 9, size=(50, 70)).astype(np.uint8)
    labels[0, 0] = 255
    out = SarImageProcessor()(dn, segmentation_maps=labels, return_tensors="pt")
    assert out["pixel_values"].shape == (1, 1, 64, 96)
    assert out["labels"].shape == (1, 64, 96) and out["labels"].dtype == torch.int64
    mask, lab = out["pixel_mask"][0].numpy(), out["labels"][0].numpy()
    assert (mask[50:] == 0).all() and (mask[:, 70:] == 0).all()
    assert (lab[50:] == 255).all() and (lab[:, 70:] == 255).all()
    assert (out["pixel_values"][0, 0, 50:] == 0).all() and (out["pixel_values"][0, 0, :, 70:] == 0).all()
    expected = labels.astype(np.int64)
    expected[10, 20] = 255  # invalid pixel
    np.testing.assert_array_equal(lab[:50, :70], expected)
    assert mask[:50, :70].sum() == 50 * 70 - 1


def test_batch_of_different_sizes_pads_to_largest_then_multiple():
    small, large = np.full((20, 40), 1000, np.uint16), np.full((33, 30), 2000, np.uint16)
    out = SarImageProcessor()([small, large], segmentation_maps=[np.ones((20, 40), np.uint8), np.zeros((33, 30))])
    assert out["pixel_values"].shape == (2, 1, 64, 64)
    assert out["pixel_mask"][0].sum() == 20 * 40 and out["pixel_mask"][1].sum() == 33 * 30
    assert out["pixel_mask"][0, :20, :40].all() and out["pixel_mask"][1, :33, :30].all()
    unpadded = SarImageProcessor(pad_to_multiple_of=None)([small, large])
    assert unpadded["pixel_values"].shape == (2, 1, 33, 40)
    batch = SarImageProcessor(input_kind="db")(np.zeros((3, 1, 8, 8), np.float32), pad_to_multiple_of=16)
    assert batch["pixel_values"].shape == (3, 1, 16, 16)


def test_errors_name_the_problem():
    processor = SarImageProcessor()
    with pytest.raises(ValueError, match=r"shape \(2, 3, 4, 5, 6\)"):
        processor(np.ones((2, 3, 4, 5, 6)))
    with pytest.raises(ValueError, match=r"image 0 has shape \(8,\)"):
        processor([np.ones(8)])
    with pytest.raises(ValueError, match=r"segmentation map 0 has shape \(4, 5\).*\(4, 4\)"):
        processor(np.ones((4, 4)), segmentation_maps=np.zeros((4, 5), np.uint8))
    with pytest.raises(ValueError, match="valid mask 0 has shape"):
        processor(np.ones((4, 4)), valid_masks=np.ones((5, 4), bool))
    with pytest.raises(ValueError, match="2 images but 1 segmentation_maps"):
        processor([np.ones((4, 4))] * 2, segmentation_maps=[np.zeros((4, 4), np.uint8)])
    with pytest.raises(ValueError, match="unknown input kind 'gamma0'"):
        processor(np.ones((4, 4)), input_kind="gamma0")
    with pytest.raises(ValueError, match="clip_db"):
        SarImageProcessor(clip_db=[5.0, -35.0])
    with pytest.raises(ValueError, match="image_std must be positive"):
        SarImageProcessor(image_std=[0.0])


def test_post_process_crop_undoes_padding_exactly():
    rng = np.random.default_rng(3)
    sizes = [(50, 70), (37, 64)]
    truth = [rng.integers(0, 5, size=s) for s in sizes]
    processor = SarImageProcessor()
    batch = processor([np.ones(s) for s in sizes], segmentation_maps=[t.astype(np.uint8) for t in truth])
    padded = torch.as_tensor(batch["labels"]).clamp(max=4)  # padding (255) -> some class
    logits = torch.nn.functional.one_hot(padded, 5).permute(0, 3, 1, 2).float()  # (B, K, 64, 96)
    logits += 0.01 * torch.rand(logits.shape)
    maps = processor.post_process_semantic_segmentation({"logits": logits}, target_sizes=sizes)
    for class_map, expected in zip(maps, truth):
        assert class_map.dtype == torch.int64
        np.testing.assert_array_equal(class_map.numpy(), expected)
    # No target size: the logits' own (padded) size.
    assert processor.post_process_semantic_segmentation({"logits": logits})[0].shape == (64, 96)


def test_post_process_resizes_bilinearly_to_larger_targets():
    logits = torch.randn(1, 3, 32, 32)
    (class_map,) = SarImageProcessor().post_process_semantic_segmentation({"logits": logits}, target_sizes=[(64, 40)])
    expected = torch.nn.functional.interpolate(logits, size=(64, 40), mode="bilinear", align_corners=False).argmax(1)
    torch.testing.assert_close(class_map, expected[0])
    with pytest.raises(ValueError, match="2 target sizes for a batch of 1"):
        SarImageProcessor().post_process_semantic_segmentation({"logits": logits}, target_sizes=[(8, 8)] * 2)


def test_save_and_load_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    AutoImageProcessor.register(
        SarLulcConfig,
        image_processor_classes={"pil": SarImageProcessor, "torchvision": SarImageProcessor},
        exist_ok=True,
    )
    SarImageProcessor.register_for_auto_class("AutoImageProcessor")
    processor = SarImageProcessor(
        input_kind="linear", nodata=None, image_mean=[-13.0, -20.0], image_std=[5.5, 4.5], pad_to_multiple_of=64
    )
    processor.save_pretrained(tmp_path / "ckpt")
    saved = json.loads((tmp_path / "ckpt" / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"] == "SarImageProcessor"
    assert saved["auto_map"] == {"AutoImageProcessor": "image_processing_sar.SarImageProcessor"}
    assert saved["nodata"] is None and saved["input_kind"] == "linear" and saved["clip_db"] == [-35.0, 5.0]
    assert (tmp_path / "ckpt" / "image_processing_sar.py").is_file()

    loaded = AutoImageProcessor.from_pretrained(tmp_path / "ckpt")
    assert type(loaded) is SarImageProcessor
    assert loaded.to_dict() == processor.to_dict()
    image = np.random.default_rng(4).uniform(0.001, 1.0, size=(2, 40, 40))
    np.testing.assert_array_equal(loaded(image)["pixel_values"], processor(image)["pixel_values"])
    overridden = AutoImageProcessor.from_pretrained(tmp_path / "ckpt", clip_db=[-30.0, 0.0])
    assert overridden.clip_db == [-30.0, 0.0]


def test_default_nodata_depends_on_the_kind():
    assert SarImageProcessor(input_kind="dn").nodata == 0.0
    assert SarImageProcessor(input_kind="dB").nodata is None
    assert SarImageProcessor(input_kind="amplitude", nodata=None).nodata is None


def test_from_band_statistics():
    stats = BandStatistics(mean=[-12.5, -19.0], std=[4.0, 3.5], count=1000, clip_range=(-30.0, 2.0))
    processor = SarImageProcessor.from_band_statistics(stats, input_kind="db")
    assert processor.image_mean == [-12.5, -19.0] and processor.image_std == [4.0, 3.5]
    assert processor.clip_db == [-30.0, 2.0] and processor.num_channels == 2 and processor.input_kind == "db"
    assert (
        SarImageProcessor.from_band_statistics(stats.to_dict()).to_dict()
        == SarImageProcessor.from_band_statistics(stats).to_dict()
    )
    with pytest.raises(ValueError, match="come from the band statistics"):
        SarImageProcessor.from_band_statistics(stats, image_mean=[0.0, 0.0])


def test_same_result_from_dn_raster_and_data_layer_tiles(tmp_path):
    """The processor on raw DNs equals the processor on the data layer's calibrated dB + valid mask."""
    rng = np.random.default_rng(5)
    dn = rng.integers(1, 30000, size=(40, 48)).astype(np.uint16)
    dn[:3, :5] = 0
    path = write_raster(tmp_path / "scene.tif", dn, nodata=0, tags={"SARLULC_INPUT_KIND": "dn"})
    with open_scene(path) as scene:
        db, valid = scene.read_db()
    processor = SarImageProcessor(input_kind="dn")
    from_dn = processor(dn)
    from_tiles = processor(db, valid_masks=valid, input_kind="db")
    np.testing.assert_array_equal(from_dn["pixel_mask"], from_tiles["pixel_mask"])
    np.testing.assert_allclose(from_dn["pixel_values"], from_tiles["pixel_values"], atol=1e-5)
    np.testing.assert_array_equal(calibrate_to_db(dn, "dn", nodata=0)[0], db[0])
