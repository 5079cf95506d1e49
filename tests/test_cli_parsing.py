"""The command-line machinery (``sarlulc_cli``): argument records -> argparse, the command table, the exit statuses,
and ``--help`` without importing torch or transformers."""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import subprocess
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import pytest

from sarlulc.errors import SarLulcDataError, UsageError
from sarlulc_cli import arguments, dispatch, main
from sarlulc_cli.commands import COMMANDS, Command, resolve
from sarlulc_cli.dispatch import build_command_parser
from sarlulc_cli.parser import add_record_arguments, check_distinct_fields, records_from_namespace

REPO = Path(__file__).resolve().parents[1]
HEAVY_MODULES = ("torch", "transformers")


def _python(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=300, check=False
    )


def imported_modules(importtime_log: str) -> set[str]:
    """Top-level names of every module a ``python -X importtime`` run imported (its stderr)."""
    names = set()
    for line in importtime_log.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":  # the header line
                names.add(name.split(".")[0])
    return names


# ----------------------------------------------------------------------------------------------------------------------
# --help without the library
# ----------------------------------------------------------------------------------------------------------------------
def test_help_of_every_command_imports_neither_torch_nor_transformers():
    probe = """
import contextlib, io, json, sys
from sarlulc_cli import main
from sarlulc_cli.commands import COMMANDS
results = {}
for argv in (["--help"], [], *[[name, "--help"] for name in COMMANDS]):
    with contextlib.redirect_stdout(io.StringIO()) as out:
        code = main(argv)
    heavy = sorted(name for name in sys.modules if name.split(".")[0] in ("torch", "transformers"))
    results[" ".join(argv) or "(none)"] = {"code": code, "heavy": heavy[:3], "chars": len(out.getvalue())}
print(json.dumps(results))
"""
    done = _python("-c", probe)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.splitlines()[-1])
    assert set(results) == {"--help", "(none)", *(f"{name} --help" for name in COMMANDS)}
    for argv, result in results.items():
        assert result["code"] == 0 and result["chars"] > 200, argv
        assert result["heavy"] == [], f"`sarlulc {argv}` imported {result['heavy']}"


def test_python_m_entry_answers_help_without_torch_while_import_sarlulc_registers_the_auto_classes():
    """`python -m sarlulc_cli predict --help` imports no heavy module; `import sarlulc` (the negative control of the
    detection: it does import torch) still registers every Auto class in a fresh process."""
    done = _python("-X", "importtime", "-m", "sarlulc_cli", "predict", "--help")
    assert done.returncode == 0 and done.stdout.startswith("usage: sarlulc predict "), done.stderr[-2000:]
    loaded = imported_modules(done.stderr)
    assert "sarlulc_cli" in loaded and not loaded & set(HEAVY_MODULES)

    registration = """
import sarlulc
from transformers import AutoBackbone, AutoConfig, AutoImageProcessor, AutoModelForSemanticSegmentation
backbone = dict(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4, image_size=64)
config = AutoConfig.for_model("sar_lulc", backbone_config=backbone, decoder_hidden_size=16)
print(type(AutoConfig.for_model("sar_mixmae")).__name__, type(config).__name__)
print(type(AutoModelForSemanticSegmentation.from_config(config)).__name__)
print(type(AutoBackbone.from_config(AutoConfig.for_model("sar_mixmae", **backbone))).__name__)
"""
    done = _python("-X", "importtime", "-c", registration)
    assert done.returncode == 0, done.stderr[-3000:]
    assert set(HEAVY_MODULES) <= imported_modules(done.stderr)
    assert done.stdout.split() == [
        "SarMixMAEConfig",
        "SarLulcConfig",
        "SarLulcForSemanticSegmentation",
        "SarMixMAEBackbone",
    ]


# ----------------------------------------------------------------------------------------------------------------------
# Records -> argparse
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class ToyArguments:
    group_title: ClassVar[str] = "toy"

    path: str = field(metadata={"positional": True, "help": "A path."})
    required_name: str = field(metadata={"help": "Required."})
    count: int = field(default=3, metadata={"help": "A count."})
    ratio: float | None = field(default=None, metadata={"help": "A ratio (default: none)."})
    switch: bool = field(default=False, metadata={"help": "Off by default."})
    enabled: bool = field(default=True, metadata={"help": "On by default."})
    maybe: bool | None = field(default=None, metadata={"help": "Undecided by default."})
    items: list[int] = field(default_factory=lambda: [1, 2], metadata={"help": "Numbers."})
    mode: Literal["a", "b"] = field(default="a", metadata={"help": "A mode."})


