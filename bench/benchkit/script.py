"""What every benchmark script does around its own measurements: the command line, the run's shared
state, the rotation tail, the exit status, the machine description and the summary it prints and
writes. Each script keeps only its targets, goals and checks."""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

from benchkit import report
from benchkit.harness import BENCH_DIR, HttpTarget, Sample, Server, Target, can_pin, run_rounds, run_wrk

# Exit status for a smoke run whose figures fall below half a floor: distinct from a correctness failure
# (1), so CI can fail on wrong answers and report, loudly, a performance shortfall (see .ci/run).
SHORTFALL = 3


@dataclass(frozen=True)
class Mode:
    """What every script's --smoke/--full mode sets; each script subclasses it with its own knobs."""

    name: str
    warm_up_s: float
    rounds: int
    seconds: float


M = TypeVar("M", bound=Mode)


# ------------------------------------------------------------------------------------ command line


def parse_args(argv: list[str], doc: str | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--smoke", action="store_const", const="smoke", dest="mode")
    which.add_argument("--full", action="store_const", const="full", dest="mode")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results", help="where JSON + Markdown go")
    parser.add_argument("--rounds", type=int, help="override the mode's number of measured rounds")
    parser.add_argument("--seconds", type=float, help="override the mode's seconds per measurement")
    return parser.parse_args(argv)


def chosen_mode(modes: Mapping[str, M], args: argparse.Namespace) -> M:
    """The mode named on the command line, with --rounds/--seconds applied (a dataclass, so replace)."""
    base = modes[args.mode]
    return replace(base, rounds=args.rounds or base.rounds, seconds=args.seconds or base.seconds)


# --------------------------------------------------------------------------------------- the run


@dataclass
class BenchRun(Generic[M]):
    """Everything one invocation accumulates: targets to rotate, servers to stop, findings."""

    mode: M
    wrk: str | None
    workdir: Path
    logdir: Path
    targets: list[Target] = field(default_factory=list)
    servers: list[Server] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def add_wrk(self, name: str, target: HttpTarget, connections: int) -> None:
        """A wrk target at `connections` connections; nothing without wrk."""
        if self.wrk is None:
            return
        wrk, workdir = self.wrk, self.workdir
        self.targets.append(Target(name, lambda seconds: run_wrk(wrk, target, seconds, connections, workdir)))


def measure_and_clean_up(
    run: BenchRun[M], measure: Callable[[], dict[str, list[Sample]]], stop: Callable[[], None] | None = None
) -> dict[str, list[Sample]]:
    """Measure; then, also on Ctrl-C, stop every process (by default the servers, newest first: none
    outlives the run) and remove the run's working directory."""
    try:
        return measure()
    finally:
        if stop is None:
            for server in reversed(run.servers):
                server.stop()
        else:
            stop()
        shutil.rmtree(run.workdir, ignore_errors=True)


def rotate(run: BenchRun[M]) -> dict[str, list[Sample]]:
    """Rotate every target, then require every server to have survived. A failure is recorded."""
    try:
        samples = run_rounds(run.targets, run.mode.warm_up_s, run.mode.rounds, run.mode.seconds)
    except (RuntimeError, ValueError, subprocess.SubprocessError) as exc:
        run.failures.append(f"measurement failed: {exc}")
        return {}
    for server in run.servers:
        if not server.alive():
            run.failures.append(f"{server.name} died during the run:\n{server.log_tail()}")
    return samples


def sort_invalid(run: BenchRun[M], samples: dict[str, list[Sample]], informational: Iterable[str] = ()) -> None:
    """Void targets are correctness failures, except informational ones (peers), which are noted."""
    spare = set(informational)
    for name, why in report.invalid_targets(samples).items():
        (run.notes if name in spare else run.failures).append(f"{name}: {why}")


def exit_status(run: BenchRun[M], results: Sequence[report.GoalResult], smoke_short: Callable[[], bool]) -> int:
    """1 on a correctness failure; in --smoke, SHORTFALL when `smoke_short()` (asked only then); in
    --full, 2 when a goal is below its floor; else 0."""
    if run.failures:
        return 1
    if run.mode.name == "smoke" and smoke_short():
        return SHORTFALL
    if run.mode.name == "full" and any(g.verdict == report.BELOW_FLOOR for g in results):
        return 2
    return 0


# ------------------------------------------------------------------------------------------- meta


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def versions(packages: Iterable[str]) -> str:
    return ", ".join(f"{name} {version(name)}" for name in packages)


def first_line(cmd: list[str]) -> str:
    """The first line a tool prints about itself (wrk prints its version on stderr)."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "absent"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0] if lines else "?"


def started() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}"


def describe_wrk_run(run: BenchRun[M], connections: int, packages: Sequence[str]) -> dict[str, Any]:
    """The description shared by the wrk benchmarks that pin server and wrk to one core each."""
    mode = run.mode
    pinning = "server core 0, wrk core 1 (taskset)" if can_pin() else "NOT pinned (no taskset or < 2 cores)"
    return {
        "mode": mode.name,
        "started": started(),
        "machine": machine(),
        "pinning": pinning,
        "load": f"wrk -t1 -c{connections}, warm-up {mode.warm_up_s:g}s, "
        f"{mode.rounds} rotating rounds of {mode.seconds:g}s",
        "wrk": first_line([run.wrk, "--version"]) if run.wrk else "absent",
        "python": platform.python_version(),
        "packages": versions(packages),
    }


# ---------------------------------------------------------------------------------------- results


def print_summary(
    run: BenchRun[M], samples: dict[str, list[Sample]], results: Sequence[report.GoalResult], limits: bool = True
) -> None:
    print()
    print(report.text_table(report.TARGET_HEADER, report.target_rows(samples)))
    print()
    print(report.text_table(report.GOAL_HEADER, report.goal_rows(results)))
    print()
    if limits:
        print(report.text_table(report.LIMIT_HEADER, report.limit_rows(results)))
        print()
    for goal in results:
        print(f"{goal.spec.id} {goal.spec.title}: {goal.verdict}")
    for line in run.notes:
        print(f"note: {line}")
    for line in run.failures:
        print(f"FAILURE: {line}")


def write_results(out_dir: Path, stem: str, payload: dict[str, Any], markdown: str, status: int) -> int:
    """Write the JSON and Markdown, say where, and hand the exit status back."""
    json_path, md_path = report.write(out_dir, stem, payload, markdown)
    print(f"\nwrote {json_path} and {md_path}; exit {status}")
    return status
