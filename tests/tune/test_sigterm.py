"""SIGTERM to the search driver (a preempted head VM, a scheduler's timeout) behaves as Ctrl-C: the trials
stop with their checkpoints, the experiment state is saved, the `--resume` command is printed, and the
resumed search ends at the requested step. A real signal to a real `python -m tune.search` process."""

from __future__ import annotations

import os
import signal

from tests.tune.conftest import (
    REPO,
    base_env,
    resume_search,
    search_cmd,
    start_logged,
    trial_results,
    wait_for,
)
from tests.tune.test_search import INTERVAL, space_yaml

STEPS = 100  # long enough that the signal lands mid-trial: a report every 5 steps
ONE_TRIAL = """\
metric: hierarchical_recall
trials: 1
seed: 0
scheduler: fifo
resources: {cpu: 1}
"""
PARAMS = """\
  max_lr: {loguniform: [1.0e-3, 1.0e-2]}
"""


def test_sigterm_to_the_driver_stops_like_ctrl_c_and_resumes(tmp_path, synthetic_dir):
    space = space_yaml(tmp_path, synthetic_dir, ONE_TRIAL, PARAMS, steps=STEPS)
    storage, name = str(tmp_path / "storage"), "term"
    exp = os.path.join(storage, name)
    log = str(tmp_path / "first.log")
    driver = start_logged(
        search_cmd("--space", space, "--storage", storage, "--name", name, "--num-cpus", "2"), log, base_env()
    )
    try:
        wait_for(lambda: any(trial_results(exp).values()), timeout=600, what="a first report", proc=driver)
        driver.send_signal(signal.SIGTERM)
        rc = driver.wait(timeout=180)
    finally:
        if driver.poll() is None:
            driver.kill()
    with open(log) as f:
        out = f.read()
    resume = f"python -m tune.search --resume --storage {storage} --name {name}"
    assert rc == 130, out[-3000:]
    assert f"interrupted: 0 of 1 trials ended; continue with: {resume}" in out, out[-3000:]
    assert "SIGTERM received" not in out, out[-3000:]  # no absl signal dump
    # No traceback through our code. (Ray's experiment syncer may log one of its own when the trial's
    # CheckpointManager rotates a checkpoint away while Ray copies the trial dir: benign, next sync.)
    our_code = (os.path.join(REPO, "tpu_grapheme") + os.sep, os.path.join(REPO, "tune") + os.sep)
    tracebacks = [t.split("\n\n")[0] for t in out.split("Traceback (most recent call last):")[1:]]
    ours = [t for t in tracebacks if any(p in t for p in our_code)]
    assert not ours, ours[0][:3000]
    (rows,) = trial_results(exp).values()
    stopped_at = rows[-1]["step"]
    assert stopped_at < STEPS

    second = resume_search(storage, name)
    assert second.returncode == 0, (second.stdout + second.stderr)[-4000:]
    (rows,) = trial_results(exp).values()
    steps = [r["step"] for r in rows]
    # Resumed from its checkpoint: the steps before the stop, then from at most one interval back (Ray
    # may have recorded the last report before its checkpoint was persisted), to the end.
    cut = steps.index(stopped_at) + 1
    before, after = steps[:cut], steps[cut:]
    assert steps[-1] == STEPS and after == sorted(set(after)), steps
    assert before == sorted(set(before)) and stopped_at - INTERVAL <= after[0] <= stopped_at + INTERVAL, steps
