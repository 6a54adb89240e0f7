"""Every CLI's `--help`: each option has help text and shows its default at most once; the data CLIs
answer without loading TensorFlow (speed itself is a benchmark matter, not a unit test)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.cli_errors import repo_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = (
    "tpu_grapheme.train",
    "tpu_grapheme.data.prepare",
    "tpu_grapheme.data.split",
    "tpu_grapheme.data.synthetic",
    "tpu_grapheme.data.render_unseen",
    "tpu_grapheme.data.orthography",
    "tpu_grapheme.inference",
    "tpu_grapheme.inference.score",
    "tune.search",
    "benchmarks.throughput",
    "benchmarks.data_throughput",
    "benchmarks.multiworker",
    "benchmarks.determinism",
    "benchmarks.reweight_gain",
    "benchmarks.resume_cost",
)
# Run as `python -m MODULE --help`; prints whether TensorFlow got imported on the way (at exit: the CLIs
# end through `run_and_exit`, which runs the atexit handlers and skips the rest).
_WRAPPER = """
import atexit, runpy, sys
atexit.register(lambda: print("TENSORFLOW_IMPORTED", "tensorflow" in sys.modules))
sys.argv = [{module!r}, "--help"]
sys.path[:0] = [{root!r}, {root!r} + "/benchmarks"]
try:
    runpy.run_module({module!r}, run_name="__main__", alter_sys=True)
except SystemExit:
    pass
"""


def _help(module: str) -> str:
    code = _WRAPPER.format(module=module, root=ROOT)
    env = repo_env(COLUMNS="100")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def _options(text: str) -> dict[str, str]:
    """{first flag: its help text} of every option of an argparse help page."""
    body = text.split("TENSORFLOW_IMPORTED")[0]
    body = body[body.index("options:") :]
    opts: dict[str, str] = {}
    current = None
    for line in body.splitlines():
        m = re.match(r"^  (-{1,2}[\w-]+)", line)
        if m:
            current = m.group(1)
            rest = re.split(r"\s{2,}", line.strip(), maxsplit=1)
            opts[current] = rest[1] if len(rest) > 1 else ""
        elif current and line.startswith("      "):
            opts[current] += " " + line.strip()
        elif not line.strip() or not line.startswith(" "):
            current = None
    return opts


@pytest.mark.parametrize("module", MODULES)
def test_every_option_has_help_and_one_default(module):
    opts = _options(_help(module))
    assert len(opts) > 1, module
    for flag, text in opts.items():
        assert text.strip(), f"{module} {flag}: no help text"
        assert len(re.findall(r"\(default\b", text)) <= 1, f"{module} {flag}: default shown twice: {text}"


@pytest.mark.parametrize("module", ["tpu_grapheme.data.prepare", "tpu_grapheme.data.split"])
def test_data_cli_help_does_not_import_tensorflow(module):
    assert "TENSORFLOW_IMPORTED False" in _help(module)
