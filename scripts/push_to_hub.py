#!/usr/bin/env python
"""Publish a fine-tuned segmentation checkpoint (a scripts/finetune.py output folder) on the Hugging Face Hub with a
model card built from the run: metrics (model-index), preprocessing, classes and colours, architecture and refinements,
training data, usage and limitations.

Examples (from the repository root):

  # look first: write the exact folder that would be uploaded (README.md = the card), upload nothing
  python scripts/push_to_hub.py runs/lulc --repo-id me/sar-lulc-tiny --dry-run hub_preview

  # upload (token from `hf auth login` or HF_TOKEN), as a private repository
  python scripts/push_to_hub.py runs/lulc/best --repo-id me/sar-lulc-tiny --private

Uploaded: config.json, the safetensors weights, preprocessor_config.json, the remote-code .py files (model, processor,
"sar-segmentation" pipeline), the run's small JSON summaries and README.md; never step_* checkpoints, optimizer states,
logs or training_args.json (it records local paths).
"""

import argparse
import sys
from pathlib import Path

# Python puts this folder first on sys.path, where evaluate.py would shadow the `evaluate` package that sarlulc's
# training modules use; drop it (the scripts import only the installed sarlulc).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from huggingface_hub import HfApi  # noqa: E402
from huggingface_hub.errors import HfHubHTTPError  # noqa: E402

from sarlulc.data.alos2 import SarLulcDataError  # noqa: E402
from sarlulc.hub import DEFAULT_TEMPLATE, CardOptions, push_to_hub  # noqa: E402
from sarlulc.training.data import UsageError  # noqa: E402

PROG = "push_to_hub.py"
# What a failed upload or write raises: OSError (HTTP status errors, offline mode, the disk) and, for unreachable hosts,
# the HTTP client's own error class, which HfHubHTTPError derives from (httpx or httpx2, by huggingface_hub version).
HUB_ERRORS = (OSError, *HfHubHTTPError.__bases__)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", help="a scripts/finetune.py output folder")
    parser.add_argument("--repo-id", required=True, metavar="USER/NAME", help="model repository (created if needed)")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--token", help="Hub token (default, and safer: `hf auth login` or HF_TOKEN)")
    parser.add_argument("--commit-message", help="default: 'Upload sarlulc <task> segmentation model'")
    parser.add_argument(
        "--dry-run", metavar="DIR", help="write the folder that would be uploaded to DIR; upload nothing"
    )
    card = parser.add_argument_group("model card")
    card.add_argument("--license", default="apache-2.0", help="Hub license id of the weights")
    card.add_argument("--dataset-name", help="evaluation dataset's name (default: from the run's training data)")
    card.add_argument("--dataset-type", help="evaluation dataset's id, a Hub dataset id if it has one")
    card.add_argument("--dataset-split", help="split of the metrics (default: the run's eval split)")
    card.add_argument(
        "--synthetic",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="whether the training scenes were synthetic (default: read from the training scenes' tags)",
    )
    card.add_argument("--base-model", help="Hub id of the SAR-W-MixMAE pretraining checkpoint, if published")
    card.add_argument("--class-scheme", help="class scheme name or JSON file for the colours (default: the run's)")
    card.add_argument("--template", default=str(DEFAULT_TEMPLATE), help="Jinja model card template")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, api: HfApi | None = None) -> int:
    """Run the command line ``argv``; ``api`` replaces ``HfApi()`` (tests). Returns the exit status."""
    args = parse_args(argv)
    options = CardOptions(
        license=args.license,
        dataset_name=args.dataset_name,
        dataset_type=args.dataset_type,
        dataset_split=args.dataset_split,
        synthetic=args.synthetic,
        base_model=args.base_model,
        class_scheme=args.class_scheme,
        template_path=args.template,
    )
    try:
        result = push_to_hub(
            args.output_dir,
            args.repo_id,
            options=options,
            api=api,
            private=args.private or None,
            token=args.token,
            commit_message=args.commit_message,
            dry_run_dir=args.dry_run,
        )
    except (UsageError, SarLulcDataError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except HUB_ERRORS as err:  # not the user's input: the network, the token, the disk
        print(f"{PROG}: error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    listing = "\n".join(f"  {name}" for name in result.files)
    if result.folder is not None:
        print(f"dry run: wrote {len(result.files)} files to {result.folder} (nothing uploaded):\n{listing}")
    else:
        print(f"uploaded {len(result.files)} files to {args.repo_id}: {result.commit_url}\n{listing}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
