"""``python -m sarlulc_cli ARGS`` is ``sarlulc ARGS``."""

import sys

from .dispatch import main

if __name__ == "__main__":
    sys.exit(main())
