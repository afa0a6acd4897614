"""``python -m dynaseg segment …`` — the same as the ``dynaseg`` console script."""

import sys

from dynaseg.cli import main

if __name__ == "__main__":
    sys.exit(main())
