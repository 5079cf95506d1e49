#!/usr/bin/env python
"""Predict a map for a whole scene: ``sarlulc predict`` as a script, for ``accelerate launch scripts/predict.py``.

``python scripts/predict.py --help`` lists the options and shows examples. The options, their defaults and what the
command does are defined once, in the ``sarlulc_cli`` package.
"""

import sys

from sarlulc_cli import main

if __name__ == "__main__":
    sys.exit(main(["predict", *sys.argv[1:]], prog="predict.py"))
