"""``python -m dynaseg segment …`` — the same as the ``dynaseg`` console script."""

import sys

from dynaseg.cli import main

sys.exit(main())
