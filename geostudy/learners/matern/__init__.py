"""Matérn learner: an amortised GNN + DeepSets estimator of Gaussian-random-field parameters.

Simulates Matérn fields (range, variance, smoothness, nugget; optionally separable space x time) at
uniform, Poisson, clustered or grid locations, trains a graph network on them, and compares it with
the exact-likelihood MLE on the same test fields. ``mode: estimate`` applies a trained checkpoint to a
CSV of points.
"""

from geostudy.learners.matern.config import MaternConfig
from geostudy.learners.matern.covariance import matern_correlation, matern_covariance
from geostudy.learners.matern.learner import MaternLearner
from geostudy.learners.matern.mle import fit_mle
from geostudy.learners.matern.simulate import FieldSet, simulate

__all__ = ["FieldSet", "MaternConfig", "MaternLearner", "fit_mle", "matern_correlation", "matern_covariance",
           "simulate"]
