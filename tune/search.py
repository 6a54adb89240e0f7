"""CLI `python -m tune.search`: Ray Tune + OptunaSearch + ASHA over a YAML space of TrainConfig fields.

    python -m tune.search --space cutmix.yaml                       # local Ray, synthetic default data
    python -m tune.search --space cutmix.yaml --set arch=tiny --steps 40 --trials 4   # a smoke run
    python -m tune.search --space optimizer --address auto --storage gs://bucket/tune   # a Ray cluster
    python -m tune.search --resume --storage gs://bucket/tune --name optimizer-20261125-120000

While it runs and after, the search shows in Optuna Dashboard (`optuna-dashboard sqlite:///<experiment
dir>/optuna.db`, or the `--optuna-storage` URL) and TensorBoard's HParams tab (`tensorboard --logdir
<experiment dir>`). Everything that can be wrong with the input (space file, overrides, cluster resources, storage that
other nodes cannot see) is one `error: ...` line before any trial starts. At the end: a results table
(best first), `best.yaml` (a full TrainConfig for `python -m tpu_grapheme.train --config best.yaml`)
and `trials.png` (the metric per trial over steps) in the experiment dir.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import time
from collections.abc import Sequence
from typing import Any

from tpu_grapheme.cli_help import DefaultsFormatter
from tpu_grapheme.data import paths
from tpu_grapheme.errors import UserError, cli_main, run_and_exit
from tune import cluster, optuna_study, storage, tuner
from tune.hparams_log import HPARAMS_DIR
from tune.overrides import parse_resources, parse_sets, with_overrides
from tune.results import TrialSummary, format_table, plot_trials, rank, summarize, write_best_yaml
from tune.space import SearchSpace
from tune.space_yaml import load_space

EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tune.search", description=__doc__.split("\n")[0], formatter_class=DefaultsFormatter
    )
    p.add_argument(
        "--space",
        help="space YAML: a path, or a shipped name (cutmix, default, mixup, optimizer); required unless --resume",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="fix a TrainConfig field (repeatable)",
    )
    p.add_argument(
        "--steps",
        type=int,
        help="fix steps; rescales checkpoint_interval and ASHA unless given (default: the space's)",
    )
    p.add_argument("--trials", type=int, help="number of trials (default: the space's search.trials)")
    p.add_argument("--max-concurrent", type=int, help="trials running at once (default: the space's)")
    p.add_argument("--grace-period", type=int, help="ASHA grace period in steps (default: the space's)")
    p.add_argument("--seed", type=int, help="Optuna sampler seed (default: the space's)")
    p.add_argument(
        "--resources", metavar="cpu=N,gpu=N,tpu=N|host", help="per-trial resources (default: the space's)"
    )
    p.add_argument(
        "--storage", default=storage.DEFAULT_STORAGE, help="experiment parent dir: local path, NFS or gs://"
    )
    p.add_argument(
        "--optuna-storage",
        metavar="URL",
        help="Optuna RDB storage for the study that optuna-dashboard reads, e.g. "
        "postgresql://host/db (default: sqlite:///<experiment dir>/optuna.db)",
    )
    p.add_argument("--name", help="experiment name (default: <space>-<timestamp>)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted experiment --name")
    p.add_argument(
        "--address", help="join a running Ray cluster, host:port or auto (default: a local Ray instance)"
    )
    p.add_argument(
        "--max-failures", type=int, default=2, help="retries of a crashed trial (from its checkpoint)"
    )
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance (default: all)")
    return p


def _load(args: argparse.Namespace, root: str) -> tuple[SearchSpace, str, int]:
    """(space, experiment name, max_failures): from the experiment's spec when resuming, else the flags."""
    if args.resume:
        if not args.name:
            raise UserError("--resume needs --name (the experiment dir under --storage)")
        space, max_failures = storage.load_spec(storage.experiment_path(root, args.name))
        return space, args.name, max_failures
    if not args.space:
        raise UserError(
            "give --space (a YAML file or a shipped name: cutmix, default, mixup, optimizer) or --resume"
        )
    space = with_overrides(
        load_space(args.space),
        sets=parse_sets(args.set),
        trials=args.trials,
        steps=args.steps,
        max_concurrent=args.max_concurrent,
        grace_period=args.grace_period,
        seed=args.seed,
        resources=parse_resources(args.resources),
    )
    name = args.name or f"{space.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if storage.spec_exists(storage.experiment_path(root, name)):
        raise UserError(
            f"experiment {name!r} already exists under {root}: add --resume, or pick another --name"
        )
    return space, name, args.max_failures


