"""Output paths checked before a command's work, and the empty dirs a failed command made, removed.

A leaf module (like `errors`): every CLI, `data/` included, checks where it will write before it reads
a model or an image, so a path that is a file or not writable is one line (exit 2), not a traceback
after the work; `removing_new_dirs` leaves no empty directory behind when the command then fails.
Local paths are probed by creating a file (root ignores permission bits, a read-only mount does not);
URIs (gs://) are left to the write itself.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

from tpu_grapheme.data.paths import is_uri
from tpu_grapheme.errors import UserError


def _existing_ancestor(path: str) -> str:
    """`path` itself when it exists, else its nearest existing ancestor."""
    path = os.path.abspath(path)
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def _probe(directory: str, flag: str, value: str) -> None:
    """Create and delete a file in `directory`: the one test of writability that holds for root too."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".write_probe_", dir=directory)
    except OSError as e:
        where = "" if os.path.abspath(directory) == os.path.abspath(value) else f" ({directory})"
        raise UserError(f"{flag} {value} is not writable{where}: {e.strerror or e}") from None
    os.close(fd)
    os.remove(probe)


def check_out_dir(path: str, flag: str, *, value: str | None = None) -> None:
    """`path` is a directory this process can write (or can be made in one); `flag value` names it."""
    if is_uri(path):
        return
    value = path if value is None else value
    found = _existing_ancestor(path)
    if not os.path.isdir(found):
        inside = "" if found in (os.path.abspath(path), os.path.abspath(value)) else f": {found}"
        raise UserError(f"{flag} {value}{inside} is a file, not a directory")
    _probe(found, flag, value)


def check_out_file(path: str, flag: str) -> None:
    """`path` is a file this process can write: not a directory, in an existing, writable directory."""
    if is_uri(path):
        return
    if os.path.isdir(path):
        raise UserError(f"{flag} {path} is a directory; give a file name")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        what = "is a file" if os.path.exists(parent) else "does not exist"
        raise UserError(f"{flag} directory {what}: {parent}")
    _probe(parent, flag, path)
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise UserError(f"{flag} {path} is not writable")


def _missing_dirs(path: str) -> list[str]:
    """`path` and its ancestors that do not exist yet, deepest first."""
    path, missing = os.path.abspath(path), []
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        missing.append(path)
        path = os.path.dirname(path)
    return missing


def _holds_files(directory: str) -> bool:
    return any(files for _, _, files in os.walk(directory))


@contextlib.contextmanager
def removing_new_dirs(*dirs: str) -> Iterator[None]:
    """On any failure (Ctrl-C included), remove each of `dirs` and its ancestors that this block created
    and that hold no file: a failed command leaves no empty directory behind. Local paths only."""
    created = [d for path in dirs if not is_uri(path) for d in _missing_dirs(path)]
    try:
        yield
    except BaseException:
        for d in sorted(set(created), key=len, reverse=True):  # deepest first
            if os.path.isdir(d) and not _holds_files(d):
                with contextlib.suppress(OSError):  # best effort: never hide the command's own error
                    _remove_empty_tree(d)
        raise


def _remove_empty_tree(directory: str) -> None:
    for root, subdirs, _ in os.walk(directory, topdown=False):
        for s in subdirs:
            os.rmdir(os.path.join(root, s))
    os.rmdir(directory)
