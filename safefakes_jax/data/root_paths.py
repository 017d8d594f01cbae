"""Paths taken from untrusted files, confined to the folder they are relative to.

Annotation files, landmarks sidecars, manifests and prediction folders name files *relative to
a root* (`event/name.jpg` under `WIDER_train/images`). A hostile or careless file can name
`../../etc/passwd`, an absolute path, or a name whose folder is a symlink out of the tree; a
tool that joins such a name to its root reads, writes or removes outside it. Two checks, both
needed:

* `check_relative_name`, at parse time: a name is relative, uses `/`, and has no empty, `.` or
  `..` component, no backslash and no NUL. The readers call it so that a bad annotation is
  an error naming the file and line before anything is written.
* `resolve_inside`, at use time: after symlinks are resolved, the joined path still lies
  inside the (resolved) root. A symlinked image or folder that leaves the root is refused.
"""

from __future__ import annotations

import os


class PathEscapeError(ValueError):
    """A path from an input file that is not a plain relative name inside its root."""


def name_problem(name: str) -> str | None:
    """Why `name` is not a safe relative name (see the module docstring), or None."""
    if not name:
        return 'empty name'
    if '\x00' in name:
        return 'NUL character in name'
    if '\\' in name:
        return 'backslash in name (names use "/")'
    if name.startswith('/') or os.path.isabs(name):
        return 'absolute path'
    parts = name.split('/')
    if any(p in ('', '.', '..') for p in parts):
        return 'empty, "." or ".." path component'
    return None


def check_relative_name(name: str, where: str) -> str:
    """Returns `name` if it is a safe relative name, else raises naming `where` (file:line)."""
    problem = name_problem(name)
    if problem:
        raise PathEscapeError(
            f'{where}: {name!r}: {problem}; names must be relative paths '
            'inside their folder (e.g. 0--Parade/0_Parade_1.jpg)'
        )
    return name


def is_inside(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """True if `path` (symlinks resolved) is `root` (resolved) or lies below it."""
    real_root = os.path.realpath(os.fspath(root))
    real = os.path.realpath(os.fspath(path))
    return os.path.commonpath([real_root, real]) == real_root


def resolve_inside(root: str | os.PathLike, name: str, where: str) -> str:
    """`root/name` after checking that `name` is safe and, symlinks resolved, stays in `root`.

    Args:
      root: the folder `name` is relative to (need not exist yet).
      name: the relative name from the input file.
      where: the input's file (and line) for the error message.

    Returns:
      `os.path.join(root, name)` (not resolved: callers keep their paths readable).

    Raises:
      PathEscapeError: `name` is unsafe, or it resolves outside `root`.
    """
    check_relative_name(name, where)
    path = os.path.join(os.fspath(root), name)
    if not is_inside(path, root):
        raise PathEscapeError(
            f'{where}: {name!r} resolves to {os.path.realpath(path)}, outside '
            f'{os.path.realpath(os.fspath(root))} (a symlink out of the '
            'folder?); refusing to read or write it'
        )
    return path