def _parse_toy(*argv: str) -> ToyArguments:
    import argparse

    parser = argparse.ArgumentParser(prog="toy")
    add_record_arguments(parser, ToyArguments)
    (record,) = records_from_namespace(parser.parse_args(list(argv)), [ToyArguments])
    return record


def test_records_become_arguments_with_their_defaults_and_conventions():
    assert _parse_toy("p", "--required_name", "x") == ToyArguments(path="p", required_name="x")
    parsed = _parse_toy(
        "--required-name", "y", "--count", "7", "--ratio", "0.5", "--switch", "--no-enabled", "--maybe", "true",
        "--items", "4", "5", "--mode", "b", "q",
    )  # fmt: skip
    assert parsed == ToyArguments(
        path="q", required_name="y", count=7, ratio=0.5, switch=True, enabled=False, maybe=True, items=[4, 5], mode="b"
    )
    assert _parse_toy("p", "--required_name", "x", "--switch", "false", "--enabled", "no").switch is False
    assert _parse_toy("p", "--required_name", "x", "--enabled", "no").enabled is False
    assert _parse_toy("p", "--required_name", "x", "--no_maybe").maybe is False
    assert _parse_toy("p", "--required_name", "x", "--maybe").maybe is True


@pytest.mark.parametrize(
    "argv",
    [
        ["p"],  # --required_name missing
        ["--required_name", "x"],  # the positional missing
        ["p", "--required_name", "x", "--mode", "c"],  # not a choice
        ["p", "--required_name", "x", "--switch", "perhaps"],  # not a boolean
        ["p", "--required_name", "x", "--count", "1.5"],  # not an int
        ["p", "--required_name", "x", "--items"],  # a list needs one value at least
    ],
)
def test_bad_values_are_argparse_errors(argv: list[str]):
    with pytest.raises(SystemExit) as exit_info:
        _parse_toy(*argv)
    assert exit_info.value.code == 2


def test_two_records_declaring_one_field_are_refused():
    check_distinct_fields([arguments.TileArguments, arguments.AugmentArguments])
    with pytest.raises(TypeError, match="AblationArguments and LoopArguments both declare 'output_dir'"):
        check_distinct_fields([arguments.LoopArguments, arguments.AblationArguments])


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_parses_every_field_of_its_records(name: str):
    """The help lists every option; the defaults parsed from a minimal command line are the records' own."""
    command = COMMANDS[name]
    parser = build_command_parser(command)
    text = parser.format_help()
    minimal: list[str] = []
    for record_type in command.records:
        for item in dataclasses.fields(record_type):
            if item.metadata.get("positional"):
                assert item.metadata.get("metavar", item.name) in text
                minimal.append(f"VALUE_{item.name}")
            else:
                assert f"--{item.name}" in text, (name, item.name)
                if item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING:
                    minimal += [f"--{item.name}", f"VALUE_{item.name}"]
    records = records_from_namespace(parser.parse_args(minimal), command.records)
    for record_type, record in zip(command.records, records):
        hints = typing.get_type_hints(record_type)
        required = {
            # A list field (`sarlulc info PATH...`) parses one value into a list of one.
            item.name: [f"VALUE_{item.name}"] if typing.get_origin(hints[item.name]) is list else f"VALUE_{item.name}"
            for item in dataclasses.fields(record_type)
            if item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING
        }
        assert record == record_type(**required)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_target_takes_its_records_in_order(name: str):
    command = COMMANDS[name]
    target = resolve(command.target)
    hints = typing.get_type_hints(target)
    parameters = list(inspect.signature(target).parameters.values())
    for record_type, parameter in zip(command.records, parameters):
        accepted = typing.get_args(hints[parameter.name]) or (hints[parameter.name],)
        assert any(isinstance(t, type) and issubclass(record_type, t) for t in accepted), (parameter, record_type)
    required = [p for p in parameters[len(command.records) :] if p.default is inspect.Parameter.empty]
    assert not required and len(parameters) >= len(command.records)


