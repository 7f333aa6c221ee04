"""OA-ARDM learner: order-agnostic autoregressive diffusion (Hoogeboom et al., ICLR 2022) for
categorical geostatistical images (facies), with sampling conditioned on hard data (wells).

Modules: ``config`` (typed config), ``data`` (procedural images, patches, hard data), ``images``
(PNG / .npy / GSLIB training images, facies codes), ``wells`` (hard data from a CSV), ``model``
(UNet), ``train`` (objective, EMA), ``sampling``, ``evaluate`` (variograms, connectivity),
``checkpoint``, ``simulate`` (``mode: simulate``: GSLIB + NetCDF realisations), ``sis`` (the
sequential indicator simulation baseline), ``plots``, ``learner`` (the :class:`ArdmLearner` run).
"""

from geostudy.learners.ardm.config import ArdmConfig
from geostudy.learners.ardm.data import HardData, load_png, procedural_image
from geostudy.learners.ardm.learner import ArdmLearner
from geostudy.learners.ardm.model import UNet, model_input
from geostudy.learners.ardm.sampling import sample
from geostudy.learners.ardm.train import ardm_loss, draw_mask

__all__ = [
    "ArdmConfig",
    "ArdmLearner",
    "HardData",
    "UNet",
    "ardm_loss",
    "draw_mask",
    "load_png",
    "model_input",
    "procedural_image",
    "sample",
]
