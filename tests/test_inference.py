"""Whole-scene inference (sarlulc.inference.predict_scene, `sarlulc predict`, scripts/predict.py): georeferenced
outputs, exactness without overlap, reflected borders, seamless blending, bounded memory, clean interruption, several
processes, bad input."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window

from helpers_torch import one_torch_thread  # noqa: F401 (an autouse fixture)
from helpers_training import TINY_ENCODER_KWARGS, free_port
from sarlulc import LULC_9, SarImageProcessor, SarLulcConfig, SarLulcForSemanticSegmentation, SarMixMAEConfig
from sarlulc.data.alos2 import SarLulcDataError, dn_to_db
from sarlulc.data.classes import scheme_for_id2label
from sarlulc.data.synthetic import generate_scene
from sarlulc.errors import OutputWriteError
from sarlulc.inference import Georeference, OutputSpec, SceneInput, output_paths, predict_scene, predict_tiled
from sarlulc.inference.blending import STRIP_BAND_BYTES, band_bytes, plan_strips
from sarlulc.inference.grid import TileGrid, taper
from sarlulc.inference.outputs import OutputFiles
from sarlulc.inference.pipeline import TileRowsJob
from sarlulc.inference.records import PlaneLayout, RunStats
from sarlulc.inference.scene import calibrated_input, probe_scene
from sarlulc_cli import main

REPO = Path(__file__).resolve().parents[1]


def tiny_config(id2label: dict[int, str] | None = None) -> SarLulcConfig:
    id2label = id2label or LULC_9.id2label
    return SarLulcConfig(
        backbone_config=SarMixMAEConfig(**TINY_ENCODER_KWARGS),
        decoder_hidden_size=32,
        pool_scales=(1, 2),
        highres_channels=8,
        refine_channels=(8, 8),
        id2label=id2label,
        label2id={name: i for i, name in id2label.items()},
    )


def offline_env(hf_home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "HF_HOME": str(hf_home),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "PYTHONPATH": str(REPO / "src"),
    }


@pytest.fixture(autouse=True)
def hf_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))


@pytest.fixture(scope="module")
def model() -> SarLulcForSemanticSegmentation:
    torch.manual_seed(0)
    return SarLulcForSemanticSegmentation(tiny_config()).eval()


@pytest.fixture(scope="module")
def processor() -> SarImageProcessor:
    return SarImageProcessor(input_kind="dn")


@pytest.fixture(scope="module")
def checkpoint(model, processor, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("checkpoint")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    """192 x 320 px: larger than a 128 px tile in both directions, with a nodata wedge."""
    return generate_scene(tmp_path_factory.mktemp("scene"), (192, 320), seed=1, progress=False).scene


def read(path: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as dataset:
        return dataset.read(), dataset.profile


def scene_valid(scene_path: Path) -> np.ndarray:
    with rasterio.open(scene_path) as dataset:
        return dataset.read(1) != 0  # synthetic scenes: uint16 DN, nodata 0


def column_jumps(probabilities: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column boundary c (between c-1 and c): mean |probability change| and the share of changed classes, over
    rows valid on both sides."""
    valid = classes != 255
    both = valid[:, 1:] & valid[:, :-1]
    counted = np.maximum(both.sum(axis=0), 1)
    change = np.abs(np.diff(probabilities.astype(float) / 255, axis=2)).mean(axis=0)
    jumps = (change * both).sum(axis=0) / counted
    disagreement = ((classes[:, 1:] != classes[:, :-1]) & both).sum(axis=0) / counted
    return jumps, disagreement


# ----------------------------------------------------------------------------------------------------------------------
# The outputs
# ----------------------------------------------------------------------------------------------------------------------
def test_map_has_the_scene_grid_colours_class_names_and_nodata(model, processor, scene, tmp_path):
    out = tmp_path / "maps" / "lulc.tif"  # the missing folder is created
    report = predict_scene(
        model,
        scene,
        out,
        tile=128,
        overlap=32,
        batch_size=2,
        image_processor=processor,
        probabilities="classes",
        water=True,
        progress=False,
    )
    paths = output_paths(out, "classes", water=True)
    assert sorted(os.listdir(out.parent)) == sorted(p.name for p in paths.values())  # no temporary file left
    assert report.path == out and report.extra_paths == {k: v for k, v in paths.items() if k != "classes"}
    grid = TileGrid(192, 320, 128, 32)
    assert report.tiles > 1 and report.tiles + report.tiles_skipped == grid.num_tiles
    assert report.shape == (192, 320) and report.pixels_written == 192 * 320 and report.seconds_total > 0

    valid = scene_valid(scene)
    assert 0 < valid.sum() < valid.size  # the synthetic scene has a nodata wedge
    with rasterio.open(scene) as source, rasterio.open(out) as result:
        assert result.crs == source.crs and result.transform == source.transform
        assert result.shape == source.shape and result.count == 1 and result.dtypes == ("uint8",)
        assert result.nodata == 255
        assert result.profile["tiled"] and result.block_shapes == [(256, 256)]
        assert result.profile["compress"] == "deflate"
        colors = result.colormap(1)
        assert {i: colors[i] for i in range(9)} == {i: (*c.color, 255) for i, c in enumerate(LULC_9.classes)}
        assert colors[255] == (0, 0, 0, 0)
        assert result.tags(1) == {f"CLASS_{i}": name for i, name in LULC_9.id2label.items()}
        assert json.loads(result.tags()["SARLULC_CLASS_NAMES"]) == LULC_9.names
        assert result.descriptions[0].startswith("class id")
        classes = result.read(1)
    np.testing.assert_array_equal(classes == 255, ~valid)
    assert classes[valid].max() < 9

    probabilities, profile = read(paths["probabilities"])
    assert probabilities.shape == (9, 192, 320) and profile["count"] == 9
    with rasterio.open(paths["probabilities"]) as dataset:
        np.testing.assert_array_equal(dataset.dataset_mask() > 0, valid)
        assert dataset.scales == (1 / 255,) * 9
        assert dataset.tags(1) == {"CLASS_ID": "0", "CLASS_NAME": "Water"}
    sums = probabilities.astype(int).sum(axis=0)[valid]
    assert np.all(np.abs(sums - 255) <= 5)  # nine values rounded to 1/255 each
    winner = np.take_along_axis(probabilities, classes[None].astype(np.int64) % 255, axis=0)[0]
    assert np.all(winner[valid] >= probabilities.max(axis=0)[valid] - 1)  # the class map is their argmax

    water, water_profile = read(paths["water"])
    assert water_profile["nodata"] == 255
    np.testing.assert_array_equal(water[0], np.where(valid, classes == LULC_9.water_id, 255))


