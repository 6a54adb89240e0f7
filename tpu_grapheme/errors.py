"""One error type for bad user input, its did-you-mean hint, and the CLI wrapper (one line, exit 2)."""

from __future__ import annotations

import difflib
import functools
import sys
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
