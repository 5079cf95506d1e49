"""Many scenes in one job (sarlulc.inference.jobs, `sarlulc predict --output-dir`): one COG per scene, the mosaics and
STAC catalogue, resume after a kill, a corrupt scene among good ones, inputs, several processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import from_bounds

from helpers_rasters import north_up, write_raster
from helpers_torch import one_torch_thread  # noqa: F401 (an autouse fixture)
from helpers_training import TINY_ENCODER_KWARGS, free_port
from sarlulc import LULC_9, SarImageProcessor, SarLulcConfig, SarLulcForSemanticSegmentation, SarMixMAEConfig
from sarlulc.data.synthetic import generate_scene
from sarlulc.inference.jobs import predict_scenes, resolve_inputs
from sarlulc_cli import main

REPO = Path(__file__).resolve().parents[1]
TILE = ["--tile", "64", "--overlap", "16", "--batch-size", "4"]


@pytest.fixture(autouse=True)
def hf_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    config = SarLulcConfig(
        backbone_config=SarMixMAEConfig(**TINY_ENCODER_KWARGS),
        decoder_hidden_size=32,
        pool_scales=(1, 2),
        highres_channels=8,
        refine_channels=(8, 8),
        id2label=LULC_9.id2label,
        label2id=LULC_9.label2id,
    )
    folder = tmp_path_factory.mktemp("checkpoint")
    SarLulcForSemanticSegmentation(config).eval().save_pretrained(folder)
    SarImageProcessor(input_kind="dn").save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> list[Path]:
    """Three scenes of 160 x 192 px: two side by side on one UTM grid (zone 54), one in zone 53."""
    folder = tmp_path_factory.mktemp("scenes")
    source = generate_scene(folder / "synth", (160, 192), seed=3, progress=False).scene
    with rasterio.open(source) as dataset:
        data, tags = dataset.read(), dataset.tags()
    placements = [
        ("alpha", "EPSG:32654", north_up(400000.0, 3990000.0, 10.0)),
        ("bravo", "EPSG:32654", north_up(400000.0 + 192 * 10.0, 3990000.0, 10.0)),
        ("charlie", "EPSG:32653", north_up(700000.0, 3990000.0, 10.0)),
    ]
    paths = []
    for index, (name, crs, transform) in enumerate(placements):
        rolled = np.roll(data, 40 * index, axis=2)  # different content, same nodata wedge shape
        paths.append(
            write_raster(folder / f"{name}.tif", rolled, crs=crs, transform=transform, nodata=0, tags=tags, tiled=True)
        )
    return paths


def env_for(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(REPO / "src"),
        "OMP_NUM_THREADS": "1",
    }


def cli(checkpoint: Path, inputs: list, out: Path, *extra: str) -> list[str]:
    return ["predict", str(checkpoint), *map(str, inputs), "--output-dir", str(out), *TILE, "--no-progress", *extra]


def test_three_scenes_in_two_crss_give_cogs_mosaics_and_stac(checkpoint, scenes, tmp_path, capsys):
    import pystac
    from pystac.extensions.classification import ClassificationExtension
    from rio_cogeo.cogeo import cog_validate

    out = tmp_path / "maps"
    assert main(cli(checkpoint, scenes, out, "--probabilities", "confidence")) == 0
    printed = capsys.readouterr().out
    assert "3 done, 0 skipped, 0 failed" in printed
    names = ["alpha", "bravo", "charlie"]
    for name in names:
        for path in (out / f"{name}.tif", out / f"{name}_confidence.tif"):
            valid, errors, _ = cog_validate(str(path), quiet=True)
            assert valid, errors
            with rasterio.open(path) as dataset:
                assert dataset.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
                assert dataset.profile["tiled"] and dataset.tags()["SARLULC_SCENE"] == f"{name}.tif"
        with rasterio.open(out / f"{name}.tif") as dataset:
            assert dataset.colormap(1)[0][:3] == LULC_9.classes[0].color and dataset.nodata == 255
            assert dataset.tags(1)["CLASS_0"] == LULC_9.classes[0].name
    assert not [name for name in os.listdir(out) if name.startswith(".")]  # no temporaries left

    # one mosaic per CRS, no common mosaic.vrt; each returns the maps' own pixels
    assert sorted(p.name for p in out.glob("*.vrt")) == ["mosaic_EPSG32653.vrt", "mosaic_EPSG32654.vrt"]
    for name, vrt in [("alpha", "32654"), ("bravo", "32654"), ("charlie", "32653")]:
        with rasterio.open(out / f"{name}.tif") as map_, rasterio.open(out / f"mosaic_EPSG{vrt}.vrt") as mosaic:
            window = from_bounds(*map_.bounds, transform=mosaic.transform).round_offsets().round_lengths()
            np.testing.assert_array_equal(mosaic.read(1, window=window), map_.read(1))
            assert mosaic.colormap(1)[1] == map_.colormap(1)[1] and mosaic.nodata == 255
    with rasterio.open(out / "mosaic_EPSG32654.vrt") as mosaic:
        assert mosaic.width == 2 * 192 and mosaic.height == 160

    # STAC: round trip through pystac with the class table, projection, footprint and provenance
    collection = pystac.read_file(out / "collection.json")
    items = {item.id: item for item in collection.get_items()}
    assert sorted(items) == names
    for name, item in items.items():
        again = pystac.Item.from_dict(json.loads((out / f"{name}.json").read_text()))
        assert again.to_dict()["properties"] == item.to_dict()["properties"]
        classes = ClassificationExtension.ext(item.assets["classes"]).classes
        table = {c.value: (c.description, c.color_hint) for c in classes}
        for cls in LULC_9.classes:
            assert table[cls.id] == (cls.name, "".join(f"{v:02X}" for v in cls.color))
        assert [c.value for c in classes if c.nodata] == [255]
        assert item.properties["proj:code"] == ("EPSG:32653" if name == "charlie" else "EPSG:32654")
        assert item.properties["sarlulc:scene"] == f"{name}.tif" and item.properties["sarlulc:datetime_source"] == "run"
        assert "confidence" in item.assets and item.assets["classes"].media_type.endswith("cloud-optimized")
        west, south, east, north = item.bbox
        assert 125 < west < east < 145 and 30 < south < north < 40
    # the footprint excludes the nodata wedge: smaller than the map's extent
    alpha = items["alpha"]
    with rasterio.open(out / "alpha.tif") as dataset:
        valid_share = float((dataset.read(1) != 255).mean())
    assert valid_share < 0.97
    assert alpha.geometry["type"] in ("Polygon", "MultiPolygon")


def test_a_corrupt_scene_among_good_ones_is_reported_and_the_exit_status_says_so(checkpoint, scenes, tmp_path, capsys):
    broken = tmp_path / "broken.tif"
    broken.write_bytes(scenes[0].read_bytes()[:3000])
    out = tmp_path / "maps"
    assert main(cli(checkpoint, [scenes[0], broken, scenes[2]], out, "--format", "gtiff", "--no-catalog")) == 3
    printed = capsys.readouterr().out
    line = next(line for line in printed.splitlines() if line.startswith("broken"))
    assert "failed" in line and "broken.tif" in line
    assert "2 done, 0 skipped, 1 failed" in printed
    assert sorted(os.listdir(out)) == ["alpha.tif", "charlie.tif"]


def test_inputs_from_folders_globs_and_list_files(scenes, tmp_path):
    folder = scenes[0].parent
    listing = tmp_path / "list.txt"
    listing.write_text(f"# two scenes\n{scenes[1]}\n\n{os.path.relpath(scenes[2], tmp_path)}\n")
    assert resolve_inputs([f"@{listing}"]) == [str(scenes[1]), str(tmp_path / os.path.relpath(scenes[2], tmp_path))]
    assert [Path(p).name for p in resolve_inputs([str(folder / "[ab]*.tif")])] == ["alpha.tif", "bravo.tif"]
    found = [Path(p).name for p in resolve_inputs([str(folder)], exclude=folder / "synth")]
    assert found == ["alpha.tif", "bravo.tif", "charlie.tif"]
    from sarlulc.errors import UsageError

    with pytest.raises(UsageError, match="matches no file"):
        resolve_inputs([str(folder / "zulu*.tif")])
    with pytest.raises(UsageError, match="cannot read the input list"):
        resolve_inputs([f"@{tmp_path / 'missing.txt'}"])


def test_the_single_scene_form_still_works_and_needs_two_inputs(checkpoint, scenes, tmp_path, capsys):
    out = tmp_path / "map.tif"
    assert main(["predict", str(checkpoint), str(scenes[0]), str(out), *TILE, "--no-progress"]) == 0
    with rasterio.open(out) as dataset:
        assert dataset.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
    assert main(["predict", str(checkpoint), *map(str, scenes), "--no-progress"]) == 2
    assert "--output-dir" in capsys.readouterr().err


STALLING_DRIVER = """
import sys, time
from pathlib import Path
import sarlulc.inference.jobs as jobs
from sarlulc_cli import main

