"""Stop a run cleanly on SIGTERM (preemption, a scheduler's timeout) or Ctrl-C, never mid-write.

Both signals raise KeyboardInterrupt, which the loop turns into a checkpoint and a clean exit. Inside
`critical()` (a checkpoint or model being written, an evaluation whose result is being recorded) the
signal is held and raised when the block ends, so no half-written file becomes the latest.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class GracefulStop:
    """Context manager that installs the handlers (main thread only: elsewhere Python forbids it)."""

    def __init__(self) -> None:
        self._depth = 0
        self._pending: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if self._depth:
            self._pending = signum
            return
        raise KeyboardInterrupt(signal.Signals(signum).name)

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        """Hold signals until the block is done, then raise the one that arrived (if any)."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if not self._depth and self._pending is not None:
                signum, self._pending = self._pending, None
                raise KeyboardInterrupt(signal.Signals(signum).name)
