"""`lanyard status` and `lanyard down`: the platform running on a home, found by its lock."""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click

from lanyard.cli.context import CliError, Profile, print_json
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
        print_json({"running": False, "home": str(home)})
        sys.exit(NOT_RUNNING)
    report: dict[str, Any] = {"running": True, "home": str(home), "pid": pid}
    try:
        report["version"] = importlib.metadata.version("lanyard")
    except importlib.metadata.PackageNotFoundError:
        report["version"] = None
    endpoints = home / "endpoints.json"
    if not endpoints.exists():
        report["ready"] = False  # starting, or stopping
        print_json(report)
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
    print_json(report)


@click.command("down")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait for it to stop.")
@click.pass_context
def down(ctx: click.Context, timeout: float) -> None:
    """Stop the platform running on this home (SIGTERM, then wait until it has let go of the home)."""
    home: Path = ctx.find_root().obj["home"]
    pid = running_pid(home)
    if pid is None:
        print_json({"stopped": False, "reason": f"no platform is running on {home}"})
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
    print_json({"stopped": True, "pid": pid})
