"""Atomic file output: a temporary file beside the target, renamed over it.

``tempfile.mkstemp`` creates its file with mode 0600, and a rename keeps the mode, so every
output written this way would be private to its owner. The file is given the mode a plain
``open(path, "w")`` would give it instead: ``0o666`` less the process's umask.
"""

from __future__ import annotations

import os
import tempfile
import threading

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux: /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # elsewhere the only way to read it is to set it (and put it back at once)
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def default_mode() -> int:
    """The mode of a newly created file: ``0o666 & ~umask``."""
    return 0o666 & ~current_umask()


def atomic_write(path, write, prefix: str = ".archdsl-", suffix: str = ".tmp", mode: int | None = None) -> None:
    """Call ``write(f)`` on a binary temporary file in ``path``'s folder, then rename it over ``path``.

    The file gets ``mode`` (default: :func:`default_mode`). On any failure the temporary file is
    removed and ``path`` is left as it was.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, default_mode() if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
