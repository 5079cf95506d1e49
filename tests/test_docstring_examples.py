"""The ``Examples:`` of the public API's docstrings run as doctests, each in a temporary folder with the small inputs
it writes itself (a synthetic scene, an untrained tiny model): the usage a docstring shows cannot rot."""

from __future__ import annotations

import doctest
import importlib

import pytest

# The documented entry points: reading scenes, tiling, whole-scene maps, loading models, the pipeline.
DOCUMENTED = (
    "sarlulc.data.products.open_scene",
    "sarlulc.data.tiles.split_tile_dataset",
    "sarlulc.inference.scene.predict_scene",
    "sarlulc.models.modeling_sar_lulc.SarLulcForSemanticSegmentation",
    "sarlulc.models.pipeline_sar_segmentation.SarSegmentationPipeline",
)


def _resolve(dotted: str):
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("dotted", DOCUMENTED)
def test_docstring_examples_run(dotted: str, tmp_path, monkeypatch):
    import datasets

    monkeypatch.chdir(tmp_path)  # the examples write their inputs and outputs into the current folder
    datasets.disable_progress_bars()
    try:
        tests = doctest.DocTestFinder(recurse=False).find(_resolve(dotted), dotted, globs={})
        examples = [test for test in tests if test.examples]
        assert examples, f"{dotted} has no Examples: section"
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        for test in examples:
            runner.run(test)
        result = runner.summarize(verbose=False)
    finally:
        datasets.enable_progress_bars()
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {dotted} failed (report above)"


def test_the_public_names_are_the_documented_objects():
    import sarlulc
    import sarlulc.data
    import sarlulc.inference

    assert sarlulc.data.open_scene is _resolve(DOCUMENTED[0])
    assert sarlulc.data.split_tile_dataset is _resolve(DOCUMENTED[1])
    assert sarlulc.inference.predict_scene is _resolve(DOCUMENTED[2])
    assert sarlulc.SarLulcForSemanticSegmentation is _resolve(DOCUMENTED[3])
    assert sarlulc.SarSegmentationPipeline is _resolve(DOCUMENTED[4])
