"""The ablation's statistics and report files: per-seed test scores in, mean +- std per rung and paired differences
with 95 % intervals out, written as ``ablation.md``, ``ablation.json`` and ``ablation.png``.

Pure arithmetic and rendering (numpy, matplotlib), no model: :func:`summarize` takes the scores of every (rung, seed)
run, :func:`write_ablation_report` writes what it returns. :mod:`sarlulc.training.ablation` runs the ladder.

Statistics, for each metric of :data:`METRICS`, over the seeds whose value is finite (``n`` of them):

* **per rung**: the mean and the sample standard deviation (``n - 1`` in the denominator; undefined for ``n < 2``);
* **per refinement** (a rung against the rung below it): the paired differences ``d_s = score(rung, s) -
  score(rung below, s)`` over the seeds ``s`` where both are finite, their mean ``d``, sample standard deviation
  ``sd`` and the 95 % interval ``d +- t(0.975, n - 1) * sd / sqrt(n)`` (Student's t; undefined for ``n < 2``).
  Runs with the same seed share their data order, augmentation and mixing masks, and (from rung 3 on, and between
  rungs 1 and 2 for the decoder) their initialization, so pairing by seed removes that shared variation from the
  comparison. An interval that excludes 0 says the refinement changed the metric on this benchmark; one that
  includes 0 says the ladder cannot tell with this many seeds.

The seeds are the only replication: the scene, the split and the test tiles are fixed, so an interval speaks of the
variation between training runs on this test set, not of other scenes.

The t quantiles come from :data:`T_QUANTILES_975` (degrees of freedom 1-30, to six decimals) and, above 30 degrees of
freedom, from the Cornish-Fisher expansion of the t distribution around the normal quantile (error < 1e-7 there).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..files import atomic_output, write_json, write_text_atomic

__all__ = [
    "METRICS",
    "REPORT_FILENAMES",
    "T_QUANTILES_975",
    "Metric",
    "PairedDifference",
    "Spread",
    "format_markdown",
    "paired_difference",
    "plot_ladder",
    "spread",
    "summarize",
    "t_quantile_975",
    "write_ablation_report",
]

REPORT_FILENAMES = {"markdown": "ablation.md", "json": "ablation.json", "plot": "ablation.png"}


@dataclass(frozen=True)
class Metric:
    """A test-split score of the evaluation report (:func:`sarlulc.training.evaluation.segmentation_report`)."""

    key: str
    label: str


METRICS = (
    Metric("mean_iou", "mIoU"),
    Metric("iou_water", "IoU water"),
    Metric("rare_class_iou", "rare-class IoU"),
    Metric("rare_class_recall", "rare-class recall"),
    Metric("boundary_f1_thin", "thin boundary F1"),
)
"""The metrics the ablation reports, in the order of its tables."""

T_QUANTILES_975 = (
    12.706205,
    4.302653,
    3.182446,
    2.776445,
    2.570582,
    2.446912,
    2.364624,
    2.306004,
    2.262157,
    2.228139,
    2.200985,
    2.178813,
    2.160369,
    2.144787,
    2.131450,
    2.119905,
    2.109816,
    2.100922,
    2.093024,
    2.085963,
    2.079614,
    2.073873,
    2.068658,
    2.063899,
    2.059539,
    2.055529,
    2.051831,
    2.048407,
    2.045230,
    2.042272,
)
"""The 0.975 quantile of Student's t with 1, 2, ..., 30 degrees of freedom (the two-sided 95 % factor)."""

