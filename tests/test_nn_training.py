"""Training helpers shared by the neural learners: the learning-rate schedules."""

from __future__ import annotations

import pytest
import torch

from geostudy.errors import ConfigError
from geostudy.nn import make_scheduler


def _rates(schedule: str, steps: int, lr: float = 1e-3) -> tuple[list[float], float]:
    """The rate before each of ``steps`` optimizer steps, and the rate after the last."""
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = make_scheduler(schedule, optimizer, steps)
    assert scheduler is not None
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates, optimizer.param_groups[0]["lr"]


@pytest.mark.parametrize("schedule", ["none", "constant"])
def test_no_schedule(schedule: str) -> None:
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    assert make_scheduler(schedule, optimizer, 10) is None


def test_cosine_decays_the_learning_rate_to_zero_over_the_run() -> None:
    rates, last = _rates("cosine", 10)
    assert rates[0] == pytest.approx(1e-3)
    assert rates[5] == pytest.approx(0.5e-3)  # half way down the half cosine
    assert all(a > b for a, b in zip(rates, rates[1:]))
    assert last == pytest.approx(0.0, abs=1e-12)


def test_onecycle_warms_up_to_the_optimizer_rate_then_anneals() -> None:
    rates, _ = _rates("onecycle", 100)
    peak = max(range(100), key=rates.__getitem__)
    assert rates[peak] == pytest.approx(1e-3)
    assert 10 <= peak <= 16  # the first 15 % of the steps warm up
    assert rates[0] < 0.1e-3 and rates[-1] < 1e-6


def test_unknown_schedule_is_one_line_naming_the_key() -> None:
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    with pytest.raises(ConfigError, match=r"optim.schedule.*allowed: none, constant, cosine, onecycle"):
        make_scheduler("linear", optimizer, 10)
