"""Tests of the ``sar_lulc_iou`` evaluate metric, each against an independent computation written here."""

from __future__ import annotations

import ast
import inspect
import socket
import sys
import warnings
from pathlib import Path

import evaluate
import numpy as np
import pytest

from sarlulc.data.classes import IGNORE_INDEX, LULC_9
from sarlulc.metrics import load_metric, metric_path
from sarlulc.metrics.sar_lulc_iou.sar_lulc_iou import SarLulcIoU, confusion_matrix, metrics_from_confusion

SCALAR_KEYS = ("mean_iou", "mean_accuracy", "overall_accuracy")
ARRAY_KEYS = ("per_category_iou", "per_category_accuracy")


@pytest.fixture(autouse=True)
def runtime_warnings_are_errors():
    """No 0/0 or empty-mean RuntimeWarning may leak out of the metric."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        yield


@pytest.fixture
def metric(tmp_path) -> SarLulcIoU:
    return SarLulcIoU(cache_dir=str(tmp_path / "metrics"))


def reference_mean_iou(predictions, references, num_labels: int, ignore_index: int) -> dict:
    """evaluate's ``mean_iou`` from its definition: per image, drop pixels whose reference is ``ignore_index``, then
    histogram the matching predictions, all predictions and all references over ``bins=K, range=(0, K-1)``; sum the
    areas over the set; IoU = intersection / union, accuracy = intersection / reference area, NaN-skipping means."""
    intersection, predicted, labelled = (np.zeros(num_labels) for _ in range(3))
    for pred, ref in zip(predictions, references):
        counted = ref != ignore_index
        pred, ref = pred[counted], ref[counted]
        intersection += np.histogram(pred[pred == ref], bins=num_labels, range=(0, num_labels - 1))[0]
        predicted += np.histogram(pred, bins=num_labels, range=(0, num_labels - 1))[0]
        labelled += np.histogram(ref, bins=num_labels, range=(0, num_labels - 1))[0]
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        iou = intersection / (predicted + labelled - intersection)
        accuracy = intersection / labelled
        return {
            "mean_iou": np.nanmean(iou),
            "mean_accuracy": np.nanmean(accuracy),
            "overall_accuracy": intersection.sum() / labelled.sum(),
            "per_category_iou": iou,
            "per_category_accuracy": accuracy,
        }


def random_maps(rng: np.random.Generator, num_labels: int, n_images: int) -> tuple[list, list]:
    """Pairs of maps of varied sizes with ignore pixels, ids outside [0, K-1] in both predictions and references,
    class K-1 absent everywhere and class K-2 only ever predicted."""
    ref_values = [*range(num_labels - 2), IGNORE_INDEX, num_labels, num_labels + 3, -1]
    pred_values = [*range(num_labels - 1), num_labels, IGNORE_INDEX, -2]
    predictions, references = [], []
    for _ in range(n_images):
        shape = tuple(rng.integers(4, 40, size=2))
        ref = rng.choice(ref_values, size=shape).astype(np.int16)
        pred = np.where(rng.random(shape) < 0.5, ref, rng.choice(pred_values, size=shape)).astype(np.int16)
        predictions.append(pred)
        references.append(ref)
    return predictions, references


def assert_same_metrics(ours: dict, expected: dict) -> None:
    for key in SCALAR_KEYS:
        np.testing.assert_allclose(ours[key], expected[key], rtol=1e-12, err_msg=key)
    for key in ARRAY_KEYS:
        np.testing.assert_allclose(ours[key], expected[key], rtol=1e-12, err_msg=key)


# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_equals_reference_mean_iou(metric, seed):
    rng = np.random.default_rng(seed)
    num_labels = 5 + seed
    predictions, references = random_maps(rng, num_labels, n_images=6)
    expected = reference_mean_iou(predictions, references, num_labels, IGNORE_INDEX)
    assert np.isnan(expected["per_category_iou"][-1]) and expected["per_category_iou"][-2] == 0  # the cases we want

    result = metric.compute(predictions=predictions, references=references, num_labels=num_labels)

    assert_same_metrics(result, expected)
    assert np.isnan(result["per_category_accuracy"][-2])  # predicted, never in the reference
    cm = np.array(result["confusion_matrix"])
    assert cm.shape == (num_labels, num_labels)
    valid = [(p[(r >= 0) & (r < num_labels)], r[(r >= 0) & (r < num_labels)]) for p, r in zip(predictions, references)]
    for i, j in [(0, 0), (0, 1), (1, 0), (num_labels - 3, num_labels - 2)]:
        assert cm[i, j] == sum(int(((r == i) & (p == j)).sum()) for p, r in valid)


def test_documented_mean_iou_example(metric):
    """The worked example of evaluate's mean_iou card, with its published numbers."""
    predictions = [
        np.array([[1, 2], [3, 4], [5, 255]]),
        np.array([[2, 7], [9, 2], [3, 6]]),
        np.array([[2, 2, 3], [8, 2, 4], [3, 255, 2]]),
    ]
    references = [
        np.array([[0, 3], [5, 4], [6, 255]]),
        np.array([[1, 7], [9, 2], [3, 6]]),
        np.array([[1, 2, 2], [8, 2, 1], [3, 255, 1]]),
    ]
    result = metric.compute(predictions=predictions, references=references, num_labels=10, ignore_index=255)
    np.testing.assert_allclose(result["mean_iou"], 0.4775)
    np.testing.assert_allclose(result["mean_accuracy"], 0.5916666666666666)
    np.testing.assert_allclose(result["overall_accuracy"], 0.5263157894736842)
    np.testing.assert_allclose(result["per_category_iou"], [0, 0, 0.375, 0.4, 0.5, 0, 0.5, 1, 1, 1])
    np.testing.assert_allclose(result["per_category_accuracy"], [0, 0, 0.75, 2 / 3, 1, 0, 0.5, 1, 1, 1])


