"""Log files several processes append to, rotated by size, readable by their owner only.

`lanyard up --workers N` runs N processes on one home, each writing the same access log. A plain
RotatingFileHandler per process would rotate on its own byte count and rename a file another
process just opened, losing lines. Here every write holds an exclusive flock on a lock file beside
the log, reopens the log if another process rotated it (its inode changed), and decides on rotation
from the file's real size, so the processes take turns and rotate once.
"""

from __future__ import annotations

import fcntl
import io
import logging
import logging.handlers
import os
from pathlib import Path

LOG_DIR = "logs"
MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 5
FILE_MODE = 0o600


def log_dir(home: Path) -> Path:
    home.mkdir(parents=True, exist_ok=True, mode=0o700)  # a home made here is as private as one made elsewhere
    path = home / LOG_DIR
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def _private_opener(path: str, flags: int) -> int:
    fd = os.open(path, flags, FILE_MODE)
    os.fchmod(fd, FILE_MODE)  # O_CREAT's mode is filtered by the umask; an older file may be wider
    return fd


class SharedRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """RotatingFileHandler made safe for several writer processes, with 0600 files."""

    def __init__(self, path: Path, max_bytes: int = MAX_BYTES, backups: int = BACKUPS) -> None:
        self._lock_fd = _private_opener(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=True)

    def _open(self) -> io.TextIOWrapper:
        stream = open(self.baseFilename, self.mode, encoding=self.encoding, opener=_private_opener)  # noqa: SIM115
        assert isinstance(stream, io.TextIOWrapper)
        return stream

    def _reopen_if_rotated(self) -> None:
        if self.stream is None:
            return
        try:
            on_disk = os.stat(self.baseFilename).st_ino
        except FileNotFoundError:
            on_disk = -1
        if on_disk != os.fstat(self.stream.fileno()).st_ino:
            self.stream.close()
            self.stream = None

    def write_text(self, text: str) -> None:
        """Append `text` (whole lines) under the lock, rotating first if it would overflow the file."""
        with self.lock:  # type: ignore[union-attr]
            self._write_locked(text)

    def _write_locked(self, text: str) -> None:
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            self._reopen_if_rotated()
            stream = self.stream or self._open()
            size = stream.seek(0, os.SEEK_END)
            if self.maxBytes > 0 and size and size + len(text.encode()) > self.maxBytes:
                self.stream = stream
                self.doRollover()
                stream = self.stream or self._open()
            self.stream = stream
            stream.write(text)
            stream.flush()
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write_text(self.format(record) + self.terminator)
        except Exception:
            self.handleError(record)

    def shouldRollover(self, record: logging.LogRecord) -> int:  # logging's name
        return 0  # decided in write_text, under the lock, from the file's real size

    def close(self) -> None:
        # Closes the stream only; the next write reopens it. logging.config.dictConfig (uvicorn
        # calls it) closes every handler in the process, and these must outlive that. The lock
        # file's descriptor lives as long as the process.
        super().close()
