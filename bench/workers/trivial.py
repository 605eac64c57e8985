"""Measure (a): does nothing but leave a marker file proving this rank ran.

Usage: trivial.py OUT_DIR (creates OUT_DIR/ran-<RANK>).
"""
import os
import sys

open(os.path.join(sys.argv[1], "ran-" + os.environ["RANK"]), "w").close()
