"""geostudy: Optuna hyperparameter studies over geostatistical and geophysical learners."""

import os

# DGL asks interactively for a backend on first import unless this is set.
os.environ.setdefault("DGLBACKEND", "pytorch")
# Figures are files here, never windows.
os.environ.setdefault("MPLBACKEND", "Agg")

__version__ = "0.1.0"
