#!/usr/bin/env python
"""Train the paper's ablation ladder and print the table: ``sarlulc ablation`` as a script.

``python scripts/ablation.py --help`` lists the options and shows examples. The options, their defaults and what the
command does are defined once, in the ``sarlulc_cli`` package.
"""

import sys

from sarlulc_cli import main

if __name__ == "__main__":
    sys.exit(main(["ablation", *sys.argv[1:]], prog="ablation.py"))