def _optuna_url(args: argparse.Namespace, exp: str, local: str, name: str) -> str:
    """The study's storage URL: the one the experiment was started with, the flag's, or sqlite beside it."""
    if args.resume:
        if args.optuna_storage:
            raise UserError("--optuna-storage is fixed when a search starts; --resume keeps it")
        return storage.load_optuna_storage(exp)
    if not args.optuna_storage:
        return optuna_study.default_url(local)
    optuna_study.check_new_study(args.optuna_storage, name)
    return args.optuna_storage


def _tuner(
    resume: bool,
    space: SearchSpace,
    trainable: Any,
    root: str,
    name: str,
    max_failures: int,
    url: str,
    local: str,
) -> Any:
    """The interrupted experiment's Tuner, or a new one (its spec saved first, for `--resume`)."""
    exp = storage.experiment_path(root, name)
    if resume:
        return tuner.restore_tuner(exp, trainable)
    storage.save_spec(exp, space, name=name, max_failures=max_failures, optuna_storage=url)
    hparams_dir = os.path.join(local, HPARAMS_DIR)
    return tuner.build_tuner(
        space,
        trainable,
        storage=root,
        name=name,
        max_failures=max_failures,
        optuna_storage=url,
        hparams_dir=hparams_dir,
    )


def dashboards_hint(optuna_url: str, local: str) -> str:
    study = f"optuna-dashboard {optuna_url}" if optuna_url else ""
    return f"[tune] dashboards: {study + '  |  ' if study else ''}tensorboard --logdir {local} (HParams tab)"


def describe_space(space: SearchSpace) -> str:
    sched = (
        f"ASHA on step (grace {space.grace_period}, max_t {space.max_t}, factor {space.scheduler.reduction_factor:g})"
        if space.scheduler.name == "asha"
        else "no early stopping"
    )
    return (
        f"[tune] {space.name}: {space.trials} trials, {space.max_concurrent} at once, {space.mode} {space.metric}; "
        f"steps {space.steps}, a report every {space.checkpoint_interval}; {sched}; "
        f"searching {', '.join(space.params) or 'nothing'}"
    )


def report(
    trials: list[TrialSummary], space: SearchSpace, out_dir: str, *, partial: str = ""
) -> dict[str, Any]:
    """Print the table; write best.yaml (marked PARTIAL with `partial` when the search is unfinished) and
    trials.png into `out_dir`."""
    print(format_table(trials, metric=space.metric, mode=space.mode), flush=True)
    out: dict[str, Any] = {"trials": len(trials), "stopped_early": sum(t.stopped_early for t in trials)}
    ranked = [t for t in rank(trials, space.mode) if t.steps]
    if ranked:
        best = ranked[0]
        path = os.path.join(out_dir, "best.yaml")
        out["best_yaml"] = write_best_yaml(
            best, space.fixed, path, metric=space.metric, mode=space.mode, partial=partial
        )
        out["best_metric"] = best.best(space.mode)
        so_far = " so far" if partial else ""
        print(
            f"best{so_far} {space.metric} = {out['best_metric']:.4f} (trial {best.trial_id}): {best.params}"
        )
        print(f"best config: {out['best_yaml']}  (python -m tpu_grapheme.train --config {out['best_yaml']})")
    out["plot"] = plot_trials(
        trials, metric=space.metric, mode=space.mode, path=os.path.join(out_dir, "trials.png")
    )
    print(f"plot: {out['plot']}", flush=True)
    return out


