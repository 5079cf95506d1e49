"""Tile datasets: content, padding, filtering, round trips, streaming order, spatial splits and statistics."""

import datasets
import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from helpers_rasters import UTM_CRS, UTM_TRANSFORM, north_up, write_raster
from sarlulc.data import SarLulcDataError, open_scene
from sarlulc.data.classes import IGNORE_INDEX, LULC_9, WATER
from sarlulc.data.synthetic import generate_scene
from sarlulc.data.tiles import (
    BandStatistics,
    ClassFrequencies,
    SceneSource,
    SpatialSplit,
    band_statistics,
    class_frequencies,
    find_scene_sources,
    iter_tiles,
    label_scheme,
    split_tile_dataset,
    tile_dataset,
    tile_windows,
)

COLUMNS = ["image", "valid_mask", "label", "crs", "transform", "row_off", "col_off", "scene", "product_id"]


@pytest.fixture(autouse=True)
def hf_cache(tmp_path, monkeypatch):
    """Keep every datasets cache inside the test's temporary folder."""
    cache = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(cache))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache / "datasets"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache / "datasets")
    return cache


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A 500 x 500 synthetic scene (not a multiple of the tile sizes used: edge tiles are padded)."""
    return generate_scene(tmp_path_factory.mktemp("tiles"), size=500, seed=5, progress=False)


@pytest.fixture(scope="module")
def scene_arrays(synthetic):
    with open_scene(synthetic.scene) as scene:
        db, valid = scene.read_db()
    with rasterio.open(synthetic.labels) as src:
        codes = src.read(1)
    return db, valid, codes


COLUMN_DTYPES = {
    "image": np.float32,
    "valid_mask": np.uint8,
    "label": np.uint8,
    "crs": np.str_,
    "transform": np.float64,
    "row_off": np.int64,
    "col_off": np.int64,
    "scene": np.str_,
    "product_id": np.str_,
}


def as_rows(examples):
    """Examples as dicts of numpy arrays, keeping the dtypes they come with.

    Map-style datasets are read with ``with_format("numpy", dtype=None)``: the plain numpy format would cast integer
    columns to int64 and float columns to float32 (lossy for ``transform``). Python values (lists, ints, strings from
    a generator) take the schema's dtype.
    """
    if isinstance(examples, datasets.Dataset):
        examples = examples.with_format("numpy", dtype=None)
    return [
        {k: v if isinstance(v, np.ndarray) else np.asarray(v, dtype=COLUMN_DTYPES[k]) for k, v in row.items()}
        for row in examples
    ]


def assert_rows_identical(rows_a, rows_b):
    assert len(rows_a) == len(rows_b)
    for a, b in zip(rows_a, rows_b):
        assert a.keys() == b.keys()
        for column in a:
            x, y = a[column], b[column]
            assert x.dtype == y.dtype == np.dtype(COLUMN_DTYPES[column]) or x.dtype.kind == y.dtype.kind == "U", column
            assert x.shape == y.shape, column
            assert x.tobytes() == y.tobytes(), column  # bit-exact, NaN-safe


def padded(array, window, fill):
    """The window of a 2-D or (C, H, W) array, padded with ``fill`` outside (independent of the library's padding)."""
    row0, col0, height, width = int(window.row_off), int(window.col_off), int(window.height), int(window.width)
    out = np.full((*array.shape[:-2], height, width), fill, dtype=array.dtype)
    part = array[..., row0 : row0 + height, col0 : col0 + width]
    out[..., : part.shape[-2], : part.shape[-1]] = part
    return out


# ----------------------------------------------------------------------------------------------------------------------
def test_tile_windows_cover_the_raster_with_minimal_padding():
    windows = tile_windows(500, 300, tile_size=128)
    assert sorted({w.row_off for w in windows}) == [0, 128, 256, 384]
    assert sorted({w.col_off for w in windows}) == [0, 128, 256]
    assert all(w.width == w.height == 128 for w in windows)
    assert [(w.row_off, w.col_off) for w in windows[:4]] == [(0, 0), (0, 128), (0, 256), (128, 0)]  # row-major
    strided = tile_windows(500, 300, tile_size=128, stride=64)
    assert sorted({w.row_off for w in strided}) == [0, 64, 128, 192, 256, 320, 384]
    assert sorted({w.col_off for w in strided}) == [0, 64, 128, 192]
    assert len(tile_windows(100, 100, tile_size=128)) == 1
    for bad in ({"tile_size": 0}, {"tile_size": 64, "stride": 65}, {"tile_size": 64, "stride": 0}):
        with pytest.raises(ValueError):
            tile_windows(10, 10, **bad)


def test_tiles_hold_calibrated_pixels_labels_and_georeferencing(synthetic, scene_arrays):
    db, valid, codes = scene_arrays
    tiles = list(iter_tiles(synthetic.scene.parent, tile_size=128, min_valid_fraction=0.0, progress=False))
    assert len(tiles) == 16  # 4 x 4 windows over 500 x 500, none entirely invalid
    with rasterio.open(synthetic.scene) as src:
        transform = src.transform
    for tile in tiles:
        window = Window(tile["col_off"], tile["row_off"], 128, 128)
        expected_valid = padded(valid, window, False)
        expected_ids = LULC_9.encode(padded(codes, window, 0))
        expected_ids[~expected_valid] = IGNORE_INDEX
        np.testing.assert_array_equal(tile["image"], padded(db, window, 0.0))
        np.testing.assert_array_equal(tile["valid_mask"], expected_valid.astype(np.uint8))
        np.testing.assert_array_equal(tile["label"], expected_ids)
        assert tile["crs"] == "EPSG:4326"
        # Independent of the library: the window's corner in map coordinates, pixel size unchanged.
        west, north = transform @ (tile["col_off"], tile["row_off"])
        assert tile["transform"] == pytest.approx([transform.a, 0.0, west, 0.0, transform.e, north], rel=1e-12)
        assert tile["scene"] == str(synthetic.scene)
    edge = next(t for t in tiles if t["row_off"] == 384 and t["col_off"] == 384)
    assert not edge["valid_mask"][116:, :].any() and (edge["label"][:, 116:] == 255).all()


def test_mostly_invalid_tiles_are_skipped(synthetic, scene_arrays):
    _, valid, _ = scene_arrays
    kept = {(t["row_off"], t["col_off"]) for t in iter_tiles(synthetic.scene, tile_size=64, progress=False)}
    for window in tile_windows(500, 500, tile_size=64):
        fraction = padded(valid, window, False).mean()
        assert ((window.row_off, window.col_off) in kept) == (fraction >= 0.5), (window, fraction)
    assert 0 < len(kept) < len(tile_windows(500, 500, tile_size=64))


def test_map_style_round_trip_is_bit_exact(tmp_path, synthetic):
    dataset = tile_dataset(synthetic.scene.parent, tile_size=64, progress=False, cache_dir=tmp_path / "cache")
    assert dataset.column_names == COLUMNS
    features = dataset.features
    assert features["image"] == datasets.Array3D((1, 64, 64), "float32")
    assert (features["label"].shape, features["label"].dtype) == ((64, 64), "uint8")
    assert features["valid_mask"] == datasets.Array2D((64, 64), "uint8")
    dataset.save_to_disk(str(tmp_path / "saved"))
    loaded = datasets.load_from_disk(str(tmp_path / "saved"))
    assert loaded.features == dataset.features
    assert label_scheme(loaded) == label_scheme(dataset) == LULC_9  # the labels' class scheme travels with them
    assert_rows_identical(as_rows(dataset), as_rows(loaded))
    direct = list(iter_tiles(synthetic.scene.parent, tile_size=64, progress=False))
    assert_rows_identical(as_rows(loaded), as_rows(direct))


def test_streaming_yields_the_same_tiles_in_the_same_order(synthetic):
    map_style = tile_dataset(synthetic.scene.parent, tile_size=64, stride=48, progress=False)
    streaming = tile_dataset(synthetic.scene.parent, tile_size=64, stride=48, progress=False, streaming=True)
    assert isinstance(streaming, datasets.IterableDataset)
    assert_rows_identical(as_rows(map_style), as_rows(streaming))


def test_cache_notices_a_regenerated_scene(tmp_path):
    first = generate_scene(tmp_path / "scene", size=128, seed=1, progress=False)
    before = tile_dataset(first.scene, tile_size=64, progress=False)["image"]
    generate_scene(tmp_path / "scene", size=128, seed=2, progress=False, overwrite=True)
    after = tile_dataset(first.scene, tile_size=64, progress=False)["image"]
    assert not np.array_equal(np.asarray(before), np.asarray(after))


def covered_pixels(rows, tile_size, shape=(500, 500)):
    mask = np.zeros(shape, dtype=bool)
    for row in rows:
        mask[row["row_off"] : row["row_off"] + tile_size, row["col_off"] : row["col_off"] + tile_size] = True
    return mask


def test_spatial_split_is_disjoint_in_space(synthetic):
    tile_size, stride = 64, 32  # overlapping tiles: those straddling two splits must be dropped
    split = SpatialSplit(fractions={"train": 0.6, "validation": 0.2, "test": 0.2}, group_size=2, seed=1)
    splits = split_tile_dataset(
        synthetic.scene, split, tile_size=tile_size, stride=stride, min_valid_fraction=0.0, progress=False
    )
    assert list(splits) == ["train", "validation", "test"]
    coverage = {
        name: covered_pixels(ds.select_columns(["row_off", "col_off"]), tile_size) for name, ds in splits.items()
    }
    assert all(len(ds) > 0 for ds in splits.values())
    for a in coverage:
        for b in coverage:
            if a < b:
                assert not (coverage[a] & coverage[b]).any(), (a, b)
    everything = tile_dataset(
        synthetic.scene, tile_size=tile_size, stride=stride, min_valid_fraction=0.0, progress=False
    )
    assert sum(len(ds) for ds in splits.values()) < len(everything)
    # Every tile of a split is one of the unsplit tiles, with identical content.
    by_origin = {(int(r["row_off"]), int(r["col_off"])): r for r in as_rows(everything)}
    for rows in map(as_rows, splits.values()):
        assert_rows_identical(rows, [by_origin[(int(r["row_off"]), int(r["col_off"]))] for r in rows])


def test_split_group_shares_and_determinism():
    split = SpatialSplit(group_size=4, seed=0)
    groups = split.group_splits("scene-a", 1024, 1024, stride=32)  # 8 x 8 groups of 128 px
    assert groups.shape == (8, 8)
    assert np.bincount(groups.ravel(), minlength=3).tolist() == [51, 7, 6]  # 64 groups: 80 / 10 / 10 %
    np.testing.assert_array_equal(groups, split.group_splits("scene-a", 1024, 1024, stride=32))
    assert not np.array_equal(groups, split.group_splits("scene-b", 1024, 1024, stride=32))
    tiny = SpatialSplit(group_size=4).group_splits("x", 100, 300, stride=32)  # 1 x 3 groups: one per split
    assert sorted(tiny.ravel().tolist()) == [0, 1, 2]
    with pytest.raises(ValueError):
        SpatialSplit(fractions={"train": -1.0})


def test_split_from_shares_is_the_split_of_the_command_line_options():
    split = SpatialSplit.from_shares([0.6, 0.2, 0.2], group_size=2, seed=1)
    assert split == SpatialSplit(fractions={"train": 0.6, "validation": 0.2, "test": 0.2}, group_size=2, seed=1)
    assert SpatialSplit.from_shares([0.8, 0.1, 0.1]) == SpatialSplit()  # the defaults agree
    assert SpatialSplit.from_shares([1, 0, 1]).names == ["train", "test"]  # a zero share: no such split
    assert SpatialSplit.from_shares([3, 1], names=("a", "b")).fractions == {"a": 3.0, "b": 1.0}
    with pytest.raises(ValueError, match=r"need 3 split shares \(train, validation, test\), got \[0.8, 0.2\]"):
        SpatialSplit.from_shares([0.8, 0.2])
    with pytest.raises(ValueError, match="non-negative"):
        SpatialSplit.from_shares([0.8, -0.1, 0.3])
    with pytest.raises(ValueError, match="group_size must be >= 1"):
        SpatialSplit.from_shares([0.8, 0.1, 0.1], group_size=0)


def test_streaming_split_matches_map_style(synthetic):
    kwargs = dict(tile_size=64, split=SpatialSplit(group_size=2), progress=False)
    map_style = split_tile_dataset(synthetic.scene, **kwargs)
    streaming = split_tile_dataset(synthetic.scene, streaming=True, **kwargs)
    assert isinstance(streaming, datasets.IterableDatasetDict)
    for name in map_style:
        assert_rows_identical(as_rows(map_style[name]), as_rows(streaming[name]))


def test_class_frequencies_equal_a_direct_count(tmp_path, synthetic, scene_arrays):
    _, valid, codes = scene_arrays
    dataset = tile_dataset(synthetic.scene.parent, tile_size=100, min_valid_fraction=0.0, progress=False)
    frequencies = class_frequencies(dataset, LULC_9, batch_size=7, progress=False)
    ids = LULC_9.encode(codes)
    ids[~valid] = IGNORE_INDEX
    expected = np.array([(ids == k).sum() for k in range(LULC_9.num_classes)], dtype=np.int64)
    np.testing.assert_array_equal(frequencies.counts, expected)
    assert frequencies.counts.dtype == np.int64
    assert frequencies.scheme == "lulc-9" and frequencies.id2label == LULC_9.id2label
    assert frequencies.fractions.sum() == pytest.approx(1.0)
    path = tmp_path / "frequencies.json"
    frequencies.save_json(path)
    loaded = ClassFrequencies.load_json(path)
    np.testing.assert_array_equal(loaded.counts, expected)
    assert loaded.scheme == "lulc-9" and loaded.id2label == LULC_9.id2label
    assert "SolarPanel" in frequencies.table()
    streamed = class_frequencies(
        tile_dataset(synthetic.scene.parent, tile_size=100, min_valid_fraction=0.0, progress=False, streaming=True),
        progress=False,
    )
    np.testing.assert_array_equal(streamed.counts, expected)


def test_band_statistics_equal_a_direct_computation(tmp_path, synthetic, scene_arrays):
    db, valid, _ = scene_arrays
    dataset = tile_dataset(synthetic.scene, tile_size=100, min_valid_fraction=0.0, progress=False)
    stats = band_statistics(dataset, clip_range=(-25.0, 0.0), batch_size=3, progress=False)
    values = np.clip(db[0][valid].astype(np.float64), -25.0, 0.0)
    assert stats.count == values.size
    assert stats.mean[0] == pytest.approx(values.mean(), rel=1e-12)
    assert stats.std[0] == pytest.approx(values.std(), rel=1e-10)
    assert stats.clip_range == (-25.0, 0.0)
    stats.save_json(tmp_path / "bands.json")
    assert BandStatistics.load_json(tmp_path / "bands.json") == stats
    default = band_statistics(dataset, progress=False)
    assert default.clip_range == (-35.0, 5.0)
    assert default.mean[0] == pytest.approx(np.clip(db[0][valid].astype(np.float64), -35, 5).mean(), rel=1e-12)


def test_folder_of_several_scenes_and_unlabeled_scene(tmp_path):
    root = tmp_path / "scenes"
    generate_scene(root / "a", size=128, seed=1, progress=False)
    generate_scene(root / "b", size=(64, 192), seed=2, progress=False)
    unlabeled = root / "c" / "solo.tif"
    unlabeled.parent.mkdir()
    write_raster(unlabeled, np.full((64, 64), 900, dtype=np.uint16), nodata=0)
    sources = find_scene_sources(root)
    assert [(s.scene, s.labels) for s in sources] == [
        (str(root / "a" / "scene.tif"), str(root / "a" / "labels.tif")),
        (str(root / "b" / "scene.tif"), str(root / "b" / "labels.tif")),
        (str(unlabeled), None),
    ]
    dataset = tile_dataset(root, tile_size=64, min_valid_fraction=0.0, progress=False)
    counts = {}
    for scene in dataset["scene"]:
        counts[scene] = counts.get(scene, 0) + 1
    assert counts == {sources[0].scene: 4, sources[1].scene: 3, sources[2].scene: 1}
    solo = dataset.filter(lambda row: row["scene"] == str(unlabeled)).with_format("numpy")[0]
    assert (solo["label"] == IGNORE_INDEX).all() and solo["valid_mask"].all()


def test_water_scheme_and_scene_ids(synthetic):
    source = SceneSource(str(synthetic.scene), str(synthetic.labels), scene_id="tokyo-bay")
    tiles = list(iter_tiles(source, tile_size=128, scheme=WATER, progress=False))
    labels = np.concatenate([t["label"].ravel() for t in tiles])
    assert set(np.unique(labels).tolist()) == {0, 1, 255}
    assert {t["scene"] for t in tiles} == {"tokyo-bay"}


def test_misaligned_labels_raise_or_are_reprojected(tmp_path):
    scene = write_raster(
        tmp_path / "scene.tif", np.full((64, 64), 1000, dtype=np.uint16), crs=UTM_CRS, transform=UTM_TRANSFORM, nodata=0
    )
    coarse = (1 + (np.arange(64)[:, None] // 8 + np.arange(64)[None, :] // 8) % 14).astype(np.uint8)
    fine = np.repeat(np.repeat(coarse, 3, axis=0), 3, axis=1)
    fine_transform = north_up(UTM_TRANSFORM.c, UTM_TRANSFORM.f, 10 / 3)
    labels = write_raster(tmp_path / "labels.tif", fine, crs=UTM_CRS, transform=fine_transform, nodata=0)
    with pytest.raises(SarLulcDataError, match="not aligned") as err:
        tile_dataset((scene, labels), tile_size=32, progress=False)
    assert str(labels) in str(err.value)
    dataset = tile_dataset((scene, labels), tile_size=32, scheme="jaxa-14", reproject_labels=True, progress=False)
    first = dataset.with_format("numpy")[0]
    np.testing.assert_array_equal(first["label"], coarse[:32, :32] - 1)  # jaxa-14: id = code - 1


def test_a_split_without_tiles_is_an_empty_dataset(tmp_path):
    dn = np.full((128, 384), 1000, dtype=np.uint16)
    dn[:, 128:] = 0  # only the first of the three 128 px groups has data
    scene = write_raster(tmp_path / "half.tif", dn, nodata=0)
    split = SpatialSplit(group_size=1)
    splits = split_tile_dataset(scene, split, tile_size=128, progress=False)
    groups = split.group_splits(str(scene), 128, 384, stride=128)
    owner = split.names[int(groups[0, 0])]
    assert {name: len(ds) for name, ds in splits.items()} == {name: int(name == owner) for name in split.names}
    assert all(ds.features == splits[owner].features for ds in splits.values())
    assert class_frequencies(splits[owner], progress=False).counts.sum() == 0  # unlabeled: all 255


def test_bad_scene_fails_before_building(tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_text("not a raster")
    with pytest.raises(SarLulcDataError, match="cannot be opened"):
        tile_dataset(bad, tile_size=32, progress=False)
    with pytest.raises(SarLulcDataError, match="does not exist"):
        tile_dataset(tmp_path / "missing.tif", tile_size=32, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SarLulcDataError, match="no GeoTIFF"):
        tile_dataset(tmp_path / "empty", tile_size=32, progress=False)


def test_processes_read_disjoint_scenes_of_a_streaming_dataset(tmp_path):
    from sarlulc.data.tiles import shard_for_process

    for seed in range(4):
        generate_scene(tmp_path / f"scene{seed}", size=128, seed=seed, progress=False)
    kwargs = dict(tile_size=64, min_valid_fraction=0.0, progress=False, streaming=True)
    everything = as_rows(tile_dataset(tmp_path, **kwargs))
    parts = [as_rows(shard_for_process(tile_dataset(tmp_path, **kwargs), rank, 2)) for rank in range(2)]
    scenes = [{str(row["scene"]) for row in part} for part in parts]
    assert scenes[0] and scenes[1] and not scenes[0] & scenes[1]  # whole scenes per process, none shared
    key = lambda row: (str(row["scene"]), int(row["row_off"]), int(row["col_off"]))  # noqa: E731
    assert sorted(map(key, parts[0] + parts[1])) == sorted(map(key, everything))
    assert len(parts[0]) + len(parts[1]) == len(everything)
