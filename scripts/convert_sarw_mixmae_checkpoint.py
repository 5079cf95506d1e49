#!/usr/bin/env python
"""Convert a checkpoint of the SAR-W-MixMAE authors' code (acaglayan/SAR-W-MixMAE, MixMIM) into a sarlulc folder.

    python scripts/convert_sarw_mixmae_checkpoint.py --checkpoint_path checkpoint_64.pth \\
        --pytorch_dump_folder_path converted/sarw-mixmae-base-benv2

A pretraining checkpoint becomes a ``SarMixMAEForPreTraining`` (``AutoModelForPreTraining.from_pretrained``), a
fine-tuning checkpoint its encoder, ``SarMixMAEModel`` (``AutoModel``); either is what ``sarlulc finetune
--pretrained`` takes. The folder holds the weights (safetensors), the config (the authors' loss settings), the image
processor with the authors' input statistics and band order, and ``conversion.json``. The checkpoint is read with
``torch.load(weights_only=True)``: a file that needs other pickled objects than ``argparse.Namespace`` is refused.
``sarlulc.conversion`` holds the logic; every bad input is one line ``prog: error: ...`` and exit status 2.
"""

import argparse
import sys

PROG = "convert_sarw_mixmae_checkpoint.py"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint_path", required=True, help="the authors' .pth (a dict with a 'model' state dict)")
    parser.add_argument(
        "--pytorch_dump_folder_path", "--output_dir", dest="output_dir", required=True, help="the folder to write"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing, non-empty output folder")
    processor = parser.add_argument_group("image processor (the authors' input normalization)")
    processor.add_argument(
        "--statistics",
        default="benv2",
        choices=["benv2", "benv1"],
        help="the authors' VH/VV dB mean and std: BigEarthNet v2 (their pretraining) or v1 (default: %(default)s)",
    )
    processor.add_argument("--image_mean", type=float, nargs="+", help="per-band dB mean, replacing --statistics")
    processor.add_argument("--image_std", type=float, nargs="+", help="per-band dB std, with --image_mean")
    processor.add_argument("--polarizations", nargs="+", help="band order (default with --statistics: VH VV)")
    model = parser.add_argument_group("model (inferred from the tensors; an option must agree with them)")
    model.add_argument("--image_size", type=int, help="needed only when the checkpoint has no absolute_pos_embed")
    model.add_argument("--num_heads", type=int, nargs="+", help="encoder heads per stage (the bias tables say)")
    model.add_argument("--decoder_num_heads", type=int, help="decoder heads (shapes cannot tell; the authors use 16)")
    model.add_argument(
        "--norm_pix_loss",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="per-patch normalized targets (default: the run's arguments in the checkpoint, else on)",
    )
    model.add_argument("--mask_ratio", type=float, help="default: the run's arguments in the checkpoint, else 0.5")
    model.add_argument(
        "--backscatter_channel_mode",
        default="per_channel",
        choices=["per_channel", "shared_avg"],
        help="the authors' weight_mode (default: %(default)s, theirs)",
    )
    model.add_argument(
        "--backscatter_weight_scale", type=float, default=1.0, help="the authors' exp_scale (default: %(default)s)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from sarlulc.conversion import convert_sarw_mixmae_checkpoint  # torch loads only now: --help stays fast
    from sarlulc.errors import SarLulcDataError, UsageError

    try:
        result = convert_sarw_mixmae_checkpoint(
            args.checkpoint_path,
            args.output_dir,
            statistics=args.statistics,
            image_mean=args.image_mean,
            image_std=args.image_std,
            polarizations=args.polarizations,
            image_size=args.image_size,
            num_heads=args.num_heads,
            decoder_num_heads=args.decoder_num_heads,
            norm_pix_loss=args.norm_pix_loss,
            mask_ratio=args.mask_ratio,
            backscatter_channel_mode=args.backscatter_channel_mode,
            backscatter_weight_scale=args.backscatter_weight_scale,
            overwrite=args.overwrite,
        )
    except (UsageError, SarLulcDataError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    print(
        f"wrote {result.output_dir}: a {result.model_class} from the {result.kind} checkpoint, "
        f"{result.num_tensors} tensors ({len(result.left_out)} fixed or unused ones checked and left out)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
