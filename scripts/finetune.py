#!/usr/bin/env python
"""Fine-tune the LULC or water segmentation model: ``sarlulc finetune`` as a script, for ``accelerate launch
scripts/finetune.py``.

``python scripts/finetune.py --help`` lists the options and shows examples. The options, their defaults and what the
command does are defined once, in the ``sarlulc_cli`` package.
"""

import sys

from sarlulc_cli import main

if __name__ == "__main__":
    sys.exit(main(["finetune", *sys.argv[1:]], prog="finetune.py"))