def test_ids_outside_the_classes_follow_mean_iou(metric):
    """Reference 7 (not ignored) with prediction 1: a false positive of class 1. Reference 0 with prediction 9: a miss
    of class 0. Neither is a labelled pixel of class 1, so class 1 has IoU 0 and accuracy NaN."""
    pred, ref = np.array([[0, 9, 1, 1]]), np.array([[0, 0, 7, 255]])
    result = metric.compute(predictions=[pred], references=[ref], num_labels=2)
    np.testing.assert_array_equal(result["per_category_iou"], [0.5, 0.0])
    np.testing.assert_array_equal(result["per_category_accuracy"], [0.5, np.nan])
    assert (result["mean_iou"], result["mean_accuracy"], result["overall_accuracy"]) == (0.25, 0.5, 0.5)
    assert result["confusion_matrix"] == [[1, 0], [0, 0]]
    np.testing.assert_array_equal(confusion_matrix(pred, ref, num_labels=2), [[1, 0, 1], [0, 0, 0], [0, 1, 0]])
    assert_same_metrics(result, reference_mean_iou([pred], [ref], 2, 255))


def test_per_class_f1_and_names(metric):
    rng = np.random.default_rng(7)
    ref = rng.integers(0, 9, size=(3, 20, 20))
    pred = np.where(rng.random(ref.shape) < 0.6, ref, rng.integers(0, 9, size=ref.shape))
    result = metric.compute(predictions=pred, references=ref, num_labels=9, id2label=LULC_9.id2label)
    for c in range(9):
        tp, predicted, labelled = ((pred == c) & (ref == c)).sum(), (pred == c).sum(), (ref == c).sum()
        assert result["per_category_f1"][c] == pytest.approx(2 * tp / (predicted + labelled))
    assert list(result["per_category_iou_by_name"]) == LULC_9.names
    assert result["per_category_f1_by_name"]["Water"] == result["per_category_f1"][0]
    string_keys = {str(k): v for k, v in LULC_9.id2label.items()}  # as read back from a JSON config
    by_name = metrics_from_confusion(result["confusion_matrix"], 9, id2label=string_keys)["per_category_iou_by_name"]
    assert by_name == result["per_category_iou_by_name"]


