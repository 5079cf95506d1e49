"""The two kinds of error a user can fix, and how a library check's ``ValueError`` becomes one of them.

* :class:`SarLulcDataError`: a raster (scene or labels) that cannot be used: unreadable, corrupt, wrongly shaped or
  misaligned. Raised by the data layer, with a message naming the file and what was expected.
* :class:`UsageError`: a problem with what the user asked for: an argument, a path, a config, a checkpoint that does
  not fit the task.

Both derive from ``ValueError``. The command line (``sarlulc_cli``) prints them as one line ``prog: error: ...`` and
exits with status 2; anything else that escapes a command is a bug and keeps its traceback.

And one error the user did not cause but must hear about in one line:

* :class:`OutputWriteError`: an output could not be written completely (a full disk, a failed close); the previous
  output is kept. An ``OSError``; the command line prints it as one line and exits with status 1.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["OutputWriteError", "SarLulcDataError", "UsageError", "as_usage_error"]


class SarLulcDataError(ValueError):
    """A raster (scene or labels) that cannot be used: unreadable, corrupt, wrongly shaped or misaligned."""


class UsageError(ValueError):
    """A problem with what the user asked for (arguments, paths, configs): reported without a traceback."""


class OutputWriteError(OSError):
    """An output that could not be written completely (disk full, a failed write or close, a file that does not
    reopen); the temporary file is removed and the previous output kept. The message names the output and, for a full
    disk, says so (``ENOSPC``) and where."""


@contextmanager
def as_usage_error(prefix: str = "") -> Iterator[None]:
    """Re-raise a ``ValueError`` of the block as a :class:`UsageError` (``prefix`` + its message).

    For library checks that validate values the user chose (a config's input-size check, a spatial split's shares):
    the check raises ``ValueError`` like any library function, the caller knows the value came from an argument.
    Errors that already say whose they are (:class:`UsageError`, :class:`SarLulcDataError`) pass unchanged.
    """
    try:
        yield
    except (UsageError, SarLulcDataError):
        raise
    except ValueError as err:
        raise UsageError(f"{prefix}{err}") from err
