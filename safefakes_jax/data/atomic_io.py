"""Atomic file writes: write to a temporary name in the target folder, then rename.

A crash or Ctrl-C mid-write leaves either the old file or no file, never a half-written one
(DESIGN.md, "Bad input"). `os.replace` is atomic on POSIX when source and target share a
file system, which a sibling temporary file guarantees.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import IO


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = 'w', **kwargs) -> Iterator[IO]:
    """Opens a temporary sibling of `path` for writing and renames it onto `path` on success.

    Args:
      path: final file path; its parent folder is created if missing.
      mode: 'w' (text) or 'wb' (bytes).
      **kwargs: passed to `open` (e.g. `encoding`, `newline`).

    Yields:
      The open temporary file. If the body raises, the temporary file is removed and `path` is
      left untouched.
    """
    if mode not in ('w', 'wb'):
        raise ValueError(f'atomic_open supports modes "w" and "wb", not {mode!r}')
    path = os.fspath(path)
    folder = os.path.dirname(path) or '.'
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.' + os.path.basename(path) + '.', suffix='.tmp')
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are meant to be shared.
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to `path` atomically."""
    with atomic_open(path, 'wb') as f:
        f.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Writes UTF-8 `text` to `path` atomically (newlines written as given)."""
    with atomic_open(path, 'w', encoding='utf-8', newline='') as f:
        f.write(text)
