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

    result = generate_scene(
        args.out,
        size=args.size,
        seed=args.seed,
        crs=args.crs,
        looks=args.looks,
        calibration_factor=args.calibration_factor,
        block_size=args.block_size,
        progress=args.progress,
    )
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


def predict(args: PredictionArguments, inference: InferenceArguments) -> None:
    """``sarlulc predict``: :func:`sarlulc.inference.predict_scene`, then what it wrote (main process only)."""
    from sarlulc.inference import predict_scene
    from sarlulc.inference.compatibility import SceneBandsError

    try:
        report = predict_scene(
            args.checkpoint,
            args.scene,
            args.out,
            tile=inference.tile,
            overlap=inference.overlap,
            batch_size=inference.batch_size,
            probabilities=args.probabilities,
            water=args.water,
            device=inference.device,
            progress=args.progress,
            overwrite=args.overwrite,
            num_workers=inference.num_workers,
            bands=args.bands,
            polarizations=args.polarizations,
            strict=args.strict,
            output_grid=args.output_grid,
        )
    except SceneBandsError as err:  # the library names its own arguments; this command's are --bands/--polarizations
        raise err.for_command_line() from err
    if report.process_index != 0:
        return
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
