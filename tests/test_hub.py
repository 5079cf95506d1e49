"""`sarlulc push-to-hub` (scripts/push_to_hub.py) and sarlulc.hub: what reaches the Hub (against a fake HfApi), the
model card, the dry run, clear errors for incomplete output folders, and the card template inside the built wheel.
Nothing touches the network."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from huggingface_hub import ModelCard, metadata_load
from huggingface_hub.utils import filter_repo_objects

import sarlulc.hub
from helpers_rasters import write_raster
from sarlulc import LULC_9, SarImageProcessor, SarLulcConfig, SarLulcForSemanticSegmentation, SarMixMAEConfig
from sarlulc.errors import UsageError
from sarlulc.hub import TEMPLATE_NAME, CardOptions, build_model_card, default_template, load_trained_run, push_to_hub
from sarlulc_cli import main

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "scripts" / "push_to_hub.py"
REPO_ID = "me/sar-lulc-tiny"
METRICS = {
    "eval_mean_iou": 0.4321,
    "eval_mean_accuracy": 0.55,
    "eval_overall_accuracy": 0.81,
    "eval_iou_water": 0.9012,
    "eval_iou_built_up": 0.35,
    "eval_iou_paddy": 0.5,
    "eval_iou_cropland": 0.3,
    "eval_iou_grassland": 0.25,
    "eval_iou_deciduous_forest": 0.4,
    "eval_iou_evergreen_forest": 0.6,
    "eval_iou_bare": None,  # NaN in the run (class absent): all_results.json writes null
    "eval_iou_solarpanel": 0.1,
}
CHECKPOINT_FILES = {
    "README.md",
    "all_results.json",
    "config.json",
    "model.safetensors",
    "preprocessor_config.json",
    "configuration_sar_lulc.py",
    "configuration_sar_mixmae.py",
    "modeling_sar_lulc.py",
    "modeling_sar_mixmae.py",
    "image_processing_sar.py",
    "pipeline_sar_segmentation.py",
}


class FakeHfApi:
    """Records ``create_repo`` and ``upload_folder`` calls and the files ``upload_folder`` would send (read at call
    time, with huggingface_hub's own pattern filter)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.uploaded: dict[str, bytes] = {}

    def create_repo(self, repo_id: str, **kwargs: Any) -> SimpleNamespace:
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return SimpleNamespace(repo_id=repo_id)

    def upload_folder(self, *, folder_path: str, allow_patterns: list[str], **kwargs: Any) -> SimpleNamespace:
        self.calls.append(("upload_folder", {"allow_patterns": allow_patterns, **kwargs}))
        folder = Path(folder_path)
        present = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        for name in filter_repo_objects(present, allow_patterns=allow_patterns):
            self.uploaded[name] = (folder / name).read_bytes()
        return SimpleNamespace(commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/0")


def push_command(argv: list[str], api: FakeHfApi) -> int:
    """`push_to_hub.py ARGV` in-process (as the script runs it), with ``api`` in place of ``HfApi()``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sarlulc.hub, "HfApi", lambda: api)
        return main(["push-to-hub", *argv], prog="push_to_hub.py")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny finetune.py-like output folder, trained on a (tagged) synthetic scene, with checkpoint and log junk."""
    root = tmp_path_factory.mktemp("run")
    scene = write_raster(
        root / "scene.tif", np.full((8, 8), 1000, np.uint16), nodata=0, tags={"SARLULC_SYNTHETIC": "1"}
    )
    out = root / "output"
    backbone = SarMixMAEConfig(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4), window_size=(8, 8, 4, 2))
    config = SarLulcConfig(
        backbone_config=backbone,
        decoder_hidden_size=32,
        id2label=LULC_9.id2label,
        label2id=LULC_9.label2id,
        class_frequencies=[500, 300, 200, 100, 100, 400, 300, 10, 5],
    )
    SarLulcForSemanticSegmentation(config).save_pretrained(out)
    SarImageProcessor(image_mean=[-11.5], image_std=[5.25]).save_pretrained(out)
    results = {"completed_steps": 20, "epochs": 2, "best_mean_iou": 0.45, "best_step": 10, **METRICS}
    (out / "all_results.json").write_text(json.dumps(results))
    args = {"task": "lulc", "train_data": str(scene), "eval_split": "validation", "from_scratch": True, "seed": 7}
    (out / "training_args.json").write_text(json.dumps(args))
    for junk in ("step_10/optimizer.bin", "step_10/model.safetensors", "logs/events.out", "notes.py"):
        (out / junk).parent.mkdir(exist_ok=True)
        (out / junk).write_bytes(b"junk")
    return out


@pytest.fixture(scope="module")
def pushed(run_dir: Path) -> FakeHfApi:
    api = FakeHfApi()
    assert push_command([str(run_dir), "--repo-id", REPO_ID, "--private"], api) == 0
    return api


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_push_uploads_the_checkpoint_and_nothing_else(pushed: FakeHfApi, run_dir: Path) -> None:
    assert [name for name, _ in pushed.calls] == ["create_repo", "upload_folder"]
    assert pushed.calls[0][1] == {"repo_id": REPO_ID, "private": True, "token": None, "exist_ok": True}
    assert pushed.calls[1][1]["repo_id"] == REPO_ID
    assert set(pushed.uploaded) == CHECKPOINT_FILES
    assert not any(
        name.startswith(("step_", "logs/")) or name in ("notes.py", "training_args.json") for name in pushed.uploaded
    )
    for name in CHECKPOINT_FILES - {"README.md"}:
        assert pushed.uploaded[name] == (run_dir / name).read_bytes(), name

    config = json.loads(pushed.uploaded["config.json"])
    assert set(config["auto_map"]) >= {"AutoConfig", "AutoModelForSemanticSegmentation"}
    processor = json.loads(pushed.uploaded["preprocessor_config.json"])
    references = [*config["auto_map"].values(), *processor["auto_map"].values()]
    references += [spec["impl"] for spec in config["custom_pipelines"].values()]
    assert "sar-segmentation" in config["custom_pipelines"]
    for reference in references:
        assert f"{reference.rsplit('.', 1)[0]}.py" in pushed.uploaded, reference


def test_card_metadata_holds_the_run(pushed: FakeHfApi, tmp_path: Path) -> None:
    (tmp_path / "README.md").write_bytes(pushed.uploaded["README.md"])
    metadata = metadata_load(tmp_path / "README.md")
    assert metadata["pipeline_tag"] == "image-segmentation"
    assert metadata["library_name"] == "transformers"
    assert metadata["license"] == "apache-2.0"
    assert {"sar", "alos-2", "palsar-2", "land-cover", "remote-sensing", "sarlulc", "synthetic-data"} <= set(
        metadata["tags"]
    )

    results = ModelCard.load(tmp_path / "README.md").data.eval_results
    by_name = {r.metric_name: r for r in results}
    assert by_name["mIoU"].metric_value == METRICS["eval_mean_iou"]
    assert by_name["IoU_water"].metric_value == METRICS["eval_iou_water"]
    assert by_name["IoU SolarPanel"].metric_value == METRICS["eval_iou_solarpanel"]
    assert "IoU Bare" not in by_name  # null in the run: no value to publish
    assert len(results) == sum(value is not None for value in METRICS.values())
    assert {(r.task_type, r.dataset_split, r.dataset_type) for r in results} == {
        ("semantic-segmentation", "validation", "sarlulc-synthetic")
    }


def test_card_body_documents_the_model(pushed: FakeHfApi) -> None:
    card = pushed.uploaded["README.md"].decode()
    assert "Trained on synthetic scenes" in card  # detected from the training scene's SARLULC_SYNTHETIC tag
    for lulc_class in LULC_9.classes:
        assert f"| {lulc_class.name} |" in card
        assert "`#{:02x}{:02x}{:02x}`".format(*lulc_class.color) in card
    assert "| mIoU | 43.21 |" in card
    assert "CF = -83.0 dB" in card and "[-35.0, 5.0] dB" in card and "| HH | -11.5000 | 5.2500 |" in card
    assert "| (i) high-resolution feature injection | on |" in card
    assert "| (iii) alpha-scaled class re-weighting | on |" in card
    assert f'pipeline("sar-segmentation", model="{REPO_ID}", trust_remote_code=True)' in card
    assert "sarlulc predict" in card and "Single polarization" in card and "shorelines" in card
    assert "best validation mIoU (45.00 %) was reached at step 10;" in card


def test_dry_run_writes_what_a_push_uploads(pushed: FakeHfApi, run_dir: Path, tmp_path) -> None:
    api = FakeHfApi()
    assert push_command([str(run_dir), "--repo-id", REPO_ID, "--dry-run", str(tmp_path / "preview")], api) == 0
    assert api.calls == []
    assert _files(tmp_path / "preview") == pushed.uploaded


def test_dry_run_as_a_subprocess(pushed: FakeHfApi, run_dir: Path, tmp_path: Path) -> None:
    preview = tmp_path / "preview"
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), str(run_dir), "--repo-id", REPO_ID, "--dry-run", str(preview)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert "nothing uploaded" in completed.stdout
    assert _files(preview) == pushed.uploaded


