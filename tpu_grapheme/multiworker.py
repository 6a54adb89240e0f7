"""One training on N Ray Train workers (`--workers N`): the same `run_training` in every worker process.

Ray Train's `DataParallelTrainer` starts the workers (one per `ScalingConfig` bundle, on any nodes of the
cluster) and `tf_config.TFConfig` sets `TF_CONFIG` in each; `distribute.resolve_strategy` then builds a
MultiWorkerMirroredStrategy from it. Every worker reads its own input shard (the input context of
`distribute_datasets_from_function`), the step all-reduces once per optimizer step, and only the chief
(world rank 0) writes the run dir. When a worker dies, Ray Train restarts the whole group (up to
`max_failures` times) and `run_training` resumes from the run dir's last checkpoint: the run dir must be
on storage every node sees, which is checked before any worker starts.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

from tpu_grapheme import ray_cluster
from tpu_grapheme.config import TrainConfig, from_dict, to_dict
from tpu_grapheme.data import paths
from tpu_grapheme.errors import UserError
from tpu_grapheme.resume_check import check_resume, multiworker_replicas
from tpu_grapheme.run_dir import RunDir

RUN_NAME = "train"  # the Ray Train run's name under `<run_dir>/ray_train`
# Ray Train 2.60 logs a `TrainingReport(...)` dump at INFO for every report, from a logger named by its
# file's path (`logging.getLogger(__file__)` in ray/train/v2/_internal/execution/context.py): outside
# `ray.train`, so `LoggingConfig(log_level)` does not reach it, and it propagates to the INFO root logger.
_REPORT_MODULE = "ray.train.v2._internal.execution.context"


def worker_loop(config: dict[str, Any]) -> None:
    """Ray Train's per-worker function: `run_training` under MultiWorkerMirroredStrategy; every worker
    reports each evaluation to Ray Train (a report is collective), rank 0 with the run's checkpoint dir
    when `report_checkpoints` (a search trial) asks for it."""
    # Ray Train sets the worker's root logger to INFO: TensorFlow's absl records (a "Sharding callback
    # duration" line per checkpoint save) and per-step collective lines would reach the console.
    for name in ("tensorflow", "absl", _module_file(_REPORT_MODULE)):
        logging.getLogger(name).setLevel(logging.WARNING)
    import ray.train

    from tpu_grapheme import run_end
    from tpu_grapheme.loop import run_training

    run_end.DRIVER_PRINTS = True  # `train_multiworker` ends the run, from what the workers reported

    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    cfg = from_dict(config["cfg"]).replace(strategy="multiworker")
    print(f"[worker {rank}/{ctx.get_world_size()}] pid {os.getpid()}", flush=True)

    def log(message: str) -> None:
        if rank == 0:
            print(message, flush=True)

    def on_eval(result: Any) -> None:
        metrics = {**result.metrics, "step": int(result.step)}
        if rank != 0 or not config.get("report_checkpoints"):
            ray.train.report(metrics, checkpoint=None)
            return
        # The checkpoint of this evaluation only, frozen and local (the run dir may be a URI): Ray persists
        # it during `report`, while the live checkpoints dir moves on.
        with tempfile.TemporaryDirectory() as frozen:
            RunDir(cfg.run_dir).snapshot_checkpoint(int(result.step), frozen)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(frozen))

    run_training(cfg, on_eval=on_eval, log=log)


def _module_file(module: str) -> str:
    """The path a module's `logging.getLogger(__file__)` is named by ("" if it is not there)."""
    import importlib.util

    spec = importlib.util.find_spec(module)
    return (spec.origin or "") if spec else ""


def scaling_config(cfg: TrainConfig) -> Any:
    """`cfg.workers` workers, each reserving `cpus_per_worker` CPUs and `gpus_per_worker` GPUs."""
    from ray.train import ScalingConfig

    resources = {"CPU": cfg.cpus_per_worker}
    if cfg.gpus_per_worker:
        resources["GPU"] = cfg.gpus_per_worker
    return ScalingConfig(
        num_workers=cfg.workers, use_gpu=cfg.gpus_per_worker > 0, resources_per_worker=resources
    )


