"""One error type for bad user input, its did-you-mean hint, and the CLI wrappers (one line, exit 2; a
quick exit once the work is done)."""

from __future__ import annotations

import atexit
import difflib
import functools
import os
import sys
import threading
from collections.abc import Callable, Iterable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])


class UserError(ValueError):
    """Bad input from the user (file, schema, flag, YAML): printed as one line, never a traceback."""


def did_you_mean(name: str, choices: Iterable[str], *, list_choices: bool = False) -> str:
    """The hint after an unknown name: " (did you mean 'x'?)" for a close match, else "; one of a, b"
    (`list_choices`, for short lists) or "".
    """
    choices = [str(c) for c in choices]
    close = difflib.get_close_matches(str(name), choices, n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f"; one of {', '.join(choices)}" if list_choices else ""


def cli_main(fn: F) -> F:
    """Run a CLI entry point; a `UserError` (or missing file) becomes `error: ...` on stderr and exit 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (UserError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper  # type: ignore[return-value]


def run_and_exit(main: Callable[[], object]) -> None:
    """A CLI's `if __name__ == "__main__":` body: run `main`, then end the process without the interpreter's
    teardown, which takes seconds once TensorFlow is loaded. atexit handlers (Ray's shutdown, logging)
    still run and the streams are flushed; with a non-daemon thread still alive, Python exits as usual."""
    try:
        code = main()
    except SystemExit as e:
        code = e.code
    if code is not None and not isinstance(code, int):  # as Python does: the object printed, status 1
        print(code, file=sys.stderr)
        code = 1
    code = code or 0
    main_thread = threading.main_thread()
    if any(t is not main_thread and not t.daemon and t.is_alive() for t in threading.enumerate()):
        sys.exit(code)  # Python joins them (and runs their pools' exit hooks) before it ends
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)