def test_without_overlap_the_map_is_each_tiles_own_argmax(model, processor, tmp_path):
    """Computed independently: rasterio reads of the raw tiles, the processor, the model in the same batches."""
    scene_path = generate_scene(tmp_path / "scene", (256, 384), seed=3, progress=False).scene
    tile, batch_size = 128, 2  # three tiles per tile row: batches of 2 and 1
    report = predict_scene(
        model,
        scene_path,
        tmp_path / "map.tif",
        tile=tile,
        overlap=0,
        batch_size=batch_size,
        image_processor=processor,
        progress=False,
    )
    assert report.tiles + report.tiles_skipped == 6

    expected = np.full((256, 384), 255, dtype=np.uint8)
    with rasterio.open(scene_path) as source, torch.inference_mode():
        for row in range(256 // tile):
            tiles = []
            for col in range(384 // tile):
                raw = source.read(1, window=Window(col * tile, row * tile, tile, tile))
                features = processor(raw, return_tensors="pt")
                if features["pixel_mask"].any():  # tiles without a valid pixel are not run
                    tiles.append((col, features))
            for first in range(0, len(tiles), batch_size):
                chunk = tiles[first : first + batch_size]
                logits = model(pixel_values=torch.cat([f["pixel_values"] for _, f in chunk])).logits
                for (col, features), argmax in zip(chunk, logits.argmax(dim=1)):
                    block = np.where(features["pixel_mask"][0].numpy() == 1, argmax.numpy(), 255)
                    expected[row * tile : (row + 1) * tile, col * tile : (col + 1) * tile] = block
    np.testing.assert_array_equal(read(tmp_path / "map.tif")[0][0], expected)


def test_border_tiles_read_reflected_context(model, processor, tmp_path):
    """A scene smaller than one tile: the single tile starts overlap/2 px before the scene and reaches past its end;
    its pixels there mirror the scene (numpy's "reflect"), and reflected nodata stays nodata."""
    scene_path = generate_scene(tmp_path / "scene", (96, 96), seed=2, progress=False).scene
    predict_scene(
        model, scene_path, tmp_path / "map.tif", tile=128, overlap=32, image_processor=processor, progress=False
    )
    with rasterio.open(scene_path) as source:
        dn = source.read(1)
    padded = np.pad(dn, ((16, 16), (16, 16)), mode="reflect")  # the tile covers rows/cols -16 .. 111
    with torch.inference_mode():
        argmax = model(pixel_values=processor(padded, return_tensors="pt")["pixel_values"]).logits.argmax(dim=1)[0]
    expected = np.where(dn != 0, argmax.numpy()[16:112, 16:112], 255)
    np.testing.assert_array_equal(read(tmp_path / "map.tif")[0][0], expected)
    zero_padded = np.pad(dn, ((16, 16), (16, 16)))
    with torch.inference_mode():
        zeros = model(pixel_values=processor(zero_padded, return_tensors="pt")["pixel_values"]).logits.argmax(dim=1)
    assert not np.array_equal(expected, np.where(dn != 0, zeros[0].numpy()[16:112, 16:112], 255))


def test_blending_removes_the_seams_between_tiles(model, processor, tmp_path):
    """Without overlap, predictions jump where tiles meet (each tile sees a different context: zero padding in its
    convolutions, its own pyramid pooling); with overlap the same columns look like any other column."""
    scene_path = generate_scene(tmp_path / "scene", (256, 512), seed=5, progress=False).scene
    seams = np.array([128, 256, 384]) - 1  # column boundaries between the 128 px tiles of the overlap-0 grid
    results = {}
    for overlap in (0, 32):
        out = tmp_path / f"map_{overlap}.tif"
        predict_scene(
            model,
            scene_path,
            out,
            tile=128,
            overlap=overlap,
            batch_size=4,
            image_processor=processor,
            probabilities="classes",
            progress=False,
        )
        probabilities = read(output_paths(out, "classes")["probabilities"])[0]
        results[overlap] = column_jumps(probabilities, read(out)[0][0])

    jumps, disagreement = results[0]
    typical = np.median(jumps)
    assert jumps[seams].min() > 5 * typical
    assert disagreement[seams].mean() > 0.1  # a tenth of the rows change class across the seam
    jumps, disagreement = results[32]
    assert jumps[seams].max() < 2.5 * np.median(jumps)
    assert jumps.max() < 4 * np.median(jumps)  # no seam anywhere, the new tile edges included
    assert disagreement[seams].mean() < 0.05


def test_the_scene_decides_its_input_kind(model, processor, scene, tmp_path):
    """A float sigma0-dB copy of the DN scene (tagged as dB, NaN nodata) gives the same map with the same DN
    processor: the scene's tags say how to calibrate it, the processor only clips and standardizes."""
    with rasterio.open(scene) as source:
        profile, dn = source.profile, source.read(1)
    db, valid = dn_to_db(dn)
    db[~valid] = np.nan
    profile.update(dtype="float32", nodata=float("nan"))
    db_scene = tmp_path / "db.tif"
    with rasterio.open(db_scene, "w", **profile) as dataset:
        dataset.write(db, 1)
        dataset.update_tags(SARLULC_INPUT_KIND="db")
    kwargs = dict(tile=128, overlap=32, image_processor=processor, progress=False)
    predict_scene(model, scene, tmp_path / "from_dn.tif", **kwargs)
    predict_scene(model, db_scene, tmp_path / "from_db.tif", **kwargs)
    with rasterio.open(tmp_path / "from_db.tif") as result:
        assert result.tags()["SARLULC_INPUT_KIND"] == "db"
    np.testing.assert_array_equal(read(tmp_path / "from_db.tif")[0], read(tmp_path / "from_dn.tif")[0])


def test_blending_weights_never_vanish_and_neighbours_sum_to_one():
    weights = taper(128, 32)
    assert weights.min() > 0 and weights.max() == 1.0
    np.testing.assert_allclose(weights[-32:] + weights[:32], 1.0)  # the right ramp of a tile + the left of the next
    grid = TileGrid(1000, 700, 128, 32)
    rows, cols = grid.weight_sums()
    assert rows.min() > 0 and cols.min() > 0
    assert grid.row_starts[0] == -16 and grid.row_starts[-1] == 1000 + 16 - 128
    assert np.all(np.diff(grid.row_starts) <= 96)
    np.testing.assert_allclose(rows[16 : 16 + 96 * 8], 1.0, rtol=1e-6)  # regular spacing: weights sum to one


# ----------------------------------------------------------------------------------------------------------------------
# Column strips: memory bounded in width, the same maps
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("overlap, batch_size", [(16, 3), (15, 2), (0, 1)])
def test_column_strips_run_every_tile_reaching_their_core_in_the_whole_scenes_batches(overlap, batch_size):
    grid = TileGrid(100, 5000, 64, overlap)
    strips = grid.strips(max_width=700, batch_size=batch_size, block=256)
    assert len(strips) > 5
    assert strips[0].left == 0 and strips[-1].right == 5000
    for strip, following in itertools.pairwise(strips):
        assert strip.right == following.left and strip.right % 256 == 0
    global_batches = {tuple(cols) for _, cols in grid.batches(range(1), batch_size)}
    for strip in strips:
        assert strip.width <= 700
        touching = [k for k, start in enumerate(grid.col_starts) if start < strip.right and start + 64 > strip.left]
        assert set(touching) <= set(strip.cols)
        assert {tuple(cols) for _, cols in grid.batches(range(1), batch_size, strip.cols)} <= global_batches
        assert strip.band_left == max(grid.col_starts[strip.cols[0]], 0)
        assert strip.band_right == min(grid.col_starts[strip.cols[-1]] + 64, 5000)
    whole = grid.strips(max_width=5000, batch_size=batch_size, block=256)
    assert whole == (grid.strip(0, 5000, batch_size),) and whole[0].cols == range(grid.num_cols)


def test_only_a_band_no_strip_can_bound_is_refused_with_the_size_it_would_need():
    grid = TileGrid(10_000, 200_000, 512, 64)
    strips = plan_strips(grid, 9, 2, 256, planes=10)  # the default budget
    assert len(strips) > 1 and max(band_bytes(9, 512, s.width, 10) for s in strips) <= STRIP_BAND_BYTES
    with pytest.raises(ValueError, match=r"8192 px tiles with 9 classes need a blending band of \d+\.\d GiB"):
        plan_strips(TileGrid(10_000, 200_000, 8192, 64), 9, 2, 256, planes=10)


def predict_wide(model, processor, scene_path, out, **kwargs):
    return predict_scene(
        model,
        scene_path,
        out,
        tile=64,
        overlap=16,
        batch_size=3,
        image_processor=processor,
        probabilities="classes",
        water=True,
        progress=False,
        **kwargs,
    )


@pytest.fixture(scope="module")
def wide_scene(tmp_path_factory) -> Path:
    """96 x 1100 px with a nodata wedge: four or five column strips under a tiny band budget."""
    return generate_scene(tmp_path_factory.mktemp("wide"), (96, 1100), seed=4, progress=False).scene


def test_a_scene_predicted_in_column_strips_equals_one_band_byte_for_byte(
    model, processor, wide_scene, tmp_path, monkeypatch
):
    """The proof of the strips: the same tiles, batches and summation order give the same bytes in every output."""
    from sarlulc.inference import scene as scene_module

    plans = []

    def spy(*args, **kwargs):
        plans.append(plan_strips(*args, **kwargs))
        return plans[-1]

    monkeypatch.setattr(scene_module, "plan_strips", spy)
    one = predict_wide(model, processor, wide_scene, tmp_path / "one" / "map.tif")
    budget = band_bytes(9, 64, 600, 11)  # 11 planes: classes, water, 9 probabilities
    cut = predict_wide(model, processor, wide_scene, tmp_path / "cut" / "map.tif", max_band_bytes=budget)
    assert len(plans[0]) == 1 and len(plans[1]) >= 3, plans
    assert cut.tiles > one.tiles  # the tiles reaching two cores run twice
    for key, path in output_paths(tmp_path / "cut" / "map.tif", "classes", water=True).items():
        reference = output_paths(tmp_path / "one" / "map.tif", "classes", water=True)[key]
        with rasterio.open(path) as stripped, rasterio.open(reference) as expected:
            np.testing.assert_array_equal(stripped.read(), expected.read())
            np.testing.assert_array_equal(stripped.dataset_mask(), expected.dataset_mask())
            assert stripped.profile == expected.profile and stripped.tags() == expected.tags()
    assert sorted(os.listdir(tmp_path / "cut")) == ["map.tif", "map_probabilities.tif", "map_water.tif"]

    # Negative control: strips that run only the tiles starting inside their core (no margin) differ at the seams.
    strip = TileGrid.strip

    def without_margin(self, left, right, batch_size):
        full = strip(self, left, right, batch_size)
        inside = [k for k in full.cols if self.col_starts[k] >= left or k == 0]
        return dataclasses.replace(full, cols=range(inside[0], full.cols.stop))

    monkeypatch.setattr(TileGrid, "strip", without_margin)
    predict_wide(model, processor, wide_scene, tmp_path / "bad" / "map.tif", max_band_bytes=budget)
    bad, good = read(tmp_path / "bad" / "map_probabilities.tif")[0], read(tmp_path / "one" / "map_probabilities.tif")[0]
    differing = np.flatnonzero((bad != good).any(axis=(0, 1)))
    assert differing.size > 0
    seams = [s.left for s in plans[1][1:]]
    assert all(min(abs(column - seam) for seam in seams) < 64 for column in differing)  # only next to the seams


def test_part_files_written_and_merged_strip_by_strip_equal_the_planes(scene, tmp_path):
    """Several processes on a wide scene: each part takes its rows strip after strip, the merge copies one strip's
    core after another (bounded memory at any width) into the very outputs."""
    from sarlulc.inference.distributed import PartFile, merge_parts

    georeference = Georeference(300, 700, "EPSG:32654", rasterio.transform.from_origin(0, 0, 10, 10))
    spec = OutputSpec(
        paths=output_paths(tmp_path / "map.tif", "confidence"),
        scheme=scheme_for_id2label(LULC_9.id2label),
        probabilities="confidence",
    )
    planes = np.random.default_rng(0).integers(0, 9, (2, 300, 700), dtype=np.uint8)
    planes[0, :5] = 255  # nodata
    strips = TileGrid(300, 700, 64, 16).strips(max_width=300, batch_size=2, block=256)
    assert len(strips) == 3
    parts = []
    for rank, (first, end) in enumerate([(0, 130), (130, 300)]):
        part = PartFile(spec.paths["classes"], rank, (first, end), georeference, spec.layout)
        for strip in strips:
            sink = part.columns(strip.left, strip.right)
            for row in range(first, end, 50):  # slabs of rows, in order
                sink.write(row, planes[:, row : min(row + 50, end), strip.left : strip.right])
        part.close()
        parts.append((first, str(part.path)))
    merge_parts(spec, georeference, parts, overwrite=False, strips=strips)
    np.testing.assert_array_equal(read(tmp_path / "map.tif")[0][0], planes[0])
    np.testing.assert_array_equal(read(tmp_path / "map_confidence.tif")[0][0], planes[1])


# ----------------------------------------------------------------------------------------------------------------------
# The pure tensor function
# ----------------------------------------------------------------------------------------------------------------------
def test_predict_tiled_gives_the_maps_predict_scene_writes(model, processor, scene, tmp_path):
    """Same grid, batches, model step and blender: on the same preprocessed input, predict_tiled's argmax is the class
    map and its probabilities x 255 are the probability file, with and without overlap."""
    with rasterio.open(scene) as source:
        features = processor(source.read(1), return_tensors="pt")  # 192 x 320: no padding to a multiple of 32
    pixel_values, valid = features["pixel_values"][0], features["pixel_mask"][0].bool()
    maps = {}
    for overlap in (0, 32):
        out = tmp_path / f"map_{overlap}.tif"
        kwargs = dict(tile=128, overlap=overlap, batch_size=2)
        predict_scene(model, scene, out, image_processor=processor, probabilities="classes", progress=False, **kwargs)
        probabilities = predict_tiled(model, pixel_values, valid, **kwargs)
        assert probabilities.shape == (9, 192, 320) and probabilities.dtype == torch.float32
        assert torch.all(probabilities[:, ~valid] == 0)  # nodata: 0 in every class
        torch.testing.assert_close(probabilities.sum(dim=0)[valid], torch.ones(int(valid.sum())))

        maps[overlap] = read(out)[0][0]
        expected = torch.where(valid, probabilities.argmax(dim=0), 255).numpy()
        np.testing.assert_array_equal(maps[overlap], expected)
        written = read(output_paths(out, "classes")["probabilities"])[0]
        np.testing.assert_array_equal(written, probabilities.mul(255).round().numpy().astype(np.uint8))
    valid_np = valid.numpy()
    assert (maps[0] != maps[32])[valid_np].mean() > 0.01  # the overlap changes the map, so the equalities say something


def test_predict_tiled_checks_its_inputs(model):
    pixel_values, valid = torch.zeros(1, 64, 96), torch.ones(64, 96, dtype=torch.bool)
    with pytest.raises(ValueError, match="multiple of 32"):
        predict_tiled(model, pixel_values, valid, tile=100, overlap=0)
    with pytest.raises(ValueError, match="overlap must be in"):
        predict_tiled(model, pixel_values, valid, tile=64, overlap=32)
    with pytest.raises(ValueError, match=r"valid must be \(H, W\) \(64, 96\)"):
        predict_tiled(model, pixel_values, valid[:32], tile=64, overlap=0)
    with pytest.raises(ValueError, match=r"pixel_values must be \(C, H, W\)"):
        predict_tiled(model, pixel_values[0], valid, tile=64, overlap=0)
    with pytest.raises(ValueError, match=r"logits of shape \(2, 9, 64, 64\).*expected \(2, 4, 64, 64\)"):
        predict_tiled(model, pixel_values, valid, tile=64, overlap=0, num_labels=4)
    nothing_valid = predict_tiled(model, pixel_values, torch.zeros(64, 96, dtype=torch.bool), tile=64, overlap=0)
    assert nothing_valid.shape == (9, 64, 96) and not nothing_valid.any()  # no tile is run


# ----------------------------------------------------------------------------------------------------------------------
# Records and the calibration precedence
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("record", "names"),
    [
        (Georeference, ["height", "width", "crs", "transform"]),
        (
            SceneInput,
            [
                "path",
                "georeference",
                "num_channels",
                "input_kind",
                "bands",
                "calibration_factor",
                "calibration_factor_source",
            ],
        ),
        (OutputSpec, ["paths", "scheme", "probabilities", "water", "tags"]),
        (PlaneLayout, ["num_labels", "water_id", "probabilities"]),
        (RunStats, ["tiles", "skipped", "seconds_model", "seconds_waiting"]),
        (TileRowsJob, ["model", "processor", "open_scene", "grid", "layout", "rows", "emit_from", "device"]),
    ],
)
def test_records_are_frozen_and_have_their_documented_fields(record, names):
    fields = [field.name for field in dataclasses.fields(record)]
    assert fields[: len(names)] == names
    for name in fields:  # every field is named in the docstring's attribute list (several may share a line)
        assert re.search(rf"^\s+(\w+, )*{name}(, \w+)*:", record.__doc__, flags=re.MULTILINE), name
    assert record.__dataclass_params__.frozen


def test_georeference_rows_and_output_spec_checks(scene, tmp_path):
    probed = probe_scene(scene)
    grid = probed.georeference
    assert grid.shape == (192, 320) and probed.num_channels == 1 and probed.bands == (1,)
    band = grid.rows(64, 100)
    assert band.shape == (36, 320) and band.crs == grid.crs
    assert band.transform @ (0, 0) == grid.transform @ (0, 64)  # the band's first row is the scene's row 64
    with pytest.raises(dataclasses.FrozenInstanceError):
        grid.height = 1

    paths = output_paths(tmp_path / "map.tif", "confidence", water=True)
    spec = OutputSpec(paths=paths, scheme=LULC_9, probabilities="confidence", water=True)
    assert spec.layout == PlaneLayout(num_labels=9, water_id=LULC_9.water_id, probabilities="confidence")
    assert spec.layout.count == 3 and spec.layout.probability_planes == slice(2, 3)
    no_water = scheme_for_id2label({0: "Forest", 1: "Bare"})
    with pytest.raises(ValueError, match=r"class named 'water'.*'Forest', 'Bare'"):
        OutputSpec(paths=output_paths(tmp_path / "map.tif", water=True), scheme=no_water, water=True)
    with pytest.raises(ValueError, match="for \\['classes'\\] got paths for \\['classes', 'water'\\]"):
        OutputSpec(paths=output_paths(tmp_path / "map.tif", water=True), scheme=LULC_9)


def copy_with_tags(scene_path: Path, out: Path, **tags: str) -> Path:
    """The scene's pixels and grid with only the given dataset tags (rasterio cannot delete a tag in place)."""
    with rasterio.open(scene_path) as source:
        profile, data = source.profile, source.read()
    with rasterio.open(out, "w", **profile) as dataset:
        dataset.write(data)
        dataset.update_tags(**tags)
    return out


def test_calibration_factor_argument_beats_the_scene_tag_which_beats_the_processor(model, scene, tmp_path):
    tagged = copy_with_tags(scene, tmp_path / "tagged.tif", SARLULC_CALIBRATION_FACTOR="-83.0")
    untagged = copy_with_tags(scene, tmp_path / "untagged.tif", SARLULC_INPUT_KIND="dn")
    other = SarImageProcessor(input_kind="dn", calibration_factor=-70.0)

    assert calibrated_input(probe_scene(tagged), other).calibration_factor == -83.0
    assert calibrated_input(probe_scene(tagged), other).calibration_factor_source == "tag"
    from_processor = calibrated_input(probe_scene(untagged), other)
    assert (from_processor.calibration_factor, from_processor.calibration_factor_source) == (-70.0, "processor")
    argument = calibrated_input(probe_scene(tagged, calibration_factor=-75.0), other)
    assert (argument.calibration_factor, argument.calibration_factor_source) == (-75.0, "argument")

    kwargs = dict(tile=128, overlap=32, image_processor=other, progress=False)
    tag_wins = read(predict_scene(model, tagged, tmp_path / "tag.tif", **kwargs).path)[0]
    processor_wins = read(predict_scene(model, untagged, tmp_path / "processor.tif", **kwargs).path)[0]
    argument_wins = read(
        predict_scene(model, untagged, tmp_path / "argument.tif", calibration_factor=-83.0, **kwargs).path
    )[0]
    reference = read(
        predict_scene(
            model,
            scene,
            tmp_path / "reference.tif",
            tile=128,
            overlap=32,
            progress=False,
            image_processor=SarImageProcessor(input_kind="dn"),
        ).path
    )[0]
    np.testing.assert_array_equal(tag_wins, reference)
    np.testing.assert_array_equal(argument_wins, reference)
    assert (processor_wins != reference).mean() > 0.01  # -70 dB instead of -83 dB: another map


# ----------------------------------------------------------------------------------------------------------------------
# Memory
# ----------------------------------------------------------------------------------------------------------------------
MEMORY_CHILD = textwrap.dedent(
    """
    import json, resource, sys
    import torch
    from transformers.modeling_outputs import SemanticSegmenterOutput
    from sarlulc import LULC_9, SarImageProcessor, SarLulcConfig, SarLulcForSemanticSegmentation, SarMixMAEConfig
    from sarlulc.inference import predict_scene

    torch.set_num_threads(1)
    config = SarLulcConfig(
        backbone_config=SarMixMAEConfig(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4)),
        decoder_hidden_size=32, id2label=LULC_9.id2label, label2id=LULC_9.label2id,
    )
    model = SarLulcForSemanticSegmentation(config).eval()
    # What is measured is the pipeline around the model (reads, queues, blending band, writes): a 1x1 convolution
    # stands in for the network, whose activations depend on the tile size only.
    head = torch.nn.Conv2d(1, 9, 1)
    model.forward = lambda pixel_values, **kwargs: SemanticSegmenterOutput(logits=head(pixel_values))
    report = predict_scene(
        model, sys.argv[1], sys.argv[2], tile=256, overlap=32, batch_size=4,
        image_processor=SarImageProcessor(input_kind="dn"), probabilities="classes", water=True, progress=False,
    )
    print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "tiles": report.tiles}))
    """
)


def peak_rss_mb(scene_path: Path, out: Path, hf_home: Path) -> tuple[float, int]:
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, str(scene_path), str(out)],
        capture_output=True,
        text=True,
        env=offline_env(hf_home),
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["peak_mb"], result["tiles"]


