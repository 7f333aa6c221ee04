"""The study engine, the same for every learner: spec, space, samplers, pruners, storage, objective."""

from geostudy.study.space import SearchSpace
from geostudy.study.spec import StudySpec, parse_study, resolve_study_path

__all__ = ["SearchSpace", "StudySpec", "parse_study", "resolve_study_path"]
