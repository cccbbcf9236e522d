"""Files other processes read while we write them: replaced atomically, never seen half-written; and
the platform's folders, kept its user's alone."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def write_atomically(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write to a temporary file beside `path` with `mode`, then rename over it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, mode)  # O_CREAT's mode is filtered by the umask
    os.replace(tmp, path)


def secure_tree(root: Path) -> None:
    """The platform's files are its user's alone, whatever state the folder was found in: folders 0700,
    files 0600, owned by the running user."""
    me, group = os.geteuid(), os.getegid()
    if not root.exists():
        return
    for folder, dirs, files in os.walk(root):
        _tighten(Path(folder), 0o700, me, group)
        for name in files:
            _tighten(Path(folder) / name, 0o600, me, group)
        dirs[:] = [d for d in dirs if not (Path(folder) / d).is_symlink()]


def _tighten(path: Path, mode: int, uid: int, gid: int) -> None:
    """Through a descriptor opened without following links: a file swapped for a symlink between a
    check and the chmod cannot redirect root's chown/chmod onto the link's target."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return  # a symlink (ELOOP), a socket (ENXIO), gone: nothing of ours to tighten through it
    try:
        info = os.fstat(fd)
        if (info.st_uid, info.st_gid) != (uid, gid) and os.geteuid() == 0:
            os.fchown(fd, uid, gid)
        if stat.S_IMODE(info.st_mode) & ~mode:
            os.fchmod(fd, stat.S_IMODE(info.st_mode) & mode)
    except OSError:
        pass
    finally:
        os.close(fd)