@pytest.mark.parametrize(
    "large",
    [pytest.param((4096, 1024), id="4x-taller"), pytest.param((4096, 4096), id="16x-larger", marks=pytest.mark.slow)],
)
def test_peak_memory_does_not_grow_with_the_scene(tmp_path, large):
    """Peak RSS of a fresh process on a 1024 x 1024 scene and on a 4x taller one: only the rows later tiles can still
    reach are held, so the height does not matter. (The band grows with the width up to the column-strip budget; the
    slow variant on a 16x larger 4096 x 4096 scene stays within the same bound.)"""
    small_scene = generate_scene(tmp_path / "small", 1024, texture=False, speckle=False, progress=False).scene
    large_scene = generate_scene(tmp_path / "large", large, texture=False, speckle=False, progress=False).scene
    small_mb, small_tiles = peak_rss_mb(small_scene, tmp_path / "small.tif", tmp_path / "hf")
    large_mb, large_tiles = peak_rss_mb(large_scene, tmp_path / "large.tif", tmp_path / "hf")
    assert large_tiles >= 3.5 * small_tiles
    assert large_mb <= 1.3 * small_mb + 150, (small_mb, large_mb)


# ----------------------------------------------------------------------------------------------------------------------
# Interruptions leave nothing behind
# ----------------------------------------------------------------------------------------------------------------------
def fail_after(calls: int, error: BaseException, original):
    count = 0

    def failing(*args, **kwargs):
        nonlocal count
        count += 1
        if count > calls:
            raise error
        return original(*args, **kwargs)

    return failing


