"""One training on 2 Ray Train workers (MultiWorkerMirroredStrategy) on the session's 2-node loopback cluster.

- The all-reduced gradient of 2 workers equals the union batch's gradient in one process; 2 workers x B
  train like one process x 2B (weights after a few AdamW steps); the workers' input shards are disjoint
  and cover the epoch.
- `python -m tpu_grapheme.train --workers 2 --deterministic`: a worker killed with SIGKILL after a
  checkpoint; Ray Train restarts the group, the run resumes from its last checkpoint and ends with the
  final model and last checkpoint of an uninterrupted run of the same command, to the bit (issue 20).
- A local run dir the other node cannot see is refused before training.
- `python -m tune.search --set workers=2`: two trials, one after the other, each a 2-worker Ray Train
  run whose reports (metrics, checkpoint path) reach Tune.
"""

from __future__ import annotations

import glob
import os
import pathlib
import re
import shutil
import signal
import sys
import tempfile
import time

import numpy as np
import pytest

from tests.tiny_runs import OLD_RECIPE
from tests.tune import multiworker_probe as probe
from tests.tune import test_search
from tests.tune.conftest import search_cmd, start_logged, trial_results, wait_for
from tests.tune.test_console import assert_quiet
from tpu_grapheme.config import from_dict
from tpu_grapheme.errors import UserError

KILL_STEPS = 20
INTERVAL = 5
TINY_RUN = {
    "arch": "tiny",
    "resize": "32,56",
    "batch-size": 8,
    "steps": KILL_STEPS,
    "checkpoint-interval": INTERVAL,
    "log-interval": INTERVAL,
    "steps-per-loop": INTERVAL,
    "eval-batches": 2,
    "warmup-frac": 0,
    "synthetic-rows": 100,
    "keep-checkpoints": 2,
    **{k.replace("_", "-"): v for k, v in OLD_RECIPE.items()},
}


def _reference_gradient(images: np.ndarray, labels: np.ndarray) -> tuple[list, list]:
    """(initial weights, gradient of the union batch) of the tiny model, in this process."""
    import tensorflow as tf

    from tpu_grapheme import augment, losses
    from tpu_grapheme.data.schema import BENGALI, NUM_CLASSES
    from tpu_grapheme.model import build_model

    cfg = from_dict(probe.SGD_ONE_STEP)
    model = build_model(arch=cfg.arch, input_shape=(*cfg.resize, 1), dropout=cfg.dropout, seed=cfg.seed)
    x, y = tf.constant(images[0]), tf.constant(labels[0])
    with tf.GradientTape() as tape:
        parts = losses.head_losses(
            augment.one_hot_targets(y, num_classes=NUM_CLASSES, label_smoothing=cfg.label_smoothing),
            model(x, training=True),
            global_batch_size=len(images[0]),
        )
        loss = losses.weighted_sum(parts, cfg.head_weights or BENGALI.metric_weights)
    grads = tape.gradient(loss, model.trainable_variables)
    return [v.numpy() for v in model.trainable_variables], [g.numpy() for g in grads]