def build_trainer(
    cfg: TrainConfig, *, report_checkpoints: bool = False, callbacks: Sequence[Any] = ()
) -> Any:
    """The Ray Train trainer of `cfg`: its state under `<run_dir>/ray_train`, `max_failures` restarts."""
    from ray.train import FailureConfig, LoggingConfig, RunConfig
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    from tpu_grapheme.tf_config import TFConfig

    return DataParallelTrainer(
        worker_loop,
        backend_config=TFConfig(),
        train_loop_config={"cfg": to_dict(cfg), "report_checkpoints": report_checkpoints},
        scaling_config=scaling_config(cfg),
        run_config=RunConfig(
            name=RUN_NAME,
            storage_path=RunDir(cfg.run_dir).ray_train,
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            callbacks=list(callbacks) or None,
            # Ray Train's own INFO records (a `TrainingReport(...)` dump per report, worker-group starts)
            # stay in its log files under the Ray session dir; its warnings and errors still show.
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )


def shared_config(cfg: TrainConfig, nodes: Sequence[dict[str, Any]], *, tag: str = "[train]") -> TrainConfig:
    """`cfg` ready for workers on `nodes`: an absolute output dir every node sees (checked), and the
    synthetic default built once on every node (its patterns fixed), before any worker starts."""
    output_dir = cfg.output_dir if paths.is_uri(cfg.output_dir) else os.path.abspath(cfg.output_dir)
    ray_cluster.check_shared_storage(output_dir, nodes, flag="--output-dir", what="multi-worker training")
    return from_dict(
        {
            **ray_cluster.prepare_data(
                to_dict(cfg), nodes, tag=tag, rendered=cfg.effective_rendered_share > 0
            ),
            "output_dir": output_dir,
        }
    )


def train_multiworker(cfg: TrainConfig, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """`python -m tpu_grapheme.train --workers N [--address A]`: join or start Ray, check, train; returns
    the last metrics the workers reported."""
    import ray

    from tpu_grapheme import run_end

    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")  # worker lines as printed, not as log records
    # the run dir's resume, refused before Ray starts (the chief logs any note)
    check_resume(cfg, RunDir(cfg.run_dir), replicas=multiworker_replicas(cfg), log=lambda _: None)
    ray_cluster.connect(cfg.address or None, what="training")
    try:
        ray_cluster.check_resources(cfg.workers, cpus=cfg.cpus_per_worker, gpus=cfg.gpus_per_worker)
        nodes = ray_cluster.alive_nodes()
        cfg = shared_config(cfg, nodes)
        log(
            f"[train] {cfg.workers} Ray Train workers x {cfg.cpus_per_worker:g} CPU"
            + (f" + {cfg.gpus_per_worker:g} GPU" if cfg.gpus_per_worker else "")
            + f" on {len(nodes)} node(s); run dir {cfg.run_dir}; up to {cfg.max_failures} restart(s)"
        )
        try:
            result = build_trainer(cfg).fit()
        except Exception as e:  # a worker's error, after the restarts: one line, the cause in the log above
            raise UserError(failure_message(e, cfg.max_failures)) from None
    finally:
        ray.shutdown()
    run = RunDir(cfg.run_dir)
    history = run.read_history()
    # Ray Train v2 keeps the metrics of checkpointed reports only; the run's history has every evaluation.
    metrics = dict(result.metrics or {}) or (history[-1] if history else {})
    for line in run_end.closing_lines(metrics, history=history, best_model=run.best_model, cfg=cfg):
        log(line)
    return metrics


def failure_message(error: BaseException, max_failures: int) -> str:
    """One line for a `fit` that raised: which worker died or failed, and the restarts used. Ray Train
    raises a `WorkerGroupError` only once a group failure exceeds `FailureConfig(max_failures)`, so then
    all `max_failures` restarts were used. A died worker is named before the others: when one rank dies,
    the rest fail in their next collective (TensorFlow's `CollectiveReduceV2`), which says nothing."""
    failures = getattr(error, "worker_failures", None) or {}
    if not failures:
        return f"multi-worker training failed: {type(error).__name__}: {_last_line(error)}"
    died = sorted(rank for rank, e in failures.items() if _worker_died(e))
    if died:
        what = f"worker {', '.join(map(str, died))} died (its process ended)"
    else:
        rank, cause = min(failures.items())
        what = f"worker {rank} failed: {type(cause).__name__}: {_last_line(cause)}"
    used = (
        f"after {max_failures} restart(s) of the worker group, all that --max-failures {max_failures} allows"
    )
    return f"multi-worker training failed: {what}; {used} (the workers' log above has the details)"


def _worker_died(error: BaseException) -> bool:
    """Ray's sign of a dead worker process (kill -9, OOM, a lost node): a `RayActorError`, which Ray
    Train wraps in a `WorkerHealthCheckFailedError`."""
    from ray.exceptions import RayActorError

    return isinstance(getattr(error, "health_check_failure", error), RayActorError)


def _last_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[-1][:300]
