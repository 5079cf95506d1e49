"""ALOS-2 scenes: calibration, input kinds, windowed reads, a corpus of bad rasters, label alignment/reprojection."""

import math
import warnings

import numpy as np
import pytest
import rasterio
import rasterio.warp
from PIL import Image
from rasterio.windows import Window

from helpers_rasters import UTM_CRS, UTM_TRANSFORM, WGS84_TRANSFORM, north_up, write_raster
from sarlulc.data.alos2 import (
    CALIBRATION_FACTOR_TAG,
    INPUT_KIND_TAG,
    SarLulcDataError,
    calibrate,
    check_alignment,
    db_to_dn,
    dn_to_db,
    linear_to_db,
)
from sarlulc.data.labels import open_labels
from sarlulc.data.products import open_scene


# ----------------------------------------------------------------------------------------------------------------------
# Calibration on arrays
# ----------------------------------------------------------------------------------------------------------------------
def test_dn_to_db_matches_hand_computation():
    # 10*log10(DN^2) - 83: DN 1000 -> 60 - 83; DN 10 -> 20 - 83; DN 1 -> -83; DN 65535 -> 20*log10(65535) - 83.
    db, valid = dn_to_db(np.array([1000, 10, 1, 65535], dtype=np.uint16))
    np.testing.assert_allclose(db, [-23.0, -63.0, -83.0, 96.32946 - 83.0], atol=1e-4)
    assert db.dtype == np.float32 and valid.all()
    db, _ = dn_to_db(np.array([1000.0]), calibration_factor=-80.0)
    np.testing.assert_allclose(db, [-20.0], atol=1e-5)


def test_invalid_values_are_masked_never_inf_or_nan():
    values = np.array([0.0, -5.0, np.nan, np.inf, -np.inf, 100.0])
    for kind in ("dn", "linear"):
        db, valid = calibrate(values, kind, nodata=None)
        assert valid.tolist() == [False, False, False, False, False, True], kind
        assert np.isfinite(db).all(), kind
        assert (db[:5] == 0.0).all(), kind
    db, valid = calibrate(values, "db", nodata=None)
    assert valid.tolist() == [True, True, False, False, False, True]
    assert np.isfinite(db).all()
    np.testing.assert_array_equal(db[[0, 1, 5]], [0.0, -5.0, 100.0])


def test_linear_and_db_kinds():
    db, valid = linear_to_db(np.array([1.0, 0.1, 0.01, 2.0], dtype=np.float32))
    np.testing.assert_allclose(db, [0.0, -10.0, -20.0, 10 * math.log10(2.0)], atol=1e-5)
    assert valid.all()
    db, valid = calibrate(np.array([-12.5, 3.0, -9999.0], dtype=np.float32), "db", nodata=-9999.0)
    assert valid.tolist() == [True, True, False]
    np.testing.assert_array_equal(db, np.array([-12.5, 3.0, 0.0], dtype=np.float32))
    db, valid = calibrate(np.array([4.0, 7.0], dtype=np.float32), "power", nodata=7.0)  # alias, declared nodata
    np.testing.assert_allclose(db, [10 * math.log10(4.0), 0.0], atol=1e-5)
    assert valid.tolist() == [True, False]
    with pytest.raises(ValueError, match="unknown input kind"):
        calibrate(np.ones(2), "gamma0")


def test_db_to_dn_inverts_calibration_and_never_writes_nodata():
    db = np.array([-30.0, -12.0, 0.0, 5.0])
    dn = db_to_dn(db)
    # Hand inversion: DN = 10^((dB + 83) / 20).
    np.testing.assert_array_equal(dn, np.rint(10 ** ((db + 83.0) / 20.0)).astype(np.uint16))
    back, _ = dn_to_db(dn)
    np.testing.assert_allclose(back, db, atol=0.01)
    assert db_to_dn(np.array([-200.0]))[0] == 1
    assert db_to_dn(np.array([40.0]))[0] == 65535


# ----------------------------------------------------------------------------------------------------------------------
# Reading scenes
# ----------------------------------------------------------------------------------------------------------------------
def dn_pattern(height=64, width=48):
    rows, cols = np.mgrid[0:height, 0:width]
    dn = (100 + 10 * rows + cols).astype(np.uint16)
    dn[5, 7] = 0
    dn[40:, 30:] = 0
    return dn


