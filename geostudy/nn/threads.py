"""Temporarily limiting torch's CPU threads.

Small tensor work (tiny convolutions, batched 256x256 Cholesky) on a shared or small CPU runs up to
~10x slower on two threads than on one, because threads contend; learners expose a ``threads`` key
and run their loops under :func:`torch_threads`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` torch CPU threads (None or 0: leave the setting alone), restored afterwards."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
