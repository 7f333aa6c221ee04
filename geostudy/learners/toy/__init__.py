"""Toy learner: an analytic function (Branin) that "trains" over steps.

It exists so the study engine can be tested and benchmarked without training a network: it reports
a per-step value that converges to Branin(x, y), can sleep per step (to be killed mid-trial), and can
be told to fail (NaN loss, an exception, MemoryError) so failure handling is exercised for real.
"""

from geostudy.learners.toy.learner import ToyConfig, ToyLearner, branin

__all__ = ["ToyConfig", "ToyLearner", "branin"]