@pytest.mark.parametrize("error", [RuntimeError("boom in the model"), KeyboardInterrupt()], ids=["exception", "ctrl-c"])
def test_an_interrupted_prediction_leaves_no_file(model, processor, scene, tmp_path, monkeypatch, error):
    threads = threading.active_count()
    monkeypatch.setattr(model, "forward", fail_after(2, error, model.forward))  # after 2 batches of 2 tiles
    with pytest.raises(type(error)):
        predict_scene(
            model,
            scene,
            tmp_path / "out" / "map.tif",
            tile=128,
            overlap=32,
            batch_size=2,
            image_processor=processor,
            probabilities="classes",
            water=True,
            progress=False,
        )
    assert os.listdir(tmp_path / "out") == []
    assert threading.active_count() == threads  # the reader and writer threads are stopped and joined


@pytest.mark.parametrize("stage", ["reader", "writer"])
def test_a_failing_reader_or_writer_thread_fails_the_call_and_leaves_no_file(
    model, processor, scene, tmp_path, monkeypatch, stage
):
    from sarlulc.data.alos2 import Alos2Scene

    if stage == "reader":
        message = "block 3 cannot be decoded"
        monkeypatch.setattr(Alos2Scene, "read_db", fail_after(3, SarLulcDataError(message), Alos2Scene.read_db))
        expected = SarLulcDataError
    else:
        write = OutputFiles._write_block_rows
        monkeypatch.setattr(OutputFiles, "_write_block_rows", fail_after(0, OSError("disk full"), write))
        message = r"^no space left on device \(ENOSPC\) in .* while writing map "  # said in one line, as a full disk
        expected = OutputWriteError
    threads = threading.active_count()
    with pytest.raises(expected, match=message):
        predict_scene(
            model, scene, tmp_path / "out" / "map.tif", tile=128, overlap=32, image_processor=processor, progress=False
        )
    assert os.listdir(tmp_path / "out") == []
    assert threading.active_count() == threads


