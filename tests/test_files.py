"""sarlulc.files (atomic result files, strict JSON) and sarlulc.errors (a library check's ValueError as the user's)."""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from sarlulc.errors import SarLulcDataError, UsageError, as_usage_error
from sarlulc.files import atomic_output, json_ready, write_json, write_text_atomic


def test_json_is_strict_and_plain(tmp_path: Path):
    values = {"nan": math.nan, "inf": -math.inf, "np": np.float32(0.5), "ints": np.arange(3), "nested": [np.int64(7)]}
    assert json_ready(values) == {"nan": None, "inf": None, "np": 0.5, "ints": [0, 1, 2], "nested": [7]}
    path = write_json(tmp_path / "deep" / "report.json", values)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == json_ready(values)


def test_an_interrupted_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path: Path):
    path = write_text_atomic(tmp_path / "table.md", "old\n")

    class Interrupted(Exception):
        pass

    with pytest.raises(Interrupted), atomic_output(path) as temporary:
        temporary.write_text("half of the new")
        assert path.read_text() == "old\n" and temporary.parent == path.parent and temporary.suffix == ".md"
        raise Interrupted
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.md"]

    write_text_atomic(path, "new\n")
    assert path.read_text() == "new\n" and sorted(p.name for p in tmp_path.iterdir()) == ["table.md"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not mkstemp's owner-only mode


def test_value_errors_become_usage_errors_and_the_others_pass():
    with pytest.raises(UsageError, match=r"^--crop_size: crop_size must be positive$"):
        with as_usage_error("--crop_size: "):
            raise ValueError("crop_size must be positive")
    for error in (UsageError("mine"), SarLulcDataError("the data's")):
        with pytest.raises(type(error)) as raised, as_usage_error("prefix: "):
            raise error
        assert raised.value is error
    with pytest.raises(KeyError), as_usage_error():  # not a ValueError: a bug, unchanged
        raise KeyError("x")