# ---------------------------------------------------------------------------------------------------------------------
def hand_water_metrics(predictions, references, water: int, ignore_index: int = IGNORE_INDEX) -> dict:
    """Binary water metrics from TP / FP / FN counted pixel by pixel over the counted (non-ignored) pixels."""
    pred = np.concatenate([p.ravel() for p in predictions])
    ref = np.concatenate([r.ravel() for r in references])
    pred, ref = pred[ref != ignore_index], ref[ref != ignore_index]
    tp = int(((pred == water) & (ref == water)).sum())
    fp = int(((pred == water) & (ref != water)).sum())
    fn = int(((pred != water) & (ref == water)).sum())
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    return {
        "precision_water": precision,
        "recall_water": recall,
        "f1_water": 2 * precision * recall / (precision + recall),
        "iou_water": tp / (tp + fp + fn),
        "overall_accuracy": float((pred == ref).mean()),
    }


@pytest.mark.parametrize("seed", range(3))
def test_water_metrics_binary(metric, seed):
    rng = np.random.default_rng(100 + seed)
    ref = rng.choice([0, 1, IGNORE_INDEX], p=[0.6, 0.3, 0.1], size=(4, 24, 24)).astype(np.uint8)
    pred = np.where(rng.random(ref.shape) < 0.8, ref, rng.integers(0, 2, size=ref.shape)).astype(np.uint8)
    pred[ref == IGNORE_INDEX] = rng.integers(0, 2)
    result = metric.compute(predictions=pred, references=ref, num_labels=2, task="water")
    for key, value in hand_water_metrics(pred, ref, water=1).items():
        assert result[key] == pytest.approx(value, rel=1e-12), key


def test_water_metrics_from_lulc_classes(metric):
    """task="water" on 9-class maps: water (id 0) against the rest, ids outside [0, K-1] included."""
    predictions, references = random_maps(np.random.default_rng(3), num_labels=9, n_images=5)
    result = metric.compute(predictions=predictions, references=references, num_labels=9, task="water", water_id=0)
    expected = hand_water_metrics(predictions, references, water=0)
    for key in ("precision_water", "recall_water", "f1_water", "iou_water"):
        assert result[key] == pytest.approx(expected[key], rel=1e-12), key


@pytest.mark.parametrize(
    ("pred", "ref", "expected"),
    [
        # No water in reference nor prediction: every water ratio is 0/0, hence NaN.
        (
            [[0, 0, 0]],
            [[0, 0, 255]],
            {"iou_water": np.nan, "precision_water": np.nan, "recall_water": np.nan, "f1_water": np.nan},
        ),
        # Water never predicted: precision undefined, recall 0, F1 = 2TP/(2TP+FP+FN) = 0.
        ([[0, 0, 0]], [[1, 0, 0]], {"iou_water": 0.0, "precision_water": np.nan, "recall_water": 0.0, "f1_water": 0.0}),
        # Water only predicted: precision 0, recall undefined, F1 0.
        ([[1, 0, 0]], [[0, 0, 0]], {"iou_water": 0.0, "precision_water": 0.0, "recall_water": np.nan, "f1_water": 0.0}),
    ],
)
def test_water_metrics_degenerate(metric, pred, ref, expected):
    result = metric.compute(predictions=[np.array(pred)], references=[np.array(ref)], num_labels=2, task="water")
    for key, value in expected.items():
        np.testing.assert_equal(result[key], value, err_msg=key)
    assert result["overall_accuracy"] == pytest.approx((np.array(pred) == np.array(ref))[np.array(ref) != 255].mean())


# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture
def fresh_hf_home(tmp_path, monkeypatch):
    """An empty HF_HOME for evaluate (module and metric caches), offline, with network connections refused.

    evaluate reads its cache paths when it is imported, so they are patched in its config; the dynamic-module package
    ``evaluate_modules`` is taken out of ``sys.modules`` so that it is imported again from the new cache.
    """
    home = tmp_path / "hf_home"
    modules = home / "modules"
    modules.mkdir(parents=True)
    for name, value in {
        "HF_HOME": home,
        "HF_MODULES_CACHE": modules,
        "HF_HUB_OFFLINE": 1,
        "HF_EVALUATE_OFFLINE": 1,
    }.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.setattr(evaluate.config, "HF_MODULES_CACHE", modules)
    monkeypatch.setattr(evaluate.config, "HF_METRICS_CACHE", home / "metrics")
    monkeypatch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True)
    monkeypatch.syspath_prepend(str(modules))

    def refuse(*args, **kwargs):
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    saved = {name: sys.modules.pop(name) for name in _dynamic_modules()}
    yield home
    for name in _dynamic_modules():
        del sys.modules[name]
    sys.modules.update(saved)


