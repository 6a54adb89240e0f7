"""The CLIs' consoles: no TensorFlow C++ info lines unless the user asked for a log level."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env={**clean, **env}, timeout=300
    )


@pytest.mark.parametrize(
    "module", ["tpu_grapheme.train", "tpu_grapheme.data.split", "tpu_grapheme.data.prepare"]
)
def test_help_has_no_tensorflow_lines(module):
    proc = _run(["-m", module, "--help"])
    assert proc.returncode == 0 and proc.stdout.startswith("usage:")
    assert proc.stderr == ""


def test_import_is_quiet_but_real_output_and_user_choice_survive():
    code = "import tpu_grapheme, sys, tensorflow; sys.stderr.write('ours\\n')"
    assert _run(["-c", code]).stderr == "ours\n"
    assert "oneDNN" in _run(["-c", code], TF_CPP_MIN_LOG_LEVEL="0").stderr
