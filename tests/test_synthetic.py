"""Synthetic scenes: georeferencing, class backscatter, speckle statistics, structure, determinism, memory."""

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from helpers_rasters import binary_opening
from sarlulc.data import open_labels, open_scene
from sarlulc.data.classes import JAXA_SOURCE_CLASSES, JAXA_SOURCE_COLORS
from sarlulc.data.synthetic import (
    CLASS_SIGMA0_DB,
    LABELS_FILENAME,
    SCENE_FILENAME,
    SyntheticLandscape,
    SyntheticSceneConfig,
    generate_scene,
)

RARE_CODES = (10, 12, 13, 14)  # bare, solar panel, wetland, greenhouse


@pytest.fixture(scope="module")
def scene_1024(tmp_path_factory):
    return generate_scene(tmp_path_factory.mktemp("synthetic"), size=1024, seed=0, progress=False)


@pytest.fixture(scope="module")
def arrays_1024(scene_1024):
    """Calibrated dB, validity and label codes of the whole 1024 x 1024 scene."""
    with open_scene(scene_1024.scene) as scene:
        db, valid = scene.read_db()
    with rasterio.open(scene_1024.labels) as src:
        codes = src.read(1)
    return db[0].astype(np.float64), valid, codes


def read_arrays(result):
    with rasterio.open(result.scene) as scene, rasterio.open(result.labels) as labels:
        return scene.read(1), labels.read(1)


def test_files_are_georeferenced_tiled_and_aligned(scene_1024):
    assert scene_1024.scene.name == SCENE_FILENAME and scene_1024.labels.name == LABELS_FILENAME
    with rasterio.open(scene_1024.scene) as scene, rasterio.open(scene_1024.labels) as labels:
        assert scene.crs.to_epsg() == 4326 and labels.crs == scene.crs
        assert scene.transform == labels.transform and scene.shape == labels.shape == (1024, 1024)
        assert scene.nodata == 0 and labels.nodata == 0
        assert scene.dtypes[0] == "uint16" and labels.dtypes[0] == "uint8"
        assert scene.block_shapes == [(512, 512)] and labels.block_shapes == [(512, 512)]
        assert scene.compression.value.lower() == "deflate" and labels.compression.value.lower() == "deflate"
        # ~10 m pixels in degrees, placed in Japan.
        assert scene.res == pytest.approx((1 / 10800, 1 / 10800))
        west, south, east, north = scene.bounds
        assert 122 < west < east < 154 and 20 < south < north < 46
        assert scene.tags()["SARLULC_INPUT_KIND"] == "dn"
        assert float(scene.tags()["SARLULC_CALIBRATION_FACTOR"]) == -83.0
        assert scene.descriptions[0] == "HH"
        colormap = labels.colormap(1)
        for code, rgb in JAXA_SOURCE_COLORS.items():
            assert colormap[code][:3] == rgb
        for code, name in JAXA_SOURCE_CLASSES.items():
            assert labels.tags()[f"CLASS_{code}"] == name
    with open_scene(scene_1024.scene) as scene, open_labels(scene_1024.labels, like=scene) as labels:
        assert scene.input_kind == "dn" and not labels.reprojected


def test_utm_scene(tmp_path):
    result = generate_scene(tmp_path, size=(200, 300), seed=1, crs="utm", progress=False)
    with rasterio.open(result.scene) as scene, rasterio.open(result.labels) as labels:
        assert 32651 <= scene.crs.to_epsg() <= 32656  # WGS84 / UTM zones over Japan
        assert scene.res == (10.0, 10.0) and scene.shape == (200, 300)
        assert labels.crs == scene.crs and labels.transform == scene.transform


def test_class_mean_backscatter_lies_in_the_literature_range(arrays_1024):
    db, valid, codes = arrays_1024
    present = 0
    for code, (low, high) in CLASS_SIGMA0_DB.items():
        pixels = (codes == code) & valid
        if pixels.sum() < 200:
            continue
        present += 1
        mean_db = 10 * np.log10(np.mean(10 ** (db[pixels] / 10)))
        assert low <= mean_db <= high, f"class {code} ({JAXA_SOURCE_CLASSES[code]}): {mean_db:.2f} dB"
    assert present == 14


def test_rare_classes_exist_and_are_rare(arrays_1024):
    _, _, codes = arrays_1024
    for code in RARE_CODES:
        fraction = (codes == code).mean()
        assert 0 < fraction < 0.02, f"class {code}: {fraction:.4f}"


def test_thin_structures_exist(arrays_1024):
    _, _, codes = arrays_1024
    for code in (1, 2):  # rivers and canals; roads (and streets at city edges)
        mask = codes == code
        narrower_than_5 = mask & ~binary_opening(mask, 5)
        narrower_than_3 = mask & ~binary_opening(mask, 3)  # 1-2 px wide lines
        assert narrower_than_5.mean() > 0.004, f"class {code}: {narrower_than_5.mean():.4f}"
        assert narrower_than_3.mean() > 0.002, f"class {code}: {narrower_than_3.mean():.4f}"


def test_sea_coast_and_nodata_regions(arrays_1024, scene_1024):
    _, valid, codes = arrays_1024
    dn, _ = read_arrays(scene_1024)
    assert 0.01 < (~valid).mean() < 0.15
    assert (dn[valid] >= 1).all() and (dn[~valid] == 0).all()
    # A slanted footprint edge: the first invalid column differs between the top and bottom rows.
    first_invalid = [int(np.argmax(~valid[row])) for row in (0, 1023)]
    assert abs(first_invalid[0] - first_invalid[1]) > 50
    # Sea: water as one large body (a 31 x 31 opening keeps it, not the rivers).
    assert binary_opening(codes == 1, 31).mean() > 0.05
    assert 0 < (codes == 0).mean() < 0.05  # label nodata beyond the map's coverage


