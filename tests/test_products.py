"""JAXA products read in their exact on-disk layouts: the 25 m mosaic (GeoTIFF and raw + ENVI .hdr, loose and inside its
.tar.gz), L1.5/L2.1 GeoTIFF products (BigTIFF too), and the bad inputs a user meets, each a clear SarLulcDataError.

Every value check compares with an independent computation: the archive is extracted with Python's tarfile (or the
raw bytes read with numpy), the DNs read with plain rasterio, and ``10*log10(DN^2) + CF`` computed here.
"""

from __future__ import annotations

import math
import shutil
import tarfile
import zipfile
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.control
from rasterio.transform import Affine
from rasterio.warp import transform as transform_coordinates
from rasterio.windows import Window

from helpers_rasters import UTM_CRS, UTM_TRANSFORM, write_raster
from sarlulc.data import ProductInfo, open_scene
from sarlulc.data.products import (
    MOSAIC_DATE_EPOCHS,
    ProductScene,
    ceos_available,
    find_products,
    parse_standard_product_id,
    recognize,
)
from sarlulc.data.synthetic_products import generate_product
from sarlulc.errors import SarLulcDataError
from sarlulc_cli import main

CF = -83.0


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def expected_db(dn: np.ndarray, cf: float = CF) -> np.ndarray:
    """The calibration computed here: 10*log10(DN^2) + CF, in float64."""
    dn = dn.astype(np.float64)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(dn**2) + cf


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory):
    return generate_product(tmp_path_factory.mktemp("mosaic"), "mosaic", size=200, seed=0, progress=False)


@pytest.fixture(scope="module")
def mosaic_2017(tmp_path_factory):
    return generate_product(tmp_path_factory.mktemp("mosaic17"), "mosaic", size=160, seed=1, year=2017, progress=False)


@pytest.fixture(scope="module")
def l15(tmp_path_factory):
    return generate_product(tmp_path_factory.mktemp("l15"), "l15", size=192, seed=0, bigtiff=True, progress=False)


@pytest.fixture(scope="module")
def extracted(mosaic, tmp_path_factory):
    """The mosaic archive extracted by Python's tarfile: the independent copy of the member bytes."""
    folder = tmp_path_factory.mktemp("extracted")
    with tarfile.open(mosaic.path) as archive:
        archive.extractall(folder, filter="data")
    return folder


def read_band(path: Path) -> np.ndarray:
    with rasterio.open(path) as dataset:
        return dataset.read(1)


# ----------------------------------------------------------------------------------------------------------------------
# The mosaic: names, archive, calibration, mask, stacking
# ----------------------------------------------------------------------------------------------------------------------
def test_mosaic_layout_has_jaxa_names(mosaic):
    assert mosaic.path.name == "N40E135_19_MOS_F02DAR.tar.gz"  # the 5 x 5 degree block of tile N36E139
    with tarfile.open(mosaic.path) as archive:
        names = sorted(archive.getnames())
    layers = ["HH", "HV", "date", "linci", "mask"]
    assert names == sorted([f"N36E139_19_sl_{layer}_F02DAR.tif" for layer in layers] + ["N36E139_19_F02DAR.xml"])
    assert sorted(p.name for p in mosaic.extracted.iterdir()) == names


def test_mosaic_archive_is_read_in_place_and_calibrated(mosaic, extracted):
    before = listing(mosaic.path.parent)
    with open_scene(mosaic.path) as scene:
        assert isinstance(scene, ProductScene)
        assert all(path.startswith("/vsitar/") for path in scene.product.files)
        db, valid = scene.read_db()
        inside = scene.read_db(Window(150, 170, 64, 64))  # reaches past the right and bottom edges
    assert listing(mosaic.path.parent) == before  # nothing extracted, no GDAL .properties file

    hh = read_band(extracted / "N36E139_19_sl_HH_F02DAR.tif")
    hv = read_band(extracted / "N36E139_19_sl_HV_F02DAR.tif")
    mask = read_band(extracted / "N36E139_19_sl_mask_F02DAR.tif")
    usable = (hh > 0) & (hv > 0) & np.isin(mask, [50, 255])
    np.testing.assert_array_equal(valid, usable)
    np.testing.assert_allclose(db[0][usable], expected_db(hh[usable]), atol=1e-4)
    np.testing.assert_allclose(db[1][usable], expected_db(hv[usable]), atol=1e-4)
    assert (db[:, ~usable] == 0).all()
    part_db, part_valid = inside
    np.testing.assert_array_equal(part_valid[:30, :50], usable[170:, 150:])
    assert not part_valid[30:].any() and not part_valid[:, 50:].any()
    np.testing.assert_allclose(
        part_db[0, :30, :50][part_valid[:30, :50]], expected_db(hh[170:, 150:][usable[170:, 150:]]), atol=1e-4
    )


