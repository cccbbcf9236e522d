"""`lanyard status`, `lanyard down` and `lanyard up --detach`: the platform running on a home, found by its lock."""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from lanyard.cli.context import CliError, Profile
from lanyard.cli.output import print_result
from lanyard.observe.files import log_dir
from lanyard.server.homelock import running_pid

ARM = "https://management.azure.com"
NOT_RUNNING = 3  # as `systemctl status` exits for a stopped unit


@click.command("status")
@click.pass_context
def status(ctx: click.Context) -> None:
    """Whether a platform runs on this home: pid, URLs, version, nodes, host agents and their workloads.
    Exits 3 when none runs."""
    home: Path = ctx.find_root().obj["home"]
    pid = running_pid(home)
    if pid is None:
        print_result({"running": False, "home": str(home)})
        sys.exit(NOT_RUNNING)
    report: dict[str, Any] = {"running": True, "home": str(home), "pid": pid}
    try:
        report["version"] = importlib.metadata.version("lanyard")
    except importlib.metadata.PackageNotFoundError:
        report["version"] = None
    endpoints = home / "endpoints.json"
    if not endpoints.exists():
        report["ready"] = False  # starting, or stopping
        print_result(report)
        return
    ep = json.loads(endpoints.read_text())
    report |= {
        "ready": True,
        "authority": ep["authority"],
        "arm": ep["arm"],
        "tenantId": ep["tenant_id"],
        "subscriptionId": ep["subscription_id"],
        "workers": ep.get("workers", 1),
        "agent": {k: ep["agent"].get(k) for k in ("url", "hostId")} if ep.get("agent") else None,
    }
    profile = Profile.load(home)
    base = str(ep["arm"]).rstrip("/")
    report["nodes"] = profile.call("GET", f"{base}/lanyard/v1/nodes", resource=ARM)["value"]
    report["hosts"] = profile.call("GET", f"{base}/lanyard/v1/hosts", resource=ARM)["value"]
    print_result(report)


@click.command("down")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait for it to stop.")
@click.pass_context
def down(ctx: click.Context, timeout: float) -> None:
    """Stop the platform running on this home (SIGTERM, then wait until it has let go of the home)."""
    home: Path = ctx.find_root().obj["home"]
    pid = running_pid(home)
    if pid is None:
        print_result({"stopped": False, "reason": f"no platform is running on {home}"})
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass  # it was exiting already
    except PermissionError as exc:
        raise CliError(f"not allowed to stop pid {pid} (it runs as another user): run this as that user") from exc
    deadline = time.monotonic() + timeout
    while running_pid(home) is not None:
        if time.monotonic() > deadline:
            raise CliError(f"pid {pid} did not stop within {timeout:.0f} s; `kill -9 {pid}` ends it at once")
        time.sleep(0.1)
    print_result({"stopped": True, "pid": pid})


CONSOLE_LOG = "console.log"  # a detached platform's stdout and stderr, in the home's log folder
TAIL_LINES = 15


def _tail(path: Path, start: int, count: int = TAIL_LINES) -> str:
    """The last lines written since `start`, indented, for an error message."""
    try:
        with open(path, "rb") as fh:
            fh.seek(start)
            lines = fh.read().decode(errors="replace").splitlines()[-count:]
    except OSError:
        return ""
    return "".join(f"\n  {line}" for line in lines if line.strip())


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _ready_endpoints(home: Path, pid: int) -> dict[str, Any] | None:
    try:
        document = json.loads((home / "endpoints.json").read_text())
    except (OSError, ValueError):
        return None
    return dict(document) if isinstance(document, dict) and document.get("pid") == pid else None


def start_detached(home: Path, argv: list[str], timeout: float) -> dict[str, Any]:
    """Run `argv` (a `lanyard up`) in a session of its own with its output in the home's console
    log, and wait until it is ready; what it says meanwhile goes to our stderr. Returns its endpoints."""
    pid = running_pid(home)
    if pid is not None:
        raise CliError(
            f"a Lanyard platform is already running on the home {home} (pid {pid}): "
            f"`lanyard --home {home} status` shows it, `lanyard --home {home} down` stops it"
        )
    console = log_dir(home) / CONSOLE_LOG
    fd = os.open(console, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    start = os.lseek(fd, 0, os.SEEK_END)
    try:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, start_new_session=True, close_fds=True
        )
    finally:
        os.close(fd)
    deadline = time.monotonic() + timeout
    with open(console, "rb") as reader:
        reader.seek(start)

        def relay() -> None:
            chunk = reader.read()
            if chunk:
                sys.stderr.buffer.write(chunk)
                sys.stderr.buffer.flush()

        while True:
            relay()
            endpoints = _ready_endpoints(home, process.pid)
            if endpoints is not None:
                relay()  # what it said just before it was ready
                return endpoints
            code = process.poll()
            if code is not None:
                raise CliError(
                    f"lanyard up (pid {process.pid}) exited with code {code} before it was ready; "
                    f"the last lines of {console}:{_tail(console, start)}"
                )
            if time.monotonic() > deadline:
                _stop(process)
                raise CliError(
                    f"lanyard up (pid {process.pid}) was not ready within {timeout:g} s, so it was stopped "
                    f"(a slower machine may need --wait); the last lines of {console}:{_tail(console, start)}"
                )
            time.sleep(0.05)