@pytest.mark.parametrize("looks", [1.0, 4.0])
def test_speckle_cv_relative_to_noise_free_intensity(tmp_path, looks):
    result = generate_scene(tmp_path, size=512, seed=3, looks=looks, progress=False)
    clean = SyntheticLandscape(result.config).render(Window(0, 0, 512, 512)).clean_db.astype(np.float64)
    with open_scene(result.scene) as scene:
        db, valid = scene.read_db()
    ratio = 10 ** ((db[0].astype(np.float64) - clean) / 10)[valid]
    cv = ratio.std() / ratio.mean()
    assert cv == pytest.approx(1 / math.sqrt(looks), rel=0.10)
    assert ratio.mean() == pytest.approx(1.0, abs=0.02)


def test_speckle_cv_on_homogeneous_sea(tmp_path):
    # Without texture the sea is one flat region; its interior (away from shore and rivers) is homogeneous.
    looks = 4.0
    result = generate_scene(tmp_path, size=512, seed=3, looks=looks, texture=False, progress=False)
    with open_scene(result.scene) as scene:
        db, valid = scene.read_db()
    with rasterio.open(result.labels) as labels:
        codes = labels.read(1)
    interior = binary_opening((codes == 1) & valid, 15)
    interior &= ~binary_opening(~interior, 3)  # drop the opening's edge pixels
    assert interior.sum() > 5000
    intensity = 10 ** (db[0][interior].astype(np.float64) / 10)
    assert intensity.std() / intensity.mean() == pytest.approx(1 / math.sqrt(looks), rel=0.10)


def test_same_seed_same_arrays_other_seed_different(tmp_path):
    first = read_arrays(generate_scene(tmp_path / "a", size=300, seed=7, progress=False))
    second = read_arrays(generate_scene(tmp_path / "b", size=300, seed=7, progress=False))
    other = read_arrays(generate_scene(tmp_path / "c", size=300, seed=8, progress=False))
    assert first[0].tobytes() == second[0].tobytes() and first[1].tobytes() == second[1].tobytes()
    assert (first[0] != other[0]).mean() > 0.5 and (first[1] != other[1]).mean() > 0.2


def test_result_does_not_depend_on_blocks_or_threads(tmp_path):
    size = (576, 640)  # not a multiple of either block size
    big = read_arrays(generate_scene(tmp_path / "a", size=size, seed=2, block_size=512, workers=1, progress=False))
    small = read_arrays(generate_scene(tmp_path / "b", size=size, seed=2, block_size=128, workers=2, progress=False))
    np.testing.assert_array_equal(big[0], small[0])
    np.testing.assert_array_equal(big[1], small[1])


def test_class_pixel_counts_match_the_raster(tmp_path):
    result = generate_scene(tmp_path, size=256, seed=4, progress=False)
    _, codes = read_arrays(result)
    values, counts = np.unique(codes, return_counts=True)
    assert result.class_pixels == dict(zip(values.tolist(), counts.tolist()))


@pytest.mark.parametrize(
    "kwargs",
    [{"height": 32}, {"looks": 0}, {"block_size": 100}],
)
def test_bad_configs_raise(kwargs):
    with pytest.raises(ValueError):
        SyntheticSceneConfig(**kwargs)


def test_crs_in_feet_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="metres"):
        generate_scene(tmp_path, size=64, crs="EPSG:2225", progress=False)  # California zone 1, US survey feet


def generation_memory(size, out_dir):
    """Generate a scene in a fresh interpreter; return its resident memory before and at the peak of generation (MB).

    The peak is reset after the imports (Linux ``/proc/self/clear_refs``), so it measures what generation holds on
    top of the interpreter and the package's imports (which include torch and transformers).
    """
    code = textwrap.dedent(
        f"""
        import json, time
        from pathlib import Path
        from sarlulc.data.synthetic import generate_scene

        def status_mb(key):
            line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(key + ":"))
            return int(line.split()[1]) / 1024

        baseline = status_mb("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
        start = time.perf_counter()
        generate_scene({str(out_dir)!r}, size={size}, seed=0, progress=False)
        seconds = time.perf_counter() - start
        print(json.dumps({{"baseline_mb": baseline, "peak_mb": status_mb("VmHWM"), "seconds": seconds}}))
        """
    )
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    measured = json.loads(output.strip().splitlines()[-1])
    measured["generation_mb"] = measured["peak_mb"] - measured["baseline_mb"]
    return measured


needs_proc = pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc/self/clear_refs")


@needs_proc
def test_generation_memory_is_bounded_at_2048(tmp_path):
    measured = generation_memory(2048, tmp_path)
    assert measured["generation_mb"] < 400, measured


@pytest.mark.slow
@needs_proc
def test_generation_memory_is_bounded_at_8192(tmp_path):
    measured = generation_memory(8192, tmp_path)
    print(f"8192 x 8192: {measured}")
    assert measured["generation_mb"] < 400, measured  # the same bound as at 2048: memory does not grow with size
    with rasterio.open(tmp_path / SCENE_FILENAME) as scene:
        assert scene.shape == (8192, 8192)
