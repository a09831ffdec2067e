"""Progress of long, multi-pass jobs (the gate, the report) on a terminal, silence elsewhere.

A polars pass over tens of millions of rows gives no callback while it runs, so progress is
reported per *step* (one check of the gate, one section of the report): the bar moves when a step
starts and shows the elapsed time. It writes only when its stream is a terminal and it was not
told to be quiet, so logs of CI jobs and pipes stay clean.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """A one-line step counter: ``label [#####.....] 3/7 step-name  12.4 s``.

    Parameters
    ----------
    total : int
        Number of steps.
    label : str
        What is running, shown first.
    stream : file, optional
        Where to write (default ``sys.stderr``).
    enabled : bool, optional
        Force on or off; by default on exactly when ``stream`` is a terminal.
    """

    width = 20

    def __init__(
        self,
        total: int,
        *,
        label: str = "",
        stream: TextIO | None = None,
        enabled: bool | None = None,
    ) -> None:
        if total < 1:
            raise ValueError(f"The 'total' parameter of Progress must be an int >= 1. Got {total}.")
        self.total = total
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = bool(isatty and isatty()) if enabled is None else enabled
        self.done = 0
        self._start = time.perf_counter()
        self._last_len = 0

    def __call__(self, step: str) -> None:
        """Start ``step``: the steps before it are done."""
        self.done = min(self.done + 1, self.total)
        self._draw(step)

    def _draw(self, step: str) -> None:
        if not self.enabled:
            return
        filled = round(self.width * (self.done - 1) / self.total)
        bar = "#" * filled + "." * (self.width - filled)
        elapsed = time.perf_counter() - self._start
        line = f"{self.label} [{bar}] {self.done}/{self.total} {step}  {elapsed:.1f} s"
        pad = " " * max(0, self._last_len - len(line))
        self.stream.write("\r" + line + pad)
        self.stream.flush()
        self._last_len = len(line)

    def close(self) -> None:
        """Erase the line, so the result printed next starts clean."""
        if self.enabled and self._last_len:
            self.stream.write("\r" + " " * self._last_len + "\r")
            self.stream.flush()
        self._last_len = 0

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
