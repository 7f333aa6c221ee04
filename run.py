#!/usr/bin/env python
"""One training/evaluation run: ``python run.py --config configs/X.yaml [--set key=value ...] [--out DIR]``."""

import sys

from geostudy.cli import run_main

if __name__ == "__main__":
    sys.exit(run_main())
