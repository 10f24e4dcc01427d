"""How the project writes files that a later run reads back: atomically, and only where it can write.

``atomic_write`` writes a temp file in the target's folder, fsyncs it and renames it over the target: a run
killed midway, a full disk or a concurrent reader sees the old file or the new one, never half of one.
``check_writable`` is asked before any work, so a cache or run folder that cannot be written fails at
once, naming the folder and the key that moves it, instead of hours later.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from recpie.errors import ConfigError


def _remove_stale_temps(path: Path) -> None:
    """Temp files of ``path`` left by a process that was killed mid-write (its pid no longer runs)."""
    for tmp in path.parent.glob(f".{path.name}.tmp*"):
        pid = tmp.name.rpartition(".tmp")[2]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # alive (or another user's): leave it


def atomic_write(path: Path, write: Callable[[BinaryIO], None] | bytes | str) -> None:
    """Write ``path`` as a whole or not at all: ``write`` (a function given the open binary file, or the
    bytes/text itself) fills ``.<name>.tmp<pid>`` next to it, which is fsynced and renamed over ``path``.
    On any error (e.g. ENOSPC) the temp file is removed, ``path`` keeps its old content and the error
    propagates to the caller, who decides whether it is fatal."""
    path = Path(path)
    _remove_stale_temps(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            if callable(write):
                write(f)
            else:
                f.write(write.encode() if isinstance(write, str) else write)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_or_explain(path: Path, write: Callable[[BinaryIO], None] | bytes | str, key: str) -> None:
    """``atomic_write``, with a failure (a full disk, a folder made read-only meanwhile) reported as a
    ConfigError naming the file, the reason and ``key`` (the setting that moves it): the file keeps its
    earlier content, so the same command resumes once there is room."""
    try:
        atomic_write(path, write)
    except OSError as e:
        raise ConfigError(f"cannot write {path} ({e.strerror or type(e).__name__}); it keeps its earlier content: "
                          f"free space there (or set {key} elsewhere) and run the same command again") from None


def check_writable(folder: Path, key: str, alternative: str = "") -> None:
    """ConfigError naming ``folder`` and ``key`` unless a file can be created in ``folder`` (made if
    missing): a read-only folder, a path that is a file, a full disk. ``alternative``: another way out."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".recpie-write-check") as probe:
            probe.write(b"x")
            probe.flush()
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise ConfigError(f"{key}: cannot write to {folder} ({reason}): set {key} to a writable folder"
                          f"{' ' + alternative if alternative else ''}") from None
