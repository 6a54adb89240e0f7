"""Keep TensorFlow's import-time C++ log lines off the console (unless the user set TF_CPP_MIN_LOG_LEVEL).

TF 2.21 prints its oneDNN note through absl before absl's logging is initialised, which
TF_CPP_MIN_LOG_LEVEL does not reach. We wrap TensorFlow's module loader once: while `tensorflow`
executes its import, file descriptor 2 goes to a temporary file; afterwards every line except the
known informational ones is written back, so real errors and warnings still show. `filtered_stderr`
serves other first calls too (the benchmarks' warm-ups).
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

_NOISE = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\)|I\d{4} [\d:. ]+\d+ \S+\] "
    # an E-line that informs: oneDNN falls back to Eigen for float16 on CPUs without AVX512-FP16
    rb"|E\d{4} [\d:. ]+\d+ util\.cc:\d+\] oneDNN supports DT_HALF only on platforms with AVX-512)"
)


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


# Set beside TF_CPP_MIN_LOG_LEVEL by `install`: the level is ours, not the user's. Processes started from
# this one (Ray's workers) inherit both, and filter their own TensorFlow import too.
_OURS = "TPU_GRAPHEME_QUIET_TF"


def user_level() -> str | None:
    """The TF_CPP_MIN_LOG_LEVEL the user chose (None: unset, or set by `install`)."""
    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    return None if level is None or os.environ.get(_OURS) == level else level


def install() -> None:
    """Quiet TensorFlow's first import (no-op if it is imported already or the user chose a log level)."""
    if "tensorflow" in sys.modules or user_level() is not None:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = os.environ[_OURS] = "2"
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
