"""`lanyard up` nodes with any options (a shared database, a public URL, --workers, --no-agent), and
what a process costs at rest: resident memory and CPU time read from /proc.

Readiness is the same contract benchkit/lanyard.py relies on: H/endpoints.json naming the process
started (a stale file from an earlier start of the home never counts).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from benchkit.harness import Server, all_cores
from benchkit.lanyard import READY_TIMEOUT_S, lanyard_binary
from benchkit.tokens import CheckFailed


@dataclass
class Node:
    server: Server
    home: Path
    endpoints: dict[str, Any]
    port: int  # the port this node itself listens on (its authority may name a balancer)
    ready_s: float  # process start to endpoints.json naming it

    @property
    def ca(self) -> str:
        return str(self.endpoints["ca_cert"])

    @property
    def pid(self) -> int:
        return self.server.pid


def start_node(
    name: str,
    home: Path,
    logdir: Path,
    options: list[str],
    env: dict[str, str] | None = None,
    core: int | str | None = None,
    port: int | None = None,
) -> Node:
    """`lanyard up --home HOME --port PORT OPTIONS...` (port 0 unless given), on all cores unless
    told otherwise, waited for until it announces itself."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "endpoints.json").unlink(missing_ok=True)
    cmd = [str(lanyard_binary()), "up", "--home", str(home), "--port", str(port or 0), *options]
    server = Server(
        name,
        cmd,
        logdir / f"{name}.log",
        env={**os.environ, **(env or {})},
        core=all_cores() if core is None else core,
    )
    started = time.perf_counter()
    server.start()
    try:
        endpoints = _wait_ready(home, server)
    except Exception:
        server.stop()
        raise
    bound = port or urlsplit(endpoints["authority"]).port
    assert bound is not None
    return Node(server, home, endpoints, bound, time.perf_counter() - started)


def _wait_ready(home: Path, server: Server) -> dict[str, Any]:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if not server.alive():
            raise CheckFailed(f"{server.name} exited before it was ready:\n{server.log_tail()}")
        try:
            endpoints = json.loads((home / "endpoints.json").read_text())
        except (OSError, ValueError):
            endpoints = {}
        if isinstance(endpoints, dict) and endpoints.get("pid") == server.pid:
            return endpoints
        time.sleep(0.005)
    raise CheckFailed(f"{server.name} was not ready within {READY_TIMEOUT_S:.0f}s:\n{server.log_tail()}")


# --------------------------------------------------------------------------------- process costs


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    stack = children(pid)
    while stack:
        child = stack.pop()
        found.append(child)
        stack.extend(children(child))
    return found


def status_kib(pid: int, field: str = "VmRSS") -> int:
    """A /proc/PID/status figure in KiB (VmRSS: resident now; VmHWM: the peak); 0 if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def command_name(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [a.decode(errors="replace") for a in argv if a]
    return " ".join(Path(words[0]).name if i == 0 else w for i, w in enumerate(words[:3])) if words else "?"


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), in seconds; 0 if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK
