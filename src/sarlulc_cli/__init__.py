"""The ``sarlulc`` command line, kept apart from the ``sarlulc`` library so that it can answer without importing it.

``import sarlulc`` registers the model classes with transformers' Auto classes, which imports torch and transformers
(seconds, about a gigabyte). This package imports only the standard library until a command actually runs, so
``sarlulc --help`` and ``sarlulc COMMAND --help`` answer at once.

* :mod:`sarlulc_cli.arguments`: the argument records, the single source of every option's name, default and help
  (the library functions take them; ``sarlulc.training`` re-exports them);
* :mod:`sarlulc_cli.parser`: records -> argparse arguments -> records;
* :mod:`sarlulc_cli.commands`: the subcommands (synth, demo, predict, evaluate, pretrain, finetune, ablation,
  push-to-hub), each imported only when it runs;
* :mod:`sarlulc_cli.dispatch`: :func:`main` and the exit statuses;
* :mod:`sarlulc_cli.runners`: glue for the commands whose library function takes plain arguments.

``sarlulc ARGS``, ``python -m sarlulc_cli ARGS`` and ``python scripts/<command>.py ARGS`` all run :func:`main`.
"""

from .dispatch import main

__all__ = ["main"]
