"""JAXA HRLULC labels: the v21.11 / v23.12 class schemes, a folder of LC_N{lat}E{lon}.tif tiles read as one mosaic and
warped onto a scene's grid, the seams between tiles checked pixel by pixel against an independent lookup, and labels
from tiles in the tile datasets of products."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine
from rasterio.warp import transform as transform_coordinates
from rasterio.windows import Window

from helpers_rasters import write_raster
from sarlulc.data import HRLULC_V21_11, HRLULC_V23_12, JAXA_14, LULC_9, get_scheme, open_labels, open_scene
from sarlulc.data.classes import HRLULC_V21_11_CLASSES, HRLULC_V23_12_CLASSES, hrlulc_scheme
from sarlulc.data.labels import LabelMosaic, detect_hrlulc_version, open_label_tiles
from sarlulc.data.synthetic_products import generate_product
from sarlulc.data.tiles import iter_tiles
from sarlulc.errors import SarLulcDataError


@pytest.fixture(scope="module")
def l15(tmp_path_factory):
    """A UTM scene centred on 140 E, 36 N: it straddles four HRLULC tiles."""
    return generate_product(tmp_path_factory.mktemp("l15"), "l15", size=256, seed=0, progress=False)


def lookup(grid, folder: Path, *, cell=np.floor) -> np.ndarray:
    """The code under every pixel centre of ``grid`` (a scene), found without GDAL's warper: the centre's longitude and
    latitude, the 1 x 1 degree tile ``LC_N{cell(lat)}E{cell(lon)}.tif`` (``np.floor``: named after its south-west
    corner), and the pixel of that tile's raster that contains it (0 outside every tile)."""
    height, width = grid.shape
    rows, cols = np.mgrid[0:height, 0:width]
    xs, ys = grid.transform @ (cols.ravel() + 0.5, rows.ravel() + 0.5)
    lons, lats = (np.asarray(v) for v in transform_coordinates(grid.crs, "EPSG:4326", xs, ys))
    tile_lats, tile_lons = cell(lats).astype(int), cell(lons).astype(int)
    codes = np.zeros(lons.shape, np.uint8)
    for lat0, lon0 in set(zip(tile_lats.tolist(), tile_lons.tolist())):
        path = folder / f"LC_N{lat0}E{lon0}.tif"
        if not path.exists():
            continue
        with rasterio.open(path) as tile:
            data = tile.read(1)
            west, north, res = tile.transform.c, tile.transform.f, tile.transform.a
        here = np.flatnonzero((tile_lats == lat0) & (tile_lons == lon0))
        r = np.floor((north - lats[here]) / res).astype(int)
        c = np.floor((lons[here] - west) / res).astype(int)
        inside = (r >= 0) & (r < data.shape[0]) & (c >= 0) & (c < data.shape[1])
        codes[here[inside]] = data[r[inside], c[inside]]
    return codes.reshape(height, width)


# ----------------------------------------------------------------------------------------------------------------------
# The schemes
# ----------------------------------------------------------------------------------------------------------------------
def test_hrlulc_schemes_encode_their_codes():
    codes = np.arange(0, 17, dtype=np.uint8)
    v21 = HRLULC_V21_11.encode(codes)
    assert v21.tolist() == [255, *range(12), 255, 255, 255, 255]
    v23 = HRLULC_V23_12.encode(codes)
    assert v23.tolist() == [255, *range(14), 255, 255]
    assert HRLULC_V21_11.names == list(HRLULC_V21_11_CLASSES.values())
    assert HRLULC_V23_12.names[:12] == HRLULC_V21_11.names
    assert HRLULC_V23_12.names[12:] == ["Wetland", "Greenhouse"]
    assert HRLULC_V23_12.water_id == 0 and HRLULC_V23_12.names[0] == "Water bodies"
    assert hrlulc_scheme("v23.12") is HRLULC_V23_12 and get_scheme("jaxa-hrlulc-v21.11") is HRLULC_V21_11
    assert len(HRLULC_V23_12_CLASSES) == 14 and len(set(HRLULC_V23_12.colors)) == 14
    with pytest.raises(ValueError, match="unknown HRLULC version"):
        hrlulc_scheme("25.01")


def test_jaxa_14_and_lulc_9_keep_working_on_both_versions():
    codes = np.arange(0, 15, dtype=np.uint8)
    np.testing.assert_array_equal(JAXA_14.encode(codes), HRLULC_V23_12.encode(codes))  # same codes, same ids
    assert JAXA_14.names != HRLULC_V23_12.names  # its own (shorter) names: the checkpoints trained with it keep them
    # lulc-9 maps v21.11's twelve codes as before; v23.12's wetland and greenhouse join grassland and built-up.
    assert LULC_9.encode(np.array([13, 14], np.uint8)).tolist() == [
        LULC_9.label2id["Grassland"],
        LULC_9.label2id["Built-up"],
    ]


