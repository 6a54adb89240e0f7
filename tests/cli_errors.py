"""Run a CLI as a user does (a subprocess) and check it failed with one `error:` line, exit 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_cli(module: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python -m module args...` from the repo, TensorFlow's C++ log quiet; several may run side by side."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH", "")) if p)
    return subprocess.Popen(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=REPO,
        env=env,
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
