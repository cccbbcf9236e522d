"""The client programs of tests/clients (the real @azure/identity, azidentity and azure-identity for Java,
unmodified), built by scripts/ensure-clients into .cache/clients, and what they print: one JSON line per
case, {"token", "expires_on"} or {"error", "message"}."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BUILT = REPO / ".cache" / "clients"
ENSURE = REPO / "scripts" / "ensure-clients"
LANGUAGES = ("node", "spa", "go", "java")
BUILD_TIMEOUT = 900


@dataclass(frozen=True)
class ClientProgram:
    language: str
    argv: tuple[str, ...]

    def command(self, cases: Sequence[Mapping[str, Any]]) -> list[str]:
        """The program with its cases as its one argument (several cases share one process start)."""
        return [*self.argv, json.dumps(list(cases))]


def _tool(name: str) -> str | None:
    # An absolute path: a workload's PATH is the platform's choice, not this test's.
    found = shutil.which(name)
    return str(Path(found).resolve()) if found else None


def _argv(language: str) -> tuple[str, ...]:
    folder = BUILT / language
    if language == "node":
        node = _tool("node")
        if node is None:
            raise LookupError("node is not installed")
        return (node, str(folder / "main.mjs"))
    if language == "go":
        return (str(folder / "lanyard-go-client"),)
    if language == "spa":  # not a program: the browser library a test page loads
        return (str(folder / "node_modules" / "@azure" / "msal-browser" / "lib" / "msal-browser.min.js"),)
    java = _tool("java")
    if java is None:
        raise LookupError("java is not installed")
    return (java, "-cp", f"{folder / 'lanyard-java-client.jar'}:{folder / 'lib'}/*", "lanyard.client.Main")


def build(language: str, env: Mapping[str, str]) -> ClientProgram:
    """Runs scripts/ensure-clients for one language (a no-op when its build is current). LookupError with
    the reason when it cannot be built."""
    if language not in LANGUAGES:
        raise ValueError(f"unknown client language {language!r}")
    try:
        result = subprocess.run(
            [str(ENSURE), language], capture_output=True, text=True, timeout=BUILD_TIMEOUT, env=dict(env), check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LookupError(f"scripts/ensure-clients {language} did not finish: {exc}") from exc
    if result.returncode != 0 or not (BUILT / language / "ok").is_file():
        raise LookupError(f"scripts/ensure-clients {language} failed:\n{result.stdout}{result.stderr}")
    return ClientProgram(language, _argv(language))


def outcomes(stdout: str, stderr: str, expected: int) -> list[dict[str, Any]]:
    """The program's JSON lines, one per case (anything else on stdout is the workload runner's)."""
    lines = []
    for line in stdout.splitlines():
        if line.startswith("{"):
            value = json.loads(line)
            if isinstance(value, dict) and ({"token", "expires_on"} <= value.keys() or "error" in value):
                lines.append(value)
    if len(lines) != expected:
        raise AssertionError(f"expected {expected} outcomes, got {len(lines)}:\n{stdout}\n{stderr}")
    return lines
