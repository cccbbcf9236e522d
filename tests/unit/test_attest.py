"""Caller attestation against real processes on real loopback sockets: who holds the socket decides.

Each case starts real processes (a "workload" in a session of its own, outsiders beside it) that
connect to a listener here; `attest` must name the workload's process or refuse.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from lanyard.agent.attest import (
    Caller,
    PeerConnection,
    Unattested,
    WorkloadScope,
    attest,
    attest_many,
    in_workload,
    read_stat,
)

CONNECT_AND_WAIT = "import socket,sys,time;s=socket.create_connection(('127.0.0.1',int(sys.argv[1])));time.sleep(30)"
# The workload's child connects (a grandchild of the session leader must count as the workload too).
CHILD_CONNECTS = (
    "import subprocess,sys,time;"
    f"subprocess.Popen([sys.executable,'-c',{CONNECT_AND_WAIT!r},sys.argv[1]]);time.sleep(30)"
)
# Connects, hands the socket to the process listening on the unix path (SCM_RIGHTS), keeps its copy.
CONNECT_AND_SHARE = (
    "import socket,sys,time;s=socket.create_connection(('127.0.0.1',int(sys.argv[1])));"
    "u=socket.socket(socket.AF_UNIX);u.connect(sys.argv[2]);socket.send_fds(u,[b'x'],[s.fileno()]);time.sleep(30)"
)
RECEIVE_AND_HOLD = (
    "import socket,sys,time;l=socket.socket(socket.AF_UNIX);l.bind(sys.argv[1]);l.listen(1);"
    "c,_=l.accept();m,fds,_,_=socket.recv_fds(c,1,1);open(sys.argv[2],'w').write('held');time.sleep(30)"
)


class Listener:
    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(20)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []

    def accept(self) -> PeerConnection:
        conn, peer = self.sock.accept()
        self.accepted.append(conn)
        return PeerConnection(conn.getsockname(), peer)

    def close(self) -> None:
        for conn in self.accepted:
            conn.close()
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    made = Listener()
    yield made
    made.close()


@contextmanager
def started(*argv: str, session: bool = True, user: int | None = None) -> Iterator[subprocess.Popen[bytes]]:
    command = [sys.executable, "-c", *argv]
    if user is not None:
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", "--", *command]
    process = subprocess.Popen(command, start_new_session=session)
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def scope_of(process: subprocess.Popen[bytes], uid: int | None = None) -> WorkloadScope:
    stat = read_stat(process.pid)
    assert stat is not None
    return WorkloadScope(process.pid, stat.start_time, uid)


def test_the_workloads_own_process_is_named(listener: Listener) -> None:
    with started(CONNECT_AND_WAIT, str(listener.port)) as workload:
        caller = attest(listener.accept(), scope_of(workload))
    assert caller.pid == workload.pid and caller.uid == os.getuid()
    assert caller.exe == os.path.realpath(sys.executable)


def test_a_child_of_the_workload_speaks_for_it(listener: Listener) -> None:
    with started(CHILD_CONNECTS, str(listener.port)) as workload:
        caller = attest(listener.accept(), scope_of(workload))
    assert caller.pid != workload.pid  # the grandchild, attributed to the workload's session


def test_a_process_outside_the_workload_is_refused(listener: Listener) -> None:
    with (
        started("import time;time.sleep(30)") as workload,
        started(CONNECT_AND_WAIT, str(listener.port)),
        pytest.raises(Unattested, match="outside the workload"),
    ):
        attest(listener.accept(), scope_of(workload))


def test_a_socket_shared_with_an_outsider_is_refused(listener: Listener, tmp_path: os.PathLike[str]) -> None:
    """fd inheritance / SCM_RIGHTS: the workload made the connection but an outsider holds it too."""
    path, held = f"{tmp_path}/pass.sock", f"{tmp_path}/held"
    with started(RECEIVE_AND_HOLD, path, held, session=True):
        deadline = time.monotonic() + 20
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.01)
        with started(CONNECT_AND_SHARE, str(listener.port), path) as workload:
            conn = listener.accept()
            while not os.path.exists(held) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert os.path.exists(held)
            with pytest.raises(Unattested, match="outside the workload"):
                attest(conn, scope_of(workload))


def test_a_caller_that_exited_before_attestation_is_refused(listener: Listener) -> None:
    with started("import time;time.sleep(30)") as workload:
        quick = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import socket,sys;socket.create_connection(('127.0.0.1',int(sys.argv[1])))",
                str(listener.port),
            ]
        )
        quick.wait()
        with pytest.raises(Unattested):
            attest(listener.accept(), scope_of(workload))


def test_an_attested_caller_that_exits_is_no_longer_alive(listener: Listener) -> None:
    """The per-request re-check: a pid that exited (and could be reused) identifies nothing."""
    with started(CONNECT_AND_WAIT, str(listener.port)) as workload:
        caller = attest(listener.accept(), scope_of(workload))
        assert caller.alive()
    assert not caller.alive()


def test_a_workload_whose_leader_was_replaced_is_refused(listener: Listener) -> None:
    """A recorded start time that no longer matches (pid reuse) means the workload is gone."""
    with started(CONNECT_AND_WAIT, str(listener.port)) as workload:
        scope = scope_of(workload)
        scope.root_start -= 1
        with pytest.raises(Unattested):
            attest(listener.accept(), scope)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_a_socket_of_another_uid_is_refused(listener: Listener) -> None:
    with (
        started(CONNECT_AND_WAIT, str(listener.port), user=65534) as workload,
        pytest.raises(Unattested, match="another user"),
    ):
        attest(listener.accept(), scope_of(workload, uid=900_000_123))
    with started(CONNECT_AND_WAIT, str(listener.port), user=65534) as workload:
        caller = attest(listener.accept(), scope_of(workload, uid=65534))
    assert caller.uid == 65534


def test_a_burst_of_connections_is_attested_with_one_walk(listener: Listener) -> None:
    """Three workloads and an outsider connect at once: one attest_many call names each workload's
    process for its own connection and refuses the outsider's."""
    with (
        started(CONNECT_AND_WAIT, str(listener.port)) as one,
        started(CONNECT_AND_WAIT, str(listener.port)) as two,
        started(CONNECT_AND_WAIT, str(listener.port)) as three,
        started(CONNECT_AND_WAIT, str(listener.port)) as stranger,
    ):
        conns = [listener.accept() for _ in range(4)]
        workloads = {p.pid: p for p in (one, two, three)}
        by_pid = {}
        for conn in conns:
            # which process made this connection: the one whose attestation as itself succeeds
            for process in (one, two, three, stranger):
                try:
                    attest(conn, scope_of(process))
                except Unattested:
                    continue
                by_pid[process.pid] = conn
        scopes = [scope_of(p) for p in (one, two, three)]
        items = [(by_pid[p.pid], s) for p, s in zip((one, two, three), scopes, strict=True)]
        items.append((by_pid[stranger.pid], scopes[0]))  # the stranger's connection, claimed for workload one
        results = attest_many(items)
    assert [r.pid for r in results[:3] if not isinstance(r, Unattested)] == list(workloads)
    assert isinstance(results[3], Unattested)


