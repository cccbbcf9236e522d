"""Workloads started through `lanyard webapp run` / `lanyard vm run`, as a user would, to learn the
environment the platform gives them (IDENTITY_ENDPOINT + IDENTITY_HEADER, or the per-VM metadata
address) and to keep their registration alive while load is pointed at it.

The workload is `sh`, which writes its environment to a file and then sleeps (bounded, in case
every other cleanup fails). It is the agent's child, not ours: stopping the `run` CLI process makes
the agent SIGTERM it. Its own pid is in the file too, so a survivor can still be stopped by pid.

When the agent runs as root, every workload runs under a uid of its own: the file it writes must be
in a folder that uid can reach and write (shared_scratch), and it writes it 0600 (root reads it).

wrk_as_webapp runs wrk itself as an App Service workload: with caller attestation on (the default),
only a process in the workload's session is served, so a load generator outside it gets 401.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from benchkit.harness import LOAD_CORE, Sample, parse_wrk, pinned, wait_until
from benchkit.lanyard import lanyard_binary
from benchkit.tokens import CheckFailed

# Long enough for --full, short enough that a workload leaked by a crash does not linger for hours.
WORKLOAD_LIFETIME_S = 1800
_SCRIPT = 'umask 077 && echo "WORKLOAD_PID=$$" > "$1.tmp" && env >> "$1.tmp" && mv "$1.tmp" "$1" && exec sleep "$2"'
# The header and the endpoint are only known inside the workload: the shell puts them on wrk's command line.
_WRK = (
    'exec "$1" -t1 -c"$2" -d"$3"s --timeout 5s -s "$4" -H "X-IDENTITY-HEADER: $IDENTITY_HEADER" '
    '"$IDENTITY_ENDPOINT?api-version=2019-08-01&resource=$5"'
)
WRK_SLACK_S = 60  # the run CLI's own start, the agent starting the workload, wrk's connection timeout


def shared_scratch(workdir: Path) -> Path:
    """A folder inside `workdir` that any workload uid can write (sticky, like /tmp). `workdir`
    becomes searchable but not listable by others; every ancestor must already be searchable."""
    for ancestor in workdir.resolve().parents:
        if not ancestor.stat().st_mode & stat.S_IXOTH:
            raise CheckFailed(f"{ancestor} is not searchable by other users: workloads could not reach {workdir}")
    workdir.chmod(0o711)
    scratch = workdir / "workloads"
    scratch.mkdir(exist_ok=True)
    scratch.chmod(0o1777)
    return scratch


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


def wrk_as_webapp(
    home: Path, group: str, name: str, wrk: str, lua: Path, seconds: float, connections: int, resource: str
) -> Sample:
    """`lanyard webapp run -- sh -c 'exec wrk ...'`: wrk (on the load core) asks the app's endpoint
    for `resource` with its header; its summary line is on the run CLI's stdout, which is the
    workload's. `lua` (wrk_script's output, readable by the workload's uid) adds that line."""
    argv = pinned(["sh", "-c", _WRK, "sh", wrk, str(connections), str(max(1, round(seconds))), str(lua)], LOAD_CORE)
    cmd = [str(lanyard_binary()), "--home", str(home), "webapp", "run", "-g", group, "-n", name, "--"]
    cmd += [*argv, quote(resource, safe="")]
    done = subprocess.run(
        pinned(cmd, LOAD_CORE), capture_output=True, text=True, timeout=seconds + WRK_SLACK_S, check=False
    )
    return parse_wrk(done.stdout, f"lanyard webapp run exit {done.returncode}: {done.stderr.strip()[-400:]}")
