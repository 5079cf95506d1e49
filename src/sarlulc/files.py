"""Writing result files: atomically, verified complete, and JSON that any strict reader accepts.

Contract
    Every output the package writes (maps, synthetic scenes, checkpoints, reports, summaries) is written to a hidden
    temporary name in its destination folder and renamed over the destination only when it is complete
    (:func:`atomic_output`, :func:`write_text_atomic`, :func:`write_json`, or :func:`create_temporary` +
    :func:`verify_and_replace` for writers that manage their own files). A reader (or a resumed run) therefore sees
    either the previous file or the new one, never a truncated one. The rename is atomic because the temporary file
    lives in the same folder (same filesystem).

    *Complete* means verified, not assumed: GDAL, for one, reports a failed block write (a full disk) on stderr and
    carries on. Before the rename, :func:`verify_and_replace` runs the writer's check on the temporary file (a JSON
    file parses, :func:`verify_raster_complete` reopens a raster and decodes its last block); any failure, of a
    write, the close or the check, removes the temporary file, keeps the previous output, and raises
    :class:`~sarlulc.errors.OutputWriteError`, one line that says which output failed and, when the disk is full,
    that it is (``ENOSPC``) and where.

    Temporary names are recognizable: ``.<name>.<label>-<pid>-<8 hex>.tmp<suffix>`` (the final suffix kept, for
    writers that choose the format by it, e.g. ``savefig``). A process killed outright (SIGKILL, power loss) cannot
    clean up; :func:`sweep_stale_temporaries` removes the temporaries of an output whose process no longer runs, and
    every writer calls it before it writes that output again. Another live process's temporaries are left alone.

    :func:`termination_as_interrupt` makes SIGTERM (what job schedulers send) behave like Ctrl-C: it raises
    :class:`Terminated`, a ``KeyboardInterrupt``, so every writer's clean-up for an interruption runs.

JSON is written strictly: NaN and infinities (which ``json.dumps`` would write as the non-standard ``NaN``) become
``null``, and numpy scalars and arrays become Python numbers and lists.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import secrets
import shutil
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .errors import OutputWriteError

__all__ = [
    "Terminated",
    "atomic_output",
    "create_temporary",
    "json_ready",
    "output_write_error",
    "remove_path",
    "sweep_stale_temporaries",
    "temporary_name",
    "termination_as_interrupt",
    "verify_and_replace",
    "verify_json",
    "verify_raster_complete",
    "write_json",
    "write_text_atomic",
]

_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_DISK_FULL_TEXT = ("no space left", "disk full", "quota exceeded", "file too large")
_LOW_FREE_BYTES = 1 << 20  # a write that failed with less than this left on the filesystem: the disk is full


# ----------------------------------------------------------------------------------------------------------------------
# Temporary names and their sweeping
# ----------------------------------------------------------------------------------------------------------------------
def temporary_name(final: str | os.PathLike, label: str = "partial") -> Path:
    """A new hidden, recognizable name next to ``final`` for this process (module docstring); nothing is created."""
    final = Path(final)
    return final.with_name(f".{final.name}.{label}-{os.getpid()}-{secrets.token_hex(4)}.tmp{final.suffix}")


def _temporary_pattern(final: Path) -> re.Pattern[str]:
    return re.compile(rf"^\.{re.escape(final.name)}\.[A-Za-z0-9_]+-(\d+)-[0-9a-f]{{8}}\.tmp{re.escape(final.suffix)}$")


def create_temporary(final: str | os.PathLike, label: str = "partial", *, directory: bool = False) -> Path:
    """Create an empty file (or folder) under a new :func:`temporary_name` of ``final`` and return its path.

    A file gets the permissions a plain new file gets (0666 less the umask), which the output keeps when it is
    renamed (``tempfile.mkstemp`` would make it private to its owner). The folder is created if missing.

    Raises:
        PermissionError: the folder cannot be written into.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    while True:
        path = temporary_name(final, label)
        try:
            if directory:
                path.mkdir()
            else:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return path
        except FileExistsError:
            continue
        except OSError as err:
            if err.errno in _DISK_FULL_ERRNOS:
                raise output_write_error(final, err) from err
            raise PermissionError(f"cannot write into the output folder {final.parent}: {err}") from err


