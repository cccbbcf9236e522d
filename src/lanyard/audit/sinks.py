"""Where records go: the database (the shared `audit` table) and JSON-lines files.

The file sink re-checks (st_dev, st_ino) of its path against the open descriptor before every
write: a deleted or replaced file would otherwise keep "working" through the old descriptor
(hashicorp/vault#31718), so the batch is refused and the next one starts a new file at the path.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, Table, insert, select

from lanyard.storage import models as m

_TABLE: Table = m.AuditRecord.__table__  # type: ignore[assignment]


def row_of(record: dict[str, Any]) -> dict[str, Any]:
    row = {k: v for k, v in record.items() if k != "detail"}
    row["detail"] = orjson.dumps(record["detail"], option=orjson.OPT_SORT_KEYS).decode()
    return row


def record_of(row: Any) -> dict[str, Any]:
    record = dict(row._mapping if hasattr(row, "_mapping") else row)
    record["detail"] = orjson.loads(record["detail"])
    return record


def chain_head(engine: Engine, chain: str) -> tuple[int, str] | None:
    with engine.connect() as conn:
        row = conn.execute(
            select(_TABLE.c.seq, _TABLE.c.sha256).where(_TABLE.c.chain == chain).order_by(_TABLE.c.seq.desc()).limit(1)
        ).first()
    return (int(row[0]), str(row[1])) if row is not None else None


class DatabaseSink:
    """One transaction per batch, on its own connection: never inside a request's unit of work, so
    a record commits whether or not the work it describes does (and the change feed never sees it)."""

    name = "database"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(_TABLE), [row_of(r) for r in records])

    def head(self, chain: str) -> tuple[int, str] | None:
        return chain_head(self.engine, chain)

    def close(self) -> None:
        return None


class FileSink:
    """Append-only JSON lines, one record per line, fsync'd per batch (unless `fsync=False`)."""

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self.path = path
        self.name = f"file {path}"
        self.fsync = fsync
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None

    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Not O_NONBLOCK: a pipe whose reader stalls must stall us (the deadline answers for us).
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        info = os.fstat(fd)
        self._fd, self._identity = fd, (info.st_dev, info.st_ino)
        self._regular = stat.S_ISREG(info.st_mode)
        return fd

    def _checked_fd(self) -> int:
        if self._fd is None:
            return self._open()
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            info = None
        if info is None or (info.st_dev, info.st_ino) != self._identity:
            self._drop()
            raise OSError(f"the audit file {self.path} was deleted or replaced")
        return self._fd

    def _drop(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            finally:
                self._fd, self._identity = None, None

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        fd = self._checked_fd()
        data = memoryview(b"".join(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) + b"\n" for r in records))
        try:
            while data:
                written = os.write(fd, data)
                data = data[written:]
            if self.fsync and self._regular:
                os.fdatasync(fd)
        except OSError:
            self._drop()  # reopened (and re-checked) on the next batch
            raise

    def head(self, chain: str) -> tuple[int, str] | None:
        last = last_record(self.path)
        if last is None or last.get("chain") != chain:
            return None
        return int(last["seq"]), str(last["sha256"])

    def close(self) -> None:
        self._drop()


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every complete record of a JSON-lines file (a torn last line, from a crash, is left out)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    records = []
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        try:
            parsed = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(parsed, dict):
            records.append(parsed)
    return records


def last_record(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 65536))
            tail = fh.read()
    except (FileNotFoundError, IsADirectoryError):
        return None
    for line in reversed(tail.split(b"\n")):
        if not line.strip():
            continue
        try:
            parsed = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(parsed, dict) and "seq" in parsed:
            return parsed
    return None
