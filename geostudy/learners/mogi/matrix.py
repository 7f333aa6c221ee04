"""The inference matrix: a trained network over a grid of two source variables, the others fixed.

``python run.py --config configs/mogi.yaml --set mode=matrix --set matrix.checkpoint=PATH/mogi_model.pt``
takes the checkpoint's simulator (grid, geometry, noise), builds ``matrix.y.n × matrix.x.n`` maps
with ``matrix.x.var`` along the columns and ``matrix.y.var`` along the rows (both must be targets of
the model), predicts every map, and writes into the run folder, for every target ``T`` the model
predicts:

- ``matrix_pred_T.npy``: the prediction in physical units (km, m³), shape ``(ny, nx)``;
- ``matrix_diff_T.npy``: prediction − truth in the target's transformed unit (km for depth, log10 m³
  for ΔV, so ΔV differences over orders of magnitude stay comparable);
- ``matrix_reldiff_T.npy``: (prediction − truth) / truth in physical units;
- ``matrix_T.png``: the three as heat maps, the training range outlined;

plus ``matrix_axis_x_VAR.npy`` and ``matrix_axis_y_VAR.npy`` (the axis values). Ranges default to each
variable's test range, spacing to log for loguniform/lognormal variables; the other variables take
``matrix.fixed`` values, else their fixed or central (median) values of the checkpoint's spec.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from geostudy.errors import ConfigError
from geostudy.learners.base import RunContext, RunResult
from geostudy.learners.mogi.config import MatrixAxis, MogiConfig
from geostudy.learners.mogi.data import Simulator
from geostudy.learners.mogi.evaluate import Predictor, target_metrics
from geostudy.learners.mogi.model import TargetTransform
from geostudy.learners.mogi.plots import matrix_figure, save_figure
from geostudy.learners.mogi.spec import VARIABLES


def axis_values(axis: MatrixAxis, sim: Simulator, key: str) -> tuple[np.ndarray, bool]:
    """The axis's values and whether they are log-spaced."""
    spec = sim.spec
    dist = spec.distributions.get(axis.var)
    if dist is not None:
        lo, hi = spec.value_range(axis.var, "test")
    else:
        lo = hi = spec.central(axis.var)
    lo = lo if axis.low is None else axis.low
    hi = hi if axis.high is None else axis.high
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ConfigError(f"needs a finite range low < high, but got [{lo!r}, {hi!r}]; set {key}.low and {key}.high",
                          key=f"{key}.low")
    log = axis.log if axis.log is not None else bool(dist is not None and dist.log_scale)
    if log and lo <= 0:
        raise ConfigError(f"log spacing needs low > 0, but got {lo!r}", key=f"{key}.low")
    return (np.geomspace(lo, hi, axis.n) if log else np.linspace(lo, hi, axis.n)), log


def check_matrix(cfg: MogiConfig, predictor: Predictor) -> None:
    """Both axes must be variables the model predicts (otherwise there is no difference to map)."""
    targets = predictor.transform.targets
    for name, axis in (("x", cfg.matrix.x), ("y", cfg.matrix.y)):
        if axis.var not in targets:
            raise ConfigError(f"the model does not predict {axis.var!r}; it predicts: {', '.join(targets)}",
                              key=f"matrix.{name}.var")


def run_matrix(cfg: MogiConfig, ctx: RunContext) -> RunResult:
    from geostudy.learners.mogi.train import load_checkpoint

    mc = cfg.matrix
    _, predictor, sim = load_checkpoint(mc.checkpoint or "", device=cfg.device)
    check_matrix(cfg, predictor)
    targets = predictor.transform.targets
    xs, xlog = axis_values(mc.x, sim, "matrix.x")
    ys, ylog = axis_values(mc.y, sim, "matrix.y")
    base = {v: float(mc.fixed.get(v, sim.spec.central(v))) for v in VARIABLES}
    gx, gy = np.meshgrid(xs, ys)
    values = {v: np.full(gx.size, base[v]) for v in VARIABLES}
    values[mc.x.var], values[mc.y.var] = gx.ravel(), gy.ravel()
    rng = np.random.default_rng([cfg.seed, 7]) if mc.noise else None
    ctx.log(f"matrix: {gy.shape[0]} x {gx.shape[1]} maps of {mc.y.var} x {mc.x.var}")
    pred: dict[str, list[np.ndarray]] = {t: [] for t in targets}
    step = max(mc.batch_size, 1)
    for start in range(0, gx.size, step):
        part = {v: a[start:start + step] for v, a in values.items()}
        out = predictor.predict(sim.simulate(part, rng), mc.batch_size)
        for t in targets:
            pred[t].append(out[t])
    preds = {t: np.concatenate(p) for t, p in pred.items()}

    work = Path(ctx.workdir)
    work.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    figures: dict[str, Any] = {}
    np.save(work / f"matrix_axis_x_{mc.x.var}.npy", xs)
    np.save(work / f"matrix_axis_y_{mc.y.var}.npy", ys)
    files["matrix_axis_x"] = work / f"matrix_axis_x_{mc.x.var}.npy"
    files["matrix_axis_y"] = work / f"matrix_axis_y_{mc.y.var}.npy"
    shape = gx.shape
    for t in targets:
        p, truth = preds[t].reshape(shape), values[t].reshape(shape)
        arrays = {
            "pred": p,
            "diff": TargetTransform.transformed(t, p) - TargetTransform.transformed(t, truth),
            "reldiff": (p - truth) / truth,
        }
        for kind, arr in arrays.items():
            path = work / f"matrix_{kind}_{t}.npy"
            np.save(path, arr)
            files[f"matrix_{kind}_{t}"] = path
        png = work / f"matrix_{t}.png"
        save_figure(matrix_figure(t, arrays, xs, ys, mc.x.var, mc.y.var, sim, (xlog, ylog)), png)
        figures[f"matrix_{t}"] = png
    metrics = target_metrics(targets, preds, values, "matrix_")
    return RunResult(metrics=metrics, figures=figures, files=files,
                     tables={"matrix": {"x": mc.x.var, "y": mc.y.var, "shape": list(shape),
                                        "fixed": {v: base[v] for v in VARIABLES if v not in (mc.x.var, mc.y.var)}}})
