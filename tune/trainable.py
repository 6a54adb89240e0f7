"""The Ray Tune function trainable: one trial = one `run_training` call in the trial's own run dir.

Fixed values (including the shared data patterns the driver prepared) come bound through
`tune.with_parameters`; the sampled params come as the trial's `config`. After every evaluation the loop
calls `on_eval`, which reports the metrics plus `step` (ASHA's time axis) and a frozen copy of that
step's checkpoint. A retried or resumed trial gets the checkpoint of its last report back from
`ray.tune.get_checkpoint()`; it replaces `<run dir>/checkpoints` (`RunDir.restore_checkpoints`), where
`run_training` resumes from it by itself.

The run dir is `<experiment>/runs/trial_<id>` (`trial_run_dir`), on the experiment's storage and outside
Ray's trial dir (`get_trial_dir()`): Ray's experiment syncer copies the trial dirs on the driver's node
while they change, and a live run dir there (checkpoints rotated away, files renamed into place while it
copies) made that copy fail and lose the round's experiment state.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from typing import Any

from tpu_grapheme.config import TrainConfig
from tpu_grapheme.data import paths
from tpu_grapheme.errors import UserError
from tpu_grapheme.gfile_io import remove_tree
from tpu_grapheme.run_dir import RunDir
from tune.space import trial_config

RUNS = "runs"  # the experiment's subdir of trial run dirs, beside Ray's own trial_<id> dirs


def train_trial(
    config: dict[str, Any], *, fixed: Mapping[str, Any], shared_dir: str = "", tpu_slice: bool = False
) -> None:
    """Ray Tune function trainable (bind `fixed` etc. with `tune.with_parameters`)."""
    import ray
    import ray.tune

    logging.getLogger("ray.train").setLevel(logging.WARNING)  # one "checkpoint created" line per eval
    ctx = ray.tune.get_context()
    cfg = trial_config(fixed, config, **trial_run_dir(shared_dir, ctx.get_trial_id()))
    if cfg.workers > 1:
        train_multiworker_trial(cfg)
        return
    if tpu_slice:
        cfg = cfg.replace(strategy="tpu", tpu=slice_name(cfg.tpu))
    run_dir = RunDir(cfg.run_dir)
    checkpoint = ray.tune.get_checkpoint()
    if checkpoint is None:  # nothing reported yet: a retry starts afresh, not from an unreported save
        remove_tree(run_dir.checkpoints)
    elif run_dir.restore_checkpoints(checkpoint):
        print(
            f"[tune] trial {ctx.get_trial_name()}: resuming from the reported checkpoint ({checkpoint.path})"
        )
    if ray.get_gpu_ids():
        # Trials that share a machine's GPUs must not each grab all GPU memory up front. The variable
        # covers a TensorFlow that already initialised its GPUs (set before TensorFlow is imported).
        os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
        from tpu_grapheme.distribute import enable_gpu_memory_growth

        enable_gpu_memory_growth()

    from tpu_grapheme.loop import run_training

    where = {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}

    def on_eval(result: Any) -> None:
        metrics = {**result.metrics, "step": int(result.step), **where}
        # The checkpoint of this evaluation only, frozen: Ray persists the reported dir after `report` is
        # called, and the live checkpoints dir may by then hold a newer save or have rotated this one away.
        with tempfile.TemporaryDirectory() as frozen:
            run_dir.snapshot_checkpoint(int(result.step), frozen)
            ray.tune.report(metrics, checkpoint=ray.tune.Checkpoint.from_directory(frozen))

    run_training(cfg, on_eval=on_eval)


def trial_run_dir(shared_dir: str, trial_id: str) -> dict[str, str]:
    """The TrainConfig fields that put a trial's run dir at `<shared_dir>/runs/trial_<id>`."""
    if not shared_dir:
        raise ValueError("a trial needs the experiment dir (shared_dir) for its run dir")
    return {"output_dir": paths.join(shared_dir, RUNS), "run_name": f"trial_{trial_id}"}


def train_multiworker_trial(cfg: TrainConfig) -> None:
    """A trial that is itself a `cfg.workers`-worker Ray Train run, as Ray documents Tune + Train (v2):
    this function drives a Ray Train `DataParallelTrainer`; `TuneReportCallback` hands each report of
    worker 0 (the loop's metrics, `step` for ASHA, the path of the checkpoint Ray Train persisted) to Tune.
    The run dir is on the experiment's shared storage: a retried trial resumes from its checkpoints."""
    from ray.tune.integration.ray_train import TuneReportCallback

    from tpu_grapheme.multiworker import build_trainer

    build_trainer(cfg, report_checkpoints=True, callbacks=[TuneReportCallback()]).fit()


def slice_name(given: str) -> str:
    """The TPU slice this trial drives from its worker 0: Ray's pod name for this host, else `tpu`/$TPU_NAME.

    Per Google's TF-on-pod-slices recipe, the one TensorFlow process runs on worker 0 and reaches the other
    hosts through `TPUClusterResolver(tpu=<slice name>)`; TPU_LOAD_LIBRARY=0 keeps it off the local chips.
    """
    from ray.util.tpu import get_current_pod_name

    name = get_current_pod_name() or given or os.environ.get("TPU_NAME", "")
    if not name:
        raise UserError("this trial holds a TPU slice's head resource, but the host names no TPU slice")
    os.environ.setdefault("TPU_LOAD_LIBRARY", "0")
    return name
