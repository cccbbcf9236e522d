"""A home belongs to one running platform.

`lanyard up` holds an exclusive lock on `home/lanyard.lock` (with its pid inside) for as long as it
runs; a second `lanyard up` on the same home refuses, naming the running pid, and touches nothing.
The kernel drops the lock when the process dies, so a crash never leaves a home locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from lanyard.core.errors import ConfigError

LOCK_FILE = "lanyard.lock"


class HomeLock:
    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, home: Path) -> HomeLock:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(home / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(
                f"a Lanyard platform is already running on the home {home} (pid {pid}); stop it first "
                f"(kill {pid}), or start this one with another --home"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd)

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def running_pid(home: Path) -> int | None:
    """The pid of the platform running on `home`, or None when none holds its lock."""
    try:
        fd = os.open(home / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raw = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(raw) if raw.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
