"""Write a file or swap a finished folder into place, so readers never see a half-written one."""
from __future__ import annotations

import os
import shutil
from pathlib import Path


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to a temporary name beside ``path``, then rename: never a half-written file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


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
