"""Checkpoints of the SAR-W-MixMAE authors' code in our classes (sarlulc.conversion and its script).

The reference state dicts here are built from facts read in the authors' code (acaglayan/SAR-W-MixMAE,
``models_mixmim.py`` / ``models_mixmim_ft.py`` with timm 0.5.4's ``PatchEmbed``, ``PatchMerging``, ``Block`` and
``Mlp``): the parameter names, their shapes, the fixed tables (MAE's column-first sin-cos embedding, Swin's relative
position index), and the checkpoint layout of their ``misc.save_model`` (``model``, ``optimizer``, ``epoch``,
``scaler``, ``args``). The tensors are random; the tests check that every one lands where it belongs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoImageProcessor, AutoModel, AutoModelForPreTraining

import sarlulc  # noqa: F401  (registers the Auto classes)
from helpers_training import REPO, shared_tiles
from sarlulc import SarMixMAEForPreTraining, SarMixMAEModel
from sarlulc.conversion import REFERENCE_STATISTICS, load_reference_checkpoint, reference_config
from sarlulc.errors import UsageError

SCRIPT = REPO / "scripts" / "convert_sarw_mixmae_checkpoint.py"

# A tiny reference model: 64 px, patch 4, grids 16/8/4/2; windows 8/8/4/2 (the last two shrunk to their grids by the
# reference's `min(input_resolution) <= window` rule), decoder 32 wide and 1 deep.
IMAGE, PATCH, EMBED, DEPTHS, HEADS, WINDOWS = 64, 4, 16, (1, 2, 1, 1), (1, 2, 2, 4), (8, 8, 4, 2)
DECODER, DECODER_DEPTH = 32, 1


def mae_sincos(dim: int, grid: int) -> torch.Tensor:
    """MAE's `get_2d_sincos_pos_embed(dim, grid)` as `(1, grid*grid, dim)`: column encoding first, then the row."""
    omega = 1.0 / 10000.0 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4))
    rows, cols = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")

    def encode(positions):
        angles = positions.reshape(-1)[:, None] * omega[None, :]
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    return torch.from_numpy(np.concatenate([encode(cols), encode(rows)], axis=1)).float().unsqueeze(0)


def swin_relative_position_index(window: int) -> torch.Tensor:
    """Swin's index: `(dy + w - 1) * (2w - 1) + (dx + w - 1)` for query `(y, x)` and key `(y', x')`, dy = y - y'."""
    cells = [(y, x) for y in range(window) for x in range(window)]
    return torch.tensor(
        [[(qy - ky + window - 1) * (2 * window - 1) + (qx - kx + window - 1) for ky, kx in cells] for qy, qx in cells]
    )


