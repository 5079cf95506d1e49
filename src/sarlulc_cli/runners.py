"""The commands whose library function does not take argument records: records in, library call, what was written.

Each function imports the library inside its body, so this module (imported only when a command runs) stays
stdlib-only at import time like the rest of the package. Errors propagate to :func:`sarlulc_cli.dispatch.main`,
which owns the exit statuses.
"""

from __future__ import annotations

from .arguments import (
    DemoArguments,
    InferenceArguments,
    ModelCardArguments,
    PredictionArguments,
    PushToHubArguments,
    SynthArguments,
)

__all__ = ["demo", "predict", "push_to_hub", "synth"]


def synth(args: SynthArguments) -> None:
    """``sarlulc synth``: write the scene and its labels (or a product and its label tiles), then describe them."""
    import math

    from sarlulc.errors import UsageError

    # Checked here for both kinds of output (a scene's config checks them again for library callers).
    if not math.isfinite(args.calibration_factor):
        raise UsageError(f"--calibration-factor must be a finite number of dB, got {args.calibration_factor}")
    if args.seed < 0:
        raise UsageError(f"--seed must be 0 or positive, got {args.seed}")
    if args.product != "scene":
        from sarlulc.data.synthetic_products import describe_product, generate_product
        from sarlulc.errors import UsageError, as_usage_error

        if args.crs != SynthArguments.crs:
            raise UsageError(f"--crs applies to --product scene; a {args.product} has the CRS of its layout")
        with as_usage_error(f"--product {args.product}: "):
            product = generate_product(
                args.out,
                "l15" if args.product == "l15" else "mosaic",
                size=args.size,
                seed=args.seed,
                looks=args.looks,
                year=args.year,
                bigtiff=args.bigtiff,
                calibration_factor=args.calibration_factor,
                hrlulc_version=args.hrlulc_version,
                progress=args.progress,
            )
        describe_product(product, print)
        return
    from sarlulc.data.synthetic import describe_synthetic, generate_scene
    from sarlulc.errors import UsageError, as_usage_error

    try:
        with as_usage_error():
            result = generate_scene(
                args.out,
                size=args.size,
                seed=args.seed,
                crs=args.crs,
                looks=args.looks,
                calibration_factor=args.calibration_factor,
                block_size=args.block_size,
                progress=args.progress,
                overwrite=args.overwrite,
            )
    except (FileExistsError, PermissionError, NotADirectoryError) as err:
        raise UsageError(str(err).replace("overwrite=True (--overwrite)", "--overwrite")) from err
    describe_synthetic(result, print)


def demo(args: DemoArguments) -> None:
    """``sarlulc demo``: :func:`sarlulc.demo.run_demo` with the options given."""
    from sarlulc.demo import run_demo

    run_demo(
        args.out,
        size=args.size,
        seed=args.seed,
        tile_size=args.tile_size,
        group_size=args.group_size,
        pretrain_steps=args.pretrain_steps,
        finetune_steps=args.finetune_steps,
        train=not args.data_only,
        progress=args.progress,
    )


def predict(args: PredictionArguments, inference: InferenceArguments) -> int:
    """``sarlulc predict``: one scene into one map (``CHECKPOINT SCENE OUT``), or a job over many scenes into
    ``--output-dir`` (:func:`sarlulc.inference.jobs.predict_scenes`) with a summary table; what was written is printed
    by the main process only. Returns :data:`~sarlulc_cli.dispatch.EXIT_SOME_FAILED` when some scenes failed."""
    from sarlulc.errors import UsageError
    from sarlulc.inference.compatibility import SceneBandsError

    from .dispatch import EXIT_SOME_FAILED

    if not args.progress:  # --no_progress also silences transformers' own bar while the checkpoint loads
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()

    scene_options = dict(
        tile=inference.tile,
        overlap=inference.overlap,
        batch_size=inference.batch_size,
        device=inference.device,
        num_workers=inference.num_workers,
        probabilities=args.probabilities,
        water=args.water,
        overwrite=args.overwrite,
        progress=args.progress,
        bands=args.bands,
        polarizations=args.polarizations,
        strict=args.strict,
        output_grid=args.output_grid,
    )
    if args.output_dir is None:
        if len(args.inputs) != 2:
            raise UsageError(
                f"got {len(args.inputs)} input(s) without --output-dir: give SCENE OUT.tif for one map, or "
                "--output-dir DIR for any number of scenes"
            )
        from sarlulc.inference.jobs import predict_map

        scene, out = args.inputs
        try:
            report, _ = predict_map(args.checkpoint, scene, out, output_format=args.format, **scene_options)
        except (
            SceneBandsError
        ) as err:  # the library names its own arguments; this command's are --bands/--polarizations
            raise err.for_command_line() from err
        if report.process_index == 0:
            _print_report(report)
        return 0

    from sarlulc.inference.jobs import predict_scenes

    job = predict_scenes(
        args.checkpoint,
        args.inputs,
        args.output_dir,
        output_format=args.format,
        catalog=args.catalog,
        describe_error=_command_line_reason,
        **scene_options,
    )
    if job.process_index == 0:
        print(job.table())
        for path in [*job.mosaics, *([job.collection] if job.collection else [])]:
            print(f"wrote {path}")
    return EXIT_SOME_FAILED if job.failed else 0


def _command_line_reason(err: BaseException) -> str:
    """A failed scene's reason in this command's words (``--bands``, not the library's ``bands=``)."""
    from sarlulc.inference.compatibility import SceneBandsError

    return str(err.for_command_line() if isinstance(err, SceneBandsError) else err)


def _print_report(report) -> None:
    height, width = report.shape
    print(f"wrote {report.path}: {height} x {width} px class map")
    for kind, path in report.extra_paths.items():
        print(f"wrote {path}: {kind}")
    processes = f" x {report.num_processes} processes" if report.num_processes > 1 else ""
    print(
        f"{report.tiles} tiles of {report.tile} px ({report.tiles_skipped} without valid pixels skipped) on "
        f"{report.device}{processes} in {report.seconds_total:.1f} s, "
        f"{report.model_pixels_per_second / 1e6:.2f} Mpx/s through the model"
    )


def push_to_hub(args: PushToHubArguments, card: ModelCardArguments) -> None:
    """``sarlulc push-to-hub``: :func:`sarlulc.hub.push_to_hub` with the card options, then the files it sent."""
    from sarlulc.hub import CardOptions
    from sarlulc.hub import push_to_hub as publish

    options = CardOptions(
        license=card.license,
        dataset_name=card.dataset_name,
        dataset_type=card.dataset_type,
        dataset_split=card.dataset_split,
        synthetic=card.synthetic,
        base_model=card.base_model,
        class_scheme=card.class_scheme,
        template_path=card.template,
    )
    result = publish(
        args.output_dir,
        args.repo_id,
        options=options,
        private=args.private or None,
        token=args.token,
        commit_message=args.commit_message,
        dry_run_dir=args.dry_run,
    )
    listing = "\n".join(f"  {name}" for name in result.files)
    if result.folder is not None:
        print(f"dry run: wrote {len(result.files)} files to {result.folder} (nothing uploaded):\n{listing}")
    else:
        print(f"uploaded {len(result.files)} files to {args.repo_id}: {result.commit_url}\n{listing}")
