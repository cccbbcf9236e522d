"""The event loop every Lanyard process runs on."""

from __future__ import annotations

import asyncio


def event_loop_runner() -> asyncio.Runner:
    """uvloop when installed: asyncio.run() would ignore uvicorn's loop setting, and uvloop makes the
    hot paths (mostly socket writes) much cheaper."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)