# ----------------------------------------------------------------------------------------------------------------------
# Bad input: a clear error before any file is created
# ----------------------------------------------------------------------------------------------------------------------
def two_band_scene(scene_path: Path, out: Path) -> Path:
    with rasterio.open(scene_path) as source:
        profile, data, tags = source.profile, source.read(1), source.tags()
    profile.update(count=2)
    with rasterio.open(out, "w", **profile) as dataset:
        dataset.write(np.stack([data, data]))
        dataset.update_tags(**tags)
    return out


def truncated_scene(scene_path: Path, out: Path) -> Path:
    data = scene_path.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    return out


@pytest.mark.parametrize(
    ("case", "error", "match"),
    [
        ("missing scene", SarLulcDataError, "does not exist"),
        ("truncated scene", SarLulcDataError, "truncated or corrupt"),
        ("two bands", SarLulcDataError, r"2 band\(s\) \(HH, HV\) but the model takes 1 \(HH\)"),
        ("tile 100", ValueError, "multiple of 32"),
        ("overlap 64 of 128", ValueError, "overlap must be in"),
        ("folder is a file", NotADirectoryError, "is a file"),
        ("unwritable folder", PermissionError, "not writable"),
        ("existing output", FileExistsError, "already exists"),
        ("unknown probabilities", ValueError, "probabilities must be"),
    ],
)
def test_bad_input_is_a_clear_error_before_any_output(
    model, processor, scene, tmp_path, monkeypatch, case, error, match
):
    inputs, outputs = tmp_path / "inputs", tmp_path / "outputs"
    inputs.mkdir()
    outputs.mkdir()
    scene_path, out = scene, outputs / "map.tif"
    kwargs = dict(tile=128, overlap=32)
    if case == "missing scene":
        scene_path = inputs / "nothing.tif"
    elif case == "truncated scene":
        scene_path = truncated_scene(scene, inputs / "truncated.tif")
    elif case == "two bands":
        scene_path = two_band_scene(scene, inputs / "dual.tif")
    elif case == "tile 100":
        kwargs["tile"] = 100
    elif case == "overlap 64 of 128":
        kwargs["overlap"] = 64
    elif case == "folder is a file":
        (outputs / "file").write_text("")
        out = outputs / "file" / "map.tif"
    elif case == "unwritable folder":
        real_access = os.access
        monkeypatch.setattr(
            os, "access", lambda path, mode: False if Path(path) == outputs else real_access(path, mode)
        )
    elif case == "existing output":
        out.write_text("keep me")
    else:
        kwargs["probabilities"] = "all"
    before = sorted(os.listdir(outputs))
    with pytest.raises(error, match=match):
        predict_scene(model, scene_path, out, image_processor=processor, progress=False, **kwargs)
    assert sorted(os.listdir(outputs)) == before
    if case == "existing output":
        assert out.read_text() == "keep me"
        predict_scene(model, scene_path, out, image_processor=processor, progress=False, overwrite=True, **kwargs)
        assert read(out)[0].shape == (1, 192, 320)


