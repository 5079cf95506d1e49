"""Prediction on JAXA products: what the model was trained on (convention, polarizations, GSD), resampling to the
model's GSD and back, provenance tags, and the band choice of ``sarlulc predict``."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window

from helpers_rasters import north_up, write_raster
from helpers_torch import one_torch_thread  # noqa: F401 (an autouse fixture)
from sarlulc import SarImageProcessor, SarLulcForSemanticSegmentation, __version__
from sarlulc.data import open_scene
from sarlulc.data.synthetic_products import generate_product
from sarlulc.errors import SarLulcDataError
from sarlulc.inference import predict_scene
from sarlulc.inference.compatibility import SceneBandsError
from sarlulc.inference.records import Georeference
from sarlulc.inference.resampling import GSD_TOLERANCE, ModelGridScene, plan_resampling
from sarlulc_cli import main
from test_inference import tiny_config

TILE, OVERLAP = 64, 16


@pytest.fixture(scope="module")
def model() -> SarLulcForSemanticSegmentation:
    torch.manual_seed(0)
    return SarLulcForSemanticSegmentation(tiny_config()).eval()


def save_checkpoint(model, folder: Path, **record) -> Path:
    model.save_pretrained(folder)
    SarImageProcessor(input_kind="dn", **record).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def sigma0_checkpoint(model, tmp_path_factory) -> Path:
    """A 1-channel model trained on sigma0 HH at an unknown GSD (no resampling: the convention checks alone)."""
    return save_checkpoint(model, tmp_path_factory.mktemp("sigma0"), backscatter="sigma0", polarizations=["HH"])


@pytest.fixture(scope="module")
def ten_metre_checkpoint(model, tmp_path_factory) -> Path:
    return save_checkpoint(model, tmp_path_factory.mktemp("ten"), backscatter="sigma0", polarizations=["HH"], gsd=10.0)


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory) -> Path:
    """A 25 m mosaic tile archive (gamma0, HH + HV)."""
    return generate_product(tmp_path_factory.mktemp("mosaic"), "mosaic", size=64, seed=3, progress=False).path


@pytest.fixture(scope="module")
def dual_pol(tmp_path_factory):
    """An L1.5 product with HH and HV (sigma0, 10 m)."""
    return generate_product(tmp_path_factory.mktemp("fbd"), "l15", size=96, seed=5, progress=False)


@pytest.fixture(scope="module")
def single_pol(tmp_path_factory):
    """The same landscape as ``dual_pol`` with its HH file only."""
    folder = tmp_path_factory.mktemp("fbs")
    return generate_product(folder, "l15", size=96, seed=5, polarizations=("HH",), progress=False)


def error_lines(stderr: str) -> list[str]:
    """The lines of stderr that are not progress bars (transformers shows one while it loads weights)."""
    return [line for line in stderr.strip().splitlines() if "it/s]" not in line and line.strip()]


def classes(path: Path) -> np.ndarray:
    with rasterio.open(path) as dataset:
        return dataset.read(1)


# ----------------------------------------------------------------------------------------------------------------------
# Conventions
# ----------------------------------------------------------------------------------------------------------------------
def test_gamma0_scene_on_a_sigma0_model_warns_naming_both(sigma0_checkpoint, mosaic, tmp_path):
    with pytest.warns(UserWarning, match=r"gives gamma0 backscatter but the model was trained on sigma0"):
        predict_scene(
            sigma0_checkpoint,
            mosaic,
            tmp_path / "map.tif",
            tile=TILE,
            overlap=OVERLAP,
            polarizations=["HH"],
            progress=False,
        )
    assert (tmp_path / "map.tif").is_file()


def test_strict_refuses_a_gamma0_scene_before_writing(sigma0_checkpoint, mosaic, tmp_path):
    with pytest.raises(SarLulcDataError, match=r"gamma0.*sigma0.*strict"):
        predict_scene(
            sigma0_checkpoint,
            mosaic,
            tmp_path / "map.tif",
            tile=TILE,
            overlap=OVERLAP,
            polarizations=["HH"],
            progress=False,
            strict=True,
        )
    assert list(tmp_path.iterdir()) == []


def test_cli_strict_refuses_a_gamma0_scene_in_one_line(sigma0_checkpoint, mosaic, tmp_path, capsys):
    out = tmp_path / "maps" / "map.tif"
    args = [
        "predict",
        str(sigma0_checkpoint),
        str(mosaic),
        str(out),
        "--tile",
        str(TILE),
        "--overlap",
        str(OVERLAP),
        "--polarizations",
        "HH",
        "--no_progress",
    ]
    assert main([*args, "--strict"]) == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "gamma0" in err[0] and "sigma0" in err[0], err
    assert not out.parent.exists() or list(out.parent.iterdir()) == []
    with warnings.catch_warnings(record=True) as caught:  # negative control: without --strict it predicts, warning
        warnings.simplefilter("always")
        assert main(args) == 0
    assert out.is_file()
    assert any("gamma0" in str(w.message) for w in caught)


def test_matching_scene_gives_no_warning_and_unknown_record_checks_nothing(
    model, dual_pol, sigma0_checkpoint, tmp_path
):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predict_scene(
            sigma0_checkpoint,
            dual_pol.path,
            tmp_path / "a.tif",
            tile=TILE,
            overlap=OVERLAP,
            polarizations=["HH"],
            progress=False,
            strict=True,
        )
    unknown = save_checkpoint(model, tmp_path / "old")  # a checkpoint saved before the record existed
    mosaic_like = tmp_path / "gamma.tif"
    write_raster(
        mosaic_like,
        np.full((64, 64), 3000, np.uint16),
        crs="EPSG:32654",
        transform=north_up(500000, 4000000, 10.0),
        tags={"SARLULC_BACKSCATTER": "gamma0"},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predict_scene(unknown, mosaic_like, tmp_path / "b.tif", tile=TILE, overlap=OVERLAP, progress=False, strict=True)


# ----------------------------------------------------------------------------------------------------------------------
# Band choice
# ----------------------------------------------------------------------------------------------------------------------
def test_two_band_product_on_a_one_channel_model_names_the_options(sigma0_checkpoint, dual_pol, tmp_path, capsys):
    with pytest.raises(SceneBandsError, match=r"bands=\(\.\.\.\) or polarizations=\(\.\.\.\)"):
        predict_scene(sigma0_checkpoint, dual_pol.path, tmp_path / "m.tif", tile=TILE, overlap=OVERLAP, progress=False)
    assert main(["predict", str(sigma0_checkpoint), str(dual_pol.path), str(tmp_path / "m.tif"), "--no_progress"]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1
    err = lines[0]
    assert "--bands or --polarizations" in err and "--polarizations HH" in err and "bands=(" not in err
    assert list(tmp_path.iterdir()) == []


def test_polarizations_and_bands_choose_hh_like_the_single_band_product(
    sigma0_checkpoint, dual_pol, single_pol, tmp_path
):
    common = ["--tile", str(TILE), "--overlap", str(OVERLAP), "--no_progress"]
    assert main(["predict", str(sigma0_checkpoint), str(single_pol.path), str(tmp_path / "hh.tif"), *common]) == 0
    assert (
        main(
            [
                "predict",
                str(sigma0_checkpoint),
                str(dual_pol.path),
                str(tmp_path / "pol.tif"),
                "--polarizations",
                "HH",
                *common,
            ]
        )
        == 0
    )
    assert (
        main(
            ["predict", str(sigma0_checkpoint), str(dual_pol.path), str(tmp_path / "band.tif"), "--bands", "1", *common]
        )
        == 0
    )
    reference = classes(tmp_path / "hh.tif")
    assert (reference != 255).any()
    np.testing.assert_array_equal(classes(tmp_path / "pol.tif"), reference)
    np.testing.assert_array_equal(classes(tmp_path / "band.tif"), reference)
    # Negative control: the HV band alone is another input and gives another map.
    with pytest.warns(UserWarning, match="polarizations HV but the model was trained on HH"):
        predict_scene(
            sigma0_checkpoint,
            dual_pol.path,
            tmp_path / "hv.tif",
            tile=TILE,
            overlap=OVERLAP,
            polarizations=["HV"],
            progress=False,
        )
    assert (classes(tmp_path / "hv.tif") != reference).any()


def test_a_job_reports_a_band_mismatch_in_the_commands_words_and_polarizations_reach_every_scene(
    sigma0_checkpoint, dual_pol, single_pol, tmp_path, capsys
):
    common = ["--tile", str(TILE), "--overlap", str(OVERLAP), "--no_progress", "--format", "gtiff", "--no_catalog"]
    inputs = [str(dual_pol.path), str(single_pol.path)]
    out = tmp_path / "maps"
    assert main(["predict", str(sigma0_checkpoint), *inputs, "--output-dir", str(out), *common]) == 3  # some failed
    summary = capsys.readouterr().out
    failed = [line for line in summary.splitlines() if "failed" in line and "--bands or --polarizations" in line]
    assert len(failed) == 1 and "bands=(" not in summary
    assert len(list(out.glob("*.tif"))) == 1  # the single-band scene was done
    # With the polarization chosen, the two-band scene is read as HH and gives the single-band scene's map.
    assert (
        main(["predict", str(sigma0_checkpoint), *inputs, "--output-dir", str(out), "--polarizations", "HH", *common])
        == 0
    )
    maps = sorted(out.glob("*.tif"))
    assert len(maps) == 2
    np.testing.assert_array_equal(classes(maps[0]), classes(maps[1]))


# ----------------------------------------------------------------------------------------------------------------------
# Provenance
# ----------------------------------------------------------------------------------------------------------------------
def test_provenance_tags_of_a_product(sigma0_checkpoint, dual_pol, tmp_path):
    out = tmp_path / "map.tif"
    predict_scene(
        sigma0_checkpoint,
        dual_pol.path,
        out,
        tile=TILE,
        overlap=OVERLAP,
        polarizations=["HH"],
        probabilities="confidence",
        progress=False,
    )
    with open_scene(dual_pol.path, check=False) as scene:
        expected_date = scene.product.acquisition_date.isoformat()
        expected_cf = scene.calibration_factor
    for path in (out, tmp_path / "map_confidence.tif"):
        with rasterio.open(path) as dataset:
            tags = dataset.tags()
        assert tags["SARLULC_SOURCE_PRODUCT_ID"] == dual_pol.product_id
        assert tags["SARLULC_SOURCE_PRODUCT_TYPE"] == "l1.5"
        assert tags["SARLULC_SOURCE_BACKSCATTER"] == "sigma0"
        assert tags["SARLULC_SOURCE_POLARIZATIONS"] == "HH"
        assert float(tags["SARLULC_SOURCE_CALIBRATION_FACTOR"]) == pytest.approx(expected_cf) == -83.0
        assert tags["SARLULC_SOURCE_ACQUISITION_DATE"] == expected_date
        assert tags["SARLULC_MODEL"] == str(sigma0_checkpoint)
        assert tags["SARLULC_VERSION"] == __version__
        assert tags["SARLULC_MODEL_BACKSCATTER"] == "sigma0" and tags["SARLULC_MODEL_POLARIZATIONS"] == "HH"
        assert tags["SARLULC_TILE"] == str(TILE) and tags["SARLULC_OVERLAP"] == str(OVERLAP)
        assert "SARLULC_RESAMPLING" not in tags


# ----------------------------------------------------------------------------------------------------------------------
# Resampling to the model's GSD
# ----------------------------------------------------------------------------------------------------------------------
def test_gsd_tolerance_decides_whether_to_resample():
    grid = Georeference(100, 80, "EPSG:32654", north_up(500000, 4000000, 10.0))
    assert plan_resampling(grid, 10.0, None) is None
    assert plan_resampling(grid, 10.0 * (1 + GSD_TOLERANCE * 0.9), 10.0) is None
    plan = plan_resampling(grid, 25.0, 10.0)
    assert plan is not None and not plan.coarsening
    assert plan.model.shape == (250, 200)
    assert plan.model.transform.a == pytest.approx(4.0)


def test_coarsening_averages_linear_power_over_blocks(tmp_path):
    rng = np.random.default_rng(0)
    dn = rng.integers(200, 9000, size=(1, 40, 48)).astype(np.uint16)
    dn[0, :3, :5] = 0  # nodata: the 2 x 2 blocks under it are at most half valid
    path = write_raster(tmp_path / "five.tif", dn, crs="EPSG:32654", transform=north_up(500000, 4000000, 5.0), nodata=0)
    with open_scene(path) as scene:
        grid = Georeference(scene.height, scene.width, scene.crs, scene.transform)
        plan = plan_resampling(grid, scene.gsd, 10.0)
        assert plan is not None and plan.coarsening and plan.model.shape == (20, 24)
        db, valid = ModelGridScene(scene.reopen(), plan).read_db(Window(0, 0, 24, 20))
    # Independently: sigma0 power of every pixel, mean over 2 x 2 blocks of the valid ones, back to dB.
    power = np.where(dn[0] > 0, dn[0].astype(np.float64) ** 2 * 10 ** (-83.0 / 10), np.nan)
    blocks = power.reshape(20, 2, 24, 2).transpose(0, 2, 1, 3).reshape(20, 24, 4)
    valid_share = np.isfinite(blocks).mean(axis=2)
    expected = 10 * np.log10(np.nanmean(np.where(valid_share[..., None] > 0, blocks, 1.0), axis=2))
    np.testing.assert_array_equal(valid, valid_share >= 0.5)
    np.testing.assert_allclose(db[0][valid], expected[valid], atol=1e-3)
    # Negative control: averaging dB instead of power is measurably different.
    db_mean = np.nanmean(10 * np.log10(np.where(valid[..., None], blocks, 1.0)), axis=2)
    assert np.abs(db_mean[valid] - db[0][valid]).max() > 0.1


def test_25m_mosaic_on_a_10m_model_keeps_the_scene_grid(ten_metre_checkpoint, mosaic, tmp_path):
    with open_scene(mosaic, check=False) as scene:
        crs, transform, shape, gsd = scene.crs, scene.transform, scene.shape, scene.gsd
    assert gsd > 20.0
    out = tmp_path / "scene_grid.tif"
    with pytest.warns(UserWarning, match="gamma0"):
        report = predict_scene(
            ten_metre_checkpoint,
            mosaic,
            out,
            tile=TILE,
            overlap=OVERLAP,
            polarizations=["HH"],
            probabilities="classes",
            water=True,
            progress=False,
        )
    scale = 10.0 / gsd
    assert report.predicted_shape == (math.ceil(shape[0] / scale), math.ceil(shape[1] / scale))
    assert report.shape == shape
    for path in (out, tmp_path / "scene_grid_probabilities.tif", tmp_path / "scene_grid_water.tif"):
        with rasterio.open(path) as dataset:
            assert dataset.crs == crs and dataset.transform.almost_equals(transform) and dataset.shape == shape
            assert dataset.tags()["SARLULC_OUTPUT_GRID"] == "scene"
            assert "bilinear in linear power" in dataset.tags()["SARLULC_RESAMPLING"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "scene_grid.tif",
        "scene_grid_probabilities.tif",
        "scene_grid_water.tif",
    ]  # the model-grid maps are gone

    model_out = tmp_path / "model_grid" / "map.tif"
    with pytest.warns(UserWarning, match="gamma0"):
        predict_scene(
            ten_metre_checkpoint,
            mosaic,
            model_out,
            tile=TILE,
            overlap=OVERLAP,
            polarizations=["HH"],
            progress=False,
            output_grid="model",
        )
    with rasterio.open(model_out) as dataset:
        assert dataset.shape == report.predicted_shape and dataset.crs == crs
        assert dataset.transform.a == pytest.approx(transform.a * scale)
        assert dataset.tags()["SARLULC_GSD_M"] == "10.00"
        model_map = dataset.read(1)
    # Putting the model-grid map on the scene grid is a nearest-neighbour lookup: compare it pixel by pixel.
    scene_map = classes(out)
    rows = np.minimum((np.arange(shape[0]) + 0.5) / scale, model_map.shape[0] - 1).astype(int)
    cols = np.minimum((np.arange(shape[1]) + 0.5) / scale, model_map.shape[1] - 1).astype(int)
    np.testing.assert_array_equal(scene_map, model_map[np.ix_(rows, cols)])


def test_output_grid_is_checked(ten_metre_checkpoint, mosaic, tmp_path):
    with pytest.raises(ValueError, match="output_grid"):
        predict_scene(ten_metre_checkpoint, mosaic, tmp_path / "m.tif", output_grid="utm", progress=False)


# ----------------------------------------------------------------------------------------------------------------------
# The training-data record
# ----------------------------------------------------------------------------------------------------------------------
def test_processor_records_and_checks_the_training_data(tmp_path):
    processor = SarImageProcessor(backscatter="Sigma0", polarizations="hh", gsd=10)
    processor.save_pretrained(tmp_path)
    loaded = SarImageProcessor.from_pretrained(tmp_path)
    assert (loaded.backscatter, loaded.polarizations, loaded.gsd) == ("sigma0", ["HH"], 10.0)
    assert SarImageProcessor().backscatter is None  # old checkpoints: unknown
    with pytest.raises(ValueError, match="backscatter"):
        SarImageProcessor(backscatter="beta0")
    with pytest.raises(ValueError, match="num_channels"):
        SarImageProcessor(polarizations=["HH", "HV"])
    with pytest.raises(ValueError, match="gsd"):
        SarImageProcessor(gsd=-1)


def test_training_record_comes_from_the_scenes_and_refuses_mixtures(mosaic, dual_pol, tmp_path):
    from sarlulc.errors import UsageError
    from sarlulc.training.data_record import record_training_data, training_data_record

    record = training_data_record(dual_pol.path)
    assert (record.backscatter, record.polarizations) == ("sigma0", ("HH", "HV"))
    assert record.gsd == pytest.approx(10.0, rel=0.01)
    processor = record_training_data(SarImageProcessor(num_channels=2), record)
    assert (processor.backscatter, processor.polarizations) == ("sigma0", ["HH", "HV"])
    with pytest.raises(UsageError, match=r"mix backscatter conventions"):
        training_data_record([dual_pol.path, mosaic])
