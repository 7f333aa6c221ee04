"""GP learner: reconstruct space×time fields from sparse stations with GPyTorch kernel combinations.

See ``configs/gp.yaml`` for every key. The study-level chart for the engine is
:func:`geostudy.learners.gp.plots.kernel_mask_bar_chart`.
"""

from geostudy.learners.gp.config import GpConfig
from geostudy.learners.gp.kernels import KERNEL_NAMES, build_kernel, kernel_label
from geostudy.learners.gp.learner import GpLearner, trial_labels
from geostudy.learners.gp.plots import kernel_mask_bar_chart, trials_frame

__all__ = ["KERNEL_NAMES", "GpConfig", "GpLearner", "build_kernel", "kernel_label", "kernel_mask_bar_chart",
           "trial_labels", "trials_frame"]
