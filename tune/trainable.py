"""The Ray Tune function trainable: one trial = one `run_training` call in the trial's own directory.

Fixed values (including the shared data patterns the driver prepared) come bound through
`tune.with_parameters`; the sampled params come as the trial's `config`. After every evaluation the loop
calls `on_eval`, which reports the metrics plus `step` (ASHA's time axis) and the loop's checkpoint dir.
A retried or resumed trial gets that checkpoint back from `ray.tune.get_checkpoint()`; it is copied into
`cfg.run_dir/checkpoints`, where `run_training` resumes from it by itself.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from typing import Any

from tpu_grapheme.run_dir import RunDir
from tune.space import trial_config


def restore_checkpoint(checkpoint: Any, run_dir: str) -> str | None:
    """Replace `run_dir/checkpoints` with the contents of a Ray checkpoint (None: nothing to restore)."""
    if checkpoint is None:
        return None
    dest = RunDir(run_dir).checkpoints
    shutil.rmtree(dest, ignore_errors=True)  # a crash may have left newer, unreported files behind
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    checkpoint.to_directory(dest)
    return dest


def train_trial(config: dict[str, Any], *, fixed: Mapping[str, Any]) -> None:
    """Ray Tune function trainable (bind `fixed` with `tune.with_parameters`)."""
    import ray
    import ray.tune

    logging.getLogger("ray.train").setLevel(logging.WARNING)  # one "checkpoint created" line per eval
    ctx = ray.tune.get_context()
    cfg = trial_config(fixed, config, output_dir=ctx.get_trial_dir())  # the run lives in the trial's dir
    restored = restore_checkpoint(ray.tune.get_checkpoint(), cfg.run_dir)
    if restored:
        print(f"[tune] trial {ctx.get_trial_name()}: resuming from the reported checkpoint ({restored})")
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
        checkpoint = ray.tune.Checkpoint.from_directory(result.checkpoint_dir)
        ray.tune.report(metrics, checkpoint=checkpoint)

    run_training(cfg, on_eval=on_eval)
