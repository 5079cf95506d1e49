"""The class scheme a tiled dataset's labels were encoded with travels with the tiles (``label`` feature record,
:func:`sarlulc.data.tiles.label_scheme`): through ``save_to_disk``/``load_from_disk`` and streaming, so that a task whose
scheme derives from it (water from LULC tiles) trains on them, and an incompatible one fails with one line."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest

from helpers_training import TINY_SEGMENTATION
from sarlulc.data import SpatialSplit, label_scheme, split_tile_dataset
from sarlulc.data.classes import LULC_9, WATER
from sarlulc.data.synthetic import generate_scene
from sarlulc_cli import main


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("schemes") / "scene"
    generate_scene(folder, 256, seed=0, progress=False)
    return folder


def _split(scene: Path, cache: Path, **options):
    return split_tile_dataset(
        scene, SpatialSplit(group_size=2, seed=0), tile_size=64, cache_dir=cache, progress=False, **options
    )


@pytest.fixture(scope="module")
def saved_tiles(scene: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The scene tiled for each scheme and saved to disk, as `sarlulc demo` saves its tiles."""
    root = tmp_path_factory.mktemp("saved-tiles")
    saved = {}
    for scheme in ("lulc-9", "water"):
        _split(scene, root / "cache", scheme=scheme).save_to_disk(str(root / scheme))
        saved[scheme] = root / scheme
    return saved


def test_the_recorded_scheme_survives_save_to_disk_and_load_from_disk(saved_tiles):
    for name, expected in (("lulc-9", LULC_9), ("water", WATER)):
        loaded = datasets.load_from_disk(str(saved_tiles[name]))
        for split in loaded.values():
            assert label_scheme(split) == expected, (name, split)
            # and through the operations the training applies to a split
            assert label_scheme(split.select(range(1)).with_format("numpy")) == expected
        ids = np.unique(np.asarray(loaded["train"].with_format("numpy")["label"]))
        assert set(ids.tolist()) <= set(range(expected.num_classes)) | {expected.ignore_index}


def test_the_recorded_scheme_is_there_when_streaming(scene, tmp_path):
    streamed = _split(scene, tmp_path / "cache", streaming=True)
    assert isinstance(streamed, datasets.IterableDatasetDict)
    for split in streamed.values():
        assert label_scheme(split) == LULC_9
    first = next(iter(streamed["train"]))
    assert set(np.unique(np.asarray(first["label"])).tolist()) <= set(range(LULC_9.num_classes)) | {255}
    # a saved dataset streamed back (to_iterable_dataset) keeps it too
    assert label_scheme(_split(scene, tmp_path / "cache")["train"].to_iterable_dataset()) == LULC_9


def test_a_dataset_without_the_record_has_no_scheme():
    plain = datasets.Dataset.from_dict({"label": [[[0, 1], [1, 0]]]})
    assert label_scheme(plain) is None


def _finetune(tiles: Path, output: Path, task: str) -> list[str]:
    return [
        "finetune",
        "--task",
        task,
        "--from_scratch",
        "--train_data",
        str(tiles),
        "--output_dir",
        str(output),
        "--config_overrides",
        *TINY_SEGMENTATION,
        "--max_train_steps",
        "1",
        "--per_device_train_batch_size",
        "2",
        "--disable_tqdm",
    ]


def test_a_water_model_fine_tunes_on_lulc_tiles(saved_tiles, tmp_path):
    assert main(_finetune(saved_tiles["lulc-9"], tmp_path / "water", "water"), prog="sarlulc finetune") == 0
    config = json.loads((tmp_path / "water" / "config.json").read_text())
    assert {int(k): v for k, v in config["id2label"].items()} == WATER.id2label


def test_an_incompatible_scheme_fails_at_the_command_line_with_one_line(saved_tiles, tmp_path, capsys):
    # LULC's nine classes cannot be derived from water-vs-rest labels
    assert main(_finetune(saved_tiles["water"], tmp_path / "lulc", "lulc"), prog="sarlulc finetune") == 2
    error = capsys.readouterr().err.strip()
    assert "Traceback" not in error
    last = error.splitlines()[-1]
    assert last.startswith("sarlulc finetune: error: ") and "'water'" in last and "'lulc-9'" in last, error
    assert not (tmp_path / "lulc" / "config.json").exists()
