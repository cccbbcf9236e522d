"""The rules behind workload isolation: uid allocation, the usability check, the unprivileged warning,
and the platform's folders kept private whatever state they were found in."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lanyard.agent import isolation
from lanyard.agent.isolation import (
    IsolationError,
    RunAs,
    WorkloadUsers,
    limitations,
    named_user,
    parse_uid_range,
    unusable,
)
from lanyard.core.files import secure_tree

STRANGER = RunAs(900_000_777, 900_000_777, "uid-900000777")


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder every uid can search (pytest's own tmp_path sits under a private 0700 folder)."""
    folder = Path(tempfile.mkdtemp(prefix="lanyard-iso-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_one_uid_per_resource_kept_across_restarts(tmp_path: Path) -> None:
    users = WorkloadUsers(tmp_path, (900_000_000, 900_000_009))
    a = users.for_resource("/subscriptions/s/resourceGroups/g/providers/Microsoft.Web/sites/A")
    b = users.for_resource("/subscriptions/s/resourceGroups/g/providers/Microsoft.Web/sites/b")
    assert a.uid != b.uid and a.gid == a.uid
    again = WorkloadUsers(tmp_path, (900_000_000, 900_000_009))
    assert again.for_resource("/subscriptions/s/resourcegroups/g/providers/microsoft.web/sites/a").uid == a.uid


def test_a_uid_with_a_passwd_entry_is_never_handed_out(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody").pw_uid
    users = WorkloadUsers(tmp_path, (nobody, nobody + 1))
    assert users.for_resource("x").uid == nobody + 1
    with pytest.raises(IsolationError, match="used up"):
        users.for_resource("y")


@pytest.mark.parametrize("text", ["0-10", "5000", "10-5", "abc", "1000-99999999999"])
def test_bad_uid_ranges_are_refused_with_a_reason(text: str) -> None:
    if text == "5000":
        assert parse_uid_range(text) == (5000, 5000)
        return
    with pytest.raises(ValueError, match="range"):
        parse_uid_range(text)


def test_root_and_the_platforms_user_are_not_workload_users() -> None:
    with pytest.raises(IsolationError, match="owns the platform"):
        named_user("root")
    with pytest.raises(IsolationError, match="no user"):
        named_user("no-such-user-here")
    assert named_user("nobody").uid == pwd.getpwnam("nobody").pw_uid


def test_a_program_under_a_private_folder_is_named(open_dir: Path) -> None:
    private = open_dir / "private"
    private.mkdir(mode=0o700)
    tool = private / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    message = unusable([str(tool)], "/", "/usr/bin", STRANGER)
    assert message is not None and f"{private} (folder, mode 0700" in message and "chmod o+rx" in message


def test_a_symlink_into_a_private_folder_is_followed(open_dir: Path) -> None:
    private = open_dir / "private"
    private.mkdir(mode=0o700)
    (private / "python").write_text("")
    (private / "python").chmod(0o755)
    public = open_dir / "venv"
    public.mkdir(mode=0o755)
    (public / "python").symlink_to(private / "python")
    message = unusable([str(public / "python")], "/", "", STRANGER)
    assert message is not None and str(private) in message


def test_a_scripts_interpreter_and_the_working_folder_are_checked(open_dir: Path) -> None:
    private = open_dir / "private"
    private.mkdir(mode=0o700)
    (private / "interp").write_text("")
    script = open_dir / "script"
    script.write_text(f"#!{private / 'interp'}\n")
    script.chmod(0o755)
    message = unusable([str(script)], "/", "", STRANGER)
    assert message is not None and str(private) in message
    ok = unusable(["sh"], "/", "/usr/bin:/bin", STRANGER)
    assert ok is None
    in_private = unusable(["sh"], str(private), "/usr/bin:/bin", STRANGER)
    assert in_private is not None and "run from another folder" in in_private


def test_a_missing_program_says_so() -> None:
    assert unusable(["no-such-program-x"], "/", "/usr/bin", STRANGER) == (
        "cannot start no-such-program-x: No such file or directory"
    )


def test_an_unprivileged_agent_says_what_it_cannot_protect(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isolation.os, "geteuid", lambda: 1000)
    said = " ".join(limitations())
    for promise in ("uid 1000", "environ", "control socket", "Arc"):
        assert promise in said
    monkeypatch.setattr(isolation.os, "geteuid", lambda: 0)
    assert limitations() == []


def test_the_platforms_folders_are_made_private_whatever_their_state(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "tls").mkdir(parents=True)
    (home / "tls" / "server.key").write_text("key")
    (home / "endpoints.json").write_text("{}")
    for path in (home, home / "tls"):
        path.chmod(0o777)
    for path in (home / "tls" / "server.key", home / "endpoints.json"):
        path.chmod(0o666)
    secure_tree(home)
    for path in (home, home / "tls"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    for path in (home / "tls" / "server.key", home / "endpoints.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.stat().st_uid == os.geteuid()


def test_a_relative_program_counts_from_the_runs_folder(open_dir: Path) -> None:
    tool = open_dir / "tool.sh"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert unusable(["./tool.sh"], str(open_dir), "", STRANGER) is None
    assert unusable(["tool.sh"], str(open_dir), ".", STRANGER) is None


def test_a_damaged_uid_file_stops_the_agent_instead_of_reallocating(tmp_path: Path) -> None:
    (tmp_path / isolation.UID_FILE).write_text("{not json")
    with pytest.raises(IsolationError, match="damaged"):
        WorkloadUsers(tmp_path)