def test_record_defaults_agree_with_the_library_defaults_they_mirror():
    """Where a record states a default that a library function also has, the two are the same number."""
    from sarlulc.data.alos2 import DEFAULT_CALIBRATION_FACTOR
    from sarlulc.data.synthetic import generate_scene
    from sarlulc.demo import run_demo
    from sarlulc.hub import CardOptions
    from sarlulc.inference import predict_scene

    def defaults(function):
        return {name: p.default for name, p in inspect.signature(function).parameters.items()}

    synth = arguments.SynthArguments(out="x")
    assert synth.calibration_factor == DEFAULT_CALIBRATION_FACTOR
    scene = defaults(generate_scene)
    assert synth.size == (scene["size"], scene["size"])
    assert (synth.seed, synth.crs, synth.looks, synth.block_size) == (
        scene["seed"],
        scene["crs"],
        scene["looks"],
        scene["block_size"],
    )
    demo, demo_defaults = arguments.DemoArguments(), defaults(run_demo)
    assert demo.out == demo_defaults["out_dir"]
    for name in ("size", "seed", "tile_size", "group_size", "pretrain_steps", "finetune_steps"):
        assert getattr(demo, name) == demo_defaults[name], name
    inference, predict_defaults = arguments.InferenceArguments(), defaults(predict_scene)
    assert (inference.tile, inference.overlap, inference.batch_size) == (
        predict_defaults["tile"],
        predict_defaults["overlap"],
        predict_defaults["batch_size"],
    )
    assert arguments.ModelCardArguments().license == CardOptions().license


# ----------------------------------------------------------------------------------------------------------------------
# Exit statuses (targets defined here; the command table is patched)
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class OneArgument:
    what: str = field(default="usage", metadata={"help": "What to raise."})


class _Offline(Exception):
    pass


EXTERNAL_ERRORS = (_Offline,)


def _raise(args: OneArgument) -> None:
    errors = {
        "usage": UsageError("--x must be positive"),
        "data": SarLulcDataError("scene.tif is truncated"),
        "value": ValueError("tile 100 is not a multiple of 32"),
        "os": FileExistsError("map.tif already exists"),
        "offline": _Offline("the Hub is unreachable"),
        "bug": RuntimeError("an internal inconsistency"),
    }
    if args.what != "nothing":
        raise errors[args.what]


@pytest.fixture
def fake_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    module = __name__
    table = {
        "plain": Command("plain", "s", "d", (OneArgument,), f"{module}:_raise"),
        "predict-like": Command("predict-like", "s", "d", (OneArgument,), f"{module}:_raise", user_errors=(ValueError, OSError)),
        "hub-like": Command("hub-like", "s", "d", (OneArgument,), f"{module}:_raise", external_errors=f"{module}:EXTERNAL_ERRORS"),
    }  # fmt: skip
    monkeypatch.setattr(dispatch, "COMMANDS", table)


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (["plain", "--what", "nothing"], 0, None),
        (["plain", "--what", "usage"], 2, "x.py: error: --x must be positive"),
        (["plain", "--what", "data"], 2, "x.py: error: scene.tif is truncated"),
        (["predict-like", "--what", "value"], 2, "x.py: error: tile 100 is not a multiple of 32"),
        (["predict-like", "--what", "os"], 2, "x.py: error: map.tif already exists"),
        (["hub-like", "--what", "offline"], 1, "x.py: error: _Offline: the Hub is unreachable"),
    ],
)
def test_user_errors_exit_2_and_external_errors_1_with_one_line(
    fake_commands: None, argv: list[str], status: int, message: str | None, capsys: pytest.CaptureFixture
):
    assert main(argv, prog="x.py") == status
    error = capsys.readouterr().err
    assert error == ("" if message is None else message + "\n")


def test_anything_else_is_a_bug_and_keeps_its_traceback(fake_commands: None):
    with pytest.raises(RuntimeError, match="internal inconsistency"):
        main(["plain", "--what", "bug"])
    with pytest.raises(ValueError, match="multiple of 32"):  # ValueError is the user's only where a command says so
        main(["plain", "--what", "value"])


def test_argparse_errors_exit_2_and_help_exits_0(capsys: pytest.CaptureFixture):
    assert main(["no-such-command"]) == 2
    assert "invalid choice: 'no-such-command'" in capsys.readouterr().err
    assert main(["predict", "--tile", "x", "a", "b", "c"], prog="predict.py") == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith("predict.py: error: argument --tile: invalid int")
    assert main(["predict", "--help"], prog="predict.py") == 0
    assert capsys.readouterr().out.startswith("usage: predict.py ")
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("sarlulc ")
