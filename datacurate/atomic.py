"""Write a file or swap a finished folder into place, so readers never see a half-written one."""
from __future__ import annotations

import errno
import os
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _writer() -> str:
    """Who writes a temporary file: process and thread (`datacurate run` makes two recipes' subsets
    at once in one process, and both probe the same folder)."""
    return f"{os.getpid()}-{threading.get_ident()}"


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """``with atomic_path(P) as tmp:`` write ``tmp``; it becomes ``P`` by one rename when the block ends.

    On any failure the temporary file is removed, so nothing half-written is left under either
    name; an OSError that names no file (a full disk met inside ``write()``, a short write that
    numpy reports without an errno) is raised again naming ``P``, for the one-line error."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{_writer()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        if isinstance(e, OSError) and e.filename is None:
            code = e.errno or (errno.ENOSPC if _nearly_full(path.parent) else errno.EIO)
            raise OSError(code, os.strerror(code), str(path)) from None
        raise


def _nearly_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < (1 << 20)
    except OSError:
        return False


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to a temporary name beside ``path``, then rename: never a half-written file."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike, obj, indent: int = 2) -> None:
    """``obj`` as indented JSON (with a final newline), written as :func:`write_text_atomic` does."""
    import json

    write_text_atomic(path, json.dumps(obj, indent=indent) + "\n")


def replace_dir(tmp: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Move the complete folder ``tmp`` to ``dst``, replacing an older ``dst`` in two renames."""
    tmp, dst = Path(tmp), Path(dst)
    if not dst.exists():
        os.replace(tmp, dst)
        return
    trash = dst.with_name(f".{dst.name}.old-{os.getpid()}")
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(dst, trash)
    os.replace(tmp, dst)
    shutil.rmtree(trash, ignore_errors=True)


class Locked(Exception):
    """Another process holds the folder (``held_by``: its pid, as it wrote it)."""

    def __init__(self, path: Path, held_by: str):
        super().__init__(f"{path}: in use by another run (pid {held_by or '?'}); wait for it or stop it")
        self.path, self.held_by = path, held_by


class folder_lock:
    """``with folder_lock(DIR / ".lock"):`` one writer per output folder at a time.

    An OS lock (``fcntl.flock``), so a killed holder never leaves a stale lock behind; the
    holder's pid is written in the file for the message the second writer gets. ``wait=True``:
    the second writer waits for the first instead (for shared inputs that whoever comes first
    builds, such as the offline eval sets two side-by-side chains both need). Threads of one
    process exclude each other too: each ``with`` opens the file anew.
    """

    def __init__(self, path: str | os.PathLike, wait: bool = False):
        self.path = Path(path)
        self.wait = wait
        self._fd = None

    def __enter__(self) -> "folder_lock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if self.wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held_by = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            from .errors import UserError

            raise UserError(str(Locked(self.path.parent, held_by))) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        import fcntl

        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _probe_folder(folder: Path, target: Path, what: str) -> Path:
    """The nearest existing folder at or above ``folder``, once a file was written in it and removed (a
    read-only or foreign folder raises the OSError the one error path words); a file on the way is refused
    with a line naming ``target``, the path the user gave."""
    from .errors import UserError

    up = folder
    while not up.exists() and up != up.parent:
        up = up.parent
    if not up.is_dir():
        raise UserError(f"{up}: is a file, not a folder; choose another path for the {what} ({target})")
    probe = up / f".datacurate.{_writer()}.probe"
    probe.write_bytes(b"")
    probe.unlink()
    return up


def check_writable_folder(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Fail before the work, not after it: ``path`` is (or can become) a folder we can write in.
    Nothing is created (the probe goes in the nearest existing folder on the way)."""
    from .errors import UserError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path}: is a file; the {what} must be a folder: choose another --out")
    _probe_folder(path, path, what)
    return path


def check_writable(path: str | os.PathLike, what: str = "output") -> Path:
    """Fail before the work, not after it: ``path``'s folder can be made and written, and ``path``
    is not a folder. Raises UserError naming the path (or the OSError the one error path words)."""
    from .errors import UserError

    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give the {what} file's name (e.g. {path / 'subset.npy'})")
    _probe_folder(path.parent, path, what)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
