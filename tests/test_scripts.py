"""The scripts as users run them: real subprocesses, offline, with temporary Hugging Face caches; and what every
script must be: a name that shadows no importable module, no sys.path edits, help without torch."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

import sarlulc
from helpers_training import SCRIPTS, TINY_SEGMENTATION, free_port, python_script, run_command, shared_tiles
from sarlulc_cli.commands import COMMANDS

SCRIPT_COMMANDS = {
    "pretrain.py": "pretrain",
    "finetune.py": "finetune",
    "run_evaluation.py": "evaluate",
    "ablation.py": "ablation",
    "predict.py": "predict",
    "push_to_hub.py": "push-to-hub",
}


@pytest.fixture(scope="module")
def tiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_tiles(tmp_path_factory)


def test_finetune_under_accelerate_launch_with_two_cpu_processes(tiles: Path, tmp_path: Path):
    """Two gloo processes on the CPU. `accelerate launch --cpu --num_processes 2` starts a single process in accelerate
    1.x (huggingface/accelerate#2741; multi-CPU goes through mpirun), so the test asks for the torchrun launcher
    (--multi_gpu) and tells accelerate to stay on the CPU (ACCELERATE_USE_CPU=1)."""
    output = tmp_path / "run"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += [
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
    ]
    args = ["--train_data", str(tiles), "--output_dir", str(output), "--from_scratch", "--config_overrides"]
    args += [*TINY_SEGMENTATION, "--per_device_train_batch_size", "2", "--max_train_steps", "3", "--eval_steps", "2"]
    args += ["--checkpointing_steps", "2", "--disable_tqdm"]
    result = run_command(
        [*launch, *python_script("finetune.py")[1:], *args], tmp_path / "hf", extra_env={"ACCELERATE_USE_CPU": "1"}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((output / "all_results.json").read_text())
    assert results["num_processes"] == 2 and results["completed_steps"] == 3
    assert {"eval_mean_iou", "best_mean_iou"} <= results.keys()
    assert sorted(p.name for p in output.glob("step_*")) == ["step_2"]
    assert sorted(p.name for p in (output / "step_2").glob("random_states_*.pkl")) == [
        "random_states_0.pkl",
        "random_states_1.pkl",
    ]

    model = AutoModelForSemanticSegmentation.from_pretrained(output)
    assert isinstance(model, sarlulc.SarLulcForSemanticSegmentation)
    assert model.config.num_labels == 9 and sum(model.config.class_frequencies) > 0
    # the input normalization (the training tiles' statistics) lives in the processor alone
    assert AutoImageProcessor.from_pretrained(output).image_mean != [-12.0]  # not the placeholder default
    assert "input_db_mean" not in model.config.backbone_config.to_dict()
    assert AutoModelForSemanticSegmentation.from_pretrained(output / "best").config.num_labels == 9


def test_a_user_error_ends_with_a_message_and_no_traceback(tiles: Path, tmp_path: Path):
    hub_config = Path(sarlulc.__file__).resolve().parents[2] / "hub_configs" / "sar-lulc-tiny"
    args = ["--task", "water", "--from_scratch", "--config", str(hub_config), "--train_data", str(tiles)]
    result = run_command([*python_script("finetune.py"), *args, "--output_dir", str(tmp_path / "out")], tmp_path)
    assert result.returncode == 2
    assert "finetune.py: error: the config has num_labels=9" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("step_*"))


# ----------------------------------------------------------------------------------------------------------------------
# What every script must be
# ----------------------------------------------------------------------------------------------------------------------
def test_no_script_name_shadows_an_importable_module(tmp_path: Path):
    """Python puts a script's folder first on sys.path, so a script named like a module (scripts/evaluate.py and the
    `evaluate` package) replaces that module for everything the script imports. Listed from a neutral folder."""
    probe = "import json, pkgutil, sys; print(json.dumps(sorted({m.name for m in pkgutil.iter_modules()} | set(sys.builtin_module_names) | set(sys.stdlib_module_names))))"
    done = run_command([sys.executable, "-c", probe], tmp_path)
    assert done.returncode == 0, done.stderr
    importable = set(json.loads(done.stdout))
    assert {"evaluate", "sarlulc", "sarlulc_cli", "json"} <= importable  # negative control: the detection works
    stems = sorted(path.stem for path in SCRIPTS.glob("*.py"))
    assert "benchmark" in stems and set(SCRIPT_COMMANDS) <= {f"{stem}.py" for stem in stems}
    assert [stem for stem in stems if stem in importable] == []


@pytest.mark.parametrize("script", sorted(path.name for path in SCRIPTS.glob("*.py")))
def test_no_script_touches_sys_path(script: str):
    tree = ast.parse((SCRIPTS / script).read_text())
    touched = [
        node.lineno
        for node in ast.walk(tree)
        if (isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", None) == "sys")
        or (isinstance(node, ast.ImportFrom) and node.module == "sys" and any(a.name == "path" for a in node.names))
    ]
    assert touched == [], f"{script} uses sys.path on lines {touched}"


def test_every_command_has_a_script_and_every_script_is_its_command():
    """A script is `sys.exit(main(["<command>", *sys.argv[1:]], prog="<script>.py"))` and nothing else."""
    assert set(SCRIPT_COMMANDS.values()) | {"synth", "demo", "info"} == set(COMMANDS)
    for script, command in SCRIPT_COMMANDS.items():
        text = (SCRIPTS / script).read_text()
        assert f'sys.exit(main(["{command}", *sys.argv[1:]], prog="{script}"))' in text
        tree = ast.parse(text)
        statements = [type(node).__name__ for node in tree.body]
        assert statements == ["Expr", "Import", "ImportFrom", "If"], script  # docstring, imports, the __main__ guard


@pytest.mark.parametrize("script", sorted(SCRIPT_COMMANDS))
def test_script_help_shows_examples_without_importing_torch(script: str, tmp_path: Path):
    done = run_command([sys.executable, "-X", "importtime", *python_script(script)[1:], "--help"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"usage: {script} ") and "Examples:" in done.stdout
    assert f"python scripts/{script}" in done.stdout or "accelerate launch" in done.stdout
    imported = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in done.stderr.splitlines() if "|" in line}
    assert "sarlulc_cli" in imported and not imported & {"torch", "transformers"}