# The workload's child connects, then leaves the session (setsid) once the file named in argv[2] exists.
CHILD_CONNECTS_THEN_LEAVES = (
    "import subprocess,sys,time;"
    "subprocess.Popen([sys.executable,'-c',"
    "\"import os,socket,sys,time;s=socket.create_connection(('127.0.0.1',int(sys.argv[1])));"
    "exec('while not os.path.exists(sys.argv[2]): time.sleep(0.01)');os.setsid();time.sleep(30)\","
    "sys.argv[1],sys.argv[2]]);time.sleep(30)"
)


def test_a_caller_that_leaves_the_workload_after_attestation_fails_the_next_check(
    listener: Listener, tmp_path: os.PathLike[str]
) -> None:
    """The per-request check: an attested caller that calls setsid is no longer the workload's."""
    go = f"{tmp_path}/leave"
    with started(CHILD_CONNECTS_THEN_LEAVES, str(listener.port), go) as workload:
        scope = scope_of(workload)
        caller = attest(listener.accept(), scope)
        assert in_workload(caller.pid, scope, caller.start_time)
        open(go, "w").close()
        deadline = time.monotonic() + 20
        while in_workload(caller.pid, scope, caller.start_time):
            assert time.monotonic() < deadline, "the child never left the session"
            time.sleep(0.01)
        assert caller.alive()  # still running: it is the membership that failed, not the liveness


def test_the_pinned_recheck_follows_the_caller_leaving_and_exiting(
    listener: Listener, tmp_path: os.PathLike[str]
) -> None:
    """The connection's cheap re-check (pidfd, getsid, waitid) answers as `in_workload` does."""
    go = f"{tmp_path}/leave"
    with started(CHILD_CONNECTS_THEN_LEAVES, str(listener.port), go) as workload:
        scope = scope_of(workload)
        conn = listener.accept()
        conn.pin(attest(conn, scope), scope)
        assert conn.handle is not None and conn.still_in(scope)
        outsider = PeerConnection(conn.local, conn.remote)
        outsider.pin(Caller(os.getpid(), os.getuid(), read_stat(os.getpid()).start_time, ""), scope)  # type: ignore[union-attr]
        assert not outsider.still_in(scope)  # this test process is not in the workload's session
        open(go, "w").close()
        deadline = time.monotonic() + 20
        while conn.still_in(scope):
            assert time.monotonic() < deadline, "the child never left the session"
            time.sleep(0.01)
        conn.release()
        outsider.release()
        assert conn.handle is None and not conn.still_in(scope)
