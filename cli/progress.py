"""A one-line progress bar on stderr for long commands (``rig crash check``, ``rig stream``).

It draws only when asked (``--progress``) or when the stream is a terminal, redraws at most
ten times a second, and :meth:`ProgressBar.say` prints a whole line above it without tearing it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

WIDTH = 30


class ProgressBar:
    """``label [#####.....]  45.0% 450/1000 detail``, redrawn in place with ``\\r``."""

    def __init__(self, label: str, total: int, *, out: TextIO | None = None,
                 force: bool = False, interval: float = 0.1,
                 counts: Callable[[int, int], str] | None = None) -> None:
        self.out = sys.stderr if out is None else out
        self.enabled = force or self.out.isatty()
        self.label = label
        self.total = max(total, 0)
        """May change while running (a job whose length grows)."""
        self.counts = counts or (lambda done, total: f"{done}/{total}")
        """How ``done`` of ``total`` is written (default ``450/1000``)."""
        self.interval = interval
        self._last = 0.0
        self._drawn = False
        self._text = ""

    def update(self, done: int, detail: str = "", *, force: bool = False) -> None:
        """Show ``done`` of ``total`` (redraws at most every ``interval`` seconds)."""
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and self._drawn and now - self._last < self.interval:
            return
        self._last = now
        frac = min(1.0, done / self.total) if self.total else 1.0
        filled = int(frac * WIDTH)
        text = (f"{self.label} [{'#' * filled}{'.' * (WIDTH - filled)}] {frac * 100:5.1f}% "
                + self.counts(done, self.total) + (f" {detail}" if detail else ""))
        pad = " " * max(0, len(self._text) - len(text))
        self.out.write("\r" + text + pad)
        self.out.flush()
        self._text = text
        self._drawn = True

    def say(self, line: str) -> None:
        """Print ``line`` on stderr above the bar."""
        if self._drawn:
            self.out.write("\r" + " " * len(self._text) + "\r")
        self.out.write(line + "\n")
        if self._drawn:
            self.out.write(self._text)
        self.out.flush()

    def close(self) -> None:
        """End the bar's line (if it was drawn)."""
        if self._drawn:
            self.out.write("\n")
            self.out.flush()
            self._drawn = False
