"""Subprocesses the tests start: their environment, a quick end for scripts, and a CLI run as a user runs
it (checked to fail with one `error:` line, exit 2, no traceback)."""

from __future__ import annotations

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The last line of a script run in a TensorFlow subprocess once its result is printed: TF's teardown (~2 s).
QUICK_EXIT = "\nimport os, sys; sys.stdout.flush(); os._exit(0)\n"


def repo_env(**extra: str) -> dict[str, str]:
    """This process's environment with `extra` and the repo first on PYTHONPATH (the rest kept: the
    scikit-learn stand-in of conftest.py)."""
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH", "")) if p)
    return env


def start_cli(module: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python -m module args...` from the repo, TensorFlow's C++ log quiet; several may run side by side."""
    return subprocess.Popen(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=REPO,
        env=repo_env(**{"TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def one_line_error(proc: subprocess.Popen, *, timeout: float = 300) -> str:
    """The process's single `error:` line, after checking exit code 2 and that no traceback was printed."""
    _, err = proc.communicate(timeout=timeout)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2, err[-2000:]
    assert len(errors) == 1 and "Traceback" not in err, err[-2000:]
    return errors[0]
