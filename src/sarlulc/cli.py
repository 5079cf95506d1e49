"""The ``sarlulc`` command line: ``sarlulc --help`` lists the subcommands.

``sarlulc synth``
    Write a synthetic ALOS-2 HH scene (``scene.tif``) and its aligned JAXA-code labels (``labels.tif``) into a folder.
``sarlulc demo``
    End-to-end walk-through on a small synthetic scene: synthesize, tile with a spatial split, report statistics.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data.alos2 import DEFAULT_CALIBRATION_FACTOR, SarLulcDataError
from .data.classes import JAXA_SOURCE_CLASSES, get_scheme

Echo = Callable[[str], None]


def _size(text: str) -> tuple[int, int]:
    """``"2048"`` -> (2048, 2048); ``"1024x2048"`` -> (1024, 2048) as (height, width)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"size must be N or HxW in pixels, got {text!r}") from err
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 64:
        raise argparse.ArgumentTypeError(f"size must be N or HxW with every side >= 64 pixels, got {text!r}")
    return parts[0], parts[1]


# ----------------------------------------------------------------------------------------------------------------------
# sarlulc synth
# ----------------------------------------------------------------------------------------------------------------------
def _describe_synthetic(result, echo: Echo) -> None:
    import rasterio

    with rasterio.open(result.scene) as scene:
        units = "deg" if scene.crs.is_geographic else "m"
        echo(
            f"wrote {result.scene}: {scene.height} x {scene.width} px, {scene.dtypes[0]} DN (band 1 = HH), "
            f"nodata {scene.nodata:g}, {scene.crs.to_string()}, pixel {scene.res[0]:.6g} {units}, "
            f"calibration factor {result.config.calibration_factor:g} dB, {result.config.looks:g} looks"
        )
    echo(f"wrote {result.labels}: uint8 JAXA land-cover codes 1..14 (0 = no data), same grid")
    total = sum(result.class_pixels.values())
    for code, count in sorted(result.class_pixels.items()):
        name = JAXA_SOURCE_CLASSES.get(code, "No data")
        echo(f"  {code:>2} {name:<28} {count:>11} px {100 * count / total:6.2f} %")


def _cmd_synth(args: argparse.Namespace) -> int:
    from .data.synthetic import generate_scene

    result = generate_scene(
        args.out,
        size=args.size,
        seed=args.seed,
        crs=args.crs,
        looks=args.looks,
        calibration_factor=args.calibration_factor,
        block_size=args.block_size,
        progress=not args.no_progress,
    )
    _describe_synthetic(result, print)
    return 0


