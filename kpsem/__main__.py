"""``python -m kpsem``."""

import sys

from kpsem.cli import main

if __name__ == "__main__":
    sys.exit(main())
