#!/usr/bin/env python
"""Pretrain the SAR-W-MixMAE encoder: ``sarlulc pretrain`` as a script, for ``accelerate launch scripts/pretrain.py``.

``python scripts/pretrain.py --help`` lists the options and shows examples. The options, their defaults and what the
command does are defined once, in the ``sarlulc_cli`` package.
"""

import sys

from sarlulc_cli import main

if __name__ == "__main__":
    sys.exit(main(["pretrain", *sys.argv[1:]], prog="pretrain.py"))
