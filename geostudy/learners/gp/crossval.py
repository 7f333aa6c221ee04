"""Cross-validation objectives for an exact GP's hyperparameters, in closed form.

The marginal likelihood rewards a kernel that explains the stations as a whole; the predictive error
at unseen points, which is what a reconstruction is scored on, can prefer other hyperparameters
(most of all when the kernel is misspecified). With ``K = K_f + s2 I`` over the ``n`` stations,
``alpha = K^-1 (y - m)`` and ``B = K^-1`` (Rasmussen & Williams 2006, sec. 5.4.2):

- leave-one-out: the residual ``y_i - mu_{-i} = alpha_i / B_ii`` with predictive variance ``1 / B_ii``;
- k-fold: the held-out residuals of fold ``F`` are ``(B_FF)^-1 alpha_F``, their covariance ``(B_FF)^-1``.

Both cost one Cholesky factorisation (plus a small solve per fold), like the likelihood, and are
differentiable, so the same optimiser fits them.
"""

from __future__ import annotations

import math

import torch

OBJECTIVES: tuple[str, ...] = ("mll", "loo", "loo_nlpd", "kfold")


def loo_residuals(k: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Leave-one-out residuals ``y_i - mu_{-i}`` and predictive variances ``(n,)`` from ``K`` and ``r = y - m``."""
    chol = torch.linalg.cholesky(k)
    alpha = torch.cholesky_solve(r.unsqueeze(-1), chol).squeeze(-1)
    inv_diag = torch.diagonal(torch.cholesky_inverse(chol))
    return alpha / inv_diag, 1.0 / inv_diag


def kfold_residuals(k: torch.Tensor, r: torch.Tensor, folds: list[torch.Tensor]) -> torch.Tensor:
    """Held-out residuals ``(n,)`` of each station when its fold (index tensors covering all stations) is left out."""
    chol = torch.linalg.cholesky(k)
    alpha = torch.cholesky_solve(r.unsqueeze(-1), chol).squeeze(-1)
    inverse = torch.cholesky_inverse(chol)
    out = torch.empty_like(r)
    for idx in folds:
        out = out.index_put((idx,), torch.linalg.solve(inverse[idx][:, idx], alpha[idx]))
    return out


def make_folds(n: int, count: int, gen: torch.Generator) -> list[torch.Tensor]:
    """``count`` random folds of ``n`` stations (sizes differ by at most one)."""
    fold_of = torch.randperm(n, generator=gen) % count
    return [torch.nonzero(fold_of == f).squeeze(-1) for f in range(count) if bool((fold_of == f).any())]


def cv_loss(objective: str, k: torch.Tensor, r: torch.Tensor, folds: list[torch.Tensor] | None = None) -> torch.Tensor:
    """The cross-validation objective to minimise (mean squared held-out residual, or LOO NLPD per station).

    Args:
        objective: ``loo``, ``loo_nlpd`` or ``kfold``.
        k: ``(n, n)`` covariance of the stations, noise included.
        r: ``(n,)`` station values minus the prior mean.
        folds: The folds of ``kfold``.
    """
    if objective == "kfold":
        if not folds:
            raise ValueError("kfold needs the folds")
        return kfold_residuals(k, r, folds).pow(2).mean()
    resid, var = loo_residuals(k, r)
    if objective == "loo":
        return resid.pow(2).mean()
    if objective == "loo_nlpd":
        return 0.5 * (var.log() + resid.pow(2) / var + math.log(2 * math.pi)).mean()
    raise ValueError(f"objective must be one of {', '.join(OBJECTIVES[1:])}, but got {objective!r}")


def loo_scale(k: torch.Tensor, r: torch.Tensor) -> float:
    """The factor for ``K`` (signal and noise together) that gives the LOO residuals unit standardised variance.

    A squared-error objective cannot see the overall scale of ``K`` (the posterior mean does not depend
    on it), so after such a fit the predictive variances are calibrated with this factor: for ``c K``
    the LOO variances are ``c / B_ii`` and the residuals unchanged, and ``c = mean(resid^2 B_ii)``
    maximises the LOO log predictive probability.
    """
    resid, var = loo_residuals(k, r)
    return float((resid.pow(2) / var).mean())
