"""Workloads started through `lanyard webapp run` / `lanyard vm run`, as a user would, to learn the
environment the platform gives them (IDENTITY_ENDPOINT + IDENTITY_HEADER, or the per-VM metadata
address) and to keep their registration alive while load is pointed at it.

The workload is `sh`, which writes its environment to a file and then sleeps (bounded, in case
every other cleanup fails). It is the agent's child, not ours: stopping the `run` CLI process makes
the agent SIGTERM it. Its own pid is in the file too, so a survivor can still be stopped by pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from benchkit.harness import wait_until
from benchkit.lanyard import lanyard_binary
from benchkit.tokens import CheckFailed

# Long enough for --full, short enough that a workload leaked by a crash does not linger for hours.
WORKLOAD_LIFETIME_S = 1800
_SCRIPT = 'echo "WORKLOAD_PID=$$" > "$1.tmp" && env >> "$1.tmp" && mv "$1.tmp" "$1" && exec sleep "$2"'


@dataclass
class Workload:
    name: str
    cli: subprocess.Popen[bytes]
    env: dict[str, str]

    @property
    def pid(self) -> int:
        return int(self.env["WORKLOAD_PID"])

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the CLI (the agent relays it to the workload), then make sure both are gone."""
        if self.cli.poll() is None:
            self.cli.send_signal(signal.SIGTERM)
            try:
                self.cli.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.cli.kill()
                self.cli.wait(timeout=grace)
        with contextlib.suppress(ProcessLookupError, PermissionError, KeyError, ValueError):
            os.kill(self.pid, signal.SIGKILL)


def start_workload(home: Path, kind: str, group: str, name: str, scratch: Path, log: Path) -> Workload:
    """`lanyard webapp run` (kind "webapp") or `lanyard vm run` (kind "vm") of the env-dumping shell."""
    env_file = scratch / f"{kind}-{name}.env"
    env_file.unlink(missing_ok=True)
    cmd = [str(lanyard_binary()), "--home", str(home), kind, "run", "-g", group, "-n", name, "--"]
    cmd += ["sh", "-c", _SCRIPT, "sh", str(env_file), str(WORKLOAD_LIFETIME_S)]
    with log.open("ab") as out:
        cli = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)

    def written() -> bool:
        if cli.poll() is not None:
            raise CheckFailed(f"lanyard {kind} run exited with {cli.returncode}: {log.read_text()[-400:]}")
        return env_file.exists()

    try:
        wait_until(written, 30, f"the {kind} workload {name} to start")
    except (TimeoutError, CheckFailed):
        cli.kill()
        cli.wait(timeout=10)
        raise
    return Workload(name, cli, _parse_env(env_file.read_text()))


def _parse_env(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {key: value for key, value in pairs}
