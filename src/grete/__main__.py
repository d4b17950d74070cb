"""``python -m grete``: the same command line as the ``grete`` script."""

import sys

from grete.cli import main

if __name__ == "__main__":
    sys.exit(main())
