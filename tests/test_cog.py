"""COG finalization (sarlulc.inference.cog): layout, overviews that keep class maps categorical, metadata kept."""

from __future__ import annotations

import numpy as np
import rasterio
from rio_cogeo.cogeo import cog_validate

from helpers_rasters import UTM_CRS, UTM_TRANSFORM
from sarlulc.inference.cog import finalize_cog

CLASS_IDS = {0, 3, 7, 255}


def write_class_map(path, height=1100, width=1300, seed=0, colours=True):
    rng = np.random.default_rng(seed)
    classes = rng.choice([0, 3, 7], size=(height, width)).astype(np.uint8)
    classes[:, :200] = 255
    profile = dict(driver="GTiff", height=height, width=width, count=1, dtype="uint8", crs=UTM_CRS)
    profile.update(transform=UTM_TRANSFORM, tiled=True, blockxsize=256, blockysize=256, compress="deflate", nodata=255)
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(classes, 1)
        if colours:
            dataset.write_colormap(1, {0: (10, 20, 30, 255), 3: (40, 50, 60, 255), 7: (70, 80, 90, 255)})
        dataset.set_band_description(1, "class id")
        dataset.update_tags(SARLULC_MODEL="tiny", SARLULC_SCENE="scene.tif")
        dataset.update_tags(1, CLASS_0="Water", CLASS_3="Forest", CLASS_7="Urban")
    return classes


def write_probabilities(path, classes):
    profile = dict(driver="GTiff", height=classes.shape[0], width=classes.shape[1], count=2, dtype="uint8")
    profile.update(crs=UTM_CRS, transform=UTM_TRANSFORM, tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(np.stack([classes, 255 - classes]))
        dataset.write_mask(np.where(classes == 255, 0, 255).astype(np.uint8))
        dataset.scales, dataset.offsets = (1 / 255,) * 2, (0.0,) * 2
        dataset.set_band_description(2, "probability of Forest x 255")


def test_cog_layout_overviews_and_metadata(tmp_path):
    classes = write_class_map(tmp_path / ".map.gtiff.tif")
    write_probabilities(tmp_path / ".map_probabilities.gtiff.tif", classes)
    sources = {"probabilities": tmp_path / ".map_probabilities.gtiff.tif", "classes": tmp_path / ".map.gtiff.tif"}
    finals = {"probabilities": tmp_path / "map_probabilities.tif", "classes": tmp_path / "map.tif"}
    finalize_cog(sources, finals, overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.tif", "map_probabilities.tif"]  # sources removed

    for path in finals.values():
        valid, errors, warnings = cog_validate(str(path), quiet=True)  # IFDs first, overviews ordered, tiled
        assert valid and not warnings, (errors, warnings)
    with rasterio.open(finals["classes"]) as dataset:
        assert dataset.block_shapes == [(512, 512)] and dataset.compression.name == "deflate"
        assert dataset.overviews(1) == [2, 4]
        np.testing.assert_array_equal(dataset.read(1), classes)
        for factor in dataset.overviews(1):
            shape = (-(-dataset.height // factor), -(-dataset.width // factor))
            overview = dataset.read(1, out_shape=shape)
            assert set(np.unique(overview)) <= CLASS_IDS  # categorical: MODE never invents a value
        assert dataset.colormap(1)[3] == (40, 50, 60, 255) and dataset.nodata == 255
        assert dataset.descriptions == ("class id",) and dataset.tags()["SARLULC_MODEL"] == "tiny"
        assert dataset.tags(1)["CLASS_7"] == "Urban"
    with rasterio.open(finals["probabilities"]) as dataset:
        assert dataset.scales == (1 / 255,) * 2 and dataset.descriptions[1] == "probability of Forest x 255"
        np.testing.assert_array_equal(dataset.dataset_mask() == 0, classes == 255)
        averaged = dataset.read(1, out_shape=(dataset.height // 4, dataset.width // 4))
        assert not set(np.unique(averaged)) <= CLASS_IDS  # probabilities are averaged


def test_averaging_a_class_map_would_invent_classes(tmp_path):
    """Negative control of the categorical check above: AVERAGE overviews of the same ids hold non-class values.
    (Without the colour table: GDAL averages a paletted band in colour space and snaps to the palette.)"""
    classes = write_class_map(tmp_path / "map.tif", colours=False)
    with rasterio.open(tmp_path / "map.tif", "r+") as dataset:
        dataset.build_overviews([4], rasterio.enums.Resampling.average)
    with rasterio.open(tmp_path / "map.tif") as dataset:
        overview = dataset.read(1, out_shape=(classes.shape[0] // 4, classes.shape[1] // 4))
    assert not set(np.unique(overview)) <= CLASS_IDS


def test_an_existing_map_is_kept_and_nothing_is_left_behind(tmp_path):
    write_class_map(tmp_path / ".map.gtiff.tif", 300, 300)
    (tmp_path / "map.tif").write_bytes(b"existing")
    try:
        finalize_cog({"classes": tmp_path / ".map.gtiff.tif"}, {"classes": tmp_path / "map.tif"}, overwrite=False)
    except FileExistsError as err:
        assert "already exists" in str(err)
    else:
        raise AssertionError("an existing map was replaced without overwrite")
    assert (
        sorted(p.name for p in tmp_path.iterdir()) == ["map.tif"] and (tmp_path / "map.tif").read_bytes() == b"existing"
    )
