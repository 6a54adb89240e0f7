"""SIGTERM to the search driver (a preempted head VM, a scheduler's timeout) behaves as Ctrl-C: the trials
stop with their checkpoints, the experiment state is saved, only our `--resume` command is printed, and
the resumed search goes on from each trial's last reported step. Real signals to real
`python -m tune.search` processes, several rounds of SIGTERM at varied moments, then `--resume` each time.

What Ray persists must be a consistent snapshot: a trial's live run dir used to sit inside the trial dir
Ray's experiment syncer copies, so a checkpoint rotated away mid-copy made the sync fail (an ERROR with a
traceback) and lose that round's experiment state, and a resumed trial then went one report back.
"""

from __future__ import annotations

import os
import re
import signal
import time

from tests.tune.conftest import (
    base_env,
    search_cmd,
    start_logged,
    trial_results,
    wait_for,
)
from tests.tune.test_search import INTERVAL, space_yaml

STEPS = 400  # more than the rounds reach: every round lands mid-trial
ROUNDS = ((1, 0.0), (2, 0.7))  # (reports of every running trial to wait for, then sleep s)
TWO_TRIALS = """\
metric: hierarchical_recall
trials: 2
max_concurrent: 2
seed: 0
scheduler: fifo
resources: {cpu: 1}
"""
PARAMS = """\
  max_lr: {loguniform: [1.0e-3, 1.0e-2]}
"""


def _reported(exp: str) -> dict[str, list[int]]:
    return {d: [r["step"] for r in rows] for d, rows in trial_results(exp).items()}


def _interrupt(cmd: list[str], log: str, exp: str, reports: int, sleep: float) -> tuple[int, str]:
    """Run the driver until every trial has `reports` new reports (and `sleep` s more), then SIGTERM it."""
    before = _reported(exp)
    driver = start_logged(cmd, log, base_env())
    try:

        def all_moved() -> bool:
            now = _reported(exp)
            return len(now) == 2 and all(len(s) >= len(before.get(d, [])) + reports for d, s in now.items())

        wait_for(all_moved, timeout=600, what=f"{reports} new report(s) of each trial", proc=driver)
        time.sleep(sleep)
        driver.send_signal(signal.SIGTERM)
        rc = driver.wait(timeout=180)
    finally:
        if driver.poll() is None:
            driver.kill()
    with open(log) as f:
        return rc, f.read()


def _check_output(out: str, resume: str) -> None:
    assert "SIGTERM received" not in out, out[-3000:]  # no absl signal dump
    assert "Tuner.restore(" not in out, out[-3000:]  # only our --resume command
    errors = [line for line in out.splitlines() if re.search(r"\bERROR\b", line)]
    assert not errors, errors[:5]  # Ray's syncer and experiment-state saves included
    assert "Traceback (most recent call last)" not in out, out[out.index("Traceback") :][:3000]
    assert f"continue with: {resume}" in out or "interrupted:" not in out, out[-3000:]


def test_repeated_sigterm_and_resume_each_trial_restarts_at_its_last_reported_step(tmp_path, synthetic_dir):
    space = space_yaml(tmp_path, synthetic_dir, TWO_TRIALS, PARAMS, steps=STEPS)
    storage, name = str(tmp_path / "storage"), "term"
    exp = os.path.join(storage, name)
    resume = f"python -m tune.search --resume --storage {storage} --name {name}"
    first = search_cmd("--space", space, "--storage", storage, "--name", name, "--num-cpus", "2")
    again = search_cmd("--resume", "--storage", storage, "--name", name, "--num-cpus", "2")
    resumed_at: list[int] = []
    for i, (reports, sleep) in enumerate(ROUNDS):
        last = {d: s[-1] for d, s in _reported(exp).items()}
        rc, out = _interrupt(first if i == 0 else again, str(tmp_path / f"round{i}.log"), exp, reports, sleep)
        assert rc == 130, out[-3000:]
        _check_output(out, resume)
        table = [line for line in out.splitlines() if line.startswith(tuple(d[6:] for d in _reported(exp)))]
        assert len(table) == 2 and all(line.endswith("interrupted") for line in table), table
        with open(os.path.join(exp, "best.yaml")) as f:
            assert "# PARTIAL: the search was interrupted with 0 of 2 trials ended" in f.read()
        # each trial restarted from the checkpoint of the last step Ray recorded before this round
        resumed = [int(s) for s in re.findall(r"resumed from \S+ckpt-(\d+) at step \d+", out)]
        assert sorted(resumed) == sorted(last.values()), (resumed, last)
        resumed_at += resumed
    for d, steps in _reported(exp).items():  # no report repeated or skipped across the rounds
        assert steps == list(range(INTERVAL, steps[-1] + 1, INTERVAL)), (d, steps)
    assert len(resumed_at) == 2 * (len(ROUNDS) - 1)