def test_dry_run_refuses_a_non_empty_folder(run_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        push_to_hub(run_dir, REPO_ID, dry_run_dir=tmp_path)


@pytest.mark.parametrize(
    ("removed", "named"),
    [
        ("model.safetensors", "model.safetensors (the weights"),
        ("preprocessor_config.json", "preprocessor_config.json"),
        ("modeling_sar_mixmae.py", "modeling_sar_mixmae.py (remote code for `from .modeling_sar_mixmae import`"),
        ("pipeline_sar_segmentation.py", "pipeline_sar_segmentation.py (remote code for sar-segmentation"),
    ],
)
def test_incomplete_folder_fails_with_a_clear_message(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], removed: str, named: str
) -> None:
    broken = shutil.copytree(run_dir, tmp_path / "broken")
    (broken / removed).unlink()
    api = FakeHfApi()
    assert push_command([str(broken), "--repo-id", REPO_ID], api) == 2
    error = capsys.readouterr().err
    assert error.startswith("push_to_hub.py: error:") and named in error and "Traceback" not in error
    assert api.calls == []


def test_card_options_override_what_the_run_says(run_dir: Path) -> None:
    options = CardOptions(
        synthetic=False, dataset_name="ALOS-2 Kanto 2023", dataset_type="me/alos2-kanto", license="mit"
    )
    card = build_model_card(load_trained_run(run_dir), REPO_ID, options)
    assert "Trained on synthetic scenes" not in card.content
    assert card.data.license == "mit"
    assert {(r.dataset_name, r.dataset_type) for r in card.data.eval_results} == {
        ("ALOS-2 Kanto 2023", "me/alos2-kanto")
    }


