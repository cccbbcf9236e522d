"""A throwaway PostgreSQL cluster for tests: initdb into a fresh temporary directory, listening on
127.0.0.1 only (at a free port, its unix socket inside that directory), fsync on, trust authentication
for the superuser `lanyard`. As root (initdb and postgres refuse root) it runs as the `postgres` system
user through runuser (or setpriv), and the directory is owned by that user."""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUPERUSER = "lanyard"
SYSTEM_USER = "postgres"  # the account initdb/postgres run as when the tests run as root
MAX_CONNECTIONS = 300  # several server nodes, each with its own pool
COMMAND_TIMEOUT = 120.0
_BINARIES = ("initdb", "pg_ctl", "postgres")
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,30}$")


@dataclass(frozen=True)
class Binaries:
    initdb: str
    pg_ctl: str
    postgres: str


def _version_key(path: str) -> tuple[int, ...]:
    """/usr/lib/postgresql/15/bin -> (15,); unparsable versions sort first."""
    version = Path(path).parent.name
    return tuple(int(part) for part in version.split(".") if part.isdigit()) or (-1,)


def find_binaries() -> Binaries | None:
    """initdb, pg_ctl and postgres from one directory: PATH's first, else the newest /usr/lib/postgresql/*/bin."""
    on_path = shutil.which("initdb")
    candidates: list[Path] = []
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    candidates += [Path(d) for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)]
    for directory in candidates:
        paths = [directory / name for name in _BINARIES]
        if all(p.is_file() and os.access(p, os.X_OK) for p in paths):
            return Binaries(*(str(p) for p in paths))
    return None


def _running_as_root() -> bool:
    return os.geteuid() == 0


def _drop_privileges_prefix() -> list[str] | None:
    """The command prefix that runs a program as SYSTEM_USER (None when there is no way to)."""
    if shutil.which("runuser"):
        return ["runuser", "-u", SYSTEM_USER, "--"]
    if shutil.which("setpriv"):
        return ["setpriv", f"--reuid={SYSTEM_USER}", f"--regid={SYSTEM_USER}", "--init-groups", "--"]
    return None


def available() -> tuple[bool, str]:
    """Whether a PostgresServer can start here, and if not, why not."""
    if find_binaries() is None:
        return False, (
            "PostgreSQL server binaries (initdb, pg_ctl, postgres) were found neither on PATH nor in "
            "/usr/lib/postgresql/*/bin: install the Debian package `postgresql`"
        )
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return False, "psycopg 3 is not installed: pip install 'psycopg[binary]>=3.1'"
    if _running_as_root():
        try:
            pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            return False, f"running as root, and there is no `{SYSTEM_USER}` user to run initdb/postgres as"
        if _drop_privileges_prefix() is None:
            return False, f"running as root, and neither runuser nor setpriv is there to become `{SYSTEM_USER}`"
    return True, ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _traversable_by_others(path: Path) -> bool:
    return all(p.stat().st_mode & stat.S_IXOTH for p in (path, *path.parents))


def _base_dir() -> str:
    """Where the cluster directory goes: the usual temp dir unless SYSTEM_USER could not reach it, or the
    unix socket path would be too long (the limit is about 107 bytes)."""
    base = Path(tempfile.gettempdir())
    if len(str(base)) > 60 or (_running_as_root() and not _traversable_by_others(base)):
        return "/tmp"  # a mkdtemp directory inside it, mode 0700
    return str(base)


