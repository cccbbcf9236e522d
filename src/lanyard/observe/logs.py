"""The platform's own log: the `lanyard.*` loggers to stderr and to `<home>/logs/lanyard.log`.

Records reach the file through a QueueHandler, so a request that logs a warning never waits on the
disk. Only Lanyard's loggers follow LANYARD_LOG_LEVEL; uvicorn, httpx, SQLAlchemy and the rest stay
at WARNING whatever it says, because their DEBUG output quotes requests verbatim (headers, bodies).
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import sys
import traceback
from pathlib import Path
from types import TracebackType

from lanyard.observe.files import SharedRotatingFileHandler, log_dir

PLATFORM_LOG = "lanyard.log"
ACCESS_LOG = "access.log"
FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"

_listener: logging.handlers.QueueListener | None = None
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]


class Formatter(logging.Formatter):
    """Tracebacks name the exception types and the frames, never the exceptions' messages: those
    may quote what a request carried (a token in a KeyError, a form value in a ValueError)."""

    def formatException(self, ei: ExcInfo) -> str:  # logging's name
        _, value, tb = ei
        lines = ["Traceback (most recent call last):\n", *traceback.format_tb(tb)]
        seen: list[BaseException] = []
        cause = value
        while cause is not None and cause not in seen:
            seen.append(cause)
            cause = cause.__cause__ or cause.__context__
        lines += [f"{type(e).__module__}.{type(e).__qualname__} (message withheld)\n" for e in seen]
        return "".join(lines).rstrip("\n")


def configure(home: Path, level: str = "WARNING") -> Path:
    """Set up logging for this process once; returns the platform log's path."""
    global _listener
    path = log_dir(home) / PLATFORM_LOG
    root = logging.getLogger()
    root.setLevel(logging.WARNING)
    formatter = Formatter(FORMAT)
    if not any(getattr(h, "_lanyard", False) for h in root.handlers):
        stderr = logging.StreamHandler(sys.stderr)
        stderr.setFormatter(formatter)
        # A record logged with extra={"console": False} is for the file alone (stdout has said it).
        stderr.addFilter(lambda record: getattr(record, "console", True))
        file_handler = SharedRotatingFileHandler(path)
        file_handler.setFormatter(formatter)
        records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        handler = logging.handlers.QueueHandler(records)
        handler.setFormatter(Formatter("%(message)s"))  # it renders the traceback, before queueing
        handler._lanyard = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        _listener = logging.handlers.QueueListener(records, stderr, file_handler, respect_handler_level=True)
        _listener.start()
        atexit.register(shutdown)
    logging.getLogger("lanyard").setLevel(level)
    return path


def shutdown() -> None:
    """Write out what is queued (at exit, and before a process reports it has stopped)."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None