def test_read_db_of_a_uint16_scene(tmp_path):
    dn = dn_pattern()
    path = write_raster(tmp_path / "scene.tif", dn, nodata=0, tiled=True, block=16)
    with open_scene(path) as scene:
        assert scene.input_kind == "dn"
        assert scene.calibration_factor == -83.0
        assert scene.shape == (64, 48) and scene.count == 1 and scene.band_names == ("HH",)
        assert scene.crs.to_epsg() == 4326 and scene.transform == WGS84_TRANSFORM
        assert scene.nodata == 0 and scene.block_shapes == [(16, 16)]
        assert scene.profile["dtype"] == "uint16"
        window = Window(4, 2, 20, 10)  # cols 4..23, rows 2..11
        db, valid = scene.read_db(window)
    assert db.shape == (1, 10, 20) and db.dtype == np.float32 and valid.shape == (10, 20)
    expected_dn = dn[2:12, 4:24].astype(np.float64)
    expected_valid = expected_dn > 0
    np.testing.assert_array_equal(valid, expected_valid)
    np.testing.assert_allclose(db[0][expected_valid], 20 * np.log10(expected_dn[expected_valid]) - 83.0, atol=1e-4)
    assert (db[0][~expected_valid] == 0.0).all()


def test_window_past_the_edge_is_padded_invalid(tmp_path):
    dn = dn_pattern()
    path = write_raster(tmp_path / "scene.tif", dn, nodata=0)
    with open_scene(path) as scene:
        db, valid = scene.read_db(Window(40, 56, 16, 16))  # 8 cols and 8 rows inside
        outside_db, outside_valid = scene.read_db(Window(100, 100, 4, 4))
    assert not valid[8:, :].any() and not valid[:, 8:].any()
    np.testing.assert_array_equal(valid[:8, :8], dn[56:64, 40:48] > 0)
    assert (db[0, 8:, :] == 0).all()
    assert not outside_valid.any() and (outside_db == 0).all()


def test_two_band_scene_is_valid_only_where_both_bands_are(tmp_path):
    hh = np.full((32, 32), 2000, dtype=np.uint16)
    hv = np.full((32, 32), 500, dtype=np.uint16)
    hv[3, 4] = 0
    hh[10, 11] = 0
    path = write_raster(tmp_path / "scene.tif", np.stack([hh, hv]), nodata=0)
    with open_scene(path) as scene:
        assert scene.count == 2 and scene.band_names == ("HH", "HV")
        db, valid = scene.read_db()
    assert db.shape == (2, 32, 32)
    assert not valid[3, 4] and not valid[10, 11] and valid.sum() == 32 * 32 - 2
    assert (db[:, 3, 4] == 0).all() and (db[:, 10, 11] == 0).all()
    np.testing.assert_allclose(db[1, 0, 0], 20 * math.log10(500) - 83, atol=1e-4)


def test_band_selection_on_a_multi_band_file(tmp_path):
    data = np.stack([np.full((16, 16), v, dtype=np.uint16) for v in (100, 200, 300)])
    path = write_raster(tmp_path / "three.tif", data, nodata=0)
    with pytest.raises(SarLulcDataError, match="3 bands") as err:
        open_scene(path)
    assert str(path) in str(err.value)
    with open_scene(path, bands=(3, 1)) as scene:
        db, _ = scene.read_db()
    np.testing.assert_allclose(db[:, 0, 0], [20 * math.log10(300) - 83, 20 * math.log10(100) - 83], atol=1e-4)
    with pytest.raises(SarLulcDataError, match="no band 4"):
        open_scene(path, bands=(4,))