def test_two_workers_allreduce_and_train_like_one_process_with_the_union_batch(
    ray_driver, synthetic_dir, tmp_path
):
    from ray.train import ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    from tpu_grapheme.data.synthetic_default import data_patterns

    per_worker = 4
    sgd_data = probe.union_batches(1, 2 * per_worker, seed=1)
    adamw_data = probe.union_batches(4, 2 * per_worker, seed=2)
    train_pattern, _ = data_patterns(from_dict({"synthetic_rows": 100, "synthetic_dir": synthetic_dir}))
    out = tmp_path / "probe"
    out.mkdir()
    trainer = TensorflowTrainer(
        probe.worker,
        train_loop_config={
            "sgd_data": sgd_data,
            "adamw_data": adamw_data,
            "pattern": train_pattern,
            "out": str(out),
        },
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
        run_config=__import__("ray").train.RunConfig(storage_path=str(tmp_path / "ray_train"), name="probe"),
    )
    trainer.fit()
    ranks = [np.load(out / f"rank{r}.npz") for r in (0, 1)]

    # Input: two pipelines with distinct ids; one epoch's shards are disjoint and together the whole set.
    assert [tuple(r["pipelines"]) for r in ranks] == [(2, 0, 1), (2, 1, 0)]  # (pipelines, id, chief)
    h0, h1 = (list(r["hashes"]) for r in ranks)
    everything = probe.record_hashes(train_pattern, None)
    assert not set(h0) & set(h1) and sorted(h0 + h1) == sorted(everything)

    # (a) SGD, one step from the same initial weights: each worker's weights moved by the all-reduced
    # gradient (the step's one all-reduce, inside apply_gradients) x lr x (1 + momentum) (Nesterov's first step).
    from tpu_grapheme.optimizers import SGD_MOMENTUM

    w0, grad = _reference_gradient(*sgd_data)
    n = len(w0)
    for r in ranks:
        scale = float(r["sgd_lr"]) * (1 + SGD_MOMENTUM)
        allreduced = [(w0[i] - r[f"sgd{i}"]) / scale for i in range(n)]
        diff = max(float(np.max(np.abs(a - g))) for a, g in zip(allreduced, grad, strict=True))
        print(f"all-reduced gradient vs union-batch gradient: max abs diff {diff:.2e}")
        assert diff < 1e-5

    # (b) 2 workers x 4 rows vs one process x 8 rows, four AdamW steps: the same weights.
    import tensorflow as tf

    single, _ = probe.train_steps(tf.distribute.get_strategy(), from_dict(probe.ADAMW_STEPS), *adamw_data)
    for r in ranks:
        diff = max(float(np.max(np.abs(r[f"adamw{i}"] - w))) for i, w in enumerate(single))
        print(f"2 workers x 4 vs 1 process x 8 after 4 AdamW steps: max abs weight diff {diff:.2e}")
        assert diff < 1e-5


def _train(ray_cluster, synthetic_dir, tmp_path, name: str, *extra: str) -> tuple:
    """Start `train --workers 2` on the loopback cluster into `<tmp_path>/<name>/mw`: (process, log path)."""
    flags = [f"--{k}={v}" for k, v in TINY_RUN.items()]
    cmd = [
        *(sys.executable, "-m", "tpu_grapheme.train"),
        *flags,
        *extra,
        *("--workers", "2", "--address", ray_cluster["address"]),
        *("--synthetic-dir", synthetic_dir, "--output-dir", str(tmp_path / name), "--run-name", "mw"),
    ]
    log = str(tmp_path / f"{name}.log")
    return start_logged(cmd, log, ray_cluster["env"]), log


def _kill_worker_1(proc, log: str, history: pathlib.Path) -> tuple[int, str, int, float]:
    """SIGKILL worker 1 of a running `train --workers 2` once `history` (the first checkpoint) exists.
    Returns (exit code, log text, the killed pid, seconds from the kill to the end)."""
    try:
        wait_for(history.exists, timeout=600, what="the first checkpoint", proc=proc)

        def worker_pid():
            found = re.findall(r"\[worker 1/2\] pid (\d+)", pathlib.Path(log).read_text())
            return int(found[0]) if found else None

        victim = wait_for(worker_pid, timeout=60, what="worker 1's pid", proc=proc)
        t_kill = time.time()
        os.kill(victim, signal.SIGKILL)
        rc = proc.wait(timeout=600)
        elapsed = time.time() - t_kill
    finally:
        if proc.poll() is None:
            proc.kill()
    return rc, pathlib.Path(log).read_text(), victim, elapsed


def _private_dirs(pid: int) -> list[str]:
    from tpu_grapheme.run_dir import WORKER_CKPT_PREFIX

    return glob.glob(os.path.join(tempfile.gettempdir(), f"{WORKER_CKPT_PREFIX}{pid}_*"))


# Under --deterministic; each worker reserves half a CPU, so the uninterrupted reference run trains on the
# 2-CPU loopback cluster at the same time as the run whose worker is killed (and as its restarted group).
EXACT = ("--deterministic", "--cpus-per-worker", "0.5", "--max-failures", "2")