def test_unknown_classes_get_a_palette_and_water_needs_a_water_class(processor, scene, tmp_path):
    """The scheme of a model's own classes (tests/test_classes.py checks its colours) colours the map."""
    scheme = scheme_for_id2label({0: "Forest", 1: "Sea ice", 2: "Built-up"})
    assert scheme.name == "model" and scheme.water_id is None

    model = SarLulcForSemanticSegmentation(tiny_config({0: "Forest", 1: "Sea ice", 2: "Built-up"})).eval()
    with pytest.raises(ValueError, match="class named 'water'"):
        predict_scene(model, scene, tmp_path / "map.tif", tile=128, overlap=32, image_processor=processor, water=True)
    assert not (tmp_path / "map.tif").exists()
    predict_scene(model, scene, tmp_path / "map.tif", tile=128, overlap=32, image_processor=processor, progress=False)
    with rasterio.open(tmp_path / "map.tif") as result:
        assert result.colormap(1)[1] == (*scheme.classes[1].color, 255)
        assert result.tags(1)["CLASS_1"] == "Sea ice"


def test_a_checkpoint_without_a_processor_falls_back_to_the_defaults_with_a_warning(model, scene, tmp_path):
    folder = tmp_path / "bare_checkpoint"
    model.save_pretrained(folder)
    with pytest.warns(UserWarning, match="no preprocessor_config.json"):
        report = predict_scene(folder, scene, tmp_path / "map.tif", tile=128, overlap=32, device="cpu", progress=False)
    assert report.tiles > 0 and (tmp_path / "map.tif").exists()


