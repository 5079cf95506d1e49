"""Writing result files: atomically, and JSON that any strict reader accepts.

Every report, summary and run record the package writes goes through :func:`atomic_output` (or
:func:`write_text_atomic` and :func:`write_json`, built on it): the content is written to a hidden temporary file in the
destination folder, and renamed over the destination only when complete. A reader (or a resumed run) therefore sees
either the previous file or the new one, never a truncated one, even if the writer is interrupted. The rename is atomic
because the temporary file lives in the same folder (same filesystem).

JSON is written strictly: NaN and infinities (which ``json.dumps`` would write as the non-standard ``NaN``) become
``null``, and numpy scalars and arrays become Python numbers and lists.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["atomic_output", "json_ready", "write_json", "write_text_atomic"]


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """A hidden temporary path next to ``path`` to write to; renamed over ``path`` when the block completes, removed
    if it raises. The temporary name keeps the suffix, for writers that choose the format by it (``savefig``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(descriptor)
    temporary = Path(name)
    try:
        yield temporary
        # mkstemp creates the file readable by its owner only; a result file gets the usual permissions.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (module docstring); create the folder if needed; return the path."""
    with atomic_output(path) as temporary, open(temporary, "w", encoding=encoding) as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())
    return Path(path)


def json_ready(value: Any) -> Any:
    """``value`` with numpy values turned into Python ones and NaN/inf into ``None`` (strict JSON has no NaN)."""
    if isinstance(value, Mapping):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_ready(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | os.PathLike, values: Any, indent: int = 2) -> Path:
    """Write ``values`` as indented, strict JSON (NaN becomes null), atomically; return the path."""
    return write_text_atomic(path, json.dumps(json_ready(values), indent=indent) + "\n")
