"""The observe package in process: query redaction, the access-log writer and its files, the
middleware's metrics, shared rotation between writers, tracebacks without messages, `lanyard logs`."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram

from lanyard.core.clock import FrozenClock
from lanyard.observe.access import REDACTED, AccessLog, AccessLogMiddleware, redact_query
from lanyard.observe.files import SharedRotatingFileHandler
from lanyard.observe.logs import Formatter


def test_query_values_are_shown_only_for_known_harmless_keys() -> None:
    shown = redact_query(b"api-version=2019-08-01&resource=https%3A%2F%2Fvault.azure.net&client_secret=s3cr3t&code=abc")
    assert "api-version=2019-08-01" in shown
    assert "resource=https://vault.azure.net" in shown
    assert f"client_secret={REDACTED}" in shown and f"code={REDACTED}" in shown
    assert "s3cr3t" not in shown and "abc" not in shown
    assert redact_query(b"&".join(b"k%d=v" % i for i in range(500))) == REDACTED


class _Caller:
    pid, uid, exe = 4242, 1000, "/usr/bin/python3"

    def audit_fields(self) -> dict[str, object]:
        return {"pid": self.pid, "uid": self.uid, "exe": self.exe}


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    scope["lanyard.caller"] = _Caller()  # what the agent's attestation leaves for the log
    status = 401 if scope["path"] == "/deny" else 200
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b"secret-bearing body"})


def _scope(path: str, query: bytes = b"") -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "query_string": query,
        "headers": [(b"host", b"127.0.0.1:1234"), (b"x-identity-header", b"hdr-value-xyz")],
        "client": ("127.0.0.1", 50000),
    }


async def _call(app: Any, scope: dict[str, Any]) -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_message: dict[str, Any]) -> None:
        return None

    await app(scope, receive, send)


def test_access_lines_metrics_and_file_mode(tmp_path: Path) -> None:
    import asyncio

    registry = CollectorRegistry()
    responses = Counter("t_responses_total", "r", ["family", "status"], registry=registry)
    latency = Histogram("t_latency_seconds", "l", ["family"], registry=registry)
    denied: list[tuple[str, int]] = []
    clock = FrozenClock(1_700_000_000.0)
    (tmp_path / "logs").mkdir()
    access = AccessLog(tmp_path / "logs" / "access.log", clock)
    app = AccessLogMiddleware(_app, access, lambda _s: "token", responses, latency, lambda f, s: denied.append((f, s)))

    asyncio.run(_call(app, _scope("/msi/token", b"api-version=2019-08-01&secret=hunter2")))
    asyncio.run(_call(app, _scope("/deny")))
    access.close()

    path = tmp_path / "logs" / "access.log"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    raw = path.read_bytes()
    assert b"hunter2" not in raw and b"hdr-value-xyz" not in raw and b"secret-bearing body" not in raw
    first, second = (orjson.loads(line) for line in raw.splitlines())
    assert first["time"] == "2023-11-14T22:13:20.000Z"
    assert (first["method"], first["path"], first["status"], first["family"]) == ("GET", "/msi/token", 200, "token")
    assert first["query"] == f"api-version=2019-08-01&secret={REDACTED}"
    assert first["peer"] == "127.0.0.1:50000" and first["host"] == "127.0.0.1:1234"
    assert first["caller"] == {"pid": 4242, "uid": 1000, "exe": "/usr/bin/python3"}
    assert first["ms"] >= 0
    assert second["status"] == 401
    assert registry.get_sample_value("t_responses_total", {"family": "token", "status": "200"}) == 1
    assert registry.get_sample_value("t_responses_total", {"family": "token", "status": "401"}) == 1
    assert registry.get_sample_value("t_latency_seconds_count", {"family": "token"}) == 2
    assert denied == [("token", 401)]


def test_two_writers_share_one_rotation_without_losing_lines(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    # Two handlers on one path stand for two worker processes: each would rotate on its own.
    a = SharedRotatingFileHandler(path, max_bytes=2000, backups=50)
    b = SharedRotatingFileHandler(path, max_bytes=2000, backups=50)
    written = []
    for i in range(400):
        line = f"line {i:04d} " + "x" * 40 + "\n"
        (a if i % 2 else b).write_text(line)
        written.append(line)
    a.close()
    b.close()
    files = sorted(tmp_path.glob("access.log*"))
    kept = [line for f in files if not f.name.endswith(".lock") for line in f.read_text().splitlines(keepends=True)]
    assert sorted(kept) == sorted(written)  # every line once, none lost to a double rotation
    assert len([f for f in files if not f.name.endswith(".lock")]) > 5
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
        if not f.name.endswith(".lock"):
            assert f.stat().st_size <= 2000


def test_tracebacks_name_the_exception_but_withhold_its_message() -> None:
    formatter = Formatter("%(message)s")
    token, secret = "eyJ0eXAiOiJKV1Qi." + "token-body", "hunter" + "2"  # not in the source lines shown
    try:
        try:
            raise KeyError(token)
        except KeyError as exc:
            raise ValueError(f"client_secret={secret}") from exc
    except ValueError:
        record = logging.LogRecord("lanyard.t", logging.ERROR, __file__, 1, "failed on %s", ("/x",), sys.exc_info())
    text = formatter.format(record)
    assert "failed on /x" in text and "builtins.ValueError" in text and "builtins.KeyError" in text
    assert "hunter2" not in text and "token-body" not in text
    assert "test_observability_units.py" in text  # the frames are still there


def _logs_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lanyard", "--home", str(home), "logs", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_logs_prints_the_last_lines_of_each_log(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir(parents=True)
    (tmp_path / "agent" / "logs").mkdir(parents=True)
    (tmp_path / "logs" / "lanyard.log").write_text("".join(f"platform {i}\n" for i in range(100)))
    (tmp_path / "logs" / "access.log").write_text("".join(f'{{"n": {i}}}\n' for i in range(30)))
    (tmp_path / "agent" / "logs" / "access.log").write_text("agent line\n")
    assert _logs_cli(tmp_path).stdout.splitlines() == [f"platform {i}" for i in range(80, 100)]
    assert _logs_cli(tmp_path, "-n", "3").stdout.splitlines() == ["platform 97", "platform 98", "platform 99"]
    assert _logs_cli(tmp_path, "--access", "-n", "1").stdout == '{"n": 29}\n'
    assert _logs_cli(tmp_path, "--agent", "--access").stdout == "agent line\n"
    missing = _logs_cli(tmp_path, "--agent")
    assert missing.returncode == 1 and "there is no log at" in missing.stderr
    assert _logs_cli(tmp_path, "-n", "-1").returncode == 2


def test_logs_follow_survives_rotation(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    path = logs / "lanyard.log"
    path.write_text("old 1\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "lanyard", "--home", str(tmp_path), "logs", "-f", "-n", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "old 1\n"
        with path.open("a") as fh:
            fh.write("old 2\n")
        assert process.stdout.readline() == "old 2\n"
        with path.open("a") as fh:
            fh.write("old 3, written just before the rotation\n")
        os.rename(path, logs / "lanyard.log.1")
        path.write_text("new 1\n")
        assert process.stdout.readline() == "old 3, written just before the rotation\n"
        assert process.stdout.readline() == "new 1\n"
        with path.open("a") as fh:
            fh.write("new 2\n")
        assert process.stdout.readline() == "new 2\n"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_logs_follow_waits_for_a_log_that_does_not_exist_yet(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "lanyard", "--home", str(tmp_path), "logs", "-f", "--access"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)
        (tmp_path / "logs").mkdir()
        (tmp_path / "logs" / "access.log").write_text("first\n")
        assert process.stdout is not None and process.stdout.readline() == "first\n"
    finally:
        process.terminate()
        process.wait(timeout=10)
