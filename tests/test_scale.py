"""``SARLULC_DOCS_SMALL`` (:mod:`sarlulc.scale`): the caps apply only when it is set, and only to sizes."""

from __future__ import annotations

import rasterio

from sarlulc.data.synthetic import generate_scene
from sarlulc.scale import DOCS_SMALL_ENV, SMALL_SCENE_SIZE, docs_small, scaled


def test_the_caps_apply_only_when_the_variable_is_set(monkeypatch):
    monkeypatch.delenv(DOCS_SMALL_ENV, raising=False)
    assert not docs_small() and scaled(2048, SMALL_SCENE_SIZE) == 2048
    for off in ("", "0", " 0 "):
        monkeypatch.setenv(DOCS_SMALL_ENV, off)
        assert not docs_small() and scaled(2048, SMALL_SCENE_SIZE) == 2048
    monkeypatch.setenv(DOCS_SMALL_ENV, "1")
    assert docs_small()
    assert scaled(2048, SMALL_SCENE_SIZE) == SMALL_SCENE_SIZE and scaled(256, SMALL_SCENE_SIZE) == 256


def test_a_synthetic_scene_is_capped_in_small_mode_only(tmp_path, monkeypatch):
    monkeypatch.setenv(DOCS_SMALL_ENV, "1")
    small = generate_scene(tmp_path / "small", size=(SMALL_SCENE_SIZE + 64, 2048), progress=False)
    with rasterio.open(small.scene) as src:
        assert (src.height, src.width) == (SMALL_SCENE_SIZE, SMALL_SCENE_SIZE)
    monkeypatch.delenv(DOCS_SMALL_ENV)
    full = generate_scene(tmp_path / "full", size=(SMALL_SCENE_SIZE + 64, 96), progress=False)
    with rasterio.open(full.scene) as src:
        assert (src.height, src.width) == (SMALL_SCENE_SIZE + 64, 96)