class DropRayRestoreHint(logging.Filter):
    """Drops Ray Tune's "Resume experiment with: Tuner.restore(...)" warning (`ray.tune.tune` logs it when
    an interrupted `fit` returns): that is Ray's Python API, while this CLI prints its own `--resume`."""

    LOGGER = "ray.tune.tune"

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tuner.restore(" not in record.getMessage()


class StopLikeCtrlC:
    """SIGTERM (a preempted head VM, a scheduler's timeout) and Ctrl-C both take Ray Tune's graceful stop:
    the trials stop (each keeps the checkpoint of its last evaluation), the experiment state is saved,
    and `interrupted` tells `main` to print the `--resume` command (Ray marks interrupted trials
    TERMINATED in memory, so their statuses cannot tell). Ray's own SIGINT handler is switched off and
    its SIGUSR1 one (the same stop) raised instead, once every reported checkpoint is registered
    (`tuner.SettledStop`); a second signal stops at once. Installed just before
    `fit`, after TensorFlow and Ray are imported: TensorFlow's absl failure handler would otherwise dump
    a stack trace on SIGTERM and end the process."""

    def __init__(self) -> None:
        self.interrupted = False
        self._previous: dict[int, Any] = {}
        self._env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
        self._hint = DropRayRestoreHint()

    def __enter__(self) -> StopLikeCtrlC:
        logging.getLogger(DropRayRestoreHint.LOGGER).addFilter(self._hint)
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger(DropRayRestoreHint.LOGGER).removeFilter(self._hint)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        if self._env is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = self._env

    def _handle(self, signum: int, frame: Any) -> None:
        ray_stop = signal.getsignal(signal.SIGUSR1)
        if self.interrupted or not callable(ray_stop):  # a second signal, or Ray's loop not running yet
            raise KeyboardInterrupt(signal.Signals(signum).name)
        self.interrupted = True
        tuner.SettledStop.request()  # Ray's SIGUSR1 stop, once no trial's last checkpoint is in flight


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = args.storage if paths.is_uri(args.storage) else os.path.abspath(args.storage)
    storage.check_storage(args.storage)
    space, name, max_failures = _load(args, root)
    cluster.check_local(space, args.num_cpus, address=args.address)
    exp = storage.experiment_path(root, name)
    local = exp if not paths.is_uri(exp) else os.path.abspath(os.path.join(storage.DEFAULT_STORAGE, name))
    optuna_url = _optuna_url(args, exp, local, name)
    if args.resume and (done := storage.finished(exp)):
        print(f"[tune] nothing to resume: {name} has finished ({done})")
        return 0
    print(describe_space(space), flush=True)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the classic table reporter, with our columns
    # Checkpointing every eval with num_to_keep forces state snapshots; that is intended, not a problem.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

    import ray

    cluster.connect(args.address, num_cpus=args.num_cpus)
    try:
        nodes = cluster.alive_nodes()
        print(cluster.describe_nodes(nodes), flush=True)
        cluster.check_shared_storage(root, nodes)
        bundle = cluster.trial_bundle(space, nodes)
        fixed = cluster.prepare_data(space.fixed, nodes, rendered=space.may_render)
        trainable = tuner.make_trainable(fixed, bundle, shared_dir=exp)
        print(f"[tune] {name}: {len(nodes)} node(s), per trial {bundle}, experiment {exp}", flush=True)
        print(dashboards_hint(optuna_url, local), flush=True)
        search = _tuner(args.resume, space, trainable, root, name, max_failures, optuna_url, local)
        with StopLikeCtrlC() as stop:
            grid = search.fit()
        trials = summarize(
            grid,
            metric=space.metric,
            param_names=list(space.params),
            target_steps=space.steps,
            early_stopping=space.scheduler.name == "asha",
        )
    finally:
        ray.shutdown()

    ended = sum(t.status in ("TERMINATED", "ERROR") for t in trials)  # interrupted ones are INTERRUPTED
    unfinished = stop.interrupted or ended < space.trials
    partial = f"the search was interrupted with {ended} of {space.trials} trials ended" if unfinished else ""
    out = report(trials, space, local, partial=partial and f"{partial}; --resume continues it")
    print(dashboards_hint(optuna_url, local), flush=True)
    if not unfinished and not any(t.status == "ERROR" for t in trials):
        best = f"; best config: {out['best_yaml']}" if "best_yaml" in out else ""
        storage.mark_finished(exp, f"all {space.trials} trials ended{best}")
    if unfinished:
        resume = f"python -m tune.search --resume --storage {root} --name {name}"
        print(f"interrupted: {ended} of {space.trials} trials ended; continue with: {resume}")
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    run_and_exit(main)