_NORMAL_975 = 1.959963984540054


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t distribution with ``df >= 1`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(T_QUANTILES_975):
        return T_QUANTILES_975[df - 1]
    z = _NORMAL_975
    # Cornish-Fisher expansion of t around the normal quantile, to 1/df**4.
    terms = (
        (z**3 + z) / 4,
        (5 * z**5 + 16 * z**3 + 3 * z) / 96,
        (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
        (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160,
    )
    return z + sum(term / df ** (power + 1) for power, term in enumerate(terms))


def _as_float(value: float | None) -> float:
    """A score as a float: None (how JSON stores NaN) becomes NaN."""
    return math.nan if value is None else float(value)


def _finite(values: Sequence[float | None]) -> np.ndarray:
    array = np.array([_as_float(v) for v in values], dtype=np.float64)
    return array[np.isfinite(array)]


@dataclass(frozen=True)
class Spread:
    """Mean and sample standard deviation of one rung's metric over the seeds with a finite value (``n``)."""

    mean: float
    std: float
    n: int


def spread(values: Sequence[float | None]) -> Spread:
    """:class:`Spread` of ``values``; ``None`` and NaN are left out, the std is NaN below two values."""
    finite = _finite(values)
    mean = float(finite.mean()) if finite.size else math.nan
    std = float(finite.std(ddof=1)) if finite.size >= 2 else math.nan
    return Spread(mean, std, int(finite.size))


@dataclass(frozen=True)
class PairedDifference:
    """The paired (by seed) difference of one metric between a rung and the rung below.

    Attributes:
        per_seed: ``upper - lower`` per seed (NaN where either is missing).
        mean, std, n: over the seeds where both are finite.
        t: the t quantile used (``t(0.975, n - 1)``), NaN below two seeds.
        low, high: the 95 % interval ``mean -+ t * std / sqrt(n)``, NaN below two seeds.
    """

    per_seed: tuple[float, ...]
    mean: float
    std: float
    n: int
    t: float
    low: float
    high: float

    @property
    def verdict(self) -> str:
        """``"up"`` or ``"down"`` when the interval excludes 0, ``"unclear"`` when it includes it, ``"n/a"``."""
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            return "n/a"
        if self.low > 0:
            return "up"
        if self.high < 0:
            return "down"
        return "unclear"


def paired_difference(upper: Sequence[float | None], lower: Sequence[float | None]) -> PairedDifference:
    """The :class:`PairedDifference` of two equally long per-seed sequences (same seed at the same position)."""
    if len(upper) != len(lower):
        raise ValueError(f"paired values need the same seeds: {len(upper)} against {len(lower)}")
    per_seed = tuple(_as_float(a) - _as_float(b) for a, b in zip(upper, lower))
    finite = _finite(per_seed)
    n = int(finite.size)
    mean = float(finite.mean()) if n else math.nan
    if n < 2:
        return PairedDifference(per_seed, mean, math.nan, n, math.nan, math.nan, math.nan)
    std = float(finite.std(ddof=1))
    t = t_quantile_975(n - 1)
    half_width = t * std / math.sqrt(n)
    return PairedDifference(per_seed, mean, std, n, t, mean - half_width, mean + half_width)


# ----------------------------------------------------------------------------------------------------------------------
# The summary
# ----------------------------------------------------------------------------------------------------------------------
def summarize(ladder: Sequence[Mapping[str, Any]], seeds: Sequence[int]) -> dict[str, Any]:
    """Means, standard deviations and paired differences of a ladder's per-seed scores.

    Args:
        ladder: one entry per rung, in ladder order: ``rung`` (number), ``setting`` (its name), ``targets`` (the
            metric keys the step to this rung is meant to improve) and ``runs``: one mapping per seed, in the order
            of ``seeds``, with ``seed`` and a value for every metric of :data:`METRICS` (NaN or None when undefined).
        seeds: the training seeds.

    Returns:
        ``seeds``, ``metrics`` (key -> label), ``rungs`` (each entry of ``ladder`` with ``mean``, ``std`` and ``n``
        per metric added) and ``differences``: for each rung after the first, against the rung before it in
        ``ladder``: ``rung``, ``below``, ``setting``, ``targets`` and per metric the fields of
        :class:`PairedDifference` plus its ``verdict``.
    """
    rungs = []
    for entry in ladder:
        runs = list(entry["runs"])
        if [run["seed"] for run in runs] != list(seeds):
            raise ValueError(
                f"rung {entry['rung']}: runs for seeds {[r['seed'] for r in runs]}, expected {list(seeds)}"
            )
        spreads = {metric.key: spread([run[metric.key] for run in runs]) for metric in METRICS}
        rungs.append(
            {
                **entry,
                "runs": runs,
                "mean": {key: value.mean for key, value in spreads.items()},
                "std": {key: value.std for key, value in spreads.items()},
                "n": {key: value.n for key, value in spreads.items()},
            }
        )
    differences = []
    for lower, upper in itertools.pairwise(rungs):
        metrics = {}
        for metric in METRICS:
            difference = paired_difference(
                [run[metric.key] for run in upper["runs"]], [run[metric.key] for run in lower["runs"]]
            )
            metrics[metric.key] = {
                "per_seed": list(difference.per_seed),
                "mean": difference.mean,
                "std": difference.std,
                "n": difference.n,
                "t": difference.t,
                "low": difference.low,
                "high": difference.high,
                "verdict": difference.verdict,
            }
        differences.append(
            {
                "rung": upper["rung"],
                "below": lower["rung"],
                "setting": upper["setting"],
                "targets": list(upper["targets"]),
                "metrics": metrics,
            }
        )
    return {
        "seeds": list(seeds),
        "metrics": {metric.key: metric.label for metric in METRICS},
        "rungs": rungs,
        "differences": differences,
    }


# ----------------------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------------------
def _percent(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.2f}"


def _points(value: float | None) -> str:
    """A difference in percentage points, always signed."""
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:+.2f}"


def _rung_cell(mean: float, std: float, n: int, seeds: int) -> str:
    cell = f"{_percent(mean)} ± {_percent(std)}"
    return cell if n == seeds else f"{cell} (n={n})"


def _difference_cell(values: Mapping[str, Any], targeted: bool) -> str:
    cell = f"{_points(values['mean'])} [{_points(values['low'])}, {_points(values['high'])}]"
    return f"**{cell}**" if targeted else cell


_VERDICTS = {
    "up": "raises it",
    "down": "lowers it",
    "unclear": "cannot tell (interval includes 0)",
    "n/a": "needs 2 seeds",
}


def format_markdown(summary: Mapping[str, Any], header: Sequence[str] = ()) -> str:
    """The report as markdown: the ladder (mean ± std per rung and metric, %), then the paired differences
    (percentage points, 95 % intervals) with a verdict on each refinement's target metrics.

    ``header``: lines put under the title (what was run, on which data).
    """
    seeds = summary["seeds"]
    labels = summary["metrics"]
    keys = list(labels)
    lines = [f"# Ablation ladder: {len(seeds)} seeds ({', '.join(map(str, seeds))})", "", *header]
    if header:
        lines.append("")
    lines += [
        "## Test scores, mean ± standard deviation over the seeds (%)",
        "",
        "| rung | setting | " + " | ".join(labels[key] for key in keys) + " |",
        "|---:|---|" + "---:|" * len(keys),
    ]
    for rung in summary["rungs"]:
        cells = [_rung_cell(rung["mean"][k], rung["std"][k], rung["n"][k], len(seeds)) for k in keys]
        lines.append(f"| {rung['rung']} | {rung['setting']} | " + " | ".join(cells) + " |")
    if summary["differences"]:
        lines += [
            "",
            "## Paired differences to the rung below (percentage points, mean [95 % interval])",
            "",
            "Differences are taken seed by seed; the interval is the t-interval of the per-seed differences. Bold: "
            "the metrics the refinement targets.",
            "",
            "| rung | refinement | vs | " + " | ".join(labels[key] for key in keys) + " | on its target |",
            "|---:|---|---:|" + "---:|" * len(keys) + "---|",
        ]
        for difference in summary["differences"]:
            metrics, targets = difference["metrics"], difference["targets"]
            cells = [_difference_cell(metrics[k], k in targets) for k in keys]
            verdict = "; ".join(f"{labels[k]}: {_VERDICTS[metrics[k]['verdict']]}" for k in targets) or "-"
            lines.append(
                f"| {difference['rung']} | {difference['setting']} | {difference['below']} | "
                + " | ".join(cells)
                + f" | {verdict} |"
            )
    return "\n".join(lines) + "\n"


def plot_ladder(summary: Mapping[str, Any], path: str | Path) -> None:
    """One panel per metric: each rung's mean with a ±1 std error bar, and every seed's score as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = summary["metrics"]
    rungs = summary["rungs"]
    positions = np.arange(len(rungs))
    figure, axes = plt.subplots(1, len(labels), figsize=(3.0 * len(labels), 3.4), squeeze=False)
    for ax, (key, label) in zip(axes[0], labels.items()):
        means = 100 * np.array([_as_float(r["mean"][key]) for r in rungs])
        stds = 100 * np.nan_to_num(np.array([_as_float(r["std"][key]) for r in rungs]), nan=0.0)
        for position, rung in zip(positions, rungs):
            values = 100 * _finite([run[key] for run in rung["runs"]])
            ax.scatter([position] * len(values), values, s=10, color="0.6", zorder=2)
        ax.errorbar(positions, means, yerr=stds, fmt="o-", color="tab:blue", capsize=4, zorder=3)
        ax.set_xticks(positions, [str(rung["rung"]) for rung in rungs])
        ax.set_xlabel("rung")
        ax.set_title(f"{label} (%)", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    seeds = len(summary["seeds"])
    figure.suptitle(f"ablation ladder: mean ± std over {seeds} seeds (dots: single seeds)", fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_ablation_report(
    summary: Mapping[str, Any], output_dir: str | Path, header: Sequence[str] = ()
) -> dict[str, Path]:
    """Write ``ablation.json`` (the summary as given), ``ablation.md`` (:func:`format_markdown`) and ``ablation.png``
    (:func:`plot_ladder`) into ``output_dir``, each atomically; return their paths by kind."""
    directory = Path(output_dir)
    paths = {kind: directory / name for kind, name in REPORT_FILENAMES.items()}
    write_json(paths["json"], summary)
    write_text_atomic(paths["markdown"], format_markdown(summary, header))
    with atomic_output(paths["plot"]) as temporary:
        plot_ladder(summary, temporary)
    return paths
