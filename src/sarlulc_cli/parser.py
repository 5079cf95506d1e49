"""Argument records (:mod:`sarlulc_cli.arguments`) -> ``argparse`` arguments, and parsed values -> records.

This is the job of transformers' ``HfArgumentParser``, and the conventions are its own (``--field_name`` with a
``--field-name`` alias, ``--flag [true|false]``, ``--no_flag`` for flags that are not off by default, ``nargs="+"``
lists, ``Literal`` choices, one argument group per record), so options keep their spelling. One extension: an
undecided flag (``bool | None``, default None) also takes ``--flag`` alone, as ``push-to-hub --synthetic`` did.

Why not import ``HfArgumentParser``: ``--help`` must answer in under 0.5 s, and on this project's 2-core machine
``from transformers import HfArgumentParser`` alone takes 1.3-1.8 s (``import transformers`` ~1.3 s), while this
command line answers ``--help`` in about 0.2 s and 18 MB (inside ``sarlulc``, whose import loads torch, it took ~6-8 s
and 0.9 GB).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Iterable, Sequence
from typing import Any, Literal, Union

__all__ = [
    "HelpFormatter",
    "add_record_arguments",
    "check_distinct_fields",
    "records_from_namespace",
    "string_to_bool",
]

_TRUE = ("yes", "true", "t", "y", "1")
_FALSE = ("no", "false", "f", "n", "0")


def string_to_bool(text: str | bool) -> bool:
    """``"true"``/``"yes"``/``"1"`` -> True, ``"false"``/``"no"``/``"0"`` -> False (case-insensitive)."""
    if isinstance(text, bool):
        return text
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Wraps one-paragraph descriptions to the terminal, keeps multi-line text (examples) as written, and shows each
    option's default, unless the help already says what happens by default (the options whose default is None, or
    whose help names it)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text.strip():
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or action.default is argparse.SUPPRESS or "default" in text.lower():
            return text
        if isinstance(action.default, bool) and action.option_strings and action.option_strings[0].startswith("--no"):
            return text  # the --no_x complement of a flag: its default is the flag's, shown there
        return super()._get_help_string(action)


def _without_none(annotation: Any) -> Any:
    """``X | None`` -> X (None is then the default, which the help explains); anything else unchanged."""
    origin = typing.get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        members = [member for member in typing.get_args(annotation) if member is not type(None)]
        if len(members) != 1:
            raise TypeError(f"only X | None unions can be options, got {annotation}")
        return members[0]
    return annotation


def _option_strings(name: str) -> list[str]:
    options = [f"--{name}"]
    if "_" in name:
        options.append(f"--{name.replace('_', '-')}")
    return options


def _add_field(parser: argparse._ActionsContainer, item: dataclasses.Field, annotation: Any) -> None:
    metadata = dict(item.metadata)
    positional = metadata.pop("positional", False)
    convert = metadata.pop("type", None)
    kwargs: dict[str, Any] = {"help": metadata.pop("help", None), "dest": item.name}
    if "metavar" in metadata:
        kwargs["metavar"] = metadata.pop("metavar")
    if metadata:
        raise TypeError(f"field {item.name!r} has unknown metadata {sorted(metadata)}")

    has_default = item.default is not dataclasses.MISSING or item.default_factory is not dataclasses.MISSING
    default = item.default_factory() if item.default_factory is not dataclasses.MISSING else item.default
    kind = _without_none(annotation)
    is_flag = kind is bool
    if convert is not None:
        kwargs["type"] = convert
    elif typing.get_origin(kind) is Literal:
        choices = typing.get_args(kind)
        kwargs["choices"] = choices
        kwargs["type"] = type(choices[0])
    elif is_flag:  # `--x` alone means true; `--x false` and (see below) `--no_x` mean false
        kwargs["type"] = string_to_bool
        kwargs["nargs"] = "?"
        kwargs["const"] = True
    elif typing.get_origin(kind) is list:
        (kwargs["type"],) = typing.get_args(kind)
        kwargs["nargs"] = "+"
    elif kind in (int, float, str):
        kwargs["type"] = kind
    else:
        raise TypeError(f"field {item.name!r}: no command-line conversion for {annotation} (give metadata['type'])")

    if positional:
        if has_default:
            raise TypeError(f"positional field {item.name!r} must not have a default")
        kwargs.setdefault("metavar", item.name)
        parser.add_argument(kwargs.pop("dest"), **kwargs)
        return
    if has_default:
        kwargs["default"] = default
    else:
        kwargs["required"] = True
    parser.add_argument(*_option_strings(item.name), **kwargs)
    # A flag that is on (or undecided) by default can be turned off without a value. Added after the flag itself:
    # both write the same destination, and argparse takes the default of the first.
    if is_flag and default is not False:
        off = [f"--no_{item.name}", f"--no-{item.name.replace('_', '-')}"]
        parser.add_argument(*off, action="store_false", dest=item.name, help=f"Set --{item.name} to false.")


def add_record_arguments(parser: argparse.ArgumentParser, record_type: type) -> None:
    """Add every field of the dataclass ``record_type`` as an argument, in an argument group named by its
    ``group_title``."""
    title = getattr(record_type, "group_title", None)
    group = parser.add_argument_group(title) if title else parser
    hints = typing.get_type_hints(record_type)
    for item in dataclasses.fields(record_type):
        if item.init:
            _add_field(group, item, hints[item.name])


def check_distinct_fields(record_types: Iterable[type]) -> None:
    """Raise ``TypeError`` if two records of one command declare the same field (they would share one option)."""
    owners: dict[str, str] = {}
    for record_type in record_types:
        for item in dataclasses.fields(record_type):
            if item.name in owners:
                raise TypeError(f"{record_type.__name__} and {owners[item.name]} both declare {item.name!r}")
            owners[item.name] = record_type.__name__


def records_from_namespace(namespace: argparse.Namespace, record_types: Sequence[type]) -> tuple[Any, ...]:
    """One record of each type, filled from the parsed ``namespace``."""
    return tuple(
        record_type(
            **{item.name: getattr(namespace, item.name) for item in dataclasses.fields(record_type) if item.init}
        )
        for record_type in record_types
    )
