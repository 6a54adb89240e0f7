"""Keep TensorFlow's import-time C++ log lines off the console (unless the user set TF_CPP_MIN_LOG_LEVEL).

TF 2.21 prints its oneDNN note through absl before absl's logging is initialised, which
TF_CPP_MIN_LOG_LEVEL does not reach. We wrap TensorFlow's module loader once: while `tensorflow`
executes its import, file descriptor 2 goes to a temporary file; afterwards every line except the
known informational ones is written back, so real errors and warnings still show.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile
from collections.abc import Iterator

_NOISE = re.compile(rb"^(WARNING: All log messages before absl::InitializeLog\(\)|I\d{4} [\d:. ]+\d+ \S+\] )")


@contextlib.contextmanager
def filtered_stderr() -> Iterator[None]:
    """Route fd 2 to a temp file for the block, then replay all but the informational C++ lines."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [line for line in tmp.read().splitlines(keepends=True) if not _NOISE.match(line)]
            if kept:
                os.write(2, b"".join(kept))


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        with filtered_stderr():
            self._loader.exec_module(module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # one shot: find the real spec, wrap its loader
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def install() -> None:
    """Quiet TensorFlow's first import (no-op if it is imported already or the user chose a log level)."""
    if "tensorflow" in sys.modules or "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    sys.meta_path.insert(0, _Finder())
