"""`lanyard webapp run`, `functionapp run`, `vm run`: start a command as a workload on this host.

The CLI places the workload on the local host (an operator action, checked by RBAC), then hands the
agent its stdin/stdout/stderr so the agent starts the command as its own child with the platform's
environment. The CLI relays Ctrl-C and returns the command's exit code.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any, NoReturn

from lanyard.cli.context import Profile, fail


def place_here(profile: Profile, resource_id: str, agent_home: str | None = None) -> str:
    """Place the workload on the chosen agent's host; returns that agent's control socket."""
    agent: Any = profile.endpoints.get("agent")
    if agent_home:
        try:
            agent = json.loads((Path(agent_home).expanduser() / "agent.json").read_text())
        except (OSError, ValueError):
            fail(f"no agent is running with home {agent_home}")
    if not agent:
        fail("no host agent is running on this platform (was it started with --no-agent?)")
    host_id = str(agent["hostId"])
    base = profile.endpoints["arm"].rstrip("/")
    profile.call(
        "PUT",
        f"{base}/lanyard/v1/hosts/{host_id}/placements",
        resource="https://management.azure.com",
        body={"resourceId": resource_id},
    )
    return str(agent["socket"])


def run_workload(socket_path: str, request: dict[str, Any]) -> NoReturn:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(socket_path)
    except OSError as exc:
        fail(f"cannot reach the host agent at {socket_path}: {exc.strerror}")
    payload = {**request, "env": dict(os.environ), "cwd": os.getcwd()}
    socket.send_fds(sock, [json.dumps(payload).encode()], [0, 1, 2])

    def relay(number: int, _frame: Any) -> None:
        with contextlib.suppress(OSError):
            sock.sendall(json.dumps({"signal": number}).encode() + b"\n")

    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, relay)
    buffer = b""
    while True:
        try:
            chunk = sock.recv(4096)
        except InterruptedError:
            continue
        if not chunk:
            fail("the host agent closed the connection before the command finished")
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            message = json.loads(line)
            if "error" in message:
                fail(str(message["error"]))
            if "warning" in message:
                print(f"lanyard: warning: {message['warning']}", file=sys.stderr, flush=True)
            if "exit" in message:
                sys.stdout.flush()
                os._exit(int(message["exit"]))
