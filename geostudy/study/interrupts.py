"""Ctrl-C and SIGTERM as KeyboardInterrupt, held back while Optuna, not our objective, runs.

A scheduler ending the job (SIGTERM) is handled like Ctrl-C: the running trial is failed cleanly
and the study can be resumed. But an interrupt raised in Optuna's own code around the objective
escapes its handling: inside ``study.ask`` (the trial is created RUNNING, nobody fails it) or while
it stores a finished trial (Optuna 5.0 crashes on an unbound local and leaves the trial RUNNING).
A resumed study counts such a trial as running forever. So the runner calls ``study.optimize``
inside :func:`held`, and the objective opens the hold while it runs (:func:`release` as it starts,
:func:`hold` as it ends): outside the objective a signal is only recorded, and raised as
KeyboardInterrupt when the objective starts or when the block ends.

A signal that arrives while Python runs a finaliser (``__del__``, a weakref callback of the garbage
collector, as SQLAlchemy registers) raises its KeyboardInterrupt there, and Python prints it as
"Exception ignored" and goes on: the run would not stop. :func:`install` also hooks
``sys.unraisablehook`` so that such an interrupt is recorded like a held one and raised at the next
:func:`release` or block end.

Signal handlers run in the main thread only, and only the main thread may install them.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

_held = False
_pending: int | None = None  # the first signal that came during the hold, or whose interrupt was swallowed


def install() -> None:
    """Handle SIGTERM and SIGINT here, unless someone else already installed a handler for them."""
    defaults = {signal.SIGTERM: (signal.SIG_DFL, None), signal.SIGINT: (signal.default_int_handler,)}
    for signum, default in defaults.items():
        if signal.getsignal(signum) in default:
            signal.signal(signum, _handler)
    if not getattr(sys.unraisablehook, "_geostudy", False):
        sys.unraisablehook = _unraisable_hook(sys.unraisablehook)


def _unraisable_hook(previous):
    """Record an interrupt of ours that a finaliser swallowed; pass anything else on to ``previous``."""

    def hook(unraisable) -> None:
        global _pending
        signum = getattr(unraisable.exc_value, "geostudy_signal", None)
        if signum is None:
            previous(unraisable)
        elif _pending is None:
            _pending = signum

    hook._geostudy = True  # type: ignore[attr-defined]
    return hook


@contextmanager
def held() -> Iterator[None]:
    """Holds signals inside the block (but where :func:`release` opens it); one held is raised on leaving.

    When the block itself ends in an exception (an interrupt of the objective, an error), that
    exception goes on and a held signal is dropped: the run stops either way.
    """
    hold()
    try:
        yield
    finally:
        signum = _end_hold()
    if signum is not None:
        raise _interrupt(signum)


@contextmanager
def dropped() -> Iterator[None]:
    """Signals inside the block are dropped: for the short clean-up of a command that is ending anyway."""
    hold()
    try:
        yield
    finally:
        _end_hold()


def hold() -> None:
    """From now on a signal is recorded, not raised."""
    global _held
    _held = True


def release() -> None:
    """Ends the hold: a signal recorded meanwhile is raised now."""
    signum = _end_hold()
    if signum is not None:
        raise _interrupt(signum)


def _end_hold() -> int | None:
    global _held, _pending
    signum, _held, _pending = _pending, False, None
    return signum


def _handler(signum: int, frame: FrameType | None) -> None:
    global _pending
    if not _held:
        raise _interrupt(signum)
    if _pending is None:
        _pending = signum


def _interrupt(signum: int) -> KeyboardInterrupt:
    # Ctrl-C as Python's own handler raises it (no message: the objective then says "Ctrl-C").
    err = KeyboardInterrupt() if signum == signal.SIGINT else KeyboardInterrupt(f"signal {signum}")
    err.geostudy_signal = signum  # type: ignore[attr-defined]  # tells the unraisable hook it is ours
    return err
