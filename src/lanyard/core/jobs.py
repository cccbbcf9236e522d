"""Time-driven work on a node: a step run every few seconds in a worker thread.

Jobs keep their state in the database and take a lock for each step, so every node may run the same
job (whoever gets there first does the work) and a restart simply resumes. A step that fails (the
database is away) is logged and tried again on the next tick; one that reports a backlog runs again
at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

log = logging.getLogger("lanyard.jobs")


class PeriodicJob:
    def __init__(self, name: str, step: Callable[[], bool], tick: float) -> None:
        """`step` returns True when there is more to do right away."""
        self.name = name
        self.step = step
        self.tick = tick
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            try:
                while await asyncio.to_thread(self.step):
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s: step failed (%s); will retry", self.name, type(exc).__name__)
