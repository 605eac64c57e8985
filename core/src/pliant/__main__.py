"""``python -m pliant``: the ``pliant`` command line (see :mod:`pliant.cli`)."""

from __future__ import annotations

import sys

from pliant.cli import main

if __name__ == "__main__":
    sys.exit(main())