class PostgresServer:
    """One cluster. `start()` makes and starts it; `stop()`/`start()` restart it on the same data (and port);
    `cleanup()` stops it and removes its directory. Also a context manager (start … cleanup)."""

    def __init__(self, *, max_connections: int = MAX_CONNECTIONS, settings: dict[str, str] | None = None) -> None:
        binaries = find_binaries()
        if binaries is None:
            raise RuntimeError(available()[1])
        self.binaries = binaries
        self.max_connections = max_connections
        self.extra_settings = dict(settings or {})
        self.host = "127.0.0.1"
        self.port = 0
        self.user = SUPERUSER
        self.root: Path | None = None
        self._initialized = False
        self._running = False
        atexit.register(self.cleanup)

    # paths -------------------------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        assert self.root is not None, "not started"
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        assert self.root is not None, "not started"
        return self.root / "socket"

    @property
    def log_file(self) -> Path:
        assert self.root is not None, "not started"
        return self.root / "postgres.log"

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except (OSError, AssertionError):
            return ""

    # process control ---------------------------------------------------------------------------------
    def _run(self, *command: str) -> subprocess.CompletedProcess[str]:
        """A command run as the cluster's owner (SYSTEM_USER when we are root), in the cluster directory."""
        argv = list(command)
        if _running_as_root():
            prefix = _drop_privileges_prefix()
            if prefix is None:
                raise RuntimeError(available()[1])
            argv = [*prefix, *argv]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C")
        result = subprocess.run(
            argv, cwd=self.root, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
        )
        return result

    def _make_root(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="lanyard-pg-", dir=_base_dir()))
        self.socket_dir.mkdir()
        if _running_as_root():
            owner = pwd.getpwnam(SYSTEM_USER)
            for path in (self.root, self.socket_dir):
                os.chown(path, owner.pw_uid, owner.pw_gid)

    def _initdb(self) -> None:
        result = self._run(
            self.binaries.initdb,
            "-D",
            str(self.data_dir),
            "-U",
            self.user,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
        )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        self._initialized = True

    def _write_settings(self) -> None:
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "fsync": "on",
            "synchronous_commit": "on",
            "full_page_writes": "on",
            "max_connections": str(self.max_connections),
            "logging_collector": "off",
            **self.extra_settings,
        }
        # Our own file, included at the end of postgresql.conf (so it wins), rewritten on every start.
        conf = self.data_dir / "lanyard.conf"
        conf.write_text("".join(f"{key} = {value}\n" for key, value in settings.items()))
        main = self.data_dir / "postgresql.conf"
        if "include 'lanyard.conf'" not in main.read_text():
            with main.open("a") as f:
                f.write("\ninclude 'lanyard.conf'\n")
        if _running_as_root():
            owner = pwd.getpwnam(SYSTEM_USER)
            os.chown(conf, owner.pw_uid, owner.pw_gid)

    def _pg_ctl_start(self) -> subprocess.CompletedProcess[str]:
        return self._run(
            self.binaries.pg_ctl, "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", "60", "start"
        )

    def start(self) -> PostgresServer:
        """Create the cluster on first call, then start it. A later start() (after stop()) reuses the data
        and tries the same port; it picks another one only if that port was taken meanwhile."""
        if self._running:
            return self
        if self.root is None:
            self._make_root()
        if not self._initialized:
            self._initdb()
        attempts = 3
        for attempt in range(attempts):
            if not self.port or attempt:
                self.port = free_port()
            self._write_settings()
            result = self._pg_ctl_start()
            if result.returncode == 0:
                self._running = True
                return self
            log = self.log()
            if "could not bind" not in log and "already in use" not in log:
                break
        raise RuntimeError(f"PostgreSQL did not start:\n{result.stdout}\n{result.stderr}\n{self.log()}")

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop -m MODE: "fast" (clean), or "immediate" (no checkpoint: the next start does crash recovery)."""
        if not self._running:
            return
        result = self._run(self.binaries.pg_ctl, "-D", str(self.data_dir), "-m", mode, "-w", "-t", "60", "stop")
        if result.returncode != 0 and (self.data_dir / "postmaster.pid").exists():
            pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._running = False

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def cleanup(self) -> None:
        """Stop (fast) and remove the cluster directory. Safe to call more than once."""
        try:
            self.stop("fast")
        finally:
            if self.root is not None:
                shutil.rmtree(self.root, ignore_errors=True)
                self.root = None
                self._initialized = False
            atexit.unregister(self.cleanup)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    available = staticmethod(available)

    @property
    def running(self) -> bool:
        return self._running

    # databases ---------------------------------------------------------------------------------------
    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of one database of this cluster."""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    def connect(self, database: str = "postgres", **kwargs: Any) -> Any:
        """A psycopg 3 connection (autocommit unless told otherwise)."""
        import psycopg

        kwargs.setdefault("autocommit", True)
        return psycopg.connect(host=self.host, port=self.port, user=self.user, dbname=database, **kwargs)

    def create_database(self, name_prefix: str = "t") -> str:
        """A new, empty database with a unique name; returns its SQLAlchemy URL."""
        from psycopg import sql

        name = f"{name_prefix.lower()}_{uuid.uuid4().hex[:16]}"
        if not _NAME.match(name):
            raise ValueError(f"bad database name prefix {name_prefix!r}: letters, digits and _ only, short")
        with self.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} ENCODING 'UTF8'").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop a database made by create_database, first terminating any connections still open to it."""
        from psycopg import sql
        from sqlalchemy.engine import make_url

        name = make_url(url).database
        if not name:
            raise ValueError(f"no database in {url!r}")
        with self.connect() as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            force = sql.SQL(" WITH (FORCE)") if conn.info.server_version >= 130000 else sql.SQL("")
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)) + force)