def test_each_read_returns_its_own_arrays_though_the_handle_reuses_its_temporaries(mosaic):
    # A handle reads every window into the same scratch arrays; what it returns must never be one of them.
    files = mosaic.extracted
    hh, hv = (read_band(files / f"N36E139_19_sl_{pol}_F02DAR.tif") for pol in ("HH", "HV"))
    mask = read_band(files / "N36E139_19_sl_mask_F02DAR.tif")
    usable = (hh > 0) & (hv > 0) & np.isin(mask, [50, 255])
    windows = [Window(0, 0, 64, 64), Window(100, 80, 64, 64), Window(20, 130, 48, 32)]
    with open_scene(files) as scene:
        reads = [scene.read_db(window) for window in windows]
        raws = [scene.read_raw(window) for window in windows]
        with open_scene(files, polarizations=("HH",)) as hh_only:
            single = [hh_only.read_raw(window) for window in windows]
    for window, (db, valid), raw, one in zip(windows, reads, raws, single):
        rows, cols = window.toslices()
        np.testing.assert_array_equal(valid, usable[rows, cols])
        np.testing.assert_allclose(db[0][valid], expected_db(hh[rows, cols][valid]), atol=1e-4)
        np.testing.assert_array_equal(raw, np.stack([hh[rows, cols], hv[rows, cols]]))
        np.testing.assert_array_equal(one, hh[None, rows, cols])
    # Negative control: the handle's own scratch band holds the last window read, not the first.
    assert not np.array_equal(raws[0][0, :32, :48], scene._scratch.get("band0", (32, 48), np.uint16))


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads the process's memory maps (Linux)")
def test_uncompressed_product_files_are_memory_mapped_unless_the_user_says_no(mosaic):
    hh = str(mosaic.extracted / "N36E139_19_sl_HH_F02DAR.tif")

    def mapped_after_a_read(**options) -> bool:
        with rasterio.Env(**options), open_scene(mosaic.extracted) as scene:
            scene.read_db(Window(0, 0, 32, 32))
            return hh in Path("/proc/self/maps").read_text()

    assert mapped_after_a_read()
    assert not mapped_after_a_read(GTIFF_VIRTUAL_MEM_IO="NO")  # the user's setting wins


