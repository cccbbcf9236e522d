"""The test infrastructure itself: a throwaway PostgreSQL (separate databases, LISTEN/NOTIFY, durability
across a crash-like restart) and a real haproxy (round robin, health checks taking a dead backend out and
putting it back)."""

from __future__ import annotations

import collections
import itertools
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy as sa

from tests.support.haproxy import Haproxy, HaproxyFactory
from tests.support.postgres import PostgresServer

# --- PostgreSQL ----------------------------------------------------------------------------------------


def test_cluster_is_loopback_only_fsync_on_with_room_for_many_connections(postgres: PostgresServer) -> None:
    with postgres.connect() as conn:
        settings = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
                (["listen_addresses", "fsync", "synchronous_commit", "max_connections", "unix_socket_directories"],),
            ).fetchall()
        )
        encoding = conn.execute("SHOW server_encoding").fetchone()
        user = conn.execute("SELECT current_user, usesuper FROM pg_user WHERE usename = current_user").fetchone()
    assert settings["listen_addresses"] == "127.0.0.1"
    assert settings["fsync"] == "on"
    assert settings["synchronous_commit"] == "on"
    assert int(settings["max_connections"]) >= 300
    assert settings["unix_socket_directories"] == str(postgres.socket_dir)
    assert encoding == ("UTF8",)
    assert user == ("lanyard", True)
    assert postgres.url("x") == f"postgresql+psycopg://lanyard@127.0.0.1:{postgres.port}/x"


def test_databases_are_separate(postgres: PostgresServer) -> None:
    first, second = postgres.create_database("iso"), postgres.create_database("iso")
    assert first != second
    engines = [sa.create_engine(first), sa.create_engine(second)]
    try:
        with engines[0].begin() as conn:
            conn.execute(sa.text("CREATE TABLE marker (value text)"))
            conn.execute(sa.text("INSERT INTO marker VALUES ('only in the first')"))
        with engines[0].connect() as conn:
            assert conn.execute(sa.text("SELECT value FROM marker")).scalar_one() == "only in the first"
        assert sa.inspect(engines[0]).has_table("marker")
        assert not sa.inspect(engines[1]).has_table("marker")
        with engines[1].connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")).scalar() == 0
    finally:
        for engine in engines:
            engine.dispose()
        postgres.drop_database(first)
        postgres.drop_database(second)
    with postgres.connect() as conn:
        names = [row[0] for row in conn.execute("SELECT datname FROM pg_database")]
    assert sa.engine.make_url(first).database not in names
    assert sa.engine.make_url(second).database not in names


def test_pg_database_is_fresh_and_dropped_even_with_connections_open(postgres: PostgresServer) -> None:
    url = postgres.create_database()
    engine = sa.create_engine(url)
    held = engine.connect()  # still open when the database is dropped: drop_database terminates it
    try:
        assert held.execute(sa.text("SELECT current_database()")).scalar_one() == sa.engine.make_url(url).database
        postgres.drop_database(url)
        with postgres.connect() as conn:
            left = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (sa.engine.make_url(url).database,))
            assert left.fetchone() is None
    finally:
        with pytest.raises(sa.exc.DBAPIError):  # the backend was terminated under it
            held.execute(sa.text("SELECT 1"))
        held.close()
        engine.dispose()


def test_pg_database_fixture(pg_database: str) -> None:
    engine = sa.create_engine(pg_database)
    try:
        with engine.begin() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")).scalar() == 0
            conn.execute(sa.text("CREATE TABLE t (id int primary key)"))
    finally:
        engine.dispose()


def test_listen_notify_round_trip(pg_database: str, postgres: PostgresServer) -> None:
    database = sa.engine.make_url(pg_database).database
    assert database
    with postgres.connect(database) as listener, postgres.connect(database, autocommit=False) as sender:
        listener.execute("LISTEN lanyard_changes")
        sender.execute("SELECT pg_notify('lanyard_changes', 'before commit')")
        # Not delivered until the sender's transaction commits.
        assert list(listener.notifies(timeout=0.5, stop_after=1)) == []
        sender.commit()
        received = list(listener.notifies(timeout=10.0, stop_after=1))
        assert [(n.channel, n.payload) for n in received] == [("lanyard_changes", "before commit")]
        assert received[0].pid == sender.info.backend_pid
        # A rolled-back notification is never delivered.
        sender.execute("NOTIFY lanyard_changes, 'rolled back'")
        sender.rollback()
        sender.execute("NOTIFY lanyard_changes, 'second'")
        sender.commit()
        received = list(listener.notifies(timeout=10.0, stop_after=1))
        assert [n.payload for n in received] == ["second"]


