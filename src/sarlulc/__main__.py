"""``python -m sarlulc ARGS`` is ``sarlulc ARGS`` (the command line lives in the torch-free ``sarlulc_cli`` package;
this entry first imports the library, so ``sarlulc --help`` or ``python -m sarlulc_cli --help`` answer faster)."""

import sys

from sarlulc_cli import main

if __name__ == "__main__":
    sys.exit(main())
