"""The real haproxy in front of test servers: TCP mode, foreground (-db), listening on 127.0.0.1 at a
free port, round robin over the given backends with fast health checks (every 200 ms; one failure takes
a server out, one success puts it back). An admin socket answers `show stat` for server states."""

from __future__ import annotations

import atexit
import contextlib
import csv
import io
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from tests.support.postgres import free_port

CONNECT_TIMEOUT = "2s"
CLIENT_TIMEOUT = "60s"  # agents long-poll for 25-30 s through the proxy
SERVER_TIMEOUT = "60s"


def find_haproxy() -> str | None:
    """haproxy on PATH, or where Debian puts it (/usr/sbin is not on a non-root PATH)."""
    found = shutil.which("haproxy")
    if found:
        return found
    for candidate in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy"):
        if Path(candidate).is_file():
            return candidate
    return None


def available() -> tuple[bool, str]:
    """Whether a Haproxy can run here, and if not, why not."""
    binary = find_haproxy()
    if binary is None:
        return False, "haproxy was found neither on PATH nor in /usr/sbin: install the Debian package `haproxy`"
    try:
        result = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"{binary} -v could not run: {exc}"
    if result.returncode != 0:
        return False, f"{binary} -v failed ({result.returncode}): {result.stderr.strip()}"
    return True, ""


class HaproxyFactory(Protocol):
    """What the conftest fixture `haproxy_factory` returns: make a started, ready Haproxy."""

    def __call__(
        self, backends: Sequence[tuple[str, int]], *, check_inter_ms: int = 200, redispatch: bool = True
    ) -> Haproxy: ...


class Haproxy:
    """One haproxy process. `start()` (or the constructor's start=True) writes the config and runs it;
    `wait_ready()` waits for the listening port; `stop()` ends it and removes its directory."""

    available = staticmethod(available)

    def __init__(
        self,
        backends: Sequence[tuple[str, int]],
        *,
        check_inter_ms: int = 200,
        redispatch: bool = True,
        start: bool = True,
    ) -> None:
        binary = find_haproxy()
        if binary is None:
            raise RuntimeError(available()[1])
        if not backends:
            raise ValueError("haproxy needs at least one backend")
        self.binary = binary
        self.backends = [(str(host), int(port)) for host, port in backends]
        self.check_inter_ms = check_inter_ms
        self.redispatch = redispatch
        self.host = "127.0.0.1"
        self.port = 0
        self.root = Path(tempfile.mkdtemp(prefix="lanyard-haproxy-"))
        self.config_file = self.root / "haproxy.cfg"
        self.log_file = self.root / "haproxy.log"
        self.admin_socket = self.root / "admin.sock"
        self.process: subprocess.Popen[bytes] | None = None
        atexit.register(self.stop)
        if start:
            self.start()

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def server_names(self) -> list[str]:
        """The name each backend has in the config (and in server_states()), in the order given."""
        return [f"node{i}" for i in range(len(self.backends))]

    def config(self) -> str:
        servers = "".join(
            f"    server {name} {host}:{port} check inter {self.check_inter_ms}ms fall 1 rise 1\n"
            for name, (host, port) in zip(self.server_names, self.backends, strict=True)
        )
        redispatch = "    option redispatch\n    retries 2\n" if self.redispatch else "    retries 0\n"
        return (
            "global\n"
            "    maxconn 4096\n"
            f"    stats socket {self.admin_socket} mode 600 level admin\n"
            "\n"
            "defaults\n"
            "    mode tcp\n"
            f"    timeout connect {CONNECT_TIMEOUT}\n"
            f"    timeout client {CLIENT_TIMEOUT}\n"
            f"    timeout server {SERVER_TIMEOUT}\n"
            f"{redispatch}"
            "\n"
            "frontend lanyard\n"
            f"    bind {self.host}:{self.port}\n"
            "    default_backend nodes\n"
            "\n"
            "backend nodes\n"
            "    balance roundrobin\n"
            f"{servers}"
        )

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def start(self) -> Haproxy:
        if self.process is not None and self.process.poll() is None:
            return self
        for _attempt in range(3):
            self.port = free_port()
            self.config_file.write_text(self.config())
            with self.log_file.open("ab") as log:
                self.process = subprocess.Popen(
                    [self.binary, "-db", "-f", str(self.config_file)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=self.root,
                )
            try:
                self.wait_ready(10.0)
                return self
            except RuntimeError:
                if "cannot bind" not in self.log() and "Address already in use" not in self.log():
                    raise
        raise RuntimeError(f"haproxy did not start:\n{self.log()}")

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until the listening port accepts connections; RuntimeError (with haproxy's output) if it
        exits or the time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise RuntimeError(f"haproxy is not running (exit {code}):\n{self.log()}")
            try:
                # Ours only once its admin socket exists and it still runs: another process that won the
                # same free port (a parallel test run) answers connections too.
                with socket.create_connection(self.address, timeout=0.5):
                    if self.admin_socket.exists() and self.process.poll() is None:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"haproxy did not accept connections on {self.host}:{self.port}:\n{self.log()}")
            time.sleep(0.02)

    def command(self, line: str) -> str:
        """One command on the admin socket (e.g. "show stat", "disable server nodes/node0")."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5.0)
            s.connect(str(self.admin_socket))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def server_states(self) -> dict[str, str]:
        """Each backend server's status as haproxy sees it: {"node0": "UP", "node1": "DOWN", ...}."""
        text = self.command("show stat").lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {
            row["svname"]: row["status"]
            for row in rows
            if row.get("pxname") == "nodes" and row.get("svname") not in ("FRONTEND", "BACKEND")
        }

    def wait_for_states(self, expected: dict[str, str], timeout: float = 10.0) -> None:
        """Wait until the named servers have the given statuses (a status counts if it starts with the
        expected word, so "DOWN" matches "DOWN 1/1")."""
        deadline = time.monotonic() + timeout
        while True:
            states = self.server_states()
            if all(states.get(name, "").startswith(status) for name, status in expected.items()):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"haproxy servers are {states}, expected {expected}")
            time.sleep(0.05)

    def stop(self) -> None:
        """End haproxy (SIGTERM, then SIGKILL) and remove its directory. Safe to call more than once."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(OSError):
            shutil.rmtree(self.root)
        atexit.unregister(self.stop)

    def __enter__(self) -> Haproxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
