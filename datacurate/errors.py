"""Errors that mean "bad input": the CLI prints them as one clear line, no traceback.

``one_line`` is the single place that turns what a command raised into that line: the
project's own errors, the operating system's (a folder you cannot write, a full disk, a path
under a file) and either of those raised inside a Spark task, which Spark hands back wrapped
in its own exception with the executor's traceback as text.
"""
from __future__ import annotations

import errno
import os
import re


class UserError(ValueError):
    """Bad input from the user; the message names the file, row or field."""


_OS_HINTS = {
    errno.EACCES: "choose a folder you can write to (or fix its permissions)",
    errno.EPERM: "choose a folder you can write to (or fix its permissions)",
    errno.EROFS: "the file system is read-only: choose another folder",
    errno.ENOSPC: "free some space and run the same command again (finished parts are kept)",
    errno.EDQUOT: "free some space and run the same command again (finished parts are kept)",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.EISDIR: "that is a folder: give a file name",
    errno.ENOENT: "check the path",
    errno.EEXIST: "it exists already: choose another path or remove it",
}
# a project error raised in a Spark task: the last "module.Class: message" line of the remote traceback
_REMOTE = re.compile(r"^(?:[\w.]*\.)?(\w+(?:Error|Failed))(?:: (.*))?$", re.M)
# an OSError as a Spark task's traceback prints it: "OSError: [Errno 28] No space left on device: '/x/y'"
_REMOTE_OS = re.compile(r"^(?:[\w.]*\.)?\w*Error: \[Errno (\d+)\] (.*?)(?:: '([^'\n]*)')?$", re.M)
_OURS = {"UserError", "PoolDataError", "RecipeError", "EmbedError", "ShardImageError", "ReshardError", "DownloadError", "LayoutError",
         "TrainingDataError", "TrainingFailed", "ModelLoadError", "SubmissionError", "PoolExistsError", "SchemaError",
         "SourceFetchError", "TaskDataMissing", "UidFileError"}


def _ours() -> set[str]:
    """Names of the project's error classes (those listed, and any subclass of UserError imported since)."""
    out, todo = set(_OURS), [UserError]
    while todo:
        c = todo.pop()
        out.add(c.__name__)
        todo += c.__subclasses__()
    return out


def one_line(e: BaseException) -> str | None:
    """The message a user sees for ``e`` (without the ``datacurate CMD: error:`` prefix), or None when
    ``e`` is a bug that deserves its traceback."""
    if isinstance(e, UserError):
        return str(e)
    if isinstance(e, OSError) and e.errno in _OS_HINTS:
        where = e.filename if e.filename is not None else "?"
        other = f" -> {e.filename2}" if getattr(e, "filename2", None) else ""
        return f"{where}{other}: {os.strerror(e.errno)}; {_OS_HINTS[e.errno]}"   # not a library's wording
    if type(e).__name__ in ("Py4JJavaError", "PythonException", "SparkException") or "pyspark" in type(e).__module__:
        text, ours = str(e), _ours()
        found = [m for m in _REMOTE.finditer(text) if m.group(1) in ours or m.group(1) in
                 ("PermissionError", "IsADirectoryError", "NotADirectoryError", "FileNotFoundError")]
        if found:
            name, msg = found[-1].group(1), (found[-1].group(2) or "").strip()
            return f"{msg} (in a Spark task)" if name in ours else f"{name}: {msg} (in a Spark task)"
        os_errors = [m for m in _REMOTE_OS.finditer(text) if int(m.group(1)) in _OS_HINTS]
        if os_errors:                # disk full, read-only... on an executor: the same line as on the driver
            code, where = int(os_errors[-1].group(1)), os_errors[-1].group(3)
            return f"{where or '?'}: {os.strerror(code)} (in a Spark task); {_OS_HINTS[code]}"
    return None
