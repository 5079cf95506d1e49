#!/usr/bin/env python
"""Evaluate a fine-tuned checkpoint on saved tiles or a labelled scene: ``sarlulc evaluate`` as a script.

Named run_evaluation.py, not evaluate.py: Python puts this folder first on ``sys.path``, where a script named
evaluate.py would shadow the ``evaluate`` package that the metric needs.

``python scripts/run_evaluation.py --help`` lists the options and shows examples. The options, their defaults and
what the command does are defined once, in the ``sarlulc_cli`` package.
"""

import sys

from sarlulc_cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]], prog="run_evaluation.py"))
