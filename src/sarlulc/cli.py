"""The ``sarlulc`` command line: ``sarlulc --help`` lists the subcommands.

``sarlulc synth``
    Write a synthetic ALOS-2 HH scene (``scene.tif``) and its aligned JAXA-code labels (``labels.tif``) into a folder.
``sarlulc demo``
    The whole method end to end on a small synthetic scene: data, pretraining, fine-tuning, a GeoTIFF map, metrics.
``sarlulc predict``
    Predict a whole scene with a checkpoint and write a georeferenced class map (``scripts/predict.py`` takes the
    same arguments and also runs under ``accelerate launch``).
``sarlulc evaluate``
    Score a checkpoint on saved tiles or on a scene and its label raster, and write a report (the arguments of
    ``scripts/evaluate.py``; ``sarlulc evaluate --help`` lists them).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from .data.alos2 import DEFAULT_CALIBRATION_FACTOR, SarLulcDataError
from .data.classes import JAXA_SOURCE_CLASSES

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
def describe_synthetic(result, echo: Echo) -> None:
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
    describe_synthetic(result, print)
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
def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(
        args.out,
        size=args.size,
        seed=args.seed,
        tile_size=args.tile_size,
        group_size=args.group_size,
        pretrain_steps=args.pretrain_steps,
        finetune_steps=args.finetune_steps,
        train=not args.data_only,
        progress=not args.no_progress,
    )
    return 0


def _add_demo(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the walk-through on a small synthetic scene",
        description="The whole method on a small synthetic ALOS-2-like scene, in minutes on a CPU: synthesize a "
        "scene, tile it into a spatially split dataset, pretrain SAR-W-MixMAE, fine-tune the LULC model, predict the "
        "scene into a GeoTIFF map, evaluate it on the held-out test tiles, and draw a quicklook.",
    )
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (default ./demo_output)")
    parser.add_argument("--size", type=int, default=1024, help="scene side in pixels (default 1024)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--tile-size", type=int, default=128, help="tile side in pixels (default 128)")
    parser.add_argument("--group-size", type=int, default=2, help="split groups of N x N tiles (default 2)")
    parser.add_argument("--pretrain-steps", type=int, default=300, help="SAR-W-MixMAE steps (default 300)")
    parser.add_argument("--finetune-steps", type=int, default=400, help="fine-tuning steps (default 400)")
    parser.add_argument(
        "--data-only", action="store_true", help="stop after the data steps (synthesize, tile, statistics)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=_cmd_demo)


# ----------------------------------------------------------------------------------------------------------------------
# sarlulc predict
# ----------------------------------------------------------------------------------------------------------------------
def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``sarlulc predict`` (shared with ``scripts/predict.py``)."""
    parser.add_argument(
        "checkpoint", type=str, help="folder of a segmentation checkpoint (save_pretrained), or a Hub model id"
    )
    parser.add_argument("scene", type=Path, help="ALOS-2 scene GeoTIFF (band 1 HH, optional band 2 HV)")
    parser.add_argument("out", type=Path, help="class map GeoTIFF to write (uint8 class ids, 255 = no data)")
    parser.add_argument("--tile", type=int, default=512, help="tile side in px, a multiple of 32 (default 512)")
    parser.add_argument(
        "--overlap", type=int, default=64, help="px shared by neighbouring tiles, below tile/2 (default 64)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="tiles per model call (default 2 on the CPU, 8 on a GPU)"
    )
    parser.add_argument(
        "--probabilities",
        choices=("classes", "confidence"),
        default=None,
        help="also write OUT_probabilities.tif (one band per class) or OUT_confidence.tif (the winning class), "
        "probability x 255",
    )
    parser.add_argument("--water", action="store_true", help="also write OUT_water.tif (1 water, 0 other, 255 no data)")
    parser.add_argument(
        "--device",
        default=None,
        help="cpu, cuda, cuda:1, ... (default: cuda if available; per process under accelerate)",
    )
    parser.add_argument(
        "--num-workers", type=int, default=None, help="threads preparing tiles (default 1 on CPU, 4 on GPU)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run_predict(args: argparse.Namespace, prog: str = "sarlulc predict", echo: Echo = print) -> int:
    """Run :func:`sarlulc.inference.predict_scene` with parsed arguments and print what it wrote.

    Problems the user can fix (the scene, the checkpoint, an option, the output path) end with ``prog: error: ...``
    on stderr and exit status 1, without a traceback.
    """
    from .inference import predict_scene

    try:
        report = predict_scene(
            args.checkpoint,
            args.scene,
            args.out,
            tile=args.tile,
            overlap=args.overlap,
            batch_size=args.batch_size,
            probabilities=args.probabilities,
            water=args.water,
            device=args.device,
            progress=not args.no_progress,
            overwrite=args.overwrite,
            num_workers=args.num_workers,
        )
    except (ValueError, OSError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    if report.process_index == 0:
        height, width = report.shape
        echo(f"wrote {report.path}: {height} x {width} px class map")
        for kind, path in report.extra_paths.items():
            echo(f"wrote {path}: {kind}")
        processes = f" x {report.num_processes} processes" if report.num_processes > 1 else ""
        echo(
            f"{report.tiles} tiles of {report.tile} px ({report.tiles_skipped} without valid pixels skipped) on "
            f"{report.device}{processes} in {report.seconds_total:.1f} s, "
            f"{report.model_pixels_per_second / 1e6:.2f} Mpx/s through the model"
        )
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    return run_predict(args)


def _add_predict(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="predict a land-cover map for a whole scene",
        description="Predict a whole ALOS-2 scene with a segmentation checkpoint, tile by tile with blended overlaps, "
        "and write a georeferenced class map with a colour table (nodata 255).",
    )
    add_predict_arguments(parser)
    parser.set_defaults(func=_cmd_predict)


# ----------------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sarlulc",
        description="Land-use/land-cover mapping from ALOS-2 PALSAR-2 HH SAR.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_synth(subparsers)
    _add_demo(subparsers)
    _add_predict(subparsers)
    subparsers.add_parser(  # listed here; its arguments are parsed by run_evaluate_command (see main)
        "evaluate",
        help="score a checkpoint on tiles or a labelled scene and write a report",
        add_help=False,
    )
    return parser


def run_evaluate_command(argv: list[str]) -> int:
    """``sarlulc evaluate ARGS``: the arguments and behaviour of ``scripts/evaluate.py``."""
    from .training.common import run_script
    from .training.evaluation import EvaluationArguments, evaluate_and_summarize

    description = (
        "Evaluate a fine-tuned segmentation checkpoint on saved tiles (--data DIR --split test) or on a scene and "
        "its label raster (--scene SCENE --labels LABELS), and write a JSON report, a per-class table and a "
        "confusion-matrix PNG."
    )
    return run_script(
        (EvaluationArguments,), evaluate_and_summarize, argv, prog="sarlulc evaluate", description=description
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["evaluate"]:  # HfArgumentParser owns these arguments (shared with scripts/evaluate.py)
        return run_evaluate_command(argv[1:])
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
