"""Process, pinning, load-generation and statistics plumbing shared by the benchmarks.

Rules this module enforces (docs/performance.md §5): the server runs on core 0 and wrk on core 1, traffic
goes to loopback only, every server is stopped by its pid, and every child has a time bound.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = BENCH_DIR.parent
CACHE_DIR = BENCH_DIR / ".cache"

SERVER_CORE = 0
LOAD_CORE = 1


def log(message: str) -> None:
    """Progress goes to stdout with a timestamp so a slow step is visible in CI logs."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def can_pin() -> bool:
    return shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def all_cores() -> str:
    return f"0-{(os.cpu_count() or 1) - 1}"


def pinned(cmd: Sequence[str], core: int | str) -> list[str]:
    """Prefix a command with taskset so it (and every child it forks) stays on one core (or on the
    given taskset list, e.g. all_cores() to undo a pinned parent's affinity)."""
    if can_pin():
        return ["taskset", "-c", str(core), *cmd]
    return list(cmd)


def pin_process(pid: int, core: int) -> bool:
    """Move a running process and all its threads (-a) to one core; threads it starts later inherit it.
    Used for processes we do not start ourselves, such as the agent `lanyard up` spawns."""
    if not can_pin():
        return False
    done = subprocess.run(
        ["taskset", "-a", "-p", "-c", str(core), str(pid)], capture_output=True, timeout=10, check=False
    )
    return done.returncode == 0


def loaded_libraries(pid: int, names: Sequence[str]) -> list[str]:
    """Which of these native modules (uvloop, httptools...) a running process has mapped: what it
    actually runs on, as opposed to what is installed."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return []
    return [name for name in names if f"/{name}/" in maps]


def free_port() -> int:
    """Ask the kernel for an unused loopback port (a small race, acceptable on a bench host)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_loopback(url: str) -> None:
    """Refuse to send load anywhere but this machine's loopback range."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"refusing to benchmark a non-loopback address: {url}")


def run_queue_wait_s(pid: int) -> float:
    """Seconds a process's threads have spent runnable but waiting for a CPU (the second field of
    /proc/PID/task/TID/schedstat). Growth during a measurement means another process took the
    core: on a shared machine, the usual reason for a p99 far above the p50."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(stat.read_text().split()[1])
        except (OSError, ValueError, IndexError):
            continue  # a thread that exited meanwhile
    return total / 1e9


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


