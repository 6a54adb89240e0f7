"""Assemble the Ray Tune `Tuner` of a search: trainable with its resources, Optuna searcher, ASHA, reporter,
and the dashboards' writers (the Optuna study in an RDB storage, TensorBoard's HParams sessions).

Also `AshaRungState`, which keeps ASHA's rung records across `--resume` (Ray does not save them), and
`SettledStop`, which holds an interrupt until every reported checkpoint is registered.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Mapping
from typing import Any

from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler

from tpu_grapheme.config import from_dict
from tpu_grapheme.errors import UserError
from tune.space import SearchSpace

TRIAL_DRIVER_MEMORY = float(
    256 << 20
)  # bytes a multi-worker trial's driver process reserves (it asks no CPU)


def _trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"  # `results.summarize` reads the trial id back from this name


def make_trainable(fixed: Mapping[str, Any], bundle: Mapping[str, float], *, shared_dir: str = "") -> Any:
    """`train_trial` with the fixed values bound, asking for one `bundle` of resources per trial.

    Every trial's run dir lives under `shared_dir` (the experiment dir: `trainable.trial_run_dir`). A
    trial of `workers` > 1 is a Ray Train run (Ray's documented Tune + Train v2 composition: the trial
    function drives a Ray Train `DataParallelTrainer`): the trial itself asks for no CPU, each of its
    workers for `bundle`; the shared storage lets every worker's node see the run dir.
    A `TPU-<gen>-<chips>-head` in the bundle makes the trial drive that multi-host slice.
    """
    import ray.tune

    from tune.trainable import train_trial

    if from_dict(fixed).workers > 1:
        per_worker = {"cpus_per_worker": bundle.get("CPU", 0.0), "gpus_per_worker": bundle.get("GPU", 0.0)}
        fn = ray.tune.with_parameters(train_trial, fixed={**fixed, **per_worker}, shared_dir=shared_dir)
        return ray.tune.with_resources(fn, ray.tune.PlacementGroupFactory([{"memory": TRIAL_DRIVER_MEMORY}]))
    tpu_slice = any(k.endswith("-head") for k in bundle)
    fn = ray.tune.with_parameters(train_trial, fixed=dict(fixed), shared_dir=shared_dir, tpu_slice=tpu_slice)
    return ray.tune.with_resources(fn, ray.tune.PlacementGroupFactory([dict(bundle)]))


def build_searcher(space: SearchSpace, *, optuna_storage: str = "", study_name: str = "") -> Any:
    """Ray's `OptunaSearch`; with `optuna_storage` (an RDB URL) a `StudySearch` whose study named
    `study_name` lives there, for Optuna Dashboard."""
    from ray.tune.search.optuna import OptunaSearch

    common: dict[str, Any] = {
        "space": space.optuna_space(),
        "metric": space.metric,
        "mode": space.mode,
        "points_to_evaluate": [dict(p) for p in space.points_to_evaluate] or None,
    }
    if space.sampler == "random":
        import optuna

        common["sampler"] = optuna.samplers.RandomSampler(seed=space.seed)
    else:
        common["seed"] = space.seed
    if not optuna_storage:
        return OptunaSearch(**common)
    from tune.optuna_study import StudySearch, open_storage

    attrs = {"metric": space.metric, "space": space.source, "steps": space.steps}
    return StudySearch(
        storage=open_storage(optuna_storage),
        study_name=study_name,
        target_steps=space.steps,
        user_attrs=attrs,
        **common,
    )


class AshaRungState(Callback):
    """Checkpoints ASHA's rung records with the experiment: Ray saves the searcher's state and the
    callbacks' state, but not the scheduler's, so without this a `--resume`d search would compare
    resumed trials against empty rungs and stop none of them.

    Holds the scheduler itself; `Tuner.restore` unpickles both from one pickle, so they stay linked.
    """

    def __init__(self, scheduler: ASHAScheduler) -> None:
        self.scheduler = scheduler

    def get_state(self) -> dict[str, Any]:
        return {"rungs": [[[m, dict(rec)] for m, rec in b._rungs] for b in self.scheduler._brackets]}

    def set_state(self, state: dict[str, Any]) -> None:
        for bracket, saved in zip(self.scheduler._brackets, state.get("rungs", []), strict=False):
            for (_, recorded), (_, saved_recorded) in zip(bracket._rungs, saved, strict=False):
                recorded.update(saved_recorded)


class SettledStop(Callback):
    """Ray Tune's graceful stop (its SIGUSR1 handler), held until no trial is between a report and the
    registration of its checkpoint. Ray takes a reported checkpoint in two steps: it records the result
    (the trial's result.json row), then fetches the checkpoint in a `save` call; a stop between the two
    saved an experiment state whose last result was a step ahead of its checkpoint, and the resumed
    trial went one report back. `request` asks for the stop; `on_step_end` of the tuning loop raises it
    once every save is in (or after `TIMEOUT_S`). The state is the class's: `Tuner.restore` unpickles
    its own instance of the callback."""

    TIMEOUT_S = 30.0
    _requested_at: float | None = None
    _active = False

    @classmethod
    def request(cls) -> None:
        if not cls._active:  # an experiment started without this callback: stop at once
            signal.raise_signal(signal.SIGUSR1)
            return
        cls._requested_at = time.monotonic()

    def setup(self, **info: Any) -> None:
        SettledStop._active, SettledStop._requested_at = True, None

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        at = SettledStop._requested_at
        if at is None or (any(t.is_saving for t in trials) and time.monotonic() - at < self.TIMEOUT_S):
            return
        SettledStop._requested_at = None
        signal.raise_signal(signal.SIGUSR1)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        SettledStop._active = False


def build_scheduler(space: SearchSpace) -> ASHAScheduler | None:
    """ASHA on `step` (the trials' time axis), or None for FIFO."""
    if space.scheduler.name != "asha":
        return None
    return ASHAScheduler(
        time_attr="step",
        max_t=space.max_t,
        grace_period=space.grace_period,
        reduction_factor=space.scheduler.reduction_factor,
    )


def build_reporter(space: SearchSpace) -> Any:
    import ray.tune

    metrics = {
        "step": "step",
        space.metric: space.metric,
        "valid_loss": "valid_loss",
        "images_per_sec": "img/s",
    }
    return ray.tune.CLIReporter(
        metric_columns=metrics,
        parameter_columns=list(space.params),
        sort_by_metric=True,  # metric and mode come from TuneConfig
        max_report_frequency=30,
    )


def build_tuner(
    space: SearchSpace,
    trainable: Any,
    *,
    storage: str,
    name: str,
    max_failures: int,
    optuna_storage: str = "",
    hparams_dir: str = "",
) -> Any:
    """A new experiment `storage/name` (a resumed one comes from `Tuner.restore` instead).

    `optuna_storage`: an RDB URL for the study (named `name`); `hparams_dir`: a local dir for the HParams
    sessions. Both are kept with the experiment, so `--resume` goes on writing them."""
    import ray.tune

    from tune.hparams_log import HParamsLog

    scheduler = build_scheduler(space)
    callbacks: list[Any] = [SettledStop(), *([AshaRungState(scheduler)] if scheduler else [])]
    if hparams_dir:
        callbacks.append(HParamsLog(space, hparams_dir))
    tune_config = ray.tune.TuneConfig(
        metric=space.metric,
        mode=space.mode,
        search_alg=build_searcher(space, optuna_storage=optuna_storage, study_name=name),
        scheduler=scheduler,
        num_samples=space.trials,
        max_concurrent_trials=space.max_concurrent,
        reuse_actors=False,  # a fresh process per trial: it frees the TPU host / GPU memory when it ends
        trial_dirname_creator=_trial_dirname,
    )
    run_config = ray.tune.RunConfig(
        name=name,
        storage_path=storage,
        failure_config=ray.tune.FailureConfig(max_failures=max_failures),
        checkpoint_config=ray.tune.CheckpointConfig(num_to_keep=2),
        progress_reporter=build_reporter(space),
        callbacks=callbacks,
        verbose=1,
    )
    return ray.tune.Tuner(trainable, tune_config=tune_config, run_config=run_config)


def restore_tuner(exp: str, trainable: Any) -> Any:
    """The interrupted experiment at `exp`, its errored trials retried from their last checkpoint."""
    import ray.tune

    if not ray.tune.Tuner.can_restore(exp):
        raise UserError(f"{exp} holds no restorable Ray Tune state (the first run ended before it began?)")
    return ray.tune.Tuner.restore(exp, trainable=trainable, resume_errored=True)