@pytest.mark.parametrize(
    ("values", "tags", "expected"),
    [
        (np.full((16, 16), 0.05, dtype=np.float32), {INPUT_KIND_TAG: "linear"}, "linear"),
        (np.full((16, 16), -13.0, dtype=np.float32), {"UNITS": "dB"}, "db"),
        (np.full((16, 16), 800.0, dtype=np.float32), {"INPUT_KIND": "amplitude"}, "dn"),
        (np.full((16, 16), -13.0, dtype=np.float32), None, "db"),  # untagged float, negative median
        (np.full((16, 16), 0.05, dtype=np.float32), None, "linear"),  # untagged float, small positive median
        (np.full((16, 16), 800.0, dtype=np.float32), None, "dn"),  # untagged float, DN-sized median
        (np.full((16, 16), 800, dtype=np.int32), None, "dn"),  # integers are DN
    ],
)
def test_input_kind_from_tags_dtype_and_data(tmp_path, values, tags, expected):
    path = write_raster(tmp_path / "scene.tif", values, tags=tags)
    with open_scene(path) as scene:
        assert scene.input_kind == expected


def test_unknown_input_kind_tag_raises(tmp_path):
    path = write_raster(tmp_path / "scene.tif", np.ones((8, 8), dtype=np.float32), tags={INPUT_KIND_TAG: "gamma0"})
    expect_data_error(path, "is not one of")


def test_explicit_input_kind_and_calibration_tag(tmp_path):
    dn = np.full((8, 8), 1000, dtype=np.uint16)
    path = write_raster(tmp_path / "scene.tif", dn, nodata=0, tags={CALIBRATION_FACTOR_TAG: "-80.5"})
    with open_scene(path) as scene:
        assert scene.calibration_factor == -80.5
        np.testing.assert_allclose(scene.read_db()[0], 60.0 - 80.5, atol=1e-4)
    with open_scene(path, calibration_factor=-83.0) as scene:
        np.testing.assert_allclose(scene.read_db()[0], -23.0, atol=1e-4)
    with open_scene(path, input_kind="linear") as scene:  # the argument wins over the dtype
        np.testing.assert_allclose(scene.read_db()[0], 30.0, atol=1e-4)


def test_float_scene_with_nans_masks_them(tmp_path):
    values = np.full((16, 16), -11.0, dtype=np.float32)
    values[2, 3] = np.nan
    values[4, :] = np.inf
    path = write_raster(tmp_path / "scene.tif", values, tags={INPUT_KIND_TAG: "db"})
    with open_scene(path) as scene:
        db, valid = scene.read_db()
    assert not valid[2, 3] and not valid[4].any() and valid.sum() == 256 - 1 - 16
    assert np.isfinite(db).all() and db[0, 2, 3] == 0.0


def test_gdal_mask_band_is_respected(tmp_path):
    dn = np.full((16, 16), 1000, dtype=np.uint16)
    path = tmp_path / "masked.tif"
    profile = dict(driver="GTiff", count=1, height=16, width=16, dtype="uint16")
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(path, "w", crs="EPSG:4326", transform=WGS84_TRANSFORM, **profile) as dst:
            dst.write(dn, 1)
            mask = np.full((16, 16), 255, dtype=np.uint8)
            mask[:, :4] = 0
            dst.write_mask(mask)
        with open_scene(path) as scene:
            _, valid = scene.read_db()
    assert not valid[:, :4].any() and valid[:, 4:].all()


def test_sparse_valid_pixels_are_not_mistaken_for_an_empty_scene(tmp_path):
    # The decimated read samples about every 4th pixel and misses this single pixel; the block scan finds it.
    dn = np.zeros((1024, 1024), dtype=np.uint16)
    dn[1021, 1022] = 500
    path = write_raster(tmp_path / "sparse.tif", dn, nodata=0, tiled=True, block=256, compress="deflate")
    with open_scene(path) as scene:
        _, valid = scene.read_db(Window(1020, 1020, 4, 4))
    assert valid.sum() == 1


# ----------------------------------------------------------------------------------------------------------------------
# A corpus of bad rasters
# ----------------------------------------------------------------------------------------------------------------------
def expect_data_error(path, match, **kwargs):
    with pytest.raises(SarLulcDataError, match=match) as err:
        open_scene(path, **kwargs)
    assert str(path) in str(err.value), err.value


def test_missing_file(tmp_path):
    expect_data_error(tmp_path / "nope.tif", "does not exist")


def test_text_file_named_tif(tmp_path):
    path = tmp_path / "notes.tif"
    path.write_text("this is not a raster\n")
    expect_data_error(path, "cannot be opened as a raster")