def reference_state_dict(kind: str = "pretraining", channels: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=generator)

    state = {
        "patch_embed.proj.weight": rand(EMBED, channels, PATCH, PATCH),
        "patch_embed.proj.bias": rand(EMBED),
        "patch_embed.norm.weight": rand(EMBED),
        "patch_embed.norm.bias": rand(EMBED),
        "absolute_pos_embed": mae_sincos(EMBED, IMAGE // PATCH),
    }
    for stage, (depth, heads, window) in enumerate(zip(DEPTHS, HEADS, WINDOWS)):
        dim = EMBED * 2**stage
        for block in range(depth):
            prefix = f"layers.{stage}.blocks.{block}."
            state.update(
                {
                    prefix + "norm1.weight": rand(dim),
                    prefix + "norm1.bias": rand(dim),
                    prefix + "attn.relative_position_bias_table": rand((2 * window - 1) ** 2, heads),
                    prefix + "attn.relative_position_index": swin_relative_position_index(window),
                    prefix + "attn.qkv.weight": rand(3 * dim, dim),
                    prefix + "attn.qkv.bias": rand(3 * dim),
                    prefix + "attn.proj.weight": rand(dim, dim),
                    prefix + "attn.proj.bias": rand(dim),
                    prefix + "norm2.weight": rand(dim),
                    prefix + "norm2.bias": rand(dim),
                    prefix + "mlp.fc1.weight": rand(4 * dim, dim),
                    prefix + "mlp.fc1.bias": rand(4 * dim),
                    prefix + "mlp.fc2.weight": rand(dim, 4 * dim),
                    prefix + "mlp.fc2.bias": rand(dim),
                }
            )
        if stage < len(DEPTHS) - 1:  # timm 0.5.4 PatchMerging: LayerNorm(4C), Linear(4C, 2C, bias=False)
            state[f"layers.{stage}.downsample.norm.weight"] = rand(4 * dim)
            state[f"layers.{stage}.downsample.norm.bias"] = rand(4 * dim)
            state[f"layers.{stage}.downsample.reduction.weight"] = rand(2 * dim, 4 * dim)
    hidden = EMBED * 2 ** (len(DEPTHS) - 1)
    state["norm.weight"], state["norm.bias"] = rand(hidden), rand(hidden)
    if kind == "finetuning":
        state["head.weight"], state["head.bias"] = rand(19, hidden), rand(19)  # BigEarthNet's 19 classes
        return state
    state.update(
        {
            "mask_token": rand(1, 1, DECODER),
            "decoder_pos_embed": mae_sincos(DECODER, IMAGE // 32),
            "decoder_embed.weight": rand(DECODER, hidden),
            "decoder_embed.bias": rand(DECODER),
            "decoder_norm.weight": rand(DECODER),
            "decoder_norm.bias": rand(DECODER),
            "decoder_pred.weight": rand(32 * 32 * channels, DECODER),
            "decoder_pred.bias": rand(32 * 32 * channels),
        }
    )
    for block in range(DECODER_DEPTH):
        prefix = f"decoder_blocks.{block}."
        for name, shape in {
            "norm1.weight": (DECODER,),
            "norm1.bias": (DECODER,),
            "attn.qkv.weight": (3 * DECODER, DECODER),
            "attn.qkv.bias": (3 * DECODER,),
            "attn.proj.weight": (DECODER, DECODER),
            "attn.proj.bias": (DECODER,),
            "norm2.weight": (DECODER,),
            "norm2.bias": (DECODER,),
            "mlp.fc1.weight": (4 * DECODER, DECODER),
            "mlp.fc1.bias": (4 * DECODER,),
            "mlp.fc2.weight": (DECODER, 4 * DECODER),
            "mlp.fc2.bias": (DECODER,),
        }.items():
            state[prefix + name] = rand(*shape)
    return state


def save_reference_checkpoint(path: Path, state: dict[str, torch.Tensor], **run_arguments) -> Path:
    """Their `misc.save_model` layout: model, optimizer, epoch, scaler and the run's argparse.Namespace."""
    arguments = dict(model="mixmim_base", input_size=IMAGE, norm_pix_loss=True, mask_ratio=0.5, blr=1.5e-4)
    arguments.update(run_arguments)
    torch.save(
        {
            "model": state,
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]},
            "epoch": 63,
            "scaler": {"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 10},
            "args": argparse.Namespace(**arguments),
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("convert_script_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def convert(script, checkpoint: Path, output: Path, *extra: str) -> int:
    options = ["--checkpoint_path", str(checkpoint), "--pytorch_dump_folder_path", str(output)]
    return script.main([*options, "--decoder_num_heads", "2", *extra])


# ----------------------------------------------------------------------------------------------------------------------
def test_a_pretraining_checkpoint_converts_and_loads_strictly(tmp_path, script):
    state = reference_state_dict()
    checkpoint = save_reference_checkpoint(tmp_path / "checkpoint_64.pth", state)
    output = tmp_path / "converted"
    assert convert(script, checkpoint, output) == 0

    model, info = AutoModelForPreTraining.from_pretrained(output, output_loading_info=True)
    assert type(model) is SarMixMAEForPreTraining
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set()
    assert info["mismatched_keys"] == set() and not info["error_msgs"]
    encoder = model.sar_mixmae.encoder
    landed = {
        "patch_embed.proj.weight": model.sar_mixmae.embeddings.patch_embeddings.projection.weight,
        "patch_embed.norm.bias": model.sar_mixmae.embeddings.patch_embeddings.norm.bias,
        "layers.1.blocks.1.attn.qkv.weight": encoder.stages[1].blocks[1].attention.qkv.weight,
        "layers.1.blocks.1.norm2.weight": encoder.stages[1].blocks[1].layernorm_after.weight,
        "layers.3.blocks.0.attn.relative_position_bias_table": (
            encoder.stages[3].blocks[0].attention.relative_position_bias_table
        ),
        "layers.2.blocks.0.mlp.fc2.weight": encoder.stages[2].blocks[0].mlp.fc2.weight,
        "layers.0.downsample.reduction.weight": encoder.downsamples[0].reduction.weight,
        "norm.weight": model.sar_mixmae.layernorm.weight,
        "mask_token": model.mask_token,
        "decoder_blocks.0.attn.proj.weight": model.decoder_blocks[0].attention.proj.weight,
        "decoder_pred.weight": model.decoder_pred.weight,
        "decoder_pred.bias": model.decoder_pred.bias,
    }
    for name, parameter in landed.items():
        assert torch.equal(parameter.detach(), state[name]), name
    # the stage-4 table is the shrunk window's (2 * 2 - 1)**2 = 9 rows, as in the reference
    assert encoder.stages[3].blocks[0].attention.relative_position_bias_table.shape == (9, 4)
    # every learned tensor of the reference has a place: as many parameters as reference tensors minus fixed ones
    fixed = [key for key in state if key.endswith("pos_embed") or key.endswith("relative_position_index")]
    assert sum(1 for _ in model.state_dict()) == len(state) - len(fixed)

    config = model.config
    assert (config.image_size, config.num_channels, config.embed_dim) == (IMAGE, 2, EMBED)
    assert (config.depths, config.num_heads, config.window_size) == (list(DEPTHS), list(HEADS), list(WINDOWS))
    assert (config.decoder_embed_dim, config.decoder_depth, config.decoder_num_heads) == (DECODER, DECODER_DEPTH, 2)
    assert config.layer_norm_eps == 1e-5 and config.backscatter_power_source == "pixel_values"
    assert config.backscatter_channel_mode == "per_channel" and config.norm_pix_loss is True

    processor = AutoImageProcessor.from_pretrained(output)
    mean, std = REFERENCE_STATISTICS["benv2"]
    assert processor.image_mean == mean == [-19.1966, -12.5144] and processor.image_std == std == [5.4501, 5.0019]
    assert processor.input_kind == "db" and processor.polarizations == ["VH", "VV"]
    assert processor.backscatter == "sigma0" and processor.gsd == 10.0  # the BigEarthNet preset records its data
    record = json.loads((output / "conversion.json").read_text())
    assert record["kind"] == "pretraining" and record["run_arguments"]["model"] == "mixmim_base"
    assert sorted(record["tensors_left_out"]) == sorted(fixed)

    # the converted model runs on what its processor makes of VH/VV dB tiles
    tiles = np.stack([np.full((IMAGE, IMAGE), -22.0), np.full((IMAGE, IMAGE), -12.0)])[None]
    inputs = processor(tiles + np.random.default_rng(0).normal(0, 2, tiles.shape), return_tensors="pt")
    with torch.no_grad():
        assert torch.isfinite(model(**inputs).loss)


def test_a_finetuning_checkpoints_encoder_loads_as_the_encoder_and_the_backbone(tmp_path, script):
    from sarlulc import LULC_9, SarLulcConfig, SarLulcForSemanticSegmentation

    state = reference_state_dict("finetuning")
    checkpoint = save_reference_checkpoint(tmp_path / "checkpoint-best.pth", state)
    output = tmp_path / "encoder"
    assert convert(script, checkpoint, output, "--statistics", "benv1") == 0
    encoder, info = AutoModel.from_pretrained(output, output_loading_info=True)
    assert type(encoder) is SarMixMAEModel
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set() and info["mismatched_keys"] == set()
    assert torch.equal(encoder.encoder.stages[2].blocks[0].attention.qkv.bias, state["layers.2.blocks.0.attn.qkv.bias"])
    assert torch.equal(encoder.layernorm.weight, state["norm.weight"])
    assert "head.weight" in json.loads((output / "conversion.json").read_text())["tensors_left_out"]
    assert AutoImageProcessor.from_pretrained(output).image_std == [3.1672, 2.9644]
    # the segmentation model takes it as its pretrained encoder
    config = SarLulcConfig(decoder_hidden_size=16, id2label=LULC_9.id2label, label2id=LULC_9.label2id)
    segmentation = SarLulcForSemanticSegmentation.from_pretrained_encoder(output, config)
    backbone = segmentation.backbone.sar_mixmae
    assert torch.equal(backbone.encoder.stages[1].blocks[1].mlp.fc1.weight, state["layers.1.blocks.1.mlp.fc1.weight"])


def test_scripts_finetune_accepts_a_converted_checkpoint(tmp_path, tmp_path_factory, script):
    from sarlulc_cli import main

    checkpoint = save_reference_checkpoint(tmp_path / "ckpt.pth", reference_state_dict(channels=1))
    output = tmp_path / "converted"
    # one band (HH, like the package's tiles), statistics of our own: the dimensions still come from the tensors
    assert convert(script, checkpoint, output, "--image_mean", "-14", "--image_std", "5", "--polarizations", "HH") == 0
    tiles = shared_tiles(tmp_path_factory)
    run = tmp_path / "run"
    argv = ["--pretrained", str(output), "--train_data", str(tiles), "--output_dir", str(run), "--disable_tqdm"]
    argv += ["--config_overrides", "decoder_hidden_size=16", "--max_train_steps", "1", "--eval_steps", "1"]
    argv += ["--per_device_train_batch_size", "2"]
    assert main(["finetune", *argv], prog="finetune.py") == 0
    training = json.loads((run / "training_args.json").read_text())
    assert training["pretrained"] == str(output)
    assert (run / "model.safetensors").exists()


# ----------------------------------------------------------------------------------------------------------------------
class NotATensor:
    """An object a weights-only load must refuse to build."""


def bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, list[str], str]]:
    """name -> (checkpoint, extra options, what the one-line error must say)."""
    state = reference_state_dict()
    cases: dict[str, tuple[Path, list[str], str]] = {}
    cases["missing file"] = (tmp_path / "nowhere.pth", [], "no such checkpoint file")
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    cases["not a checkpoint"] = (text, [], "is not a PyTorch checkpoint")
    pickled = tmp_path / "pickled.pth"
    torch.save({"model": state, "extra": NotATensor()}, pickled)
    cases["pickled object"] = (pickled, [], "needs pickled Python objects to load (test_conversion.NotATensor)")
    no_model = tmp_path / "no_model.pth"
    torch.save({"epoch": 3, "optimizer": {}}, no_model)
    cases["no model"] = (no_model, [], "has no 'model' state dict")
    unexpected = {**state, "decoder_blocks.0.attn.gate.weight": torch.zeros(3)}
    cases["unexpected tensor"] = (save_reference_checkpoint(tmp_path / "unexpected.pth", unexpected), [], "no place")
    missing = {k: v for k, v in state.items() if k != "layers.1.blocks.0.attn.proj.bias"}
    cases["missing tensor"] = (
        save_reference_checkpoint(tmp_path / "missing.pth", missing),
        [],
        "lacks 1 tensors the model needs: ['sar_mixmae.encoder.stages.1.blocks.0.attention.proj.bias']",
    )
    wrong = {**state, "layers.2.blocks.0.attn.qkv.weight": torch.zeros(3 * 64, 63)}
    cases["shape mismatch"] = (save_reference_checkpoint(tmp_path / "wrong.pth", wrong), [], "has shape (192, 63)")
    row_first = {**state, "absolute_pos_embed": mae_sincos(EMBED, IMAGE // PATCH).view(1, 16, 16, EMBED)}
    row_first["absolute_pos_embed"] = row_first["absolute_pos_embed"].transpose(1, 2).reshape(1, 256, EMBED)
    cases["row-first table"] = (
        save_reference_checkpoint(tmp_path / "rows.pth", row_first),
        [],
        "absolute_pos_embed is not the fixed 2-D sin-cos table",
    )
    good = save_reference_checkpoint(tmp_path / "good.pth", state)
    cases["contradicting option"] = (good, ["--num_heads", "1", "1", "1", "1"], "contradicts the checkpoint")
    cases["mean without std"] = (good, ["--image_mean", "-12"], "together")
    cases["statistics of another band count"] = (
        good,
        ["--image_mean", "-12", "--image_std", "5"],
        "one value per band",
    )
    return cases


def test_every_bad_input_is_one_line_and_exit_status_2(tmp_path, script, capsys):
    for name, (checkpoint, extra, message) in bad_inputs(tmp_path).items():
        output = tmp_path / f"out-{name.replace(' ', '-')}"
        assert convert(script, checkpoint, output, *extra) == 2, name
        error = capsys.readouterr().err
        assert error.startswith("convert_sarw_mixmae_checkpoint.py: error: "), (name, error)
        assert message in error and error.count("\n") == 1 and "Traceback" not in error, (name, error)
        assert not output.exists(), name  # nothing written
    # negative control: the same options on the good checkpoint convert
    good = tmp_path / "good.pth"
    assert convert(script, good, tmp_path / "fine") == 0


def test_the_script_as_a_program(tmp_path):
    missing = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--checkpoint_path",
            str(tmp_path / "x.pth"),
            "--output_dir",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO / "src")},
        timeout=120,
        check=False,
    )
    assert missing.returncode == 2 and missing.stderr.strip().endswith("no such checkpoint file")
    assert "Traceback" not in missing.stderr


def test_an_existing_output_is_kept_unless_overwrite(tmp_path, script, capsys):
    checkpoint = save_reference_checkpoint(tmp_path / "c.pth", reference_state_dict())
    output = tmp_path / "out"
    output.mkdir()
    (output / "keep.txt").write_text("mine")
    assert convert(script, checkpoint, output) == 2
    assert "--overwrite" in capsys.readouterr().err and (output / "keep.txt").exists()
    assert convert(script, checkpoint, output, "--overwrite") == 0
    assert not (output / "keep.txt").exists() and (output / "model.safetensors").exists()


def test_the_run_arguments_and_options_set_the_loss_settings(tmp_path):
    checkpoint = load_reference_checkpoint(
        save_reference_checkpoint(tmp_path / "c.pth", reference_state_dict(), norm_pix_loss=False, mask_ratio=0.6)
    )
    config = reference_config(checkpoint, decoder_num_heads=2)
    assert (config.norm_pix_loss, config.mask_ratio) == (False, 0.6)  # their run's arguments
    config = reference_config(
        checkpoint, decoder_num_heads=2, norm_pix_loss=True, backscatter_channel_mode="shared_avg"
    )
    assert config.norm_pix_loss is True and config.backscatter_channel_mode == "shared_avg"
    assert reference_config(checkpoint).decoder_num_heads == 16  # the authors' models' (shapes cannot tell)
    with pytest.raises(UsageError, match="contradicts the checkpoint's tensors"):
        reference_config(checkpoint, image_size=128)
