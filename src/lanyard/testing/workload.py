"""Run a command, or a Python function, as an app: through `lanyard webapp run`, so the code inside
sees what App Service gives an app (IDENTITY_ENDPOINT, IDENTITY_HEADER, the CA bundle) and
DefaultAzureCredential and SecretClient work in it unchanged.

A root agent starts the workload under a uid of its own: the interpreter, the function's source and
the working folder must be readable and searchable by any user (the agent refuses, in one line, when
they are not)."""

from __future__ import annotations

import inspect
import json
import os
import pickle
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

RESULT_MARK = "\x1elanyard-result "
# DefaultAzureCredential tries EnvironmentCredential first: a developer's own AZURE_CLIENT_SECRET
# would win over the managed identity, which an app on App Service never has.
HIDDEN_PREFIXES = ("AZURE_", "MSI_", "IDENTITY_")

# Runs inside the workload: import the function, call it with the pickled arguments on stdin, print
# the outcome as one JSON line. JSON, not pickle, on the way back: the parent reads what the
# workload wrote and must not execute it.
BOOTSTRAP = r"""
import importlib.util, json, pickle, sys, traceback
module_name, file, qualname, mark = sys.argv[1:5]
try:
    module = importlib.import_module(module_name)
except ImportError:
    spec = importlib.util.spec_from_file_location(module_name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
target = module
for part in qualname.split("."):
    target = getattr(target, part)
args, kwargs = pickle.loads(sys.stdin.buffer.read())
try:
    outcome = {"ok": True, "value": target(*args, **kwargs)}
except BaseException as exc:
    outcome = {"ok": False, "type": type(exc).__name__, "message": str(exc), "traceback": traceback.format_exc()}
sys.stdout.flush()
try:
    line = json.dumps(outcome)
except (TypeError, ValueError) as exc:
    line = json.dumps({"ok": False, "type": "TypeError", "message": f"the return value is not JSON: {exc}",
                       "traceback": ""})
sys.stdout.write("\n" + mark + line + "\n")
sys.stdout.flush()
sys.exit(0 if outcome["ok"] else 1)
"""


class WorkloadError(AssertionError):
    """The function raised inside the workload, or the workload never reported: carries its output."""

    def __init__(self, message: str, stdout: str = "", stderr: str = "") -> None:
        super().__init__(message)
        self.stdout, self.stderr = stdout, stderr


def workload_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(HIDDEN_PREFIXES)}
    env.update(extra or {})
    return env


def run_command(
    home: Path,
    target: Sequence[str],
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    input: bytes | str | None = None,
    timeout: float = 180.0,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """`lanyard --home HOME webapp run -g G -n N -- COMMAND...` and its exit code and output."""
    argv = [sys.executable, "-m", "lanyard", "--home", str(home), *target, "--", *command]
    data = input.encode() if isinstance(input, str) else input
    raw = subprocess.run(
        argv, input=data, capture_output=True, timeout=timeout, env=workload_env(env), cwd=cwd, check=False
    )
    result = subprocess.CompletedProcess(
        raw.args, raw.returncode, raw.stdout.decode(errors="replace"), raw.stderr.decode(errors="replace")
    )
    if check and result.returncode != 0:
        raise WorkloadError(
            f"{' '.join(command)} exited with {result.returncode} as the app:\n{result.stderr}",
            result.stdout,
            result.stderr,
        )
    return result


def _locate(func: Callable[..., Any]) -> tuple[str, str, str]:
    qualname = getattr(func, "__qualname__", "")
    module_name = getattr(func, "__module__", None)
    if not module_name or not qualname or "<" in qualname:
        raise TypeError(
            f"{func!r} cannot run as the app: pass a function defined at the top level of a module "
            "(not a lambda, a closure or a nested function)"
        )
    file = inspect.getsourcefile(func) or ""
    if module_name == "__main__":
        module_name = Path(file).stem
    return module_name, file, qualname


def _import_root(module_name: str, file: str) -> list[str]:
    """The folder `module_name` imports from: a.b.c in .../a/b/c.py is found from the folder above a."""
    if not file:
        return []
    root = Path(file).resolve().parent
    depth = module_name.count(".") + (1 if Path(file).name == "__init__.py" else 0)
    for _ in range(depth):
        root = root.parent
    return [str(root)]


def _import_path(module_name: str, file: str) -> str:
    """The parent's import path, minus the interpreter's own folders (the workload has them)."""
    own = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    keep = _import_root(module_name, file)
    for entry in sys.path:
        real = os.path.realpath(entry or os.getcwd())
        if not any(real == p or real.startswith(p + os.sep) for p in own) and real not in keep:
            keep.append(real)
    return os.pathsep.join(keep)


def call_function(
    home: Path,
    target: Sequence[str],
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float = 180.0,
    echo: bool = True,
) -> Any:
    """func(*args, **kwargs) inside the workload; its JSON-able return value, or WorkloadError.
    `echo`: pass on what the function printed (to pytest's capture, in a test)."""
    module_name, file, qualname = _locate(func)
    extra = {"PYTHONPATH": _import_path(module_name, file), **(env or {})}
    result = run_command(
        home,
        target,
        [sys.executable, "-c", BOOTSTRAP, module_name, file, qualname, RESULT_MARK],
        env=extra,
        cwd=cwd,
        input=pickle.dumps((args, kwargs)),
        timeout=timeout,
    )
    before, found, after = result.stdout.rpartition(RESULT_MARK)
    if not found:
        raise WorkloadError(
            f"{qualname} did not report back from the app (exit {result.returncode}): {result.stderr.strip()}",
            result.stdout,
            result.stderr,
        )
    if echo:
        sys.stdout.write(before.removesuffix("\n"))
        sys.stderr.write(result.stderr)
    outcome = json.loads(after.splitlines()[0])
    if not outcome["ok"]:
        raise WorkloadError(
            f"{qualname} raised {outcome['type']} as the app: {outcome['message']}\n{outcome['traceback']}",
            before,
            result.stderr,
        )
    return outcome["value"]