class Server:
    """A server process pinned to the server core, logging to a file, stoppable by its pid."""

    def __init__(
        self,
        name: str,
        cmd: Sequence[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        core: int | str = SERVER_CORE,
    ) -> None:
        self.name = name
        self.cmd = pinned(cmd, core)
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as out:
            # A new session makes the server its own process-group leader, so any helpers it forks
            # can be reaped with it even if it dies without cleaning up after itself.
            self.proc = subprocess.Popen(
                self.cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, "server not started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM by pid, SIGKILL after the grace period, then sweep the group it led."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=grace)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def running(servers: list[Server]) -> Iterator[list[Server]]:
    """Guarantee every server started inside the block is stopped, even on Ctrl-C or an error."""
    try:
        yield servers
    finally:
        for server in reversed(servers):
            server.stop()


def wait_http(url: str, timeout: float, server: Server | None = None) -> None:
    """Poll until the URL answers at all (any status below 500); fail fast if the server died."""

    def answered() -> bool:
        if server is not None and not server.alive():
            raise RuntimeError(f"{server.name} exited early:\n{server.log_tail()}")
        try:
            # Readiness only (is anything listening?); certificates are checked by the correctness checks.
            return httpx.get(url, verify=False, timeout=1.0).status_code < 500  # noqa: S501
        except httpx.HTTPError:
            return False

    wait_until(answered, timeout, f"{url} to answer")


def reference_command(port: int, *options: str) -> list[str]:
    """The bare Starlette reference app (benchkit/refapp.py) on uvicorn, on 127.0.0.1:port. Uvicorn's
    defaults (loop/http "auto") on purpose: the reference uses whatever event loop and HTTP parser the
    venv offers Lanyard. Access logging is off, as a production server would be."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "benchkit.refapp:app",
        "--app-dir",
        str(BENCH_DIR),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
        *options,
    ]


def pinned_json(cmd: Sequence[str], core: int | str, timeout: float) -> dict[str, Any]:
    """Run a probe pinned to a core (from the bench directory) and read the JSON object on its last line."""
    done = subprocess.run(pinned(cmd, core), capture_output=True, text=True, timeout=timeout, check=True, cwd=BENCH_DIR)
    value = json.loads(done.stdout.strip().splitlines()[-1])
    assert isinstance(value, dict)
    return value


def self_signed_tls(directory: Path, stem: str = "tls") -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 so the reference and peer servers speak https like Lanyard
    (also used as the peer's private_key_jwt client credential)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench 127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{stem}-cert.pem", directory / f"{stem}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


# --------------------------------------------------------------------------------------------- wrk


def ensure_wrk() -> str | None:
    """Find wrk, installing Debian's package when running as root; None means 'report, don't fail'."""
    found = shutil.which("wrk")
    if found or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return found
    log("wrk missing: installing it with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        try:
            subprocess.run(cmd, env=env, capture_output=True, timeout=300, check=True)
        except (subprocess.SubprocessError, OSError) as exc:
            log(f"could not install wrk: {exc}")
            return None
    return shutil.which("wrk")


@dataclass(frozen=True)
class Sample:
    """One measurement of one target: a rate, plus latency and failure counts for HTTP targets."""

    rate: float
    p50_ms: float | None = None
    p99_ms: float | None = None
    requests: int = 0
    # Responses with status >= 400 (or, for a target expecting a refusal, any other status): a fast
    # error page must not look like speed.
    bad_status: int = 0
    socket_errors: int = 0


@dataclass(frozen=True)
class HttpTarget:
    """A request for wrk to repeat. The body is a callable so time-limited credentials
    (a client assertion) can be rebuilt fresh for every measured run.

    expect_status other than 200 measures a deliberate refusal (the IMDS probe's 400): then any
    other status counts as bad, and wrk inspects every response, which costs client time but
    not the server's."""

    url: str
    method: str = "GET"
    body: Callable[[], str] | None = None
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    expect_status: int = 200


# wrk's done() hook prints one machine-readable line, so nothing depends on its human output format.
# `bad_status()` is filled in per target: wrk's own count (status >= 400), or the unexpected answers
# its threads counted when a target expects a refusal.
_LUA_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKJSON {\"requests\":%d,\"duration_us\":%d,\"connect\":%d,\"read\":%d,\"write\":%d," ..
    "\"status\":%d,\"timeout\":%d,\"p50_us\":%d,\"p99_us\":%d}\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, bad_status(e), e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""

_LUA_STATUS_BY_WRK = "bad_status = function(e) return e.status end\n"

# Globals set in a thread's Lua state are read back through thread:get() in done().
_LUA_EXPECT = r"""
local threads = {}
setup = function(thread) table.insert(threads, thread) end
unexpected = 0
response = function(status, headers, body)
  if status ~= EXPECTED then unexpected = unexpected + 1 end
end
bad_status = function(e)
  local n = 0
  for _, t in ipairs(threads) do n = n + t:get("unexpected") end
  return n
end
"""


def _lua_quote(text: str) -> str:
    if "]==]" in text:
        raise ValueError(f"cannot quote {text!r} for wrk's Lua script")
    return f"[==[{text}]==]"


def _lua_script(target: HttpTarget) -> str:
    lines = [f'wrk.method = "{target.method}"']
    if target.body is not None:
        # Form bodies are URL-encoded, so a Lua long bracket needs no escaping.
        lines.append(f"wrk.body = {_lua_quote(target.body())}")
    if target.content_type:
        lines.append(f'wrk.headers["Content-Type"] = "{target.content_type}"')
    # The spaces matter: "[[==[" would open a Lua long bracket.
    lines += [f"wrk.headers[ {_lua_quote(name)} ] = {_lua_quote(value)}" for name, value in target.headers]
    if target.expect_status == 200:
        status = _LUA_STATUS_BY_WRK
    else:
        status = _LUA_EXPECT.replace("EXPECTED", str(int(target.expect_status)))
    return "\n".join(lines) + "\n" + status + _LUA_DONE


def run_wrk(wrk: str, target: HttpTarget, seconds: float, connections: int, workdir: Path) -> Sample:
    assert_loopback(target.url)
    script = workdir / "wrk-request.lua"
    script.write_text(_lua_script(target))
    cmd = pinned(
        [
            wrk,
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "5s",
            "-s",
            str(script),
            target.url,
        ],
        LOAD_CORE,
    )
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, check=False)
    return parse_wrk(done.stdout, f"exit {done.returncode}: {done.stderr.strip()[:400]}")


def wrk_script(target: HttpTarget) -> str:
    """The Lua script run_wrk gives wrk (method, body, headers, the WRKJSON summary line), for a wrk
    started some other way (as a workload, by the agent)."""
    return _lua_script(target)


def parse_wrk(stdout: str, context: str) -> Sample:
    """The Sample in the WRKJSON line wrk's done() hook printed; `context` explains its absence."""
    line = next((ln for ln in stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk produced no summary ({context})")
    raw = json.loads(line.removeprefix("WRKJSON "))
    duration = raw["duration_us"] / 1e6
    return Sample(
        rate=raw["requests"] / duration if duration else 0.0,
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        requests=raw["requests"],
        bad_status=raw["status"],
        socket_errors=raw["connect"] + raw["read"] + raw["write"] + raw["timeout"],
    )


# ------------------------------------------------------------------------------------------ rounds


@dataclass(frozen=True)
class Target:
    """Anything measurable for a given number of seconds: an HTTP endpoint or a CPU ceiling."""

    name: str
    measure: Callable[[float], Sample]
    warm_up: bool = True


def run_rounds(targets: Sequence[Target], warm_up_s: float, rounds: int, seconds: float) -> dict[str, list[Sample]]:
    """Warm every target up once, then measure them round-robin, shifting the order every round.

    Rotation spreads slow drift of a shared machine (another tenant, thermal state) over all targets
    instead of letting it land on whichever target happens to run last.
    """
    for target in targets:
        if target.warm_up and warm_up_s > 0:
            log(f"warm-up  {target.name}")
            target.measure(warm_up_s)
    samples: dict[str, list[Sample]] = {t.name: [] for t in targets}
    for index in range(rounds):
        order = list(targets[index % len(targets) :]) + list(targets[: index % len(targets)])
        for target in order:
            sample = target.measure(seconds)
            samples[target.name].append(sample)
            bad = f"  bad-status={sample.bad_status}" if sample.bad_status else ""
            log(f"round {index + 1}/{rounds}  {target.name:<32} {sample.rate:>10.0f}/s{bad}")
    return samples


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"median": self.median, "min": self.low, "max": self.high}


def spread(values: Sequence[float]) -> Spread:
    return Spread(statistics.median(values), min(values), max(values))
