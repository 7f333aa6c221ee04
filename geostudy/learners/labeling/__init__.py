"""The labeling learner: GNN (DGL or PyG) labeling of survey points, trained on some lines."""

from geostudy.learners.labeling.config import LabelingConfig
from geostudy.learners.labeling.data import Survey, load_csv, synthetic_survey
from geostudy.learners.labeling.learner import LabelingLearner

__all__ = ["LabelingConfig", "LabelingLearner", "Survey", "load_csv", "synthetic_survey"]