def test_png_renamed_tif(tmp_path):
    path = tmp_path / "photo.tif"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(path, format="PNG")
    expect_data_error(path, "GDAL reads it as a PNG")


def test_truncated_tiled_geotiff(tmp_path):
    rng = np.random.default_rng(0)
    dn = rng.integers(1, 5000, size=(512, 512), dtype=np.uint16)
    path = write_raster(tmp_path / "full.tif", dn, nodata=0, tiled=True, block=128, compress="deflate")
    data = path.read_bytes()
    for fraction in (0.5, 0.95):
        truncated = tmp_path / f"truncated_{fraction}.tif"
        truncated.write_bytes(data[: int(len(data) * fraction)])
        expect_data_error(truncated, "truncated or corrupt")


def test_three_band_rgb(tmp_path):
    path = write_raster(tmp_path / "rgb.tif", np.zeros((3, 16, 16), dtype=np.uint8))
    expect_data_error(path, "3 bands")


@pytest.mark.parametrize("dtype", ["uint8", "complex64"])
def test_unsupported_dtype(tmp_path, dtype):
    path = write_raster(tmp_path / f"{dtype}.tif", np.ones((16, 16), dtype=dtype))
    expect_data_error(path, f"dtype {dtype}")


def test_all_nodata(tmp_path):
    path = write_raster(tmp_path / "empty.tif", np.zeros((64, 64), dtype=np.uint16), nodata=0)
    expect_data_error(path, "no valid pixel")


def test_all_nan_float_scene(tmp_path):
    path = write_raster(tmp_path / "nan.tif", np.full((16, 16), np.nan, dtype=np.float32), tags={INPUT_KIND_TAG: "db"})
    expect_data_error(path, "no valid pixel")


def test_missing_crs(tmp_path):
    path = write_raster(tmp_path / "nocrs.tif", np.ones((16, 16), dtype=np.uint16), crs=None)
    expect_data_error(path, "has no CRS")


