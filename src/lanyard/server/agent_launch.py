"""Starting the local host agent early: before the server's own (slow) imports and bootstrap.

Only the standard library here, on purpose: `lanyard up` imports this first, so on a warm home the
agent boots while the server does, and learns the server's URL from a file the server writes as soon
as its sockets are bound. A cold home (no host identity yet) starts the agent later, with a join token.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path

SERVER_URL_FILE = ".server-url"
AGENT_FILE = "agent.json"


def agent_argv(home: Path, agent_port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lanyard",
        "agent",
        "--home",
        str(home / "agent"),
        "--ca",
        str(home / "tls" / "ca.pem"),
        "--ca-bundle",
        str(home / "tls" / "ca-bundle.pem"),
        "--port",
        str(agent_port),
        "--name",
        socket.gethostname(),
    ]


def start_early(home: Path, agent_port: int) -> subprocess.Popen[bytes] | None:
    agent_home = home / "agent"
    if not (agent_home / "host.json").exists() or not (home / "tls" / "ca.pem").exists():
        return None
    for stale in (home / SERVER_URL_FILE, agent_home / AGENT_FILE):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    argv = [*agent_argv(home, agent_port), "--server-file", str(home / SERVER_URL_FILE)]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, env=dict(os.environ))
