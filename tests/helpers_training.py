"""Tiny data, configs and runners for the training tests (imported by the test modules, not a conftest)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"

# A 4-stage encoder small enough for CPU tests: 64 px tiles give token grids 16/8/4/2.
TINY_ENCODER = [
    "embed_dim=16",
    "depths=[1,1,1,1]",
    "num_heads=[1,2,2,4]",
    "window_size=[16,16,8,4]",
    "image_size=64",
    "decoder_embed_dim=32",
    "decoder_depth=1",
    "decoder_num_heads=2",
]
TINY_SEGMENTATION = [f"backbone_config.{item}" for item in TINY_ENCODER] + ["decoder_hidden_size=16"]

# The same kind of encoder as keyword arguments for building configs in Python; windows shrink with the stage grids
# (64 px tiles: 16/8/4/2 tokens).
TINY_ENCODER_KWARGS = dict(
    image_size=64,
    embed_dim=16,
    depths=(1, 1, 1, 1),
    num_heads=(1, 2, 2, 4),
    window_size=(8, 8, 4, 2),
    decoder_embed_dim=32,
    decoder_depth=1,
    decoder_num_heads=2,
)

_SHARED: dict[str, Path] = {}


def shared_tiles(factory: pytest.TempPathFactory) -> Path:
    """A 256 px synthetic scene cut into 64 px tiles, split in space (groups of 2 x 2 tiles) and saved to disk.

    Built once per test session (about 10 s) and shared by the test modules that ask for it.
    """
    if "tiles" not in _SHARED:
        from sarlulc.data.synthetic import generate_scene
        from sarlulc.data.tiles import SpatialSplit, split_tile_dataset

        root = factory.mktemp("training-data")
        generate_scene(root / "scene", 256, seed=0, progress=False)
        splits = split_tile_dataset(
            root / "scene", SpatialSplit(group_size=2, seed=0), tile_size=64, cache_dir=root / "cache", progress=False
        )
        splits.save_to_disk(str(root / "tiles"))
        _SHARED["scene"], _SHARED["tiles"] = root / "scene", root / "tiles"
    return _SHARED["tiles"]


def shared_scene() -> Path:
    """The scene folder behind :func:`shared_tiles` (call that first)."""
    return _SHARED["scene"]


def offline_env(hf_home: Path) -> dict[str, str]:
    """The environment of a subprocess: offline, caches in a temporary folder, the repository's sources first."""
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HOME=str(hf_home),
        HF_MODULES_CACHE=str(hf_home / "modules"),
        PYTHONPATH=os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]),
    )
    return env


def run_command(
    args: list[str], hf_home: Path, extra_env: dict[str, str] | None = None, timeout: int = 240
) -> subprocess.CompletedProcess:
    env = {**offline_env(hf_home), **(extra_env or {})}
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout, check=False)


def free_port() -> int:
    """A TCP port nobody listens on now (for the rendezvous of a multi-process launch)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def python_script(name: str) -> list[str]:
    return [sys.executable, str(SCRIPTS / name)]
