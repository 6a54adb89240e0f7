"""What a user sees on the console of a search or a `--workers` run: no noise, and real errors.

`assert_quiet` is also applied to the captured output of the Ray tests that already run a search or a
2-worker training (test_search.py, test_multiworker.py); here only a search whose trial fails.
"""

from __future__ import annotations

import os
import pathlib
import re

from tests.tune import test_search
from tests.tune.conftest import search_cmd, start_logged

# Lines of TensorFlow, absl and Ray that a user cannot act on (tpu_grapheme/ray_quiet.py says why each
# came and where it stops now).
NOISE = {
    "TF oneDNN note": r"oneDNN custom operations are on",
    "TF cpu_feature_guard": r"cpu_feature_guard",
    "absl pre-init": r"All log messages before absl::InitializeLog\(\)",
    "Ray Train PlacementGroupCleaner": r"Failed to query Ray Train Controller actor state|PlacementGroupCleaner",
    "Ray Train PreemptionWatcher": r"PreemptionWatcher",
    "TF absl INFO": r"Sharding callback duration",
    "Ray Train report dump": r"TrainingReport\(",
    "TF deprecation (run_dir)": r"update_checkpoint_state",
}


def noise_in(text: str) -> dict[str, list[str]]:
    """Noise kind -> the first few lines of `text` that show it."""
    found = {}
    for kind, pattern in NOISE.items():
        lines = [line for line in text.splitlines() if re.search(pattern, line)]
        if lines:
            found[kind] = lines[:3]
    return found


def assert_quiet(text: str) -> None:
    assert not noise_in(text), noise_in(text)


def test_noise_patterns_match_the_lines_they_name():
    seen = [
        "(TrainController pid=1) I0000 00:00:1.1 3641 port.cc:153] oneDNN custom operations are on. You may",
        "(RayTrainWorker pid=2) WARNING: All log messages before absl::InitializeLog() is called are written",
        "(PlacementGroupCleaner pid=3) Failed to query Ray Train Controller actor state. State API may be",
        "(TrainController pid=1) [.. E 3563 3641] core_worker.cc:2465: Actor with class name: 'PreemptionWatcher'",
        "(RayTrainWorker pid=2) Sharding callback duration: 28 microseconds",
        "(RayTrainWorker pid=2) Reporting training result 2: TrainingReport(checkpoint=None, metrics={",
    ]
    assert len(noise_in("\n".join(seen))) == len(seen)
    assert noise_in("step 5/10  loss 14.7812\nerror: trial failed") == {}


FAILING_SEARCH = "metric: hierarchical_recall\ntrials: 1\nseed: 0\nscheduler: fifo\nresources: {cpu: 1}\n"


def test_a_failing_trial_shows_its_error_and_no_noise(ray_cluster, synthetic_dir, tmp_path):
    """One trial on the loopback cluster whose data path (set with `--set`) matches no file."""
    space = test_search.space_yaml(
        tmp_path, synthetic_dir, FAILING_SEARCH, "  max_lr: {loguniform: [1.0e-3, 1.0e-2]}\n", steps=5
    )
    missing = str(tmp_path / "no_such_data")
    cmd = search_cmd(
        *("--space", space, "--storage", str(tmp_path / "storage"), "--name", "fails"),
        *("--set", f"train_folder={missing}/train/*.tfrec", "--set", f"valid_folder={missing}/valid/*.tfrec"),
        *("--max-failures", "0", "--address", ray_cluster["address"]),
    )
    log = str(tmp_path / "search.log")
    proc = start_logged(cmd, log, ray_cluster["env"])
    try:
        rc = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = pathlib.Path(log).read_text()
    assert rc == 0, text[-4000:]  # a search ends with its trials' table, errored ones included
    # the trial's own error (its last line) on the console, and the trial marked as errored
    assert f"UserError: no TFRecord files match {os.path.join(missing, 'train')}" in text, text[-4000:]
    assert re.search(r"^\w+ .* error$", text, re.M), text[-4000:]
    assert_quiet(text)
    # not marked finished: `--resume` retries the errored trial
    assert not (tmp_path / "storage" / "fails" / "finished.txt").exists()