def _add_synth(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="write a synthetic ALOS-2 HH scene and its aligned land-cover labels",
        description="Write OUT/scene.tif (uint16 DN, HH, nodata 0) and OUT/labels.tif (uint8 JAXA codes 1..14, "
        "nodata 0) on the same grid: a procedural landscape with speckle, in bounded memory at any size.",
    )
    parser.add_argument("--size", type=_size, default=(2048, 2048), help="N or HxW in pixels (default 2048)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--crs", default="EPSG:4326", help="EPSG:4326 (default, ~10 m in degrees), utm, or a projected CRS in metres"
    )
    parser.add_argument("--looks", type=float, default=4.0, help="speckle looks L (default 4)")
    parser.add_argument(
        "--calibration-factor",
        type=float,
        default=DEFAULT_CALIBRATION_FACTOR,
        help=f"CF in dB for the DN encoding (default {DEFAULT_CALIBRATION_FACTOR:g})",
    )
    parser.add_argument("--block-size", type=int, default=512, help="GeoTIFF tile size (default 512)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=_cmd_synth)


# ----------------------------------------------------------------------------------------------------------------------
# sarlulc demo
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class DemoResult:
    """What :func:`run_demo` produced (paths inside its output folder and the numbers it printed)."""

    scene: Path
    labels: Path
    tiles: Path
    split_sizes: dict[str, int]
    class_frequencies: Path
    band_statistics: Path


def _demo_synthesize(out_dir: Path, size: int, seed: int, progress: bool, echo: Echo):
    from .data.synthetic import generate_scene

    start = time.perf_counter()
    result = generate_scene(out_dir / "scene", size=size, seed=seed, progress=progress)
    echo(f"[1/3] synthetic scene ({size} x {size} px, seed {seed}) in {time.perf_counter() - start:.1f} s")
    _describe_synthetic(result, lambda line: echo(f"      {line}"))
    return result


def _demo_tiles(scene_dir: Path, out_dir: Path, tile_size: int, group_size: int, progress: bool, echo: Echo):
    from .data.tiles import SpatialSplit, datasets_progress_bars, split_tile_dataset

    start = time.perf_counter()
    split = SpatialSplit(group_size=group_size, seed=0)
    splits = split_tile_dataset(scene_dir, split, tile_size=tile_size, cache_dir=out_dir / "cache", progress=progress)
    tiles_dir = out_dir / "tiles"
    with datasets_progress_bars(progress):
        splits.save_to_disk(str(tiles_dir))
    echo(
        f"[2/3] {tile_size} x {tile_size} tiles, spatial split by groups of {group_size} x {group_size} tiles, "
        f"in {time.perf_counter() - start:.1f} s; saved to {tiles_dir}"
    )
    for name, dataset in splits.items():
        echo(f"      {name:<11} {len(dataset):>5} tiles")
    return splits, tiles_dir


def _demo_statistics(train, out_dir: Path, progress: bool, echo: Echo) -> tuple[Path, Path]:
    from .data.tiles import band_statistics, class_frequencies

    frequencies = class_frequencies(train, get_scheme("lulc-9"), progress=progress)
    bands = band_statistics(train, progress=progress)
    frequencies_path, bands_path = out_dir / "class_frequencies.json", out_dir / "band_statistics.json"
    frequencies.save_json(frequencies_path)
    bands.save_json(bands_path)
    echo(f"[3/3] statistics of the train split (saved to {frequencies_path.name}, {bands_path.name})")
    for line in frequencies.table().splitlines():
        echo(f"      {line}")
    low, high = bands.clip_range
    for name, mean, std in zip(("HH", "HV"), bands.mean, bands.std):
        echo(f"      {name} sigma0 clipped to [{low:g}, {high:g}] dB: mean {mean:.3f} dB, std {std:.3f} dB")
    missing = [frequencies.id2label[i] for i in np.flatnonzero(frequencies.counts == 0)]
    if missing:
        echo(f"      classes absent from the train split: {', '.join(missing)}")
    return frequencies_path, bands_path


def run_demo(
    out_dir: str | Path = "demo_output",
    *,
    size: int = 1024,
    seed: int = 0,
    tile_size: int = 128,
    group_size: int = 2,
    progress: bool = True,
    echo: Echo = print,
) -> DemoResult:
    """Run the demo's steps in order, printing what each one did.

    1. synthesize a scene and its labels (``OUT/scene/scene.tif``, ``OUT/scene/labels.tif``);
    2. tile them into a spatially split ``DatasetDict`` saved to ``OUT/tiles`` (Arrow cache in ``OUT/cache``);
    3. compute class frequencies and band mean/std on the train split (``OUT/*.json``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scene = _demo_synthesize(out_dir, size, seed, progress, echo)
    splits, tiles_dir = _demo_tiles(scene.scene.parent, out_dir, tile_size, group_size, progress, echo)
    frequencies_path, bands_path = _demo_statistics(splits["train"], out_dir, progress, echo)
    return DemoResult(
        scene=scene.scene,
        labels=scene.labels,
        tiles=tiles_dir,
        split_sizes={name: len(dataset) for name, dataset in splits.items()},
        class_frequencies=frequencies_path,
        band_statistics=bands_path,
    )


def _cmd_demo(args: argparse.Namespace) -> int:
    run_demo(
        args.out,
        size=args.size,
        seed=args.seed,
        tile_size=args.tile_size,
        group_size=args.group_size,
        progress=not args.no_progress,
    )
    return 0


def _add_demo(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the walk-through on a small synthetic scene",
        description="Synthesize a small scene, tile it into a spatially split dataset, and print tile counts, "
        "class statistics and band mean/std.",
    )
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (default ./demo_output)")
    parser.add_argument("--size", type=int, default=1024, help="scene side in pixels (default 1024)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--tile-size", type=int, default=128, help="tile side in pixels (default 128)")
    parser.add_argument("--group-size", type=int, default=2, help="split groups of N x N tiles (default 2)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=_cmd_demo)


# ----------------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sarlulc",
        description="Land-use/land-cover mapping from ALOS-2 PALSAR-2 HH SAR.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_synth(subparsers)
    _add_demo(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except SarLulcDataError as err:
        # A data problem is the user's to fix: say what and where, without a traceback.
        print(f"sarlulc {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