def test_best_folder_uses_its_eval_results_and_the_runs_arguments(run_dir: Path, tmp_path: Path) -> None:
    """OUTPUT/best holds eval_results.json instead of all_results.json; training_args.json stays in OUTPUT."""
    output = shutil.copytree(run_dir, tmp_path / "output")
    best = shutil.copytree(output, output / "best", ignore=shutil.ignore_patterns("step_*", "logs", "best"))
    (best / "all_results.json").unlink()
    (best / "training_args.json").unlink()
    (best / "eval_results.json").write_text(json.dumps({"step": 10, "eval_mean_iou": 0.45}))
    run = load_trained_run(best)
    assert "eval_results.json" in run.files and run.training_args["seed"] == 7
    card = build_model_card(run, REPO_ID)
    assert [(r.metric_name, r.metric_value) for r in card.data.eval_results] == [("mIoU", 0.45)]
    assert "with the weights of step 10" in card.content


def test_an_unreachable_hub_is_one_line_and_exit_status_1(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    class OfflineApi(FakeHfApi):
        def create_repo(self, repo_id: str, **kwargs: Any) -> SimpleNamespace:
            raise ConnectionError("no route to huggingface.co")

    assert push_command([str(run_dir), "--repo-id", REPO_ID], OfflineApi()) == 1
    assert capsys.readouterr().err == "push_to_hub.py: error: ConnectionError: no route to huggingface.co\n"


def test_a_template_given_on_the_command_line_replaces_the_shipped_one(run_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "card.md").write_text("---\n{{ card_data }}\n---\n# {{ model_name }} on {{ dataset.name }}\n")
    argv = [
        str(run_dir),
        "--repo-id",
        REPO_ID,
        "--template",
        str(tmp_path / "card.md"),
        "--dry-run",
        str(tmp_path / "out"),
    ]
    assert push_command(argv, FakeHfApi()) == 0
    card = (tmp_path / "out" / "README.md").read_text()
    assert "# sar-lulc-tiny on sarlulc synthetic ALOS-2 PALSAR-2 HH scenes" in card and "license: apache-2.0" in card
    with pytest.raises(UsageError, match=r"model card template /no/such\.md does not exist"):
        build_model_card(load_trained_run(run_dir), REPO_ID, CardOptions(template_path="/no/such.md"))


def test_the_wheel_ships_the_card_template_and_the_command_line(tmp_path: Path) -> None:
    """Build the wheel offline from a copy of the sources and look inside: the template that default_template()
    reads (from the package, through importlib.resources) is there, next to the torch-free command-line package."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, source / name)
    shutil.copytree(REPO_ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "--no-index", "-w", "dist"],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (source / "dist").glob("sarlulc-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        template = archive.read(f"sarlulc/templates/{TEMPLATE_NAME}").decode()
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert template == default_template()
    assert (Path(sarlulc.hub.__file__).parent / "templates" / TEMPLATE_NAME).read_text() == template
    assert {"sarlulc_cli/__init__.py", "sarlulc_cli/arguments.py", "sarlulc/errors.py"} <= names
    assert "sarlulc = sarlulc_cli:main" in entry_points