# ----------------------------------------------------------------------------------------------------------------------
# Tiles, mosaic, seams
# ----------------------------------------------------------------------------------------------------------------------
def test_synthetic_tiles_are_named_after_their_south_west_corner(l15):
    names = sorted(p.name for p in l15.labels.iterdir())
    assert names == ["LC_N35E139.tif", "LC_N35E140.tif", "LC_N36E139.tif", "LC_N36E140.tif"]
    for path in l15.labels.iterdir():
        lat, lon = int(path.stem[4:6]), int(path.stem[7:10])
        with rasterio.open(path) as tile:
            assert tile.crs.to_epsg() == 4326 and tile.dtypes[0] == "uint8" and tile.nodata == 0
            assert tile.res == pytest.approx((1 / 12000, 1 / 12000))
            west, south, east, north = tile.bounds
            assert lon <= west < east <= lon + 1 and lat <= south < north <= lat + 1, path.name
            # On the cell's 12000 x 12000 grid, anchored at its north-west corner.
            assert (west - lon) * 12000 == pytest.approx(round((west - lon) * 12000), abs=1e-6)
            assert (lat + 1 - north) * 12000 == pytest.approx(round((lat + 1 - north) * 12000), abs=1e-6)


def test_a_scene_across_four_tiles_gets_the_right_code_on_both_sides_of_every_seam(l15):
    before = sorted(p.name for p in l15.labels.iterdir())
    with open_scene(l15.path) as scene, open_labels(l15.labels, like=scene) as labels:
        assert isinstance(labels, LabelMosaic) and labels.reprojected
        assert labels.version == "23.12" and labels.scheme is HRLULC_V23_12
        assert (labels.crs, labels.transform, labels.shape) == (scene.crs, scene.transform, scene.shape)
        warped = labels.read_labels()
        expected = lookup(scene, l15.labels)
        # Which tile each pixel's centre falls in, to see that every tile (both sides of both seams) contributes.
        rows, cols = np.mgrid[0 : scene.height, 0 : scene.width]
        xs, ys = scene.transform @ (cols.ravel() + 0.5, rows.ravel() + 0.5)
        lons, lats = (np.asarray(v).reshape(scene.shape) for v in transform_coordinates(scene.crs, "EPSG:4326", xs, ys))
    np.testing.assert_array_equal(warped, expected)
    for lat0 in (35, 36):
        for lon0 in (139, 140):
            quadrant = (np.floor(lats) == lat0) & (np.floor(lons) == lon0)
            assert (warped[quadrant] > 0).mean() > 0.5, (lat0, lon0)
    assert sorted(p.name for p in l15.labels.iterdir()) == before  # the VRT lives in memory
    # Negative control: tiles looked up by their north-east corner (the wrong convention) disagree across the seams.
    assert (lookup(l15, l15.labels, cell=np.ceil) != expected).mean() > 0.3


def test_windows_of_the_warped_mosaic_match_the_whole(l15):
    with open_scene(l15.path) as scene, open_labels(l15.labels, like=scene) as labels:
        whole = labels.read_labels()
        window = Window(100, 90, 80, 70)
        np.testing.assert_array_equal(labels.read_labels(window), whole[90:160, 100:180])
        outside = labels.read_labels(Window(230, 230, 40, 40))  # reaches past the scene: nodata there
        assert (outside[26:, :] == 0).all() and (outside[:, 26:] == 0).all()


def test_a_label_folder_alone_is_the_mosaic_of_its_tiles(l15):
    with open_label_tiles(l15.labels) as labels:
        assert not labels.reprojected and len(labels.tiles) == 4
        assert labels.crs.to_epsg() == 4326 and labels.transform.a == pytest.approx(1 / 12000)
        mosaic = labels.read_labels()
        for path in l15.labels.iterdir():
            with rasterio.open(path) as tile:
                col = round((tile.transform.c - labels.transform.c) * 12000)
                row = round((labels.transform.f - tile.transform.f) * 12000)
                np.testing.assert_array_equal(mosaic[row : row + tile.height, col : col + tile.width], tile.read(1))