def _process_runs(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as another user
        return True
    return True


def remove_path(path: Path) -> None:
    """Remove a file or a folder tree; a missing one is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def sweep_stale_temporaries(final: str | os.PathLike) -> list[Path]:
    """Remove the temporaries of ``final`` left by killed processes (their pid no longer runs); return them.

    Only names :func:`temporary_name` makes for this very output are considered, so no other file is ever touched,
    and a temporary whose process still runs (another writer at work) is kept.
    """
    final = Path(final)
    if not final.parent.is_dir():
        return []
    pattern = _temporary_pattern(final)
    removed = []
    for entry in final.parent.iterdir():
        match = pattern.match(entry.name)
        if match and not _process_runs(int(match.group(1))):
            remove_path(entry)
            removed.append(entry)
    return removed


# ----------------------------------------------------------------------------------------------------------------------
# Verification and the rename
# ----------------------------------------------------------------------------------------------------------------------
def _disk_full(folder: Path, err: BaseException | None) -> bool:
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno in _DISK_FULL_ERRNOS:
            return True
        if any(text in str(cause).lower() for text in _DISK_FULL_TEXT):
            return True
        cause = cause.__cause__ or cause.__context__
    try:
        return shutil.disk_usage(folder).free < _LOW_FREE_BYTES
    except OSError:
        return False


def output_write_error(final: str | os.PathLike, err: BaseException | None, what: str = "output") -> OutputWriteError:
    """The one-line :class:`OutputWriteError` for an output ``final`` that could not be written completely."""
    final = Path(final)
    folder = final.parent if str(final.parent) else Path(".")
    if _disk_full(folder, err):
        try:
            free = f"{shutil.disk_usage(folder).free / 2**20:.1f} MiB free"
        except OSError:
            free = "free space unknown"
        error = OutputWriteError(
            f"no space left on device (ENOSPC) in {folder.resolve()} ({free}) while writing {what} {final}; "
            "nothing was replaced: free some space and run again"
        )
        error.errno = errno.ENOSPC
        return error
    reason = f": {type(err).__name__}: {err}" if err is not None else ""
    return OutputWriteError(f"{what} {final} could not be written completely{reason}; nothing was replaced")


def verify_and_replace(
    temporary: str | os.PathLike,
    final: str | os.PathLike,
    verify: Callable[[Path], None] | None = None,
    *,
    what: str = "output",
) -> Path:
    """Check the complete ``temporary`` with ``verify`` (it raises if the content is not all there), then rename it
    over ``final``. On any failure the temporary is removed, ``final`` stays as it was, and
    :class:`~sarlulc.errors.OutputWriteError` is raised. Works for files and for folders (checkpoints)."""
    temporary, final = Path(temporary), Path(final)
    try:
        if not temporary.exists():
            raise FileNotFoundError(f"{temporary} vanished before it was complete")
        if verify is not None:
            verify(temporary)
        if final.is_dir() and temporary.is_dir():
            # os.replace cannot replace a folder that has content: move the old one aside, then drop it.
            aside = create_temporary(final, "old", directory=True)
            aside.rmdir()
            os.replace(final, aside)
            os.replace(temporary, final)
            remove_path(aside)
        else:
            os.replace(temporary, final)
    except OutputWriteError:
        remove_path(temporary)
        raise
    except Exception as err:
        remove_path(temporary)
        raise output_write_error(final, err, what) from err
    return final


def verify_json(path: Path) -> None:
    """Raise unless ``path`` holds one complete JSON document."""
    with open(path, encoding="utf-8") as stream:
        json.load(stream)


def verify_raster_complete(path: Path) -> None:
    """Raise unless the raster at ``path`` reopens and its last block of every band (and its mask) decodes.

    GDAL writes blocks in order and the directory at the close, so a file cut short by a full disk or a failed
    close fails here: its header, its directory or its last block cannot be read.
    """
    import rasterio  # here, not at the top: this module is also used where no raster is written
    from rasterio.windows import Window

    with rasterio.Env(CPL_LOG="/dev/null"), rasterio.open(path) as dataset:
        block_height, block_width = dataset.block_shapes[0]
        row = (dataset.height - 1) // block_height * block_height
        col = (dataset.width - 1) // block_width * block_width
        window = Window(col, row, dataset.width - col, dataset.height - row)
        dataset.read(window=window)
        if any(flag.name == "per_dataset" for flag in dataset.mask_flag_enums[0]):
            dataset.read_masks(1, window=window)


@contextmanager
def atomic_output(path: str | os.PathLike, verify: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """A hidden temporary path next to ``path`` to write to; when the block completes it is checked with ``verify``
    and renamed over ``path`` (:func:`verify_and_replace`); removed if the block raises. A disk that fills up while
    the block writes raises :class:`~sarlulc.errors.OutputWriteError`. Stale temporaries of ``path`` left by killed
    processes are swept first."""
    path = Path(path)
    sweep_stale_temporaries(path)
    temporary = create_temporary(path)
    try:
        yield temporary
    except OSError as err:
        remove_path(temporary)
        if _disk_full(path.parent, err):
            raise output_write_error(path, err) from err
        raise
    except BaseException:
        remove_path(temporary)
        raise
    verify_and_replace(temporary, path, verify)


def write_text_atomic(
    path: str | os.PathLike, text: str, encoding: str = "utf-8", verify: Callable[[Path], None] | None = None
) -> Path:
    """Write ``text`` to ``path`` atomically (module docstring); create the folder if needed; return the path.

    The file is checked to hold all of ``text`` before the rename (and with ``verify`` when given)."""
    expected = len(text.encode(encoding))

    def complete(temporary: Path) -> None:
        if temporary.stat().st_size != expected:
            raise OSError(f"{temporary} holds {temporary.stat().st_size} of {expected} bytes")
        if verify is not None:
            verify(temporary)

    with atomic_output(path, verify=complete) as temporary, open(temporary, "w", encoding=encoding) as stream:
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
    """Write ``values`` as indented, strict JSON (NaN becomes null), atomically and verified; return the path."""
    return write_text_atomic(path, json.dumps(json_ready(values), indent=indent) + "\n", verify=verify_json)


# ----------------------------------------------------------------------------------------------------------------------
# SIGTERM
# ----------------------------------------------------------------------------------------------------------------------
class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM (:func:`termination_as_interrupt`).

    A ``KeyboardInterrupt``, so that every clean-up written for Ctrl-C (temporary files removed, threads joined)
    runs for a job scheduler's SIGTERM too."""

    signal_number = signal.SIGTERM


@contextmanager
def termination_as_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM raises :class:`Terminated` in the main thread (the previous handler is
    restored afterwards). Outside the main thread, where Python cannot install handlers, it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum: int, frame: Any) -> None:
        raise Terminated(f"terminated by signal {signum} (SIGTERM)")

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