def test_a_hub_model_id_is_fetched_with_snapshot_download_and_a_missing_one_is_a_clear_error(
    checkpoint, scene, tmp_path, monkeypatch
):
    import huggingface_hub

    requested = []

    def fake_snapshot_download(repo_id, **kwargs):  # the Hub's cache folder of a downloaded repository
        requested.append((repo_id, kwargs.get("allow_patterns")))
        if repo_id != "me/sar-lulc-tiny":
            raise OSError(f"{repo_id} not found")
        return str(checkpoint)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    report = predict_scene("me/sar-lulc-tiny", scene, tmp_path / "hub.tif", tile=128, overlap=32, progress=False)
    local = predict_scene(checkpoint, scene, tmp_path / "local.tif", tile=128, overlap=32, progress=False)
    assert requested[0][0] == "me/sar-lulc-tiny" and "*.safetensors" in requested[0][1]
    np.testing.assert_array_equal(read(report.path)[0], read(local.path)[0])

    with pytest.raises(ValueError, match=r"not a local folder, and downloading it .*not found"):
        predict_scene("me/no-such-model", scene, tmp_path / "missing.tif", progress=False)
    with pytest.raises(ValueError, match="does not exist or is not a folder"):
        predict_scene(tmp_path / "runs" / "lulc" / "best", scene, tmp_path / "missing.tif", progress=False)
    assert not (tmp_path / "missing.tif").exists()


