"""Checkpoints, and ``mode: estimate``: a trained estimator applied to a user's CSV of points."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from geostudy.config import to_dataclass
from geostudy.errors import DataError
from geostudy.learners.matern.calibrate import IntervalCalibration
from geostudy.learners.matern.config import MaternConfig
from geostudy.learners.matern.evaluate import predict, refine, run_mle
from geostudy.learners.matern.locations import MIN_POINTS, to_unit_square
from geostudy.learners.matern.model import MaternEstimator
from geostudy.learners.matern.simulate import FieldSet
from geostudy.learners.matern.train import build_model

CHECKPOINT_FORMAT = "geostudy-matern-1"


def plain_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config as plain JSON types, so that ``torch.load(weights_only=True)`` reads it back."""
    return json.loads(json.dumps(dict(config), default=str))


def save_checkpoint(path: Path, model: MaternEstimator, config: Mapping[str, Any],
                    calibration: IntervalCalibration | None = None) -> Path:
    """``torch.save`` of the state dict, the (training) config that rebuilds the model, its interval calibration."""
    torch.save({"format": CHECKPOINT_FORMAT, "state_dict": model.state_dict(), "config": plain_config(config),
                "interval_calibration": None if calibration is None else calibration.to_dict()}, path)
    return path


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu"
                    ) -> tuple[MaternEstimator, MaternConfig, IntervalCalibration | None]:
    """Rebuild the estimator saved by :func:`save_checkpoint` (``weights_only=True``: no code is run)."""
    path = Path(path)
    if not path.is_file():
        raise DataError("checkpoint not found; train with run.py first (it writes checkpoint.pt)", file=path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not our checkpoint"
        raise DataError(f"not a readable checkpoint: {type(err).__name__}", file=path) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise DataError(f"not a matern checkpoint (expected format {CHECKPOINT_FORMAT!r})", file=path)
    train_config = dict(ckpt["config"])
    train_config["mode"] = "train"
    cfg = to_dataclass(MaternConfig, train_config, file=path)
    model = build_model(cfg)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise DataError(f"checkpoint does not fit this version of the model ({first}); retrain it",
                        file=path) from None
    stored = ckpt.get("interval_calibration")  # absent from checkpoints written before calibration
    calibration = IntervalCalibration.from_dict(stored) if stored else None
    return model.to(device).eval(), cfg, calibration


@dataclass
class ObservedField:
    """A user's field rescaled to the training frame, with what it takes to go back to data units."""

    fields: FieldSet
    origin: np.ndarray
    scale: float
    time_origin: float
    time_scale: float
    value_scale: float
    n_points: int
    replicates: int


def read_points(path: str | Path, cfg: MaternConfig, ecfg: Any) -> ObservedField:
    """Read and rescale a CSV of points.

    Args:
        path: CSV with the columns named by ``estimate.x``/``y``/``value`` (and ``t`` for space-time,
            ``replicate`` optionally).
        cfg: The checkpoint's training config (space-time or not, the fixed variance).
        ecfg: The ``estimate`` section naming the columns.

    Raises:
        DataError: unreadable file, missing columns, non-numeric values, fewer than 10 points, or
            replicates that do not share their locations; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("CSV of points not found", file=path)
    try:
        df = pd.read_csv(path)
    except Exception as err:  # noqa: BLE001 - pandas raises many kinds for a bad file
        raise DataError(f"not a readable CSV: {' '.join(str(err).split())}", file=path) from None
    needed = [ecfg.x, ecfg.y, ecfg.value]
    if cfg.data.spacetime:
        if not ecfg.t:
            raise DataError("the checkpoint is space-time: set estimate.t to the time column", file=path)
        needed.append(ecfg.t)
    if ecfg.replicate:
        needed.append(ecfg.replicate)
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise DataError(f"missing column(s) {', '.join(repr(c) for c in missing)}; the file has "
                        f"{', '.join(repr(str(c)) for c in df.columns) or 'no columns'}", file=path)
    numeric = [ecfg.x, ecfg.y, ecfg.value] + ([ecfg.t] if cfg.data.spacetime else [])
    for col in numeric:
        values = pd.to_numeric(df[col], errors="coerce")
        if values.isna().any():
            row = int(np.flatnonzero(values.isna().to_numpy())[0])
            raise DataError(f"column {col!r} must be numeric and complete, but row {row + 2} is "
                            f"{df[col].iloc[row]!r}", file=path)
        df[col] = values.astype(float)
    groups = [g for _, g in df.groupby(ecfg.replicate, sort=True)] if ecfg.replicate else [df]
    key_cols = [ecfg.x, ecfg.y] + ([ecfg.t] if cfg.data.spacetime else [])
    groups = [g.sort_values(key_cols, kind="stable") for g in groups]
    n = len(groups[0])
    if n < MIN_POINTS:
        raise DataError(f"needs at least {MIN_POINTS} points (per replicate), but got {n}", file=path)
    first = groups[0][key_cols].to_numpy()
    for g in groups[1:]:
        if len(g) != n or not np.allclose(g[key_cols].to_numpy(), first):
            raise DataError("every replicate must have the same locations", file=path)
    coords, origin, scale = to_unit_square(first[:, :2])
    times = None
    t0, ts = 0.0, 1.0
    if cfg.data.spacetime:
        t = first[:, 2]
        t0, ts = float(t.min()), float(t.max() - t.min())
        if not ts > 0:
            raise DataError("column t must hold at least two different times", file=path)
        times = (t - t0) / ts
    values = np.stack([g[ecfg.value].to_numpy() for g in groups])
    values = values - values.mean(axis=1, keepdims=True)  # the model is for zero-mean fields
    value_scale = 1.0
    prior_var = cfg.prior.variance
    if not prior_var.free:
        # Trained at a fixed variance: bring the data to it; the variance reported is then the sample's.
        value_scale = float(np.sqrt(values.var() / max(prior_var.value, 1e-12))) or 1.0
        values = values / value_scale
    fields = FieldSet(coords=[coords], values=[values], params={}, times=None if times is None else [times])
    return ObservedField(fields, origin, scale, t0, ts, value_scale, n, len(groups))


def to_data_units(name: str, log_value: float, obs: ObservedField) -> float:
    value = math.exp(log_value)
    if name == "range":
        return value * obs.scale
    if name == "time_range":
        return value * obs.time_scale
    return value * obs.value_scale**2  # variance, nugget


def size_warning(obs: ObservedField, cfg: MaternConfig, csv: str | Path | None) -> str | None:
    """One line when the field's number of sites lies outside the sizes the network was trained on."""
    sites = len(np.unique(obs.fields.coords[0], axis=0)) if cfg.data.spacetime else obs.n_points
    low, high = cfg.data.size_range()
    if low <= sites <= high:
        return None
    trained = f"n = {low}" if low == high else f"n in [{low}, {high}]"
    return (f"{csv}: {sites} sites, outside the network's training sizes ({trained}); its estimate "
            f"extrapolates (train with data.n/data.n_max covering it, or compare with the MLE)")


def estimate_csv(
    cfg_run: MaternConfig, workdir: Path, device: torch.device | str = "cpu"
) -> tuple[dict[str, Any], dict[str, Path]]:
    """Apply the checkpoint to the CSV; write ``estimates.json`` and ``estimates.csv`` into ``workdir``."""
    ecfg = cfg_run.estimate
    model, cfg, calibration = load_checkpoint(str(ecfg.checkpoint), device)
    obs = read_points(str(ecfg.csv), cfg, ecfg)
    warnings = [w for w in [size_warning(obs, cfg, ecfg.csv)] if w]
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr, flush=True)
    est = predict(model, cfg, obs.fields, device=device)
    if calibration is not None:
        est = calibration.apply(est, obs.fields)
    steps = cfg_run.eval.refine_steps
    refined = refine(cfg, obs.fields, est, steps) if steps > 0 else None
    mle = run_mle(cfg, obs.fields) if ecfg.mle else None
    free = cfg.free_params()
    rows = []
    for j, name in enumerate(free):
        row: dict[str, Any] = {"parameter": name, "gnn": to_data_units(name, est.point[0, j], obs)}
        if est.interval is not None:
            row["gnn_low"] = to_data_units(name, est.interval[0, j, 0], obs)
            row["gnn_high"] = to_data_units(name, est.interval[0, j, 1], obs)
        if refined is not None:
            row["refined"] = to_data_units(name, refined.point[0, j], obs)
            if refined.interval is not None:
                row["refined_low"] = to_data_units(name, refined.interval[0, j, 0], obs)
                row["refined_high"] = to_data_units(name, refined.interval[0, j, 1], obs)
        row["mle"] = to_data_units(name, mle.point[0, j], obs) if mle is not None else float("nan")
        rows.append(row)
    for name in cfg.param_names():
        if name not in free:
            value = getattr(cfg.prior, name).value
            value = value * obs.value_scale**2 if name in ("variance", "nugget") else value
            fixed_row = {"parameter": name, "gnn": value, **({"refined": value} if refined is not None else {}),
                         "mle": value, "note": "fixed in training"}
            rows.append(fixed_row)
    summary = {
        "csv": str(ecfg.csv),
        "checkpoint": str(ecfg.checkpoint),
        "n_points": obs.n_points,
        "replicates": obs.replicates,
        "coordinate_scale": obs.scale,
        "coordinate_origin": obs.origin.tolist(),
        "interval_level": cfg.eval.level,
        "interval_calibration": None if calibration is None else (
            f"conformal, {calibration.fields} simulated fields for each replicate count "
            f"{calibration.replicates[0]}-{calibration.replicates[-1]}"),
        "gnn_seconds": est.seconds,
        "refine_steps": steps,
        "refined_seconds": refined.seconds if refined is not None else None,
        "mle_seconds": mle.seconds if mle is not None else None,
        "trained_n": cfg.data.n * (cfg.data.n_times if cfg.data.spacetime else 1),
        "trained_n_range": list(cfg.data.size_range()),
        "warnings": warnings,
        "parameters": rows,
    }
    workdir.mkdir(parents=True, exist_ok=True)
    json_path = workdir / "estimates.json"
    json_path.write_text(json.dumps(summary, indent=2))
    csv_path = workdir / "estimates.csv"
    pd.DataFrame(rows).to_csv(csv_path, index=False)
    return summary, {"estimates_json": json_path, "estimates_csv": csv_path}
