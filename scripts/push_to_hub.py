#!/usr/bin/env python
"""Publish a fine-tuned checkpoint on the Hub with a model card: ``sarlulc push-to-hub`` as a script.

``python scripts/push_to_hub.py --help`` lists the options and shows examples. The options, their defaults and what the
command does are defined once, in the ``sarlulc_cli`` package.
"""

import sys

from sarlulc_cli import main

if __name__ == "__main__":
    sys.exit(main(["push-to-hub", *sys.argv[1:]], prog="push_to_hub.py"))
