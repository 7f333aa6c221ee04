#!/usr/bin/env python
"""A full study: ``python optuna_hyper.py --study NAME_OR_PATH [--n-trials N] [--storage URL] [--out DIR]``."""

import sys

from geostudy.cli import study_main

if __name__ == "__main__":
    sys.exit(study_main())