# ----------------------------------------------------------------------------------------------------------------------
# Command line and several processes
# ----------------------------------------------------------------------------------------------------------------------
def test_cli_predict_end_to_end(checkpoint, scene, tmp_path, capsys):
    out = tmp_path / "map.tif"
    args = ["predict", str(checkpoint), str(scene), str(out), "--tile", "128", "--overlap", "32", "--batch-size", "3"]
    args += ["--probabilities", "confidence", "--water", "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "tiles of 128 px" in printed
    classes, profile = read(out)
    assert classes.shape == (1, 192, 320) and profile["nodata"] == 255
    np.testing.assert_array_equal(classes[0] == 255, ~scene_valid(scene))
    confidence = read(tmp_path / "map_confidence.tif")[0]
    assert confidence.shape == (1, 192, 320) and confidence[0][classes[0] != 255].min() >= 255 // 9
    assert (tmp_path / "map_water.tif").exists()

    assert main(args) == 2  # the outputs exist: the user's to fix
    assert "already exists" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert main([*args, "--overwrite", "--tile", "100"]) == 2
    assert "multiple of 32" in capsys.readouterr().err
    assert main(["predict", str(checkpoint), str(tmp_path / "missing.tif"), str(tmp_path / "x.tif")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_two_processes_under_accelerate_launch_equal_one_process(checkpoint, scene, tmp_path):
    """`accelerate launch --cpu --num_processes 2` starts a single process in accelerate 1.x without MPI, so this asks
    for the torchrun launcher (--multi_gpu) and keeps it on the CPU (ACCELERATE_USE_CPU=1): two gloo processes."""
    options = ["--tile", "64", "--overlap", "16", "--batch-size", "3", "--probabilities", "classes", "--water"]
    options += ["--format", "gtiff"]  # compared with predict_scene's own GeoTIFFs
    single = tmp_path / "single" / "map.tif"
    predict_scene(
        checkpoint,
        scene,
        single,
        tile=64,
        overlap=16,
        batch_size=3,
        probabilities="classes",
        water=True,
        progress=False,
    )

    multi = tmp_path / "multi" / "map.tif"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += ["--main_process_port", str(free_port())]
    command = [*launch, str(REPO / "scripts" / "predict.py"), str(checkpoint), str(scene), str(multi), *options]
    command.append("--no-progress")
    env = {**offline_env(tmp_path / "hf"), "ACCELERATE_USE_CPU": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "x 2 processes" in done.stdout and done.stdout.count(f"wrote {multi}:") == 1  # the main process reports

    assert sorted(os.listdir(multi.parent)) == ["map.tif", "map_probabilities.tif", "map_water.tif"]  # parts removed
    for key, path in output_paths(multi, "classes", water=True).items():
        reference = output_paths(single, "classes", water=True)[key]
        with rasterio.open(path) as merged, rasterio.open(reference) as expected:
            np.testing.assert_array_equal(merged.read(), expected.read())
            np.testing.assert_array_equal(merged.dataset_mask(), expected.dataset_mask())
            assert merged.profile == expected.profile and merged.tags() == expected.tags()
            assert merged.tags(1) == expected.tags(1)
