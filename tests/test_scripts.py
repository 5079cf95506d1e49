"""The scripts as users run them: real subprocesses, offline, with temporary Hugging Face caches."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

import sarlulc
from helpers_training import TINY_SEGMENTATION, free_port, python_script, run_command, shared_tiles


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
