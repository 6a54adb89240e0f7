"""One error type for bad user input, and the CLI wrapper that turns it into one line and exit 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])


class UserError(ValueError):
    """Bad input from the user (file, schema, flag, YAML): printed as one line, never a traceback."""


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