original = jobs.predict_scene
marker = Path(sys.argv[1])

class Stall:
    # A progress bar that stops the job for good once a scene other than the first has started.
    def update(self, n=1):
        marker.write_text("stalled")
        time.sleep(600)
    def close(self):
        pass

def predict_scene(model, scene_path, out_path, *args, **kwargs):
    if not str(scene_path).endswith("alpha.tif"):
        kwargs["progress"] = Stall()
    return original(model, scene_path, out_path, *args, **kwargs)

jobs.predict_scene = predict_scene
sys.exit(main(sys.argv[2:]))
"""


def test_a_killed_job_resumes_where_it_stopped_and_never_shows_a_partial_map(checkpoint, scenes, tmp_path, capsys):
    out, marker = tmp_path / "maps", tmp_path / "stalled"
    driver = tmp_path / "driver.py"
    driver.write_text(STALLING_DRIVER)
    command = [sys.executable, str(driver), str(marker), *cli(checkpoint, scenes, out)]
    process = subprocess.Popen(command, env=env_for(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert process.poll() is None, process.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        hidden = [name for name in os.listdir(out) if name.startswith(".")]
        assert hidden  # bravo is being written, under hidden names only
        assert sorted(name for name in os.listdir(out) if not name.startswith(".")) == ["alpha.tif"]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    alpha_stamp = (out / "alpha.tif").stat().st_mtime_ns
    assert sorted(name for name in os.listdir(out) if not name.startswith(".")) == ["alpha.tif"]

    assert main(cli(checkpoint, scenes, out)) == 0
    printed = capsys.readouterr().out
    assert "2 done, 1 skipped, 0 failed" in printed
    assert next(line for line in printed.splitlines() if line.startswith("alpha")).split()[1] == "skipped"
    assert (out / "alpha.tif").stat().st_mtime_ns == alpha_stamp
    assert {"alpha.tif", "bravo.tif", "charlie.tif", "collection.json"} <= set(os.listdir(out))

    assert main([*cli(checkpoint, scenes, out), "--overwrite"]) == 0
    assert "3 done, 0 skipped, 0 failed" in capsys.readouterr().out


def launch_two_processes(tmp_path: Path, arguments: list[str]) -> subprocess.CompletedProcess:
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += ["--main_process_port", str(free_port()), str(REPO / "scripts" / "predict.py"), *arguments]
    env = {**env_for(tmp_path), "ACCELERATE_USE_CPU": "1"}
    return subprocess.run(launch, capture_output=True, text=True, env=env, cwd=REPO, timeout=400, check=False)


@pytest.mark.parametrize("count", [3, 1], ids=["3 scenes: whole scenes per process", "1 scene: rows split"])
def test_two_processes_under_accelerate_launch_write_the_same_bytes_as_one(checkpoint, scenes, tmp_path, count):
    inputs = scenes[:count]
    single, multi = tmp_path / "single", tmp_path / "multi"
    predict_scenes(
        checkpoint, list(map(str, inputs)), single, tile=64, overlap=16, batch_size=4, water=True, progress=False
    )
    done = launch_two_processes(tmp_path, cli(checkpoint, inputs, multi, "--water")[1:])
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count(f"{count} done, 0 skipped, 0 failed") == 1  # the main process reports
    maps = sorted(path.name for path in single.glob("*.tif"))
    assert len(maps) == 2 * count and sorted(path.name for path in multi.glob("*.tif")) == maps
    assert not [name for name in os.listdir(multi) if name.startswith(".")]
    for name in maps:
        assert (multi / name).read_bytes() == (single / name).read_bytes(), name
    assert (multi / "collection.json").exists()
