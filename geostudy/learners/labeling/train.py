"""Splits by group, feature standardisation, class weights and the feature-subset resolution."""

from __future__ import annotations

import numpy as np

from geostudy.errors import ConfigError, DataError
from geostudy.learners.labeling.config import DataConfig, SplitConfig
from geostudy.learners.labeling.data import Survey


def resolve_features(data: DataConfig, survey: Survey) -> list[str]:
    """Feature names from ``data.features``.

    ``null``/``all`` = every feature; a list names them; a string names a preset of
    ``data.feature_sets`` or joins names with ``+`` (``log_cond+depth``). Presets and ``+`` strings
    make feature subsets searchable as plain categorical choices.
    """
    spec = data.features
    if spec is None or spec == "all":
        return list(survey.feature_names)
    if isinstance(spec, str):
        if spec in data.feature_sets:
            names = data.feature_sets[spec]
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ConfigError(f"must be a list of feature names, but got {names!r}", key=f"data.feature_sets.{spec}")
        else:
            names = [s.strip() for s in spec.split("+") if s.strip()]
            unknown = [n for n in names if n not in survey.feature_names]
            if unknown:
                presets = ", ".join(sorted(data.feature_sets)) or "none"
                raise ConfigError(f"{spec!r} is neither a preset ({presets}) nor '+'-joined features; "
                                  f"available features: {', '.join(survey.feature_names)}", key="data.features")
    else:
        names = list(spec)
    survey.select(names)  # validates the names
    return names


def split_roles(survey: Survey, cfg: SplitConfig) -> np.ndarray:
    """Role (``train``/``val``/``test``/``none``) of every node, decided per group.

    ``alternate``: groups in natural order take the roles of ``cycle`` in turn. ``explicit``:
    the ``train`` and ``val`` groups as listed, ``test`` as listed or (null) every other group.
    """
    names = survey.group_names()
    if len(names) < 2:
        raise DataError(f"splits are made of groups, but the data hold only {names!r}; name a group column "
                        "(data.csv.group: line or well id) with at least 2 groups", file=survey.source)
    if cfg.mode == "alternate":
        role_of = {g: cfg.cycle[i % len(cfg.cycle)] for i, g in enumerate(names)}
    else:
        role_of = {g: "none" for g in names}
        lists = {"train": cfg.train, "val": cfg.val, "test": cfg.test or []}
        seen: dict[str, str] = {}
        for role, groups in lists.items():
            for g in map(str, groups):
                if g not in role_of:
                    raise ConfigError(f"group {g!r} is not in the data; groups: {', '.join(names)}", key=f"split.{role}")
                if g in seen:
                    raise ConfigError(f"group {g!r} is in both split.{seen[g]} and split.{role}", key=f"split.{role}")
                seen[g] = role
                role_of[g] = role
        if cfg.test is None:
            role_of = {g: (r if r != "none" else "test") for g, r in role_of.items()}
    roles = np.array([role_of[g] for g in survey.groups.tolist()], dtype=object).astype(str)
    for role in ("train", "val"):
        if not ((roles == role) & (survey.labels >= 0)).any():
            raise DataError(f"the {role} split holds no labeled node (groups: {len(names)}; split.mode "
                            f"{cfg.mode!r}); use more groups or another split", file=survey.source)
    return roles


def standardize(x: np.ndarray, fit_on: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre and scale ``x`` with the mean and std of the rows ``fit_on`` (the training split)."""
    ref = x[fit_on].astype(np.float64)
    mean = ref.mean(0)
    std = ref.std(0)
    std = np.where(std > 1e-12, std, 1.0)
    return ((x - mean) / std).astype(np.float32), mean, std


def class_weights(spec: str | list[float], labels: np.ndarray, num_classes: int) -> np.ndarray | None:
    """Loss weights per class: ``none``, ``balanced`` (n / (k * count) over the training labels) or a list."""
    if spec == "none":
        return None
    if isinstance(spec, list):
        if len(spec) != num_classes:
            raise ConfigError(f"must list {num_classes} weights (one per class), but got {len(spec)}",
                              key="train.class_weights")
        return np.asarray(spec, dtype=np.float32)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    present = counts > 0
    w = np.zeros(num_classes)
    w[present] = counts.sum() / (present.sum() * counts[present])
    return w.astype(np.float32)
