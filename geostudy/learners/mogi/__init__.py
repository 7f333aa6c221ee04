"""Mogi learner: neural inversion of InSAR deformation maps for the depth and volume change of a source.

Pieces, one per module: ``forward`` (Mogi displacements, LOS projection, phase wrapping), ``noise``
(correlated atmospheric noise, white noise, holes), ``spec`` (the dataset spec: fixed values,
distributions, quantile intervals), ``data`` (the simulator), ``model`` (CNN, MLP, transforms),
``train`` (loop, checkpoints), ``evaluate`` (metrics, batched prediction), ``baseline`` (least
squares), ``matrix`` (inference matrix over two variables), ``observed`` (a user's LOS map file with its
units, geometry and valid pixels), ``refine`` (least squares with offset and ramp, sandwich intervals),
``invert`` (``mode: invert``), ``synthetic_map`` (map files with a known source), ``plots``.
"""

from geostudy.learners.mogi.config import MogiConfig
from geostudy.learners.mogi.data import Simulator
from geostudy.learners.mogi.forward import los_vector, mogi_displacements, project_los, wrap_phase
from geostudy.learners.mogi.learner import MogiLearner
from geostudy.learners.mogi.spec import DatasetSpec, parse_spec

__all__ = [
    "DatasetSpec",
    "MogiConfig",
    "MogiLearner",
    "Simulator",
    "los_vector",
    "mogi_displacements",
    "parse_spec",
    "project_los",
    "wrap_phase",
]