def _dynamic_modules() -> list[str]:
    """Names of the imported modules of evaluate's dynamic-module package (metric scripts copied to the cache)."""
    return [name for name in sys.modules if name.split(".")[0] == "evaluate_modules"]


def test_evaluate_load_offline_matches_direct_class(fresh_hf_home, metric):
    loaded = evaluate.load(metric_path())
    assert type(loaded).__name__ == "SarLulcIoU" and type(loaded) is not SarLulcIoU
    assert Path(inspect.getfile(type(loaded))).is_relative_to(fresh_hf_home / "modules")
    assert loaded.name == "sar_lulc_iou"
    assert type(load_metric()).__name__ == "SarLulcIoU"

    predictions, references = random_maps(np.random.default_rng(11), num_labels=9, n_images=4)
    kwargs = {"num_labels": 9, "task": "water", "water_id": 0, "id2label": LULC_9.id2label}
    loaded.add_batch(predictions=predictions[:2], references=references[:2])
    from_load = loaded.compute(predictions=predictions[2:], references=references[2:], **kwargs)
    direct = metric.compute(predictions=predictions, references=references, **kwargs)
    assert from_load.keys() == direct.keys()
    for key, value in direct.items():
        np.testing.assert_equal(from_load[key], value, err_msg=key)


def test_metric_script_is_self_contained():
    """evaluate copies the script alone: it may import only numpy, datasets, evaluate and the standard library."""
    script = Path(metric_path()) / "sar_lulc_iou.py"
    assert (Path(metric_path()) / "README.md").is_file()
    imported = set()
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import in the metric script"
            imported.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
    assert imported - set(sys.stdlib_module_names) == {"numpy", "datasets", "evaluate"}


# ---------------------------------------------------------------------------------------------------------------------
def test_streaming_equals_one_shot_and_keeps_no_pixels(tmp_path, metric):
    rng = np.random.default_rng(5)
    num_labels = 9
    batches = []
    for _ in range(60):
        ref = rng.choice([*range(num_labels), IGNORE_INDEX], size=(4, 16, 16)).astype(np.uint8)
        pred = np.where(rng.random(ref.shape) < 0.7, ref % num_labels, rng.integers(0, num_labels, ref.shape))
        pred = pred.astype(np.uint8)
        ref[0, 0, :2], pred[0, 0, :2] = (0, IGNORE_INDEX), (0, num_labels - 1)  # each batch spans the same ids
        batches.append((pred, ref))

    table_sizes = set()
    for pred, ref in batches[:-1]:
        metric.add_batch(predictions=pred, references=ref)
        table_sizes.add(metric._counts.shape)
    for pred, ref in zip(*batches[-1]):
        metric.add(prediction=pred, reference=ref)
    assert table_sizes == {(IGNORE_INDEX + 1, num_labels)}  # reference values 0..255 x predictions 0..8, int64
    assert metric._counts.dtype == np.int64 and metric._counts.sum() == 60 * 4 * 16 * 16
    assert metric.writer is None and len(metric) == 0  # nothing went to evaluate's Arrow cache
    streamed = metric.compute(num_labels=num_labels)
    assert metric._counts is None

    all_pred = [p for pred, _ in batches for p in pred]
    all_ref = [r for _, ref in batches for r in ref]
    one_shot = SarLulcIoU(cache_dir=str(tmp_path)).compute(predictions=all_pred, references=all_ref, num_labels=9)
    summed = sum(confusion_matrix(pred, ref, num_labels) for pred, ref in batches)
    from_function = metrics_from_confusion(summed, num_labels)
    for other in (one_shot, from_function):
        assert other.keys() == streamed.keys()
        for key, value in streamed.items():
            np.testing.assert_equal(other[key], value, err_msg=key)
    assert_same_metrics(streamed, reference_mean_iou(all_pred, all_ref, num_labels, IGNORE_INDEX))


def test_compute_clears_state_but_keeps_it_on_bad_arguments(metric):
    metric.add_batch(predictions=[np.array([[0, 1]])], references=[np.array([[0, 1]])])
    with pytest.raises(ValueError, match="task"):
        metric.compute(num_labels=2, task="forest")
    assert metric.compute(num_labels=2)["mean_iou"] == 1.0
    with pytest.raises(ValueError, match="nothing to compute"):
        metric.compute(num_labels=2)


