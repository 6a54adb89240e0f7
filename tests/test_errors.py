"""The did-you-mean hint every unknown-name error shares, and the CLIs' quick exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.cli_errors import repo_env
from tpu_grapheme.errors import did_you_mean


def test_did_you_mean_suggests_the_closest_name_or_lists_short_choices():
    assert did_you_mean("max_lrr", ["max_lr", "steps"]) == " (did you mean 'max_lr'?)"
    assert did_you_mean("zzz", ["max_lr", "steps"]) == ""
    assert did_you_mean("zzz", ("asha", "fifo"), list_choices=True) == "; one of asha, fifo"


def _run_script(tmp_path, body: str) -> subprocess.CompletedProcess:
    """A script whose `main` ends through `run_and_exit`, with an atexit handler that writes a file."""
    script = tmp_path / "cli.py"
    script.write_text(
        "import atexit, pathlib, sys, threading, time\n"
        "from tpu_grapheme.errors import run_and_exit\n"
        f"out = pathlib.Path({str(tmp_path)!r})\n"
        "atexit.register(lambda: (out / 'atexit').write_text('ran'))\n"
        f"{textwrap.dedent(body)}\n"
        "run_and_exit(main)\n"
        "(out / 'after').write_text('reached')  # never: the process ends in run_and_exit\n"
    )
    env = repo_env()
    return subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("body", "code", "stderr"),
    [
        ("def main():\n    sys.stdout.write('partial line, not flushed')", 0, ""),
        ("def main():\n    sys.stdout.write('partial line, not flushed')\n    return 3", 3, ""),
        ("def main():\n    sys.stdout.write('partial line, not flushed')\n    raise SystemExit(2)", 2, ""),
        ("def main():\n    sys.stdout.write('partial line, not flushed')\n    sys.exit('bad')", 1, "bad\n"),
        ("def main():\n    sys.stdout.write('partial line, not flushed')\n    sys.exit(['x'])", 1, "['x']\n"),
    ],
)
def test_run_and_exit_keeps_the_exit_code_the_output_and_the_atexit_handlers(tmp_path, body, code, stderr):
    r = _run_script(tmp_path, body)
    assert (r.returncode, r.stdout, r.stderr) == (code, "partial line, not flushed", stderr)
    assert (tmp_path / "atexit").read_text() == "ran"
    assert not (tmp_path / "after").exists()


def test_run_and_exit_waits_for_a_non_daemon_thread_as_python_does(tmp_path):
    body = """
    def main():
        def late():
            time.sleep(0.5)
            (out / 'thread').write_text('done')
        threading.Thread(target=late).start()
        return 4
    """
    r = _run_script(tmp_path, body)
    assert r.returncode == 4, r.stderr
    assert (tmp_path / "thread").read_text() == "done" and (tmp_path / "atexit").read_text() == "ran"