def _final_weights(run: pathlib.Path) -> dict[str, np.ndarray]:
    """Every variable of the run's `model_final.keras`, read from its weights file (no model rebuilt)."""
    import io
    import zipfile

    import h5py

    with zipfile.ZipFile(run / "model_final.keras") as z:
        weights = h5py.File(io.BytesIO(z.read("model.weights.h5")), "r")
    out: dict[str, np.ndarray] = {}
    weights.visititems(
        lambda name, obj: out.update({name: obj[()]}) if isinstance(obj, h5py.Dataset) else None
    )
    return out


def _checkpoint_tensors(run: pathlib.Path) -> dict[str, np.ndarray]:
    """Every tensor of the run's last checkpoint (model, optimizer slots, step, RNG states, ...) by name,
    except the count of saves this process made and the object graph."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(run / "checkpoints")))
    names = [
        n for n in reader.get_variable_to_shape_map() if not n.startswith(("save_counter", "_CHECKPOINTABLE"))
    ]
    return {n: reader.get_tensor(n) for n in names}


def test_killed_worker_restarts_the_group_and_the_run_ends_bit_identical_to_an_uninterrupted_one(
    ray_cluster, synthetic_dir, tmp_path
):
    proc, log = _train(ray_cluster, synthetic_dir, tmp_path, "runs", *EXACT)
    straight, straight_log = _train(ray_cluster, synthetic_dir, tmp_path, "straight", *EXACT)
    output = tmp_path / "runs"
    history = output / "mw" / "history.json"
    try:
        rc, text, victim, elapsed = _kill_worker_1(proc, log, history)
        straight_rc = straight.wait(timeout=600)
    finally:
        if straight.poll() is None:
            straight.kill()
    assert rc == 0, text[-4000:]
    assert straight_rc == 0, pathlib.Path(straight_log).read_text()[-4000:]
    starts = list(dict.fromkeys(re.findall(r"\[worker 0/2\] pid (\d+)", text)))  # Ray may echo a line twice
    resumed = re.findall(r"resumed from \S+ckpt-(\d+) at step (\d+)", text)
    print(f"worker-group starts {len(starts)}, resumed at {resumed}, kill -> end {elapsed:.0f}s")
    assert len(starts) == 2  # one restart of the group, in new processes
    assert resumed and INTERVAL <= int(resumed[-1][1]) < KILL_STEPS
    assert "resumed from" not in pathlib.Path(straight_log).read_text()
    assert (output / "mw" / "model_final.keras").stat().st_size > 1000
    assert f"step {KILL_STEPS}/{KILL_STEPS}" in text
    assert_quiet(text)  # `--workers 2`, one worker killed: its death is shown, no noise
    last = text.strip().splitlines()[-1]  # the run ends as a single-process run does
    best = output / "mw" / "model_best.keras"
    assert last.startswith(f"next: python -m tpu_grapheme.inference --model-paths {best}")
    import json

    steps = [row["step"] for row in json.loads(history.read_text())]
    assert steps == sorted(set(steps)) and steps[-1] == KILL_STEPS
    # The killed worker could not delete its private checkpoint dir; the restarted group's did.
    assert not _private_dirs(victim)

    # The restarted group ends where the uninterrupted run ends, to the bit: the final model and every
    # tensor of the last checkpoint (optimizer slots, step, loss scale, RNG states).
    reference, restarted = tmp_path / "straight" / "mw", output / "mw"
    want, got = _final_weights(reference), _final_weights(restarted)
    assert sorted(want) == sorted(got) and len(want) >= 10
    for name, value in want.items():
        assert np.array_equal(value, got[name]), name
    want, got = _checkpoint_tensors(reference), _checkpoint_tensors(restarted)
    assert sorted(want) == sorted(got) and any("optimizer" in n for n in want)
    for name, value in want.items():
        assert np.array_equal(value, got[name]), name


def test_killed_worker_with_no_restarts_left_is_one_line_naming_the_death(
    ray_cluster, synthetic_dir, tmp_path
):
    proc, log = _train(ray_cluster, synthetic_dir, tmp_path, "runs", "--max-failures", "0")
    rc, text, victim, _ = _kill_worker_1(proc, log, tmp_path / "runs" / "mw" / "history.json")
    assert rc == 2, text[-4000:]
    last = text.strip().splitlines()[-1]
    assert last == (
        "error: multi-worker training failed: worker 1 died (its process ended); after 0 restart(s) of "
        "the worker group, all that --max-failures 0 allows (the workers' log above has the details)"
    ), text[-4000:]
    left = _private_dirs(victim)  # no restart, so no next start to remove the killed worker's dir
    assert left, "the killed worker made no private checkpoint dir"
    for path in left:
        shutil.rmtree(path)


def test_local_run_dir_the_other_node_cannot_see_is_refused_before_training(tmp_path):
    from tpu_grapheme import multiworker

    nodes = [
        {"NodeID": "a", "NodeManagerAddress": "10.0.0.1", "Alive": True, "Resources": {"CPU": 1}},
        {"NodeID": "b", "NodeManagerAddress": "10.0.0.2", "Alive": True, "Resources": {"CPU": 1}},
    ]
    cfg = from_dict({"workers": 2, "output_dir": str(tmp_path)})
    from tpu_grapheme import ray_cluster

    real = ray_cluster.check_shared_storage
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            ray_cluster,
            "check_shared_storage",
            lambda *a, **k: real(*a, **k, sees=lambda marker, ns: [True, False]),
        )
        with pytest.raises(
            UserError,
            match=r"^--output-dir .* node\(s\) 10.0.0.2 cannot see: a multi-node "
            r"multi-worker training needs shared storage",
        ):
            multiworker.shared_config(cfg, nodes)


def test_search_whose_trials_are_two_worker_trainings(ray_cluster, synthetic_dir, tmp_path):
    """Two trials in turn on the 2-CPU loopback cluster; their workers take half a CPU each, so a CPU
    stays free for the next trial's worker group (the search refuses a plan that reserves every CPU).
    FIFO, so no trial is stopped early and both must end with every report and a final model."""
    interval = test_search.INTERVAL  # the space's checkpoint_interval: a report every `interval` steps
    storage, name, steps = str(tmp_path / "storage"), "mw", 2 * interval
    search = "metric: hierarchical_recall\ntrials: 2\nmax_concurrent: 1\nseed: 0\nscheduler: fifo\n"
    space = test_search.space_yaml(
        tmp_path, synthetic_dir, search, "  max_lr: {loguniform: [1.0e-3, 1.0e-2]}\n", steps=steps
    )
    cmd = search_cmd(
        *("--space", space, "--set", "workers=2", "--resources", "cpu=0.5"),
        *("--storage", storage, "--name", name, "--address", ray_cluster["address"]),
    )
    log = str(tmp_path / "search.log")
    proc = start_logged(cmd, log, ray_cluster["env"])
    try:
        rc = proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = pathlib.Path(log).read_text()
    assert rc == 0, text[-4000:]
    assert_quiet(text)  # trials of 2 Ray Train workers: no TensorFlow, absl or Ray Train noise
    exp = os.path.join(storage, name)
    results = trial_results(exp)
    assert len(results) == 2, text[-4000:]
    for rows in results.values():
        assert [row["step"] for row in rows] == [interval, steps]
        run = pathlib.Path(exp, "runs", f"trial_{rows[0]['trial_id']}")
        for row in rows:  # worker 0's checkpoint of that report, persisted by Ray Train in the run dir
            assert row["checkpoint_path"].startswith(str(run / "ray_train")), row["checkpoint_path"]
        assert (run / "model_final.keras").stat().st_size > 1000
    assert text.count("[worker 1/2]") >= 2  # each trial had a second worker
    import yaml

    assert yaml.safe_load(pathlib.Path(exp, "best.yaml").read_text())["workers"] == 2
