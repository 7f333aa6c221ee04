"""The one root exception of geostudy and its subclasses.

The CLI turns every :class:`GeostudyError` into one line on stderr and exit code 2; anything else
that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class GeostudyError(Exception):
    """Root of every error that the user can fix (bad input, missing data, bad config).

    Args:
        message: What is wrong and what is allowed, e.g. ``"must be > 0, but got -1"``.
        file: The file the bad input came from, if any.
        key: The dotted key inside that file (or the ``--set`` key), if any.
    """

    def __init__(self, message: str, *, file: str | Path | None = None, key: str | None = None) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.key = key
        super().__init__(self.one_line())

    def one_line(self) -> str:
        where = []
        if self.file:
            where.append(self.file)
        if self.key:
            where.append(f"key '{self.key}'")
        text = " ".join(self.message.split())  # one line, whatever the message held
        return f"{': '.join(where)}: {text}" if where else text


class ConfigError(GeostudyError):
    """A config, study file or ``--set`` value is malformed or out of range."""


class DataError(GeostudyError):
    """A data file is missing, unreadable or malformed."""


class NonFiniteLossError(GeostudyError):
    """Training produced a NaN or infinite loss; the trial fails with this reason."""

    def __init__(self, step: int, value: float) -> None:
        super().__init__(f"loss became {value} at step {step}; lower the learning rate or check the data")
        self.step = step
        self.value = value
