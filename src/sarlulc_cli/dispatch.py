"""``sarlulc`` and the scripts: parse the command line, run the command, and turn its outcome into an exit status.

Exit statuses, the one policy of every command and script:

* ``0``: the command did what it was asked (``--help`` included);
* ``2``: the user's input is at fault: argparse's own errors (an unknown option, a missing or malformed value), and a
  :class:`~sarlulc.errors.UsageError` or :class:`~sarlulc.errors.SarLulcDataError` raised by the command (plus the
  command's own :attr:`~sarlulc_cli.commands.Command.user_errors`). One line ``prog: error: ...`` on stderr, no
  traceback: the message says what to fix;
* ``3``: the command ran to its end but some of its items failed (:data:`EXIT_SOME_FAILED`; ``sarlulc predict
  --output-dir``: some scenes failed, the others were written; the summary table names each failure and its reason).
  A command says so by returning the status;
* ``1``: something outside the user's input failed (the command's
  :attr:`~sarlulc_cli.commands.Command.external_errors`, e.g. the Hub is unreachable): one line, no traceback;
* ``1`` too, in one line, for an output that could not be written completely
  (:class:`~sarlulc.errors.OutputWriteError`: a full disk, named with ``ENOSPC`` and the folder); the previous
  output is kept;
* ``130`` after Ctrl-C (SIGINT) and ``143`` after SIGTERM (what job schedulers send): both interrupt the command the
  same way (:func:`sarlulc.files.termination_as_interrupt`), its temporary files are removed, and one line says so;
* ``141`` (a shell's status for SIGPIPE), silently, when the reader of stdout went away (``sarlulc ... | head``);
* anything else that escapes a command is a bug: Python prints its traceback (exit status 1).

Nothing of the library is imported before a command runs, so ``--help`` stays fast and torch-free.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

from .commands import COMMANDS, Command, resolve
from .parser import HelpFormatter, add_record_arguments, check_distinct_fields, records_from_namespace

__all__ = ["EXIT_SOME_FAILED", "build_command_parser", "build_parser", "main"]

PROGRAM = "sarlulc"

EXIT_SOME_FAILED = 3
"""Exit status of a command that finished but some of its items (scenes of a job) failed."""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PROGRAM)
    except PackageNotFoundError:  # a source checkout on PYTHONPATH, never installed
        return "unknown (not installed)"


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser: lists the commands; each command's own arguments are in :func:`build_command_parser`."""
    parser = argparse.ArgumentParser(
        prog=prog or PROGRAM,
        description="Land-use/land-cover mapping from ALOS-2 PALSAR-2 HH SAR. `%(prog)s COMMAND --help` shows the "
        "options of a command.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for command in COMMANDS.values():
        commands.add_parser(command.name, help=command.summary, add_help=False)
    return parser


def _invocation(prog: str) -> str:
    """How to type the command whose parser is called ``prog``: a script runs with python from the repository root."""
    return f"python scripts/{prog}" if prog.endswith(".py") else prog


def build_command_parser(command: Command, prog: str | None = None) -> argparse.ArgumentParser:
    """The parser of one command, named ``prog`` (default ``sarlulc <command>``), with one group per record."""
    check_distinct_fields(command.records)
    prog = prog or f"{PROGRAM} {command.name}"
    parser = argparse.ArgumentParser(
        prog=prog,
        description=command.description,
        epilog=command.epilog.format(prog=_invocation(prog)) or None,
        formatter_class=HelpFormatter,
    )
    for record_type in command.records:
        add_record_arguments(parser, record_type)
    return parser


def _run(command: Command, records: tuple, prog: str) -> int:
    from sarlulc.errors import OutputWriteError, SarLulcDataError, UsageError  # the library (and torch) load only now
    from sarlulc.files import Terminated, termination_as_interrupt

    _quiet_gdal_log()  # before the library loads GDAL
    target = resolve(command.target)
    user_errors = (UsageError, SarLulcDataError, *command.user_errors)
    external_errors = tuple(resolve(command.external_errors)) if command.external_errors else ()
    try:
        with termination_as_interrupt():
            status = target(*records)
    except OutputWriteError as err:  # an OSError: before user_errors, which may list OSError
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return _broken_pipe()
    except user_errors as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except external_errors as err:
        print(f"{prog}: error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    except Terminated:
        print(f"{prog}: terminated (SIGTERM); temporary files were removed, no output was replaced", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(f"{prog}: interrupted (SIGINT); temporary files were removed, no output was replaced", file=sys.stderr)
        return 128 + signal.SIGINT
    try:
        sys.stdout.flush()  # a closed pipe shows here for output still buffered
    except BrokenPipeError:
        return _broken_pipe()
    return status if type(status) is int else 0  # a returned bool or None is no status


GDAL_LOG_ENV = "SARLULC_GDAL_LOG"
"""Set to 1 to see the messages GDAL's default handler prints (``ERROR 1: PROJ: ...``) while a command runs."""


def _quiet_gdal_log() -> None:
    """Keep GDAL's default error handler off stderr while a command runs (unless :data:`GDAL_LOG_ENV` is set).

    Outside rasterio's own calls GDAL prints its errors itself (``ERROR 1: PROJ: crs not found`` before the
    command's one line that says the same). Nothing is lost: a GDAL failure raises in rasterio and is reported in one
    line, and what GDAL only logs (a block it could not write) is caught by the verification of every output before
    its rename. ``CPL_LOG`` is GDAL's documented switch for where that handler writes."""
    if os.environ.get(GDAL_LOG_ENV, "") in ("", "0"):
        os.environ.setdefault("CPL_LOG", os.devnull)


def _broken_pipe() -> int:
    """The reader of stdout went away: point stdout at /dev/null (the interpreter's final flush would fail again and
    print a traceback) and exit like a shell's SIGPIPE."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 128 + signal.SIGPIPE


def _exit_status(code: object) -> int:
    """The status an argparse ``SystemExit`` carries (``--help`` and ``--version``: 0, errors: 2)."""
    return code if isinstance(code, int) else 0 if code is None else 1


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Run ``sarlulc`` with ``argv`` (default ``sys.argv[1:]``) and return the exit status (module docstring).

    Args:
        argv: ``[COMMAND, *arguments]``; without a command, the list of commands is printed.
        prog: the name usage lines and error messages give the command, e.g. ``"finetune.py"`` for
            ``scripts/finetune.py``; default ``sarlulc COMMAND``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        command = COMMANDS[argv[0]]
        parser = build_command_parser(command, prog)
        try:
            namespace = parser.parse_args(argv[1:])
        except SystemExit as exit_:
            return _exit_status(exit_.code)
        return _run(command, records_from_namespace(namespace, command.records), parser.prog)
    parser = build_parser(prog)
    try:
        parser.parse_args(argv)  # no command: --help, --version, or an unknown command (an error)
    except SystemExit as exit_:
        return _exit_status(exit_.code)
    parser.print_help()
    return 0