def test_committed_data_survives_an_immediate_shutdown(postgres: PostgresServer) -> None:
    """A cluster of its own (restarting the shared `postgres` would break other tests; requesting it applies
    the skip-or-fail rule): commit, stop without a checkpoint (crash-like), start again on the same data and
    port, and the row is there."""
    with PostgresServer(max_connections=20) as server:
        url = server.create_database("dur")
        database = sa.engine.make_url(url).database
        assert database
        with server.connect(database) as conn:
            conn.execute("CREATE TABLE durable (v text)")
            conn.execute("INSERT INTO durable VALUES ('committed')")
        port = server.port
        server.restart("immediate")
        assert server.running and server.port == port
        with server.connect(database) as conn:
            assert conn.execute("SELECT v FROM durable").fetchall() == [("committed",)]
        root = server.root
        assert root is not None
    assert not root.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host="127.0.0.1", port=port, user="lanyard", dbname="postgres", connect_timeout=2)


# --- haproxy -------------------------------------------------------------------------------------------


class IdServer(socketserver.ThreadingTCPServer):
    """A TCP server on 127.0.0.1 that answers each line with "<id>:<line>"."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, ident: str, port: int = 0) -> None:
        self.ident = ident
        super().__init__(("127.0.0.1", port), IdHandler)
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # health checks connect and hang up at once

    def kill(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(5)


class IdHandler(socketserver.StreamRequestHandler):
    server: IdServer

    def handle(self) -> None:
        while line := self.rfile.readline():
            self.wfile.write(f"{self.server.ident}:".encode() + line)
            self.wfile.flush()


@pytest.fixture
def id_servers() -> Iterator[list[IdServer]]:
    servers = [IdServer("a"), IdServer("b")]
    yield servers
    for server in servers:
        if server.socket.fileno() != -1:
            server.kill()


def ask(proxy: Haproxy, message: str = "ping") -> str:
    with socket.create_connection(proxy.address, timeout=10) as s, s.makefile("rwb") as f:
        f.write(message.encode() + b"\n")
        f.flush()
        return f.readline().decode().rstrip("\n")


def test_haproxy_round_robin_and_health_checks(haproxy_factory: HaproxyFactory, id_servers: list[IdServer]) -> None:
    a, b = id_servers
    proxy = haproxy_factory([("127.0.0.1", a.port), ("127.0.0.1", b.port)])
    assert proxy.port not in (a.port, b.port) and proxy.host == "127.0.0.1"
    proxy.wait_ready(5)
    proxy.wait_for_states({"node0": "UP", "node1": "UP"})

    answers = [ask(proxy, f"hello {i}") for i in range(6)]
    assert {answer.split(":", 1)[1] for answer in answers} == {f"hello {i}" for i in range(6)}
    idents = [answer.split(":", 1)[0] for answer in answers]
    assert collections.Counter(idents) == {"a": 3, "b": 3}, idents
    assert all(x != y for x, y in itertools.pairwise(idents)), f"not round robin: {idents}"

    b_port = b.port
    b.kill()
    proxy.wait_for_states({"node0": "UP", "node1": "DOWN"}, timeout=5)
    assert [ask(proxy) for _ in range(6)] == ["a:ping"] * 6

    # One successful check (rise 1) puts it back.
    back = IdServer("b2", port=b_port)
    id_servers.append(back)
    proxy.wait_for_states({"node0": "UP", "node1": "UP"}, timeout=5)
    idents = [ask(proxy).split(":")[0] for _ in range(6)]
    assert collections.Counter(idents) == {"a": 3, "b2": 3}, idents


def test_haproxy_without_redispatch_reports_a_dead_backend_until_checked(
    haproxy_factory: HaproxyFactory, id_servers: list[IdServer]
) -> None:
    """Slow checks and no redispatch: a connection sent to a just-killed backend fails rather than moving."""
    a, b = id_servers
    proxy = haproxy_factory([("127.0.0.1", a.port), ("127.0.0.1", b.port)], check_inter_ms=60_000, redispatch=False)
    b.kill()
    time.sleep(0.1)
    answers = []
    for _ in range(4):
        try:
            answers.append(ask(proxy))
        except OSError:
            answers.append("")
    assert "a:ping" in answers and "" in answers, answers
    proxy.stop()
    with pytest.raises(OSError):
        socket.create_connection(proxy.address, timeout=1).close()
