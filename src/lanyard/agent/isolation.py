"""Each workload in its own box: its own uid, a private run folder, and nothing of the platform's.

A root agent runs every app, slot and VM under a uid of its own, allocated once per resource from a
configured range (and kept in the agent home, so a restart gives the same uid) or under a user named
on the run. That uid cannot read the platform or agent homes (0700, the platform's user), cannot read
another workload's /proc/PID/environ (the kernel allows that only to the same uid, or root), and
cannot connect to the agent's control socket (0600). An unprivileged agent can give none of this,
and says so (`limitations`).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import stat
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from lanyard.core.files import write_atomically

UID_FILE = "workload-uids.json"
DEFAULT_UID_RANGE = (900_000_000, 900_099_999)  # far above login users and the usual subuid ranges


class IsolationError(Exception):
    """The run cannot be isolated as asked; the message says what to change."""


def parse_uid_range(text: str) -> tuple[int, int]:
    low, sep, high = text.partition("-")
    try:
        first, last = int(low), int(high if sep else low)
    except ValueError as exc:
        raise ValueError(f"a uid range is FIRST-LAST, not {text!r}") from exc
    if not 1000 <= first <= last < 2**32 - 1:
        raise ValueError("a workload uid range must lie within 1000..4294967294 and be FIRST <= LAST")
    return first, last


@dataclass(frozen=True)
class RunAs:
    uid: int
    gid: int
    name: str  # the user name, or "uid-N" for an allocated uid with no passwd entry


def limitations() -> list[str]:
    """What an agent that is not root cannot promise (empty for root)."""
    if os.geteuid() == 0:
        return []
    me = os.geteuid()
    return [
        f"workloads run as the agent's own uid {me}: they can read the agent's home "
        "(its host key and every placed identity's key)",
        "a workload can read another workload's environment (/proc/PID/environ), IDENTITY_HEADER included; "
        "caller attestation still refuses its tokens to a process outside that workload",
        "a workload can connect to the agent's control socket and start processes as another app",
        "Arc key files and --netns are not available",
    ]


class WorkloadUsers:
    """uid per resource, allocated from a range and remembered across restarts."""

    def __init__(self, home: Path, uid_range: tuple[int, int] = DEFAULT_UID_RANGE) -> None:
        self.path = home / UID_FILE
        self.first, self.last = uid_range
        self._lock = threading.Lock()
        self._uids: dict[str, int] = {}
        if self.path.exists():
            try:
                loaded = json.loads(self.path.read_text())
                self._uids = {str(k): int(v) for k, v in dict(loaded).items()}
            except (OSError, ValueError, TypeError) as exc:
                # Starting afresh could hand an old app's uid (and its files, its leftover processes) to
                # another app: refuse, and say what to do.
                raise IsolationError(
                    f"{self.path} is unreadable or damaged ({type(exc).__name__}); restore it, or remove it "
                    "once no workload runs, to allocate uids afresh"
                ) from exc

    def for_resource(self, resource_id: str) -> RunAs:
        key = resource_id.lower()
        with self._lock:
            uid = self._uids.get(key)
            if uid is None:
                uid = self._allocate()
                self._uids[key] = uid
                write_atomically(self.path, json.dumps(self._uids, indent=1, sort_keys=True).encode())
        return RunAs(uid, uid, f"uid-{uid}")

    def _allocate(self) -> int:
        taken = set(self._uids.values()) | _uids_running()
        for uid in range(self.first, self.last + 1):
            if uid in taken:
                continue
            try:
                pwd.getpwuid(uid)  # a uid someone already uses is never handed to a workload
            except KeyError:
                return uid
        raise IsolationError(f"the workload uid range {self.first}-{self.last} is used up")


def _uids_running() -> set[int]:
    """The uids of every process on the host (another agent's workloads among them)."""
    uids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                uids.add(os.stat(f"/proc/{entry}").st_uid)
    return uids


def named_user(name: str) -> RunAs:
    try:
        entry = pwd.getpwnam(name) if not name.isdigit() else pwd.getpwuid(int(name))
    except KeyError as exc:
        raise IsolationError(f"there is no user {name!r} on this host") from exc
    if entry.pw_uid == 0 or entry.pw_uid == os.geteuid():
        raise IsolationError(
            f"a workload may not run as {entry.pw_name}: that user owns the platform; name an unprivileged user"
        )
    return RunAs(entry.pw_uid, entry.pw_gid, entry.pw_name)


def _blocked(path: str, run_as: RunAs, need: int) -> str | None:
    """The first component of `path` that `run_as` cannot pass (search on folders, `need` on the file),
    judged from the mode bits the kernel would use for that uid and gid (no supplementary groups)."""
    parts = Path(path).parts
    current = Path(parts[0])
    for index, part in enumerate(parts[1:], start=1):
        current = current / part
        try:
            info = os.lstat(current)
        except OSError:
            return None  # missing: exec reports that itself
        last = index == len(parts) - 1
        if stat.S_ISLNK(info.st_mode):
            target = os.path.realpath(current)
            reason = _blocked(target, run_as, need if last else os.X_OK)
            if reason:
                return reason
            continue
        bits = need if last and not stat.S_ISDIR(info.st_mode) else os.X_OK
        if info.st_uid == run_as.uid:
            allowed = (info.st_mode >> 6) & 7
        elif info.st_gid == run_as.gid:
            allowed = (info.st_mode >> 3) & 7
        else:
            allowed = info.st_mode & 7
        if allowed & bits != bits:
            kind = "folder" if stat.S_ISDIR(info.st_mode) else "file"
            owner = _owner_name(info.st_uid)
            return f"{current} ({kind}, mode {stat.S_IMODE(info.st_mode):04o}, owner {owner})"
    return None


def _owner_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def resolve_program(program: str, path_variable: str, cwd: str = "/") -> str | None:
    """Where exec will find `program`: relative names and PATH entries count from the run's cwd."""
    if "/" in program:
        return os.path.join(cwd, program)
    for folder in path_variable.split(os.pathsep):
        candidate = os.path.join(cwd, folder or ".", program)
        if os.path.isfile(candidate):
            return candidate
    return None


def unusable(argv: list[str], cwd: str, path_variable: str, run_as: RunAs) -> str | None:
    """One line saying which path the workload's uid cannot use and how to fix it, or None."""
    program = resolve_program(argv[0], path_variable, cwd)
    who = f"{run_as.name} (uid {run_as.uid})"
    if program is None or not os.path.exists(program):
        # setpriv would say so too, but in its words and with its exit code
        return f"cannot start {argv[0]}: No such file or directory"
    if program is not None:
        reason = _blocked(os.path.abspath(program), run_as, os.X_OK)
        if reason is None:
            interpreter = _interpreter(program)
            if interpreter is not None:
                reason = _blocked(interpreter, run_as, os.X_OK) or _blocked(
                    os.path.abspath(program), run_as, os.R_OK
                )
        if reason:
            return (
                f"cannot start {argv[0]} as {who}: {reason} is not usable by that user; make it readable and "
                "searchable for others (chmod o+rx), install the program where that user can reach it, or name "
                "a user who can with --user"
            )
    reason = _blocked(os.path.abspath(cwd), run_as, os.X_OK)
    if reason:
        return f"cannot start in {cwd} as {who}: {reason} is not searchable by that user; run from another folder"
    return None


def _interpreter(program: str) -> str | None:
    """The `#!` interpreter of a script (the kernel opens it with the caller's rights too)."""
    with contextlib.suppress(OSError), open(program, "rb") as fh:
        head = fh.read(256)
        if head.startswith(b"#!"):
            line = head[2:].split(b"\n", 1)[0].strip().split()
            if line:
                return os.fsdecode(line[0])
    return None


class RunFolder:
    """A private folder per run, owned by the workload's uid: its HOME, and copies of the CA files the
    platform's environment points at (the originals live in the platform's 0700 home)."""

    def __init__(self, run_as: RunAs, ca_bundle: str, ca_cert: str) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="lanyard-run-"))
        self.ca_bundle = str(self.path / "ca-bundle.pem")
        self.ca_cert = str(self.path / "ca.pem")
        shutil.copyfile(ca_bundle, self.ca_bundle)
        shutil.copyfile(ca_cert, self.ca_cert)
        for item in (self.ca_bundle, self.ca_cert):
            os.chmod(item, 0o444)
        os.chown(self.path, run_as.uid, run_as.gid)

    def copy_in(self, source: str) -> str:
        """A read-only copy of one more platform file the workload's environment names."""
        copy = self.path / Path(source).name
        shutil.copyfile(source, copy)
        os.chmod(copy, 0o444)
        return str(copy)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
