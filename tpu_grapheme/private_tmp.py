"""Per-process temporary dirs that a killed process cannot leave behind for good.

A dir is named `<prefix><pid>_<random>` after the process that owns it. A process that is killed (a Ray
Train worker under kill -9, a preempted host) cannot delete its own, so every new one first removes the
dirs of the same prefix whose owner process is gone. Dirs of a live process, of another user, or without
an owner in their name are left alone.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import tempfile


def make_private_dir(prefix: str, *, parent: str | None = None) -> str:
    """A new temporary dir for this process (under `parent`, default the system's temp dir), after the
    stale ones of `prefix` are removed."""
    remove_stale(prefix, parent=parent)
    return tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}_", dir=parent)


def remove_stale(prefix: str, *, parent: str | None = None) -> list[str]:
    """Remove the `<prefix><pid>_*` dirs whose process `pid` is gone; returns the removed paths."""
    removed = []
    for path in glob.glob(os.path.join(parent or tempfile.gettempdir(), glob.escape(prefix) + "*")):
        match = re.fullmatch(rf"{re.escape(prefix)}(\d+)_.+", os.path.basename(path))
        if match and os.path.isdir(path) and not process_alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)  # another user's dir stays: not ours to remove
            if not os.path.exists(path):
                removed.append(path)
    return removed


def process_alive(pid: int) -> bool:
    """Whether process `pid` runs on this host (a zombie, killed but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:  # no /proc (macOS), or it ended just now
        return os.path.exists(f"/proc/{pid}") or not os.path.isdir("/proc")
