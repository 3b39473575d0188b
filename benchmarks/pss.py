"""Peak memory of a process tree, sampled in a thread: what the benchmarks report as peak PSS.

Summed as PSS (proportional set size): forked DataLoader workers share most of their pages with
their parent, and adding up their RSS would count those pages once per process.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable

import psutil


class PssSampler:
    """Peak PSS of ``root`` (default: this process) and all its children while the block runs.

    ``peak_total`` is the whole tree's peak. With ``group`` (a process -> a name or None), each
    named group's processes and their children are also summed apart: ``peak[name]``, and
    ``first[name]``/``last[name]`` the perf_counter times of its first and last sighting.
    """

    def __init__(self, root: psutil.Process | None = None, interval: float = 0.2,
                 group: Callable[[psutil.Process], str | None] | None = None):
        self.root, self.interval, self.group = root or psutil.Process(), interval, group
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self.peak: dict[str, int] = defaultdict(int)
        self.peak_total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        while not self._stop.is_set():
            self._sample(time.perf_counter())
            self._stop.wait(self.interval)

    def _sample(self, now: float) -> None:
        per_group: dict[str, int] = defaultdict(int)
        total = 0
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            procs = []
        owner: dict[int, str] = {}
        for proc in procs:  # parents before children: a child counts to its parent's group
            try:
                mem = proc.memory_full_info().pss
                name = self.group(proc) if self.group else None
                parent = proc.ppid()
            except psutil.Error:
                continue
            total += mem
            name = name or owner.get(parent)
            if name:
                owner[proc.pid] = name
                per_group[name] += mem
        for name, mem in per_group.items():
            self.first.setdefault(name, now)
            self.last[name] = now
            self.peak[name] = max(self.peak[name], mem)
        self.peak_total = max(self.peak_total, total)