def test_missing_geotransform(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = write_raster(tmp_path / "notransform.tif", np.ones((16, 16), dtype=np.uint16), transform=None)
    expect_data_error(path, "no geotransform")


def test_errors_are_value_errors():
    assert issubclass(SarLulcDataError, ValueError)


# ----------------------------------------------------------------------------------------------------------------------
# Label rasters
# ----------------------------------------------------------------------------------------------------------------------
def block_codes(height, width, block=5):
    """Codes 1..14 constant on block x block squares."""
    rows, cols = np.mgrid[0:height, 0:width]
    return (1 + (rows // block * 3 + cols // block) % 14).astype(np.uint8)


@pytest.fixture
def utm_scene(tmp_path):
    return write_raster(
        tmp_path / "scene.tif", np.full((40, 60), 1000, dtype=np.uint16), crs=UTM_CRS, transform=UTM_TRANSFORM, nodata=0
    )


def test_aligned_labels_read(tmp_path, utm_scene):
    codes = block_codes(40, 60)
    codes[0, 0] = 0
    path = write_raster(tmp_path / "labels.tif", codes, crs=UTM_CRS, transform=UTM_TRANSFORM, nodata=0)
    with open_scene(utm_scene) as scene, open_labels(path, like=scene) as labels:
        check_alignment(scene, labels)
        assert labels.nodata == 0 and not labels.reprojected
        np.testing.assert_array_equal(labels.read_labels(Window(0, 0, 60, 40)), codes)
        padded = labels.read_labels(Window(50, 30, 20, 20))
    np.testing.assert_array_equal(padded[:10, :10], codes[30:, 50:])
    assert (padded[10:, :] == 0).all() and (padded[:, 10:] == 0).all()


def test_labels_with_another_shape_raise(tmp_path, utm_scene):
    path = write_raster(tmp_path / "labels.tif", block_codes(41, 60), crs=UTM_CRS, transform=UTM_TRANSFORM)
    with open_scene(utm_scene) as scene, pytest.raises(SarLulcDataError, match="shape") as err:
        open_labels(path, like=scene)
    assert str(path) in str(err.value) and str(utm_scene) in str(err.value)


def test_labels_with_another_crs_raise(tmp_path, utm_scene):
    path = write_raster(tmp_path / "labels.tif", block_codes(40, 60), crs="EPSG:32653", transform=UTM_TRANSFORM)
    with open_scene(utm_scene) as scene:
        with pytest.raises(SarLulcDataError, match="CRS") as err:
            open_labels(path, like=scene)
        assert str(path) in str(err.value)
        with open_labels(path) as labels, pytest.raises(SarLulcDataError, match="CRS"):
            check_alignment(scene, labels)


def test_labels_shifted_by_a_pixel_raise(tmp_path, utm_scene):
    shifted = UTM_TRANSFORM @ rasterio.Affine.translation(1, 0)
    path = write_raster(tmp_path / "labels.tif", block_codes(40, 60), crs=UTM_CRS, transform=shifted)
    with open_scene(utm_scene) as scene, pytest.raises(SarLulcDataError, match="transform"):
        open_labels(path, like=scene)


def test_finer_labels_reprojected_with_nearest_neighbour(tmp_path, utm_scene):
    # Labels at 10/3 m: each 10 m scene pixel's centre falls in the middle one of 3 x 3 sub-pixels, which carries the
    # code of that 10 m pixel, so nearest-neighbour reprojection must reproduce the coarse pattern exactly.
    coarse = block_codes(40, 60)
    fine = np.repeat(np.repeat(coarse, 3, axis=0), 3, axis=1)
    fine_transform = north_up(UTM_TRANSFORM.c, UTM_TRANSFORM.f, 10 / 3)
    path = write_raster(tmp_path / "labels.tif", fine, crs=UTM_CRS, transform=fine_transform, nodata=0)
    with open_scene(utm_scene) as scene:
        with pytest.raises(SarLulcDataError, match="not aligned"):
            open_labels(path, like=scene)
        with open_labels(path, like=scene, reproject=True) as labels:
            assert labels.reprojected and labels.shape == scene.shape and labels.crs == scene.crs
            np.testing.assert_array_equal(labels.read_labels(Window(0, 0, 60, 40)), coarse)
            np.testing.assert_array_equal(labels.read_labels(Window(7, 3, 20, 11)), coarse[3:14, 7:27])


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # inside rasterio.warp.calculate_default_transform
def test_labels_in_another_crs_reprojected(tmp_path, utm_scene):
    # The same blocky map written in EPSG:4326 over the scene's footprint: nearest-neighbour warping must agree with
    # the UTM pattern almost everywhere (blocks are 5 px; only pixels next to block edges may differ).
    coarse = block_codes(40, 60)
    with open_scene(utm_scene) as scene:
        bounds = rasterio.warp.transform_bounds(scene.crs, "EPSG:4326", *scene.bounds)
        geo_transform, width, height = rasterio.warp.calculate_default_transform(
            scene.crs, "EPSG:4326", 60, 40, *scene.bounds, resolution=(bounds[2] - bounds[0]) / 180
        )
        warped = np.zeros((height, width), dtype=np.uint8)
        rasterio.warp.reproject(
            coarse,
            warped,
            src_transform=scene.transform,
            src_crs=scene.crs,
            dst_transform=geo_transform,
            dst_crs="EPSG:4326",
            resampling=rasterio.enums.Resampling.nearest,
        )
        path = write_raster(tmp_path / "labels.tif", warped, transform=geo_transform, nodata=0)
        with open_labels(path, like=scene, reproject=True) as labels:
            back = labels.read_labels()
    assert (back == coarse).mean() > 0.9


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (np.ones((3, 40, 60), dtype=np.uint8), "3 bands"),
        (np.ones((40, 60), dtype=np.float32), "dtype float32"),
    ],
)
def test_bad_label_rasters(tmp_path, utm_scene, data, match):
    path = write_raster(tmp_path / "labels.tif", data, crs=UTM_CRS, transform=UTM_TRANSFORM)
    with pytest.raises(SarLulcDataError, match=match) as err:
        open_labels(path)
    assert str(path) in str(err.value)


def test_missing_label_file(tmp_path):
    with pytest.raises(SarLulcDataError, match="does not exist"):
        open_labels(tmp_path / "labels.tif")
