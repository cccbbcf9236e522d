"""`lanyard logs`: the last lines of the platform's log or access log, and `-f` to follow them.

The home is found as `lanyard status` finds it (--home, $LANYARD_HOME, ~/.lanyard); the local host
agent's logs are under `<home>/agent/logs/`. Following survives rotation: when the file at the path
is a new one (another inode) or shorter than what was read, the rest of the old file is printed and
the new one read from its start, as `tail -F` does.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import BinaryIO

import click

from lanyard.cli.context import CliError
from lanyard.observe.files import LOG_DIR
from lanyard.observe.logs import ACCESS_LOG, PLATFORM_LOG

BLOCK = 64 * 1024
POLL = 0.2


def log_path(home: Path, *, access: bool, agent: bool) -> Path:
    base = home / "agent" if agent else home
    return base / LOG_DIR / (ACCESS_LOG if access else PLATFORM_LOG)


def last_lines(fh: BinaryIO, count: int) -> bytes:
    """The last `count` lines of an open file, reading backwards a block at a time."""
    end = fh.seek(0, os.SEEK_END)
    if count <= 0 or end == 0:
        return b""
    data = b""
    position = end
    while position > 0 and data.count(b"\n") <= count:
        step = min(BLOCK, position)
        position -= step
        fh.seek(position)
        data = fh.read(step) + data
    lines = data.splitlines(keepends=True)
    fh.seek(end)
    return b"".join(lines[-count:])


def _write(chunk: bytes) -> None:
    if chunk:
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()


def _replaced(path: Path, fh: BinaryIO) -> bool:
    try:
        now = path.stat()
    except FileNotFoundError:
        return False  # mid-rotation: keep reading the old file until the new one appears
    mine = os.fstat(fh.fileno())
    return now.st_ino != mine.st_ino or now.st_size < fh.tell()


def follow(path: Path, fh: BinaryIO | None, deadline: float | None = None) -> None:
    """Print what is appended to `path` until interrupted (or `deadline`, a monotonic time)."""
    while deadline is None or time.monotonic() < deadline:
        if fh is None:
            try:
                fh = open(path, "rb")  # noqa: SIM115 - held across iterations, closed on rotation
            except FileNotFoundError:
                time.sleep(POLL)
                continue
        chunk = fh.read()
        if chunk:
            _write(chunk)
            continue
        if _replaced(path, fh):
            _write(fh.read())  # whatever the old file got before it was rotated away
            fh.close()
            fh = None
            continue
        time.sleep(POLL)
    if fh is not None:
        fh.close()


@click.command("logs")
@click.option("-f", "--follow", "following", is_flag=True, help="Keep printing lines as they are written.")
@click.option("--access", is_flag=True, help="The access log (one JSON line per request) instead of the log.")
@click.option("--agent", is_flag=True, help="The local host agent's log (or, with --access, its access log).")
@click.option(
    "-n", "--lines", type=click.IntRange(0, 1_000_000), default=20, show_default=True, help="How many lines to print."
)
@click.pass_context
def logs(ctx: click.Context, following: bool, access: bool, agent: bool, lines: int) -> None:
    """Print the last lines of the platform's log, or its access log (--access), or the agent's (--agent)."""
    home: Path = ctx.find_root().obj["home"]
    path = log_path(home, access=access, agent=agent)
    try:
        fh: BinaryIO | None = open(path, "rb")  # noqa: SIM115 - handed on to follow()
    except FileNotFoundError:
        if not following:
            raise CliError(f"there is no log at {path} yet: has a platform run on the home {home}?") from None
        fh = None
    except PermissionError as exc:
        raise CliError(f"not allowed to read {path}: it belongs to the user the platform runs as") from exc
    if fh is not None:
        _write(last_lines(fh, lines))
    if not following:
        if fh is not None:
            fh.close()
        return
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how one stops following: not an error
        follow(path, fh)
