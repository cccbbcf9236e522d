"""Metrics across the processes of `lanyard up --workers N`.

The kernel spreads connections over the workers (SO_REUSEPORT), so a scrape lands on any one of
them. With prometheus_client's multiprocess mode every process writes its counters and histograms
to memory-mapped files in `<home>/metrics/`, and whichever process answers a scrape sums them all:
one platform-wide view. prometheus_client decides on the mode when it is first imported, from the
PROMETHEUS_MULTIPROC_DIR variable, so this runs before anything imports it; the workers inherit
the variable, the host agent (a process of its own with its own metrics) must not.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import TypeVar

ENV = "PROMETHEUS_MULTIPROC_DIR"
METRICS_DIR = "metrics"


def enable(home: Path, *, fresh: bool) -> Path:
    """Turn multiprocess mode on for this process and its children. `fresh` (the first process):
    start from empty files, or a previous run's counts would be added in."""
    if "prometheus_client" in sys.modules and os.environ.get(ENV) is None:
        raise RuntimeError("prometheus_client was imported before multiprocess metrics were set up")
    path = home / METRICS_DIR
    if fresh:
        shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.environ[ENV] = str(path)
    return path


E = TypeVar("E", bound=MutableMapping[str, str])


def disable_for_child(env: E) -> E:
    """The environment for a child that keeps its own metrics (the host agent)."""
    env.pop(ENV, None)
    env.pop(ENV.lower(), None)
    return env


def directory() -> str | None:
    return os.environ.get(ENV) or None


def process_exited(pid: int) -> None:
    """A worker stopped: its live gauges stop counting (its counters stay in the sums)."""
    if directory() is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
