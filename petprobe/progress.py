"""Progress for every long loop of the pipeline: a live bar on a terminal, a few lines in a log.

One call, ``progress(...)``, with tqdm's own arguments::

    for batch in progress(batches, total=n, desc="embed pets/train", unit="img"):
        ...
    with progress(total=n, desc="attacks", unit="step") as bar:
        bar.update(1)

On a terminal it is a plain tqdm bar. When stderr is not a terminal (CI, ``dvc repro > log 2>&1``)
it writes whole lines instead of ``\\r`` redraws: ``desc: count/total (pct) [elapsed<ETA, rate]``,
at most one line every ``LOG_INTERVAL`` seconds across all bars of the process (a long bar's lines
spread out further: half its age apart), plus one closing line per bar that is left
(``leave=True``, tqdm's default). A stage's short inner loops pass
``leave=False`` so only the stage's own summary line reports them.
``PETPROBE_PROGRESS=bar|log|off`` overrides the terminal check.
"""

from __future__ import annotations

import os
import sys
import time

from tqdm import tqdm

__all__ = ["progress", "LOG_INTERVAL"]

LOG_INTERVAL = 10.0   # seconds between progress lines in a log
_last_line = [0.0]    # when any bar of this process last wrote a log line


class _LogLines(tqdm):
    """tqdm that writes whole lines, rate-limited across bars, for logs that are read, not watched."""

    monitor_interval = 0  # no monitor thread: it would force redraws

    def __init__(self, *args, **kwargs):
        counted = ("{n_fmt}/{total_fmt} {unit} ({percentage:.0f}%) [{elapsed}<{remaining}, {rate_fmt}]"
                   if kwargs.get("total") else "{n_fmt} {unit} [{elapsed}, {rate_fmt}]")
        kwargs.update(mininterval=LOG_INTERVAL, miniters=1, dynamic_ncols=False, bar_format="{desc}: " + counted)
        self._closing = False
        self._started = self._last_own = time.monotonic()
        super().__init__(*args, **kwargs)

    def display(self, msg=None, pos=None):
        if msg == "":                    # tqdm clearing a bar: nothing to clear in a log
            return False
        now = time.monotonic()
        if not self._closing:
            # Every LOG_INTERVAL s at first, then spaced by half the bar's age (10, 20, 30, 45, 68 s...):
            # a slow machine's hour-long step writes about 15 lines, not 360.
            gap = max(LOG_INTERVAL, 0.5 * (now - self._started)) if LOG_INTERVAL > 0 else 0.0  # 0: every update
            if self.n == 0 or now - _last_line[0] < LOG_INTERVAL or now - self._last_own < gap:
                return True
            self._last_own = now
        _last_line[0] = now
        # tqdm's close() ends the closing line itself.
        self.fp.write((msg or self.__str__()).strip() + ("" if self._closing else "\n"))
        self.fp.flush()
        return True

    def clear(self, *args, **kwargs):
        pass

    def moveto(self, n):
        pass

    def close(self):
        # The closing line of a bar that is left, whatever the interval.
        self._closing = bool(self.leave) and not self.disable
        super().close()


def _mode() -> str:
    forced = os.environ.get("PETPROBE_PROGRESS", "").lower()
    if forced in ("bar", "log", "off"):
        return forced
    return "bar" if sys.stderr.isatty() else "log"


def progress(iterable=None, *, desc: str | None = None, total: int | None = None, unit: str = "it",
             leave: bool = True, disable: bool = False, **kwargs) -> tqdm:
    """A tqdm progress bar over ``iterable`` (or updated by hand); see the module docstring."""
    mode = _mode()
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    cls = _LogLines if mode == "log" else tqdm
    return cls(iterable, desc=desc, total=total, unit=unit, leave=leave, disable=disable or mode == "off",
               file=sys.stderr, **kwargs)
