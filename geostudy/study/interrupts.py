"""Ctrl-C and SIGTERM as KeyboardInterrupt, held back while Optuna stores a finished trial.

A scheduler ending the job (SIGTERM) is handled like Ctrl-C: the running trial is failed cleanly
and the study can be resumed. But an interrupt raised inside Optuna's post-processing of a trial
(after the objective returned, while it writes the trial's state) escapes Optuna's ``except
Exception``: Optuna 5.0 then crashes on an unbound local and leaves the trial RUNNING, which a
resumed study counts as running forever. So from the moment the objective ends (:func:`hold`)
until the runner has stored the trial and run its callbacks (:func:`raised_after`), a signal is
only recorded, and raised as KeyboardInterrupt then.

Signal handlers run in the main thread only, and only the main thread may install them.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

_held = False
_pending: int | None = None  # the first signal that came during the hold


def install() -> None:
    """Handle SIGTERM and SIGINT here, unless someone else already installed a handler for them."""
    defaults = {signal.SIGTERM: (signal.SIG_DFL, None), signal.SIGINT: (signal.default_int_handler,)}
    for signum, default in defaults.items():
        if signal.getsignal(signum) in default:
            signal.signal(signum, _handler)


def hold() -> None:
    """From now on a signal is recorded, not raised, until :func:`raised_after` ends the hold."""
    global _held
    _held = True


@contextmanager
def raised_after() -> Iterator[None]:
    """Ends a hold begun inside the block; a signal recorded meanwhile is raised on leaving it.

    When the block itself ends in an exception (an interrupt of the objective, an error), that
    exception goes on and a recorded signal is dropped: the run stops either way.
    """
    global _held, _pending
    try:
        yield
    finally:
        signum, _held, _pending = _pending, False, None
    if signum is not None:
        raise _interrupt(signum)


def _handler(signum: int, frame: FrameType | None) -> None:
    global _pending
    if not _held:
        raise _interrupt(signum)
    if _pending is None:
        _pending = signum


def _interrupt(signum: int) -> KeyboardInterrupt:
    # Ctrl-C as Python's own handler raises it (no message: the objective then says "Ctrl-C").
    return KeyboardInterrupt() if signum == signal.SIGINT else KeyboardInterrupt(f"signal {signum}")
