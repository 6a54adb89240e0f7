"""Same command, same result: two `--deterministic` runs of the train CLI give bit-identical weights.

Each run is its own process: op determinism is process-wide, and a second run in one process would
share its RNG state and compiled functions.
"""

from __future__ import annotations

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import tpu_grapheme.model  # noqa: F401  (registers the custom layers before loading)
from tests.shard_fixtures import tiny_shard_dirs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def patterns(tmp_path_factory) -> tuple[str, str]:
    # Many small shards: without --deterministic the parallel interleave's order varies, and two runs
    # of this very command end with different weights (seen twice in two tries when this was written).
    return tiny_shard_dirs(str(tmp_path_factory.mktemp("shards")), rows=120, valid=24, shard_mb=0.2)


def _train(patterns: tuple[str, str], out: str) -> subprocess.Popen:
    flags = {
        "train-folder": patterns[0],
        "valid-folder": patterns[1],
        "arch": "tiny",
        "resize": "32,56",
        "batch-size": 16,
        "steps": 8,
        "steps-per-loop": 4,
        "checkpoint-interval": 8,
        "log-interval": 4,
        "mixup-alpha": 0.4,
        "cutmix-alpha": 1.0,
        "dropout": 0.2,
        "shuffle-buffer": 64,
        "output-dir": out,
        "run-name": "run",
    }
    argv = [sys.executable, "-m", "tpu_grapheme.train", "--deterministic"]
    argv += [a for k, v in flags.items() for a in (f"--{k}", str(v))]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_two_deterministic_runs_give_bit_identical_weights(patterns, tmp_path):
    runs = [str(tmp_path / name) for name in ("a", "b")]
    procs = [_train(patterns, out) for out in runs]  # side by side: each pays a TensorFlow import
    for proc in procs:
        log, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, log[-3000:]
    a, b = (keras.models.load_model(os.path.join(r, "run", "model_final.keras")) for r in runs)
    for wa, wb in zip(a.weights, b.weights, strict=True):
        assert np.array_equal(np.asarray(wa), np.asarray(wb)), wa.path