def test_the_version_comes_from_the_folder_name_or_is_given(l15, tmp_path):
    assert detect_hrlulc_version(l15.labels) == "23.12"
    renamed = tmp_path / "LC_tiles"
    shutil.copytree(l15.labels, renamed)
    assert detect_hrlulc_version(renamed) is None
    with open_label_tiles(renamed) as labels:
        assert labels.version is None and labels.scheme is None
    with open_label_tiles(renamed, version="21.11") as labels:
        assert labels.version == "21.11" and labels.scheme is HRLULC_V21_11
    future = tmp_path / "JAXA_HRLULC_Japan_v26.01"
    shutil.copytree(l15.labels, future)
    with pytest.raises(SarLulcDataError, match=r"unknown HRLULC version '26\.01'"):
        open_label_tiles(future)
    with pytest.raises(ValueError, match="unknown HRLULC version"):
        open_label_tiles(renamed, version="9.9")


def test_a_folder_without_tiles_covering_the_scene_is_refused(l15, tmp_path):
    folder = tmp_path / "JAXA_HRLULC_Japan_v23.12"
    folder.mkdir()
    far = Affine(1 / 12000, 0, 130.0, 0, -1 / 12000, 34.0)  # south-west Japan, far from the scene at 140 E
    write_raster(folder / "LC_N33E130.tif", np.ones((1, 50, 50), np.uint8), transform=far, nodata=0)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with open_scene(l15.path) as scene, pytest.raises(SarLulcDataError, match="has no tile covering scene") as caught:
        open_labels(folder, like=scene)
    assert str(folder) in str(caught.value) and str(l15.path) in str(caught.value) and "LC_N33E130" in str(caught.value)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    empty = tmp_path / "empty_v23.12"
    empty.mkdir()
    (empty / "README.txt").write_text("no tiles")
    with pytest.raises(SarLulcDataError, match="holds no HRLULC tile"):
        open_label_tiles(empty)


def test_tiles_off_one_grid_are_refused(l15, tmp_path):
    folder = tmp_path / "JAXA_HRLULC_Japan_v23.12"
    shutil.copytree(l15.labels, folder)
    path = folder / "LC_N36E140.tif"
    with rasterio.open(path) as tile:
        data, transform = tile.read(1), tile.transform
    write_raster(path, data, transform=transform @ Affine.translation(0.5, 0.0), nodata=0)
    with pytest.raises(SarLulcDataError, match="off the pixel grid"):
        open_label_tiles(folder)


# ----------------------------------------------------------------------------------------------------------------------
# Tiling products with labels from tiles
# ----------------------------------------------------------------------------------------------------------------------
def test_product_tiles_carry_warped_labels_and_the_product_id(l15):
    tiles = list(iter_tiles(l15.path, labels=l15.labels, tile_size=64, scheme="jaxa-hrlulc-v23.12", progress=False))
    assert tiles and {t["product_id"] for t in tiles} == {"ALOS2146686640-170209-FBDR1.5GUA"}
    with open_scene(l15.path) as scene:
        expected = HRLULC_V23_12.encode(lookup(scene, l15.labels))
        _, valid = scene.read_db()
    expected[~valid] = 255
    for tile in tiles:
        rows = slice(tile["row_off"], tile["row_off"] + 64)
        cols = slice(tile["col_off"], tile["col_off"] + 64)
        np.testing.assert_array_equal(tile["label"], expected[rows, cols])
    assert len({int(v) for t in tiles for v in np.unique(t["label"])} - {255}) >= 5


def test_training_data_from_a_folder_of_products_and_a_label_folder(l15, tmp_path):
    from sarlulc.data.tiles import SpatialSplit
    from sarlulc.errors import UsageError
    from sarlulc.training.batches import check_tile_arguments, load_tile_splits
    from sarlulc_cli.arguments import TileArguments

    data = tmp_path / "downloads"
    data.mkdir()
    shutil.copytree(l15.path, data / l15.path.name)
    with pytest.raises(UsageError, match=r"--labels .* does not exist"):
        check_tile_arguments(TileArguments(train_data=str(data), labels=str(tmp_path / "missing")))
    options = dict(
        scheme=get_scheme("lulc-9"),
        split=SpatialSplit(group_size=1, seed=0),
        tile_size=64,
        labels=l15.labels,
        cache_dir=tmp_path / "cache",
        progress=False,
    )
    splits = load_tile_splits(data, **options)
    rows = [row for split in splits.values() for row in split.select_columns(["product_id", "label"])]
    assert rows and {row["product_id"] for row in rows} == {"ALOS2146686640-170209-FBDR1.5GUA"}
    assert all((np.asarray(row["label"]) != 255).any() for row in rows)
    # A product the label tiles do not cover is a data error naming it, before any tile is built.
    mosaic = generate_product(data / "mosaic", "mosaic", size=96, seed=3, progress=False)
    shutil.rmtree(mosaic.labels)
    with pytest.raises(SarLulcDataError, match=r"has no tile covering scene .*N36E136_19"):
        load_tile_splits(data, **options)
