"""The CLIs' consoles: no TensorFlow C++ info lines unless the user asked for a log level."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    clean = {
        k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TPU_GRAPHEME_QUIET_TF")
    }
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


def test_a_process_started_by_a_quiet_one_is_quiet_too():
    """Ray's workers inherit the level `install` set (with its marker): theirs is not the user's choice, so
    they filter their own TensorFlow import (through `ray_quiet.setup_worker`)."""
    code = (
        "from tpu_grapheme import ray_quiet; ray_quiet.setup_worker(); "
        "import sys, tensorflow; sys.stderr.write('ours\\n')"
    )
    assert _run(["-c", code], TF_CPP_MIN_LOG_LEVEL="2", TPU_GRAPHEME_QUIET_TF="2").stderr == "ours\n"
