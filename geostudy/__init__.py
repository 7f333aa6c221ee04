"""geostudy: Optuna hyperparameter studies over geostatistical and geophysical learners."""

import os

# DGL asks interactively for a backend on first import unless this is set.
os.environ.setdefault("DGLBACKEND", "pytorch")
# Figures are files here, never windows.
os.environ.setdefault("MPLBACKEND", "Agg")
# Idle OpenMP threads sleep instead of spinning: with several workers (or other programs) on few
# cores, spinning threads made small training steps ~10x slower. Set it yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