# ---------------------------------------------------------------------------------------------------------------------
def test_counts_beyond_2_32_do_not_overflow():
    big = 2**32
    cm = np.array([[5 * big + 7, 3, big], [2 * big, 3 * big + 1, 0], [11, big + 5, 0]], dtype=np.int64)
    result = metrics_from_confusion(cm, 2, task="water")

    def iou(tp, label_area, pred_area):
        return tp / (label_area + pred_area - tp)

    label0, pred0 = 5 * big + 7 + 3 + big, 5 * big + 7 + 2 * big + 11
    label1, pred1 = 2 * big + 3 * big + 1, 3 + 3 * big + 1 + big + 5
    assert result["per_category_iou"][0] == pytest.approx(iou(5 * big + 7, label0, pred0), rel=1e-15)
    assert result["iou_water"] == pytest.approx(iou(3 * big + 1, label1, pred1), rel=1e-15)
    assert result["precision_water"] == pytest.approx((3 * big + 1) / pred1, rel=1e-15)
    assert result["overall_accuracy"] == pytest.approx((8 * big + 8) / (label0 + label1), rel=1e-15)
    assert result["confusion_matrix"] == [[5 * big + 7, 3], [2 * big, 3 * big + 1]]
    assert metrics_from_confusion(cm[:2, :2].astype(np.uint64), 2)["confusion_matrix"] == result["confusion_matrix"]


def test_streamed_counts_beyond_2_32(metric):
    """Scale accumulated counts as if the map had ~10^12 pixels: the int64 path to the metrics stays exact."""
    rng = np.random.default_rng(2)
    ref = rng.choice([0, 1, 2, IGNORE_INDEX], size=(2, 30, 30))
    pred = rng.integers(0, 3, size=ref.shape)
    small = metrics_from_confusion(confusion_matrix(pred, ref, 3), 3)
    metric.add_batch(predictions=pred, references=ref)
    metric._counts *= 3 * 2**30 + 1
    large = metric.compute(num_labels=3)
    assert large["confusion_matrix"] == [[c * (3 * 2**30 + 1) for c in row] for row in small["confusion_matrix"]]
    assert max(max(row) for row in large["confusion_matrix"]) > 2**32
    for key in (*SCALAR_KEYS, *ARRAY_KEYS, "per_category_f1"):
        np.testing.assert_allclose(large[key], small[key], rtol=1e-14, err_msg=key)
    assert confusion_matrix(pred, ref, 3).dtype == np.int64


# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda m: m.compute(predictions=[[[0]]], references=[[[0]]], num_labels=2, task="lulc", water_id=0),
            "water_id",
        ),
        (
            lambda m: m.compute(predictions=[[[0]]], references=[[[0]]], num_labels=2, task="water", water_id=2),
            "water_id",
        ),
        (lambda m: m.compute(predictions=[[[0]]], references=[[[0]]], num_labels=0), "num_labels"),
        (lambda m: m.compute(predictions=[[[0]]], references=[[[0]]], num_labels=2, id2label={0: "a"}), "id2label"),
        (lambda m: m.add_batch(predictions=[np.zeros((2, 2))], references=[np.zeros((2, 2), int)]), "integer"),
        (lambda m: m.add_batch(predictions=[np.zeros((2, 3), int)], references=[np.zeros((2, 2), int)]), "shape"),
        (lambda m: m.add_batch(predictions=[[[0]]], references=[[[0]], [[1]]]), "references"),
        (lambda m: m.add(prediction=np.array([0, 2**20]), reference=np.array([0, 2**20])), "too wide"),
        (lambda m: metrics_from_confusion(np.zeros((3, 3), int), 4), "shape"),
        (lambda m: metrics_from_confusion(-np.ones((2, 2), int), 2), "negative"),
        (lambda m: SarLulcIoU(num_process=2, process_id=0, cache_dir=m.data_dir), "num_process"),
    ],
)
def test_bad_inputs_raise(metric, call, match):
    with pytest.raises(ValueError, match=match):
        call(metric)
