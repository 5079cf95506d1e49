"""Model configs for the scripts: a folder with ``config.json`` (``hub_configs/...`` or a checkpoint) plus overrides.

Overrides are ``KEY=VALUE`` strings; ``VALUE`` is read as JSON when it parses (``16``, ``[1,1,1,1]``, ``true``,
``null``) and as a string otherwise. A dotted key reaches into a nested config: ``backbone_config.embed_dim=16``.
Only keys the config class knows are accepted, so a typo fails before training instead of being stored silently.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from transformers import PreTrainedConfig

from ..errors import UsageError

__all__ = ["build_config", "parse_overrides"]


def parse_overrides(items: Sequence[str] | None) -> dict[str, Any]:
    """``["embed_dim=16", "depths=[1,1,1,1]"]`` -> ``{"embed_dim": 16, "depths": [1, 1, 1, 1]}``."""
    overrides: dict[str, Any] = {}
    for item in items or ():
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--config_overrides entries must be KEY=VALUE, got {item!r}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        overrides[key.strip()] = value
    return overrides


def _apply(values: dict[str, Any], known: Mapping[str, Any], overrides: Mapping[str, Any], config_name: str) -> None:
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if head not in known:
            raise UsageError(f"--config_overrides: {config_name} has no field {head!r}")
        if rest:
            if not isinstance(known[head], Mapping):
                raise UsageError(f"--config_overrides: {config_name}.{head} is not a nested config")
            # Start from the explicit values only: a full default dict would also carry fields that the nested
            # config derives from others (hidden_size from embed_dim) and would then contradict the override.
            nested = dict(values.get(head) or {})
            _apply(nested, known[head], {rest: value}, f"{config_name}.{head}")
            values[head] = nested
        else:
            values[head] = value


def build_config(
    config_class: type[PreTrainedConfig],
    config_dir: str | Path | None,
    overrides: Mapping[str, Any] | None = None,
) -> PreTrainedConfig:
    """A validated config: ``config_dir/config.json`` (or the class defaults) with ``overrides`` applied.

    Raises:
        UsageError: the folder has no ``config.json``, it is for another model type, an override names an unknown
            field, or the resulting config is invalid (the config's own message is kept).
    """
    values: dict[str, Any] = {}
    if config_dir is not None:
        path = Path(config_dir)
        path = path / "config.json" if path.is_dir() else path
        if not path.is_file():
            raise UsageError(f"--config {config_dir}: no config.json there (give a folder such as hub_configs/...)")
        try:
            values = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise UsageError(f"--config {path} is not valid JSON: {err}") from err
        model_type = values.get("model_type")
        if model_type != config_class.model_type:
            raise UsageError(
                f"--config {path} is a {model_type!r} config; this script needs a {config_class.model_type!r} one"
            )
    # num_labels is accepted by every config's constructor but stored as id2label, so to_dict() does not list it.
    known = {**config_class().to_dict(), "num_labels": None}
    _apply(values, known, overrides or {}, config_class.model_type)
    try:
        return config_class.from_dict(values)
    except (ValueError, TypeError) as err:
        raise UsageError(f"invalid {config_class.model_type} config: {err}") from err