def test_a_truncated_product_file_read_memory_mapped_is_refused_in_one_line(mosaic, tmp_path):
    folder = tmp_path / "N36E139_19"
    shutil.copytree(mosaic.extracted, folder)
    hv = folder / "N36E139_19_sl_HV_F02DAR.tif"
    hv.write_bytes(hv.read_bytes()[: hv.stat().st_size // 2])
    message = fails_cleanly(folder, "truncated or corrupt", tmp_path)
    assert str(hv) in message


def test_mosaic_metadata(mosaic, extracted):
    with open_scene(mosaic.path) as scene:
        product = scene.product
        assert (product.product_type, product.tile, product.year, product.sensor) == (
            "mosaic",
            "N36E139",
            2019,
            "PALSAR-2",
        )
        assert product.product_id == "N36E139_19_F02DAR"
        assert scene.backscatter == "gamma0" and scene.polarizations == ("HH", "HV")
        assert (scene.calibration_factor, scene.calibration_factor_source) == (CF, "default")
        days = read_band(extracted / "N36E139_19_sl_date_F02DAR.tif")
        epoch = date(2014, 5, 24)
        assert product.acquisition_period == (
            epoch + timedelta(days=int(days[days > 0].min())),
            epoch + timedelta(days=int(days.max())),
        )
        assert scene.crs.to_epsg() == 4326
        assert scene.transform == Affine(1 / 4500, 0, 139.0, 0, -1 / 4500, 36.0)
        provenance = scene.provenance()
        assert provenance["SARLULC_SOURCE_PRODUCT_ID"] == "N36E139_19_F02DAR"
        assert provenance["SARLULC_SOURCE_BACKSCATTER"] == "gamma0"
        assert provenance["SARLULC_SOURCE_CALIBRATION_FACTOR"] == "-83.0"
        assert provenance["SARLULC_SOURCE_ACQUISITION_DATE"] == product.describe_date()


def test_gsd_agrees_with_distances_projected_by_gdal(mosaic):
    """The ground sampling distance of the lat/lon grid against neighbouring pixel centres projected to UTM."""
    with open_scene(mosaic.path) as scene:
        dx, dy = scene.pixel_size_m
        lon, lat = scene.transform @ (scene.width / 2, scene.height / 2)
        xs, ys = transform_coordinates(
            "EPSG:4326", "EPSG:32654", [lon, lon + 1 / 4500, lon], [lat, lat, lat + 1 / 4500]
        )
        # UTM distorts scale by at most 0.04 % near its central meridian (141 E; this tile is at 139 E).
        assert dx == pytest.approx(math.hypot(xs[1] - xs[0], ys[1] - ys[0]), rel=1e-3)
        assert dy == pytest.approx(math.hypot(xs[2] - xs[0], ys[2] - ys[0]), rel=1e-3)
        assert scene.gsd == pytest.approx(math.sqrt(dx * dy))
        assert 20 < dx < dy < 25  # 1/4500 degree at 36 N


def test_layover_and_shadow_are_invalid_ocean_is_valid_and_the_rule_is_an_option(mosaic, extracted):
    mask = read_band(extracted / "N36E139_19_sl_mask_F02DAR.tif")
    hh = read_band(extracted / "N36E139_19_sl_HH_F02DAR.tif")
    assert (mask == 100).sum() > 20 and (mask == 150).sum() > 20 and (mask == 50).sum() > 20  # the fixture has them
    with open_scene(mosaic.path) as scene:
        _, valid = scene.read_db()
    assert not valid[mask == 100].any() and not valid[mask == 150].any() and not valid[mask == 0].any()
    assert valid[(mask == 50) & (hh > 0)].all()
    with open_scene(mosaic.extracted, mask_invalid=("nodata",)) as scene:
        _, lenient = scene.read_db()
    assert lenient[mask == 100].all() and lenient[mask == 150].all()
    with open_scene(mosaic.extracted, mask_invalid=("nodata", "ocean", "layover", "shadow")) as scene:
        _, strict = scene.read_db()
    assert not strict[mask == 50].any() and strict[mask == 255].any()
    with pytest.raises(ValueError, match="mask_invalid"):
        open_scene(mosaic.extracted, mask_invalid=("cloud",))


def test_hh_and_hv_come_from_their_files_stacked_on_one_grid(mosaic, extracted):
    hh = read_band(extracted / "N36E139_19_sl_HH_F02DAR.tif")
    hv = read_band(extracted / "N36E139_19_sl_HV_F02DAR.tif")
    assert not np.array_equal(hh, hv)
    with open_scene(mosaic.extracted) as scene:
        raw = scene.read_raw()
        np.testing.assert_array_equal(raw[0], hh)
        np.testing.assert_array_equal(raw[1], hv)
        np.testing.assert_array_equal(scene.read_raw(Window(10, 20, 30, 40))[1], hv[20:60, 10:40])
    with open_scene(mosaic.extracted, polarizations=("HV", "HH")) as scene:
        assert scene.polarizations == ("HV", "HH") and scene.bands == (2, 1)
        np.testing.assert_array_equal(scene.read_raw()[0], hv)
    with open_scene(mosaic.extracted, polarizations=("HH",)) as scene:
        assert scene.count == 1
        np.testing.assert_array_equal(scene.read_raw()[0], hh)


def test_every_way_to_name_the_tile_opens_the_same_data(mosaic):
    names = [
        mosaic.path,
        mosaic.extracted,
        mosaic.extracted / "N36E139_19_sl_mask_F02DAR.tif",
        mosaic.path / "N36E139_19_sl_HH_F02DAR.tif",  # a path through the archive
        f"/vsitar/{mosaic.path}/N36E139_19_sl_HV_F02DAR.tif",
    ]
    reference = None
    for name in names:
        with open_scene(name) as scene:
            db, valid = scene.read_db(Window(0, 0, 96, 96))
            assert scene.product.product_id == "N36E139_19_F02DAR", name
        if reference is None:
            reference = db, valid
        np.testing.assert_array_equal(db, reference[0])
        np.testing.assert_array_equal(valid, reference[1])


def test_auxiliary_rasters(mosaic, extracted):
    days = read_band(extracted / "N36E139_19_sl_date_F02DAR.tif")
    linci = read_band(extracted / "N36E139_19_sl_linci_F02DAR.tif")
    with open_scene(mosaic.path) as scene:
        assert scene.auxiliary_names == ("date", "linci")
        window = Window(90, 0, 40, 30)
        dates = scene.read_auxiliary("date", window)
        raw = scene.read_auxiliary("date", window, raw=True)
        np.testing.assert_array_equal(raw, days[:30, 90:130])
        expected = np.datetime64(MOSAIC_DATE_EPOCHS["PALSAR-2"], "D") + days[:30, 90:130].astype("timedelta64[D]")
        known = days[:30, 90:130] > 0
        np.testing.assert_array_equal(dates[known], expected[known])
        assert np.isnat(dates[~known]).all()
        assert str(dates[known].min()) == "2019-07-01"
        np.testing.assert_array_equal(scene.read_auxiliary("linci", Window(0, 0, 50, 50)), linci[:50, :50])
        with pytest.raises(SarLulcDataError, match="no 'height' raster"):
            scene.read_auxiliary("height")


def test_pre_2019_raw_files_with_envi_headers(mosaic_2017, tmp_path):
    folder = mosaic_2017.extracted
    assert (folder / "N35E135_17_sl_HH_F02DAR.hdr").is_file() and (folder / "N35E135_17_sl_HH_F02DAR").is_file()
    header = (folder / "N35E135_17_sl_HH_F02DAR.hdr").read_text()
    assert "byte order = 0" in header and "data type = 12" in header and "Geographic Lat/Lon" in header
    # Independent read of the raw members: little-endian uint16, lines x samples.
    hh = np.fromfile(folder / "N35E135_17_sl_HH_F02DAR", dtype="<u2").reshape(160, 160)
    mask = np.fromfile(folder / "N35E135_17_sl_mask_F02DAR", dtype="u1").reshape(160, 160)
    hv = np.fromfile(folder / "N35E135_17_sl_HV_F02DAR", dtype="<u2").reshape(160, 160)
    usable = (hh > 0) & (hv > 0) & np.isin(mask, [50, 255])
    for path in (mosaic_2017.path, folder):
        with open_scene(path) as scene:
            assert scene.product.year == 2017
            assert scene.transform == Affine(1 / 4500, 0, 135.0, 0, -1 / 4500, 35.0)
            db, valid = scene.read_db()
        np.testing.assert_array_equal(valid, usable)
        np.testing.assert_allclose(db[0][usable], expected_db(hh[usable]), atol=1e-4)
    assert not any(p.name.endswith(".properties") for p in mosaic_2017.path.parent.iterdir())


# ----------------------------------------------------------------------------------------------------------------------
# Standard L1.5 / L2.1 products
# ----------------------------------------------------------------------------------------------------------------------
def test_product_id_is_parsed():
    parsed = parse_standard_product_id("IMG-HH-ALOS2146686640-170209-FBDR1.5GUA.tif")
    assert (parsed.orbit, parsed.frame, parsed.acquisition_date) == (14668, 6640, date(2017, 2, 9))
    assert (parsed.mode, parsed.look_side, parsed.level) == ("FBD", "right", "1.5")
    assert (parsed.processing, parsed.projection, parsed.orbit_direction) == ("G", "U", "ascending")
    assert (parsed.scene_id, parsed.product_code) == ("ALOS2146686640-170209", "FBDR1.5GUA")
    assert parse_standard_product_id("IMG-HV-ALOS2049273700-150422-WBDL2.1GUD").orbit_direction == "descending"
    assert parse_standard_product_id("IMG-HV-ALOS2049273700-150422-WBDL2.1GUD").look_side == "left"
    assert parse_standard_product_id("N35E139_19_sl_HH_F02DAR.tif") is None


def test_l15_product_layout_and_values(l15):
    names = sorted(p.name for p in l15.path.iterdir())
    product_id = "ALOS2146686640-170209-FBDR1.5GUA"
    assert names == sorted([f"IMG-HH-{product_id}.tif", f"IMG-HV-{product_id}.tif", "summary.txt"])
    summary = (l15.path / "summary.txt").read_text()
    for line in (
        'Scs_SceneID="ALOS2146686640-170209"',
        'Pds_ProductID="FBDR1.5GUA"',
        'Lbi_ProcessLevel="1.5"',
        f'Pdi_L15ProductFileName01="IMG-HH-{product_id}.tif"',
        'Lbi_ObservationDate="20170209"',
    ):
        assert line in summary
    with open(l15.path / f"IMG-HH-{product_id}.tif", "rb") as stream:
        assert stream.read(4) == b"II+\x00"  # BigTIFF
    hh = read_band(l15.path / f"IMG-HH-{product_id}.tif")
    hv = read_band(l15.path / f"IMG-HV-{product_id}.tif")
    usable = (hh > 0) & (hv > 0)
    for name in (l15.path, l15.path / "summary.txt"):
        with open_scene(name) as scene:
            product = scene.product
            assert (product.product_type, product.product_id, product.acquisition_date) == (
                "l1.5",
                product_id,
                date(2017, 2, 9),
            )
            assert (product.orbit, product.frame, product.mode, product.level) == (14668, 6640, "FBD", "1.5")
            assert (product.look_side, product.orbit_direction) == ("right", "ascending")
            assert scene.backscatter == "sigma0" and scene.polarizations == ("HH", "HV")
            assert scene.gsd == pytest.approx(10.0) and scene.crs.to_epsg() == 32654
            db, valid = scene.read_db()
        np.testing.assert_array_equal(valid, usable)
        np.testing.assert_allclose(db[1][usable], expected_db(hv[usable]), atol=1e-4)
    with open_scene(l15.path / f"IMG-HV-{product_id}.tif") as scene:  # one image file: that polarization
        assert scene.polarizations == ("HV",)
        np.testing.assert_array_equal(scene.read_raw()[0], hv)


def test_l21_and_a_calibration_factor_tag(tmp_path):
    product = generate_product(
        tmp_path, "l15", size=96, level="2.1", polarizations=("HH",), calibration_factor=-80.0, progress=False
    )
    assert product.product_id.endswith("FBSR2.1GUA")
    with open_scene(product.path) as scene:
        assert scene.product.product_type == "l2.1" and scene.polarizations == ("HH",)
        assert (scene.calibration_factor, scene.calibration_factor_source) == (-80.0, "tag")
        hh = read_band(next(product.path.glob("IMG-HH-*.tif")))
        db, valid = scene.read_db()
        np.testing.assert_allclose(db[0][valid], expected_db(hh[valid], -80.0), atol=1e-4)
    with open_scene(product.path, calibration_factor=-81.5) as scene:
        assert (scene.calibration_factor, scene.calibration_factor_source) == (-81.5, "argument")


def test_reopen_is_an_independent_handle_with_the_same_settings(mosaic):
    with open_scene(mosaic.path, polarizations=("HV",), mask_invalid=("nodata",), calibration_factor=-82.0) as scene:
        twin = scene.reopen()
    try:
        assert scene.closed and not twin.closed
        assert (twin.polarizations, twin.mask_invalid, twin.calibration_factor) == (("HV",), ("nodata",), -82.0)
        assert twin.calibration_factor_source == "argument" and twin.product == scene.product
        assert twin.read_db(Window(0, 0, 16, 16))[0].shape == (1, 16, 16)
    finally:
        twin.close()


def test_plain_geotiffs_know_their_tags_and_bands(tmp_path):
    data = np.full((2, 32, 32), 3000, dtype=np.uint16)
    tagged = write_raster(
        tmp_path / "tagged.tif",
        data,
        crs=UTM_CRS,
        transform=UTM_TRANSFORM,
        tags={"SARLULC_BACKSCATTER": "gamma0", "SARLULC_POLARIZATIONS": "HV,HH"},
    )
    with open_scene(tagged) as scene:
        assert scene.backscatter == "gamma0" and scene.polarizations == ("HV", "HH")
        assert scene.product == ProductInfo("geotiff", "tagged.tif", files=(str(tagged),))
        assert scene.gsd == pytest.approx(10.0)
    with open_scene(tagged, polarizations=("HH",)) as scene:
        assert scene.bands == (2,)
    plain = write_raster(tmp_path / "plain.tif", data[:1], crs=UTM_CRS, transform=UTM_TRANSFORM)
    with open_scene(plain) as scene:
        assert scene.backscatter is None and scene.polarizations == ("HH",)
        assert scene.provenance()["SARLULC_SOURCE_PRODUCT_TYPE"] == "geotiff"
    with pytest.raises(SarLulcDataError, match="HV requested but missing"):
        open_scene(plain, polarizations=("HV",))
    with pytest.raises(ValueError, match="name different bands"):
        open_scene(tagged, bands=(1,), polarizations=("HH",))
    # HH's tags copied onto an HH + HV stack: the tag says less than the bands, which are then read by position.
    stacked = write_raster(
        tmp_path / "stacked.tif", data, crs=UTM_CRS, transform=UTM_TRANSFORM, tags={"SARLULC_POLARIZATIONS": "HH"}
    )
    with open_scene(stacked) as scene:
        assert scene.polarizations == ("HH", "HV")


def test_find_products_lists_each_product_once(mosaic, l15, tmp_path):
    shutil.copytree(mosaic.path.parent, tmp_path / "a")
    shutil.copytree(l15.path.parent, tmp_path / "b")
    found = find_products(tmp_path)
    assert found == sorted(
        [
            str(tmp_path / "a" / mosaic.path.name),
            str(tmp_path / "a" / "N36E139_19" / "N36E139_19_sl_HH_F02DAR.tif"),
            str(tmp_path / "b" / l15.path.name),
        ]
    )


# ----------------------------------------------------------------------------------------------------------------------
# Bad inputs: one SarLulcDataError naming the file and the problem, nothing left behind
# ----------------------------------------------------------------------------------------------------------------------
def fails_cleanly(path, match: str, folder: Path, **options) -> None:
    before = listing(folder)
    with pytest.raises(SarLulcDataError, match=match) as caught:
        open_scene(path, **options)
    assert listing(folder) == before
    return str(caught.value)


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # L1.1 is in slant range
def test_l11_products_are_refused(tmp_path):
    folder = tmp_path / "0000000001_001001_ALOS2146686640-170209"
    folder.mkdir()
    slc = np.ones((1, 16, 16), dtype=np.complex64)
    write_raster(
        folder / "IMG-HH-ALOS2146686640-170209-FBDR1.1__A.tif", slc.astype("complex64"), crs=None, transform=None
    )
    (folder / "summary.txt").write_text('Lbi_ProcessLevel="1.1"\n')
    message = fails_cleanly(folder, r"level 1\.1 product; it is single-look complex", tmp_path)
    assert str(folder) in message and "ALOS2146686640-170209-FBDR1.1__A" in message
    # The same data in a GeoTIFF of another name: refused by its complex type.
    plain = write_raster(tmp_path / "slc.tif", np.ones((1, 8, 8), dtype=np.complex64))
    fails_cleanly(plain, "complex single-look data", tmp_path)


def test_unknown_file_naming_is_refused(tmp_path):
    folder = tmp_path / "download"
    folder.mkdir()
    write_raster(folder / "N36E139_19_sl_HX_F02DAR.tif", np.ones((1, 8, 8), np.uint16))
    write_raster(folder / "HH_image.tif", np.ones((1, 8, 8), np.uint16))
    message = fails_cleanly(folder, "holds no product sarlulc recognizes", tmp_path)
    assert "unknown file naming" in message and "HH_image.tif" in message


def test_missing_hv_is_reported(mosaic, tmp_path):
    folder = tmp_path / "N36E139_19"
    shutil.copytree(mosaic.extracted, folder)
    (folder / "N36E139_19_sl_HV_F02DAR.tif").unlink()
    message = fails_cleanly(folder, "HV requested but missing", tmp_path, polarizations=("HH", "HV"))
    assert str(folder) in message and "it has HH" in message
    with open_scene(folder) as scene:  # without asking, the tile is read as HH alone
        assert scene.polarizations == ("HH",)


def test_hv_listed_in_summary_but_missing(l15, tmp_path):
    folder = tmp_path / l15.path.name
    shutil.copytree(l15.path, folder)
    hv = next(folder.glob("IMG-HV-*"))
    hv.unlink()
    fails_cleanly(folder, f"summary.txt lists {hv.name} but the file is missing", tmp_path)


def test_a_mask_on_another_grid_is_refused(mosaic, tmp_path):
    folder = tmp_path / "N36E139_19"
    shutil.copytree(mosaic.extracted, folder)
    mask_path = folder / "N36E139_19_sl_mask_F02DAR.tif"
    mask = read_band(mask_path)
    shifted = Affine(1 / 4500, 0, 139.01, 0, -1 / 4500, 36.0)
    write_raster(mask_path, mask, transform=shifted)
    message = fails_cleanly(folder, "mask file .* is on another grid than the image files", tmp_path)
    assert str(mask_path) in message and "transform" in message


def test_a_corrupt_archive_is_refused(mosaic, tmp_path):
    broken = tmp_path / mosaic.path.name
    data = mosaic.path.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    message = fails_cleanly(broken, "corrupt or truncated", tmp_path)
    assert str(broken) in message
    garbage = tmp_path / "N40E135_18_MOS_F02DAR.tar.gz"
    garbage.write_bytes(b"this is no gzip stream" * 10)
    fails_cleanly(garbage, "corrupt or truncated", tmp_path)


def archive_with_mask(mosaic, folder: Path, mask: np.ndarray) -> Path:
    """The mosaic tile re-archived as JAXA ships it, with ``mask`` as its ``_mask_`` file."""
    tile = folder / "tile"
    shutil.copytree(mosaic.extracted, tile)
    with rasterio.open(tile / "N36E139_19_sl_mask_F02DAR.tif", "r+") as dataset:
        dataset.write(mask, 1)
    archive = folder / mosaic.path.name
    with tarfile.open(archive, "w:gz") as handle:
        for file in sorted(tile.iterdir()):
            handle.add(file, arcname=file.name)
    shutil.rmtree(tile)
    return archive


def test_an_archive_is_checked_for_valid_pixels_by_a_forward_scan(mosaic, tmp_path, monkeypatch):
    # Inside a .tar.gz a decimated read would decompress every file once more: the check scans rows forward instead
    # and must still find the only valid rows at the bottom, and refuse a tile without any.
    monkeypatch.setattr("sarlulc.data.scene.CHECK_SCAN_PIXELS", 16 * 200)  # 16-row bands of the 200 px tile
    decimated_reads = []
    original = ProductScene._read_decimated
    monkeypatch.setattr(
        ProductScene, "_read_decimated", lambda self, shape: decimated_reads.append(shape) or original(self, shape)
    )
    mask = read_band(mosaic.extracted / "N36E139_19_sl_mask_F02DAR.tif")
    assert (mask == 255).any()
    bottom = np.where(np.arange(200)[:, None] >= 195, mask, 0).astype(np.uint8)
    bottom[199, 0] = 255  # at least one valid pixel, whatever the synthetic mask holds there
    rows = tmp_path / "bottom"
    rows.mkdir()
    with open_scene(archive_with_mask(mosaic, rows, bottom)) as scene:
        _, valid = scene.read_db()
    assert valid[199, 0] and not valid[:195].any()
    assert decimated_reads == []
    empty = tmp_path / "empty"
    empty.mkdir()
    message = fails_cleanly(archive_with_mask(mosaic, empty, np.zeros_like(mask)), "no valid pixel", empty)
    assert mosaic.path.name in message
    assert decimated_reads == []
    # Negative control: the extracted files are checked with the decimated read.
    with open_scene(mosaic.extracted):
        pass
    assert len(decimated_reads) == 1


def test_an_archive_with_several_tiles_needs_a_choice(mosaic, tmp_path):
    archive = tmp_path / "N40E135_19_MOS_F02DAR.tar.gz"
    with tarfile.open(archive, "w:gz") as handle:
        for file in sorted(mosaic.extracted.iterdir()):
            handle.add(file, arcname=file.name)
            handle.add(file, arcname=file.name.replace("N36E139", "N37E139"))
    fails_cleanly(archive, "holds 2 mosaic tiles .* choose one", tmp_path)
    with open_scene(archive, tile="N37E139") as scene:
        assert scene.product.tile == "N37E139"
    with open_scene(archive / "N36E139_19_sl_HH_F02DAR.tif") as scene:
        assert scene.product.tile == "N36E139"


def test_ceos_deliveries_go_through_gdal_sar_ceos(tmp_path):
    assert ceos_available()  # the GDAL of this environment has the driver
    folder = tmp_path / "ceos"
    folder.mkdir()
    for name in (
        "VOL-ALOS2146686640-170209-FBDR1.5GUD",
        "LED-ALOS2146686640-170209-FBDR1.5GUD",
        "IMG-HH-ALOS2146686640-170209-FBDR1.5GUD",
    ):
        (folder / name).write_bytes(b"\0" * 720)
    layout = recognize(folder)
    assert layout.product_type == "ceos" and layout.driver == "SAR_CEOS" and layout.backscatter == "sigma0"
    # A file of the right name that is no CEOS image: GDAL's SAR_CEOS driver refuses it, and the error says which.
    message = fails_cleanly(
        folder, "HH image file .*IMG-HH-ALOS2146686640-170209-FBDR1.5GUD cannot be opened", tmp_path
    )
    assert "raster" in message
    (folder / "IMG-HH-ALOS2146686640-170209-FBDR1.5GUD").rename(folder / "IMG-HH-ALOS2146686640-170209-FBDR1.1__D")
    fails_cleanly(folder, r"level 1\.1", tmp_path)


# ----------------------------------------------------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------------------------------------------------
def test_info_reports_every_readable_path_and_one_line_for_a_bad_one(mosaic, l15, tmp_path, capsys):
    missing = tmp_path / "nowhere.tif"
    status = main(["info", str(mosaic.path), str(missing), str(l15.path), str(l15.labels)])
    out, err = capsys.readouterr()
    assert status == 2
    assert err.strip().splitlines() == [f"sarlulc info: error: scene {missing} does not exist"]
    blocks = out.strip().split("\n\n")
    assert [block.splitlines()[0] for block in blocks] == [str(mosaic.path), str(l15.path), str(l15.labels)]
    assert "gamma0" in blocks[0] and "-83 dB (default)" in blocks[0] and "2019-07-01/2019-08-16" in blocks[0]
    assert "layover" in blocks[0] and "valid fraction" in blocks[0]
    assert "sigma0" in blocks[1] and "2017-02-09" in blocks[1] and "EPSG:32654" in blocks[1] and "10.00 m" in blocks[1]
    assert "version 23.12" in blocks[2] and "LC_N35E139" in blocks[2]
    assert main(["info", str(mosaic.path)]) == 0


def test_synth_product_writes_the_layout(tmp_path, capsys):
    assert (
        main(
            ["synth", "--product", "mosaic", "--size", "96", "--year", "2018", "--out", str(tmp_path), "--no-progress"]
        )
        == 0
    )
    assert (tmp_path / "N40E135_18_MOS_F02DAR.tar.gz").is_file()
    assert (tmp_path / "N36E139_18" / "N36E139_18_sl_HH_F02DAR.hdr").is_file()
    assert (tmp_path / "JAXA_HRLULC_Japan_v23.12" / "LC_N35E139.tif").is_file()
    assert main(["synth", "--product", "l15", "--crs", "utm", "--out", str(tmp_path)]) == 2
    assert "--crs applies to --product scene" in capsys.readouterr().err
    assert main(["synth", "--product", "mosaic", "--year", "2010", "--size", "96", "--out", str(tmp_path / "x")]) == 2


def test_a_zipped_l15_delivery_is_read_in_place(l15, tmp_path):
    delivery = tmp_path / f"{l15.path.name}.zip"
    with zipfile.ZipFile(delivery, "w") as archive:
        for file in sorted(l15.path.iterdir()):
            archive.write(file, arcname=f"{l15.path.name}/{file.name}")
    before = listing(tmp_path)
    with open_scene(delivery) as zipped, open_scene(l15.path) as loose:
        assert zipped.product.product_id == loose.product.product_id and zipped.product.product_type == "l1.5"
        assert all(path.startswith("/vsizip/") for path in zipped.product.files)
        np.testing.assert_array_equal(zipped.read_raw(), loose.read_raw())
    assert listing(tmp_path) == before


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # GCPs are written after creation
def test_a_ceos_image_georeferenced_by_gcps_is_read_through_a_north_up_warp(tmp_path):
    """The GCP branch of CEOS images, on a GeoTIFF with GCPs standing in for a SAR_CEOS image (no CEOS sample file)."""
    folder = tmp_path / "ceos"
    folder.mkdir()
    for name in ("VOL-ALOS2146686640-170209-FBDR1.5GUD", "IMG-HH-ALOS2146686640-170209-FBDR1.5GUD"):
        (folder / name).write_bytes(b"\0")
    dn = np.arange(1, 41 * 41 + 1, dtype=np.uint16).reshape(41, 41)
    gcp_image = tmp_path / "gcps.tif"
    with rasterio.open(gcp_image, "w", driver="GTiff", width=41, height=41, count=1, dtype="uint16") as dst:
        dst.write(dn, 1)
        # A north-up grid of 0.001 degree pixels from (139.0 E, 36.0 N), told by its four corners.
        corners = [(0, 0), (0, 41), (41, 0), (41, 41)]
        dst.gcps = (
            [
                rasterio.control.GroundControlPoint(row, col, 139.0 + 0.001 * col, 36.0 - 0.001 * row)
                for row, col in corners
            ],
            rasterio.crs.CRS.from_epsg(4326),
        )
    layout = replace(recognize(folder), band_files=(("HH", str(gcp_image)),), driver=None)
    with ProductScene(layout) as scene:
        assert scene.crs.to_epsg() == 4326 and scene.transform.a == pytest.approx(0.001, rel=1e-3)
        raw = scene.read_raw()[0]
        # Nearest neighbour keeps the DNs; the centre of the warped grid is the centre of the image.
        assert set(np.unique(raw)) - {0} <= set(dn.ravel())
        centre = raw[scene.height // 2, scene.width // 2]
        assert centre == dn[20, 20]


def test_scene_sources_of_a_folder_mix_products_and_geotiffs(mosaic, tmp_path):
    from sarlulc.data.synthetic import generate_scene
    from sarlulc.data.tiles import find_scene_sources

    shutil.copy(mosaic.path, tmp_path / mosaic.path.name)
    shutil.copytree(mosaic.extracted, tmp_path / "tile" / mosaic.extracted.name)
    generate_scene(tmp_path, 64, seed=1, progress=False)  # scene.tif + labels.tif next to the archive
    sources = find_scene_sources(tmp_path)
    assert [(Path(s.scene).relative_to(tmp_path).as_posix(), s.labels is not None) for s in sources] == [
        (mosaic.path.name, False),
        ("scene.tif", True),
        (f"tile/{mosaic.extracted.name}/N36E139_19_sl_HH_F02DAR.tif", False),
    ]
