"""CLI `python -m tune.search`: Ray Tune + OptunaSearch + ASHA over a YAML space of TrainConfig fields.

    python -m tune.search --space cutmix.yaml                       # local Ray, synthetic default data
    python -m tune.search --space cutmix.yaml --set arch=tiny --steps 40 --trials 4   # a smoke run
    python -m tune.search --space optimizer --address auto --storage gs://bucket/tune   # a Ray cluster
    python -m tune.search --resume --storage gs://bucket/tune --name optimizer-20261125-120000

Everything that can be wrong with the input (space file, overrides, cluster resources, storage that
other nodes cannot see) is one `error: ...` line before any trial starts. At the end: a results table
(best first), `best.yaml` (a full TrainConfig for `python -m tpu_grapheme.train --config best.yaml`)
and `trials.png` (the metric per trial over steps) in the experiment dir.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import yaml
from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler

from tpu_grapheme.config import FIELDS, field_type, from_dict, unknown_field_error
from tpu_grapheme.errors import UserError, cli_main
from tune.results import TrialSummary, format_table, plot_trials, rank, summarize, write_best_yaml
from tune.space import SearchSpace, load_space, parse_space

SPEC_FILE = "tune_search.yaml"  # the resolved space, saved so that --resume needs no space file
DEFAULT_STORAGE = os.path.join("runs", "tune")
EXIT_INTERRUPTED = 130


# ------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tune.search", description=__doc__.split("\n")[0])
    p.add_argument("--space", help="space YAML: a path, or a shipped name (cutmix, mixup, optimizer)")
    p.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="fix a TrainConfig field"
    )
    p.add_argument("--steps", type=int, help="fix steps; rescales checkpoint_interval and ASHA unless given")
    p.add_argument("--trials", type=int, help="number of trials (overrides search.trials)")
    p.add_argument("--max-concurrent", type=int, help="trials running at once (overrides the space)")
    p.add_argument("--grace-period", type=int, help="ASHA grace period in steps (overrides the space)")
    p.add_argument("--seed", type=int, help="Optuna sampler seed (overrides the space)")
    p.add_argument("--resources", metavar="cpu=N,gpu=N,tpu=N|host", help="per-trial resources override")
    p.add_argument(
        "--storage", default=DEFAULT_STORAGE, help="experiment parent dir: local path, NFS or gs://"
    )
    p.add_argument("--name", help="experiment name (default: <space>-<timestamp>)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted experiment --name")
    p.add_argument("--address", help="join a running Ray cluster (host:port or auto); default: local Ray")
    p.add_argument(
        "--max-failures", type=int, default=2, help="retries of a crashed trial (from its checkpoint)"
    )
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance (default: all)")
    return p


def parse_sets(items: Sequence[str]) -> dict[str, Any]:
    """`--set field=value`: strings stay strings, other fields read the value as YAML (40, 1e-3, true)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UserError(f"--set needs FIELD=VALUE, got {item!r}")
        if key not in FIELDS:
            raise unknown_field_error(key)
        if field_type(key) is str or not raw.strip():
            out[key] = raw
            continue
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        out[key] = raw if isinstance(value, dict | list) or value is None else value
    return out


def parse_resources(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    out: dict[str, Any] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in ("cpu", "gpu", "tpu"):
            raise UserError(f"--resources takes cpu=N,gpu=N,tpu=N|host, got {text!r}")
        out[key] = value.strip()
    return out


def is_uri(path: str) -> bool:
    return "://" in path


def experiment_path(storage: str, name: str) -> str:
    return f"{storage.rstrip('/')}/{name}" if is_uri(storage) else os.path.join(storage, name)


# --- storage (local or a pyarrow filesystem URI) --------------------------------------------------
def _fs(path: str) -> tuple[Any, str]:
    import pyarrow.fs

    if is_uri(path):
        return pyarrow.fs.FileSystem.from_uri(path)
    return pyarrow.fs.LocalFileSystem(), os.path.abspath(path)


def write_text(path: str, text: str) -> None:
    fs, p = _fs(path)
    fs.create_dir(os.path.dirname(p), recursive=True)
    with fs.open_output_stream(p) as f:
        f.write(text.encode())


def read_text(path: str) -> str | None:
    import pyarrow.fs

    fs, p = _fs(path)
    if fs.get_file_info(p).type == pyarrow.fs.FileType.NotFound:
        return None
    with fs.open_input_stream(p) as f:
        return f.read().decode()


def save_spec(path: str, space: SearchSpace, *, name: str, max_failures: int) -> None:
    data = {"name": name, "source": space.source, "max_failures": max_failures, **space.to_yaml_dict()}
    write_text(f"{path}/{SPEC_FILE}", yaml.safe_dump(data, sort_keys=False))


def load_spec(path: str) -> tuple[SearchSpace, int]:
    text = read_text(f"{path}/{SPEC_FILE}")
    if text is None:
        raise UserError(f"nothing to resume: {path} holds no {SPEC_FILE} (check --storage and --name)")
    data = yaml.safe_load(text)
    source = data.pop("source", SPEC_FILE)
    max_failures = int(data.pop("max_failures", 0))
    data.pop("name", None)
    return parse_space(data, source=source), max_failures


# --- Ray cluster ----------------------------------------------------------------------------------
def connect(address: str | None, *, num_cpus: int | None = None) -> None:
    """Join `address`, or start a local Ray instance on this machine's CPUs."""
    import ray

    if address:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=True, runtime_env=_trial_env())
        except (ConnectionError, RuntimeError) as e:
            raise UserError(f"cannot join the Ray cluster at {address}: {str(e).splitlines()[0]}") from None
        return
    # Without an address ray.init() would join a cluster that `ray start` left on this machine (or
    # RAY_ADDRESS), where num_cpus is refused: say what to do instead.
    running = os.environ.get("RAY_ADDRESS") or _address_of_ray_start()
    if running:
        raise UserError(
            f"a Ray cluster is already running here ({running}, from `ray start` or RAY_ADDRESS): "
            "pass --address auto to search on it, or stop it (`ray stop`) for a private local search"
        )
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private local instance: no token needed
    ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, runtime_env=_trial_env())


def _trial_env() -> dict:
    """Trial processes keep TensorFlow's C++ info lines out of the console, as the train CLI does."""
    return {"env_vars": {"TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}}


def _address_of_ray_start() -> str | None:
    """The address `ray start` records for `ray.init()` on this machine (None: nothing running)."""
    try:
        from ray._private.utils import read_ray_address
    except ImportError:  # moved in another Ray version: let ray.init() decide
        return None
    return read_ray_address()


def alive_nodes() -> list[dict[str, Any]]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def trial_bundle(space: SearchSpace, nodes: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The per-trial bundle; an error now if no single node could ever run a trial."""
    tpu_hosts = [n["Resources"].get("TPU", 0) for n in nodes if n["Resources"].get("TPU", 0) > 0]
    if space.resources.tpu == "host" and not tpu_hosts:
        raise UserError("resources tpu=host, but no node in the Ray cluster advertises TPU chips")
    bundle = space.resources.bundle(host_tpu_chips=min(tpu_hosts) if tpu_hosts else 0)
    if not any(all(n["Resources"].get(k, 0) >= v for k, v in bundle.items()) for n in nodes):
        offer = "; ".join(
            ", ".join(f"{k}={v:g}" for k, v in sorted(n["Resources"].items()) if k in ("CPU", "GPU", "TPU"))
            for n in nodes
        )
        raise UserError(f"no Ray node can hold one trial's resources {bundle}; the nodes offer: {offer}")
    return bundle


def check_shared_storage(storage: str, nodes: Sequence[Mapping[str, Any]], *, sees: Any = None) -> None:
    """A multi-node search needs storage every node can see: gs:// (any URI), or a shared mount (NFS).

    A local path is checked, not assumed: the driver writes a marker file and every node looks for it
    (`sees(marker, nodes) -> [bool per node]`; default: a zero-CPU Ray task pinned to each node).
    """
    if is_uri(storage) or len(nodes) < 2:
        return
    sees = sees or (lambda path, ns: _on_each_node(os.path.exists, ns, path))
    marker = os.path.join(os.path.abspath(storage), f".shared_probe_{uuid.uuid4().hex}")
    os.makedirs(os.path.dirname(marker), exist_ok=True)
    with open(marker, "w") as f:
        f.write("probe\n")
    try:
        seen = sees(marker, nodes)
    finally:
        os.remove(marker)
    blind = [n["NodeManagerAddress"] for n, ok in zip(nodes, seen, strict=True) if not ok]
    if blind:
        raise UserError(
            f"--storage {storage} is a local path that node(s) {', '.join(blind)} cannot see: a multi-node "
            "search needs shared storage (gs://bucket/path, or an NFS mount at the same path on every node)"
        )


def describe_nodes(nodes: Sequence[Mapping[str, Any]]) -> str:
    """One line per node: id, address and the resources trials can ask for."""
    lines = []
    for n in nodes:
        res = ", ".join(f"{k}={v:g}" for k, v in sorted(n["Resources"].items()) if k in ("CPU", "GPU", "TPU"))
        lines.append(f"[tune] node {n['NodeID']} {n['NodeManagerAddress']}: {res}")
    return "\n".join(lines)


def _on_each_node(fn: Any, nodes: Sequence[Mapping[str, Any]], *args: Any, timeout: float = 600) -> list[Any]:
    """Run `fn(*args)` once on every node (zero CPUs asked, so busy nodes still answer)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    remote = ray.remote(num_cpus=0)(fn)
    refs = [
        remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
            *args
        )
        for n in nodes
    ]
    return ray.get(refs, timeout=timeout)


def _ensure_synthetic_here(fixed: Mapping[str, Any]) -> tuple[str, str]:
    from tpu_grapheme.synthetic_default import ensure_synthetic

    return tuple(ensure_synthetic(from_dict(fixed)))  # type: ignore[return-value]


def prepare_data(fixed: Mapping[str, Any], nodes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Synthetic default: build (or find cached) the data set once, before any trial, on every node.

    Trials get the resulting file patterns as fixed `train_folder`/`valid_folder`, so none regenerates.
    """
    cfg = from_dict(fixed)
    if not cfg.uses_synthetic:
        return dict(fixed)
    import ray

    t0 = time.time()
    train, valid = _ensure_synthetic_here(fixed)  # this (the driver's) node first
    here = ray.get_runtime_context().get_node_id()
    others = [n for n in nodes if n["NodeID"] != here]
    # then every other node, in parallel; a shared cache dir makes these instant
    if others and any(
        tuple(p) != (train, valid) for p in _on_each_node(_ensure_synthetic_here, others, dict(fixed))
    ):
        raise UserError(
            "the synthetic data set landed at different paths on different nodes; "
            "pass --set synthetic_dir=<a path that is the same on every node>"
        )
    print(f"[tune] synthetic data ready in {time.time() - t0:.0f}s: {train} | {valid}", flush=True)
    return {**fixed, "train_folder": train, "valid_folder": valid}


# --- Tuner ----------------------------------------------------------------------------------------
def _trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


def make_trainable(fixed: Mapping[str, Any], bundle: Mapping[str, float]) -> Any:
    import ray.tune

    from tune.trainable import train_trial

    fn = ray.tune.with_parameters(train_trial, fixed=dict(fixed))
    return ray.tune.with_resources(fn, ray.tune.PlacementGroupFactory([dict(bundle)]))


def build_searcher(space: SearchSpace) -> Any:
    from ray.tune.search.optuna import OptunaSearch

    common = {
        "space": space.optuna_space(),
        "metric": space.metric,
        "mode": space.mode,
        "points_to_evaluate": [dict(p) for p in space.points_to_evaluate] or None,
    }
    if space.sampler == "random":
        import optuna

        return OptunaSearch(sampler=optuna.samplers.RandomSampler(seed=space.seed), **common)
    return OptunaSearch(seed=space.seed, **common)


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


def build_scheduler(space: SearchSpace) -> ASHAScheduler | None:
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


def build_tuner(space: SearchSpace, trainable: Any, *, storage: str, name: str, max_failures: int) -> Any:
    import ray.tune

    scheduler = build_scheduler(space)
    tune_config = ray.tune.TuneConfig(
        metric=space.metric,
        mode=space.mode,
        search_alg=build_searcher(space),
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
        callbacks=[AshaRungState(scheduler)] if scheduler else None,
        verbose=1,
    )
    return ray.tune.Tuner(trainable, tune_config=tune_config, run_config=run_config)


# --- main -----------------------------------------------------------------------------------------
def _load(args: argparse.Namespace, storage: str) -> tuple[SearchSpace, str, int]:
    if args.resume:
        if not args.name:
            raise UserError("--resume needs --name (the experiment dir under --storage)")
        space, max_failures = load_spec(experiment_path(storage, args.name))
        return space, args.name, max_failures
    if not args.space:
        raise UserError("give --space (a YAML file or a shipped name: cutmix, mixup, optimizer) or --resume")
    space = load_space(args.space).with_overrides(
        sets=parse_sets(args.set),
        trials=args.trials,
        steps=args.steps,
        max_concurrent=args.max_concurrent,
        grace_period=args.grace_period,
        seed=args.seed,
        resources=parse_resources(args.resources),
    )
    name = args.name or f"{space.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if read_text(f"{experiment_path(storage, name)}/{SPEC_FILE}") is not None:
        raise UserError(
            f"experiment {name!r} already exists under {storage}: add --resume, or pick another --name"
        )
    return space, name, args.max_failures


def describe_space(space: SearchSpace) -> str:
    interval = space.fixed.get("checkpoint_interval", FIELDS["checkpoint_interval"].default)
    sched = (
        f"ASHA on step (grace {space.grace_period}, max_t {space.max_t}, factor {space.scheduler.reduction_factor:g})"
        if space.scheduler.name == "asha"
        else "no early stopping"
    )
    return (
        f"[tune] {space.name}: {space.trials} trials, {space.max_concurrent} at once, {space.mode} {space.metric}; "
        f"steps {space.steps}, a report every {interval}; {sched}; searching {', '.join(space.params) or 'nothing'}"
    )


def report(trials: list[TrialSummary], space: SearchSpace, out_dir: str) -> dict[str, Any]:
    """Print the table; write best.yaml and trials.png into `out_dir`."""
    print(format_table(trials, metric=space.metric, mode=space.mode), flush=True)
    out: dict[str, Any] = {"trials": len(trials), "stopped_early": sum(t.stopped_early for t in trials)}
    ranked = [t for t in rank(trials, space.mode) if t.steps]
    if ranked:
        best = ranked[0]
        out["best_yaml"] = write_best_yaml(best, space.fixed, os.path.join(out_dir, "best.yaml"))
        out["best_metric"] = best.best(space.mode)
        print(f"best {space.metric} = {out['best_metric']:.4f} (trial {best.trial_id}): {best.params}")
        print(f"best config: {out['best_yaml']}  (python -m tpu_grapheme.train --config {out['best_yaml']})")
    out["plot"] = plot_trials(
        trials, metric=space.metric, mode=space.mode, path=os.path.join(out_dir, "trials.png")
    )
    print(f"plot: {out['plot']}", flush=True)
    return out


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    storage = args.storage if is_uri(args.storage) else os.path.abspath(args.storage)
    space, name, max_failures = _load(args, storage)
    exp = experiment_path(storage, name)
    print(describe_space(space), flush=True)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the classic table reporter, with our columns
    # Checkpointing every eval with num_to_keep forces state snapshots; that is intended, not a problem.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

    import ray
    import ray.tune

    connect(args.address, num_cpus=args.num_cpus)
    try:
        nodes = alive_nodes()
        print(describe_nodes(nodes), flush=True)
        check_shared_storage(storage, nodes)
        bundle = trial_bundle(space, nodes)
        fixed = prepare_data(space.fixed, nodes)
        trainable = make_trainable(fixed, bundle)
        print(f"[tune] {name}: {len(nodes)} node(s), per trial {bundle}, experiment {exp}", flush=True)
        if args.resume:
            if not ray.tune.Tuner.can_restore(exp):
                raise UserError(
                    f"{exp} holds no restorable Ray Tune state (the first run ended before it began?)"
                )
            tuner = ray.tune.Tuner.restore(exp, trainable=trainable, resume_errored=True)
        else:
            save_spec(exp, space, name=name, max_failures=max_failures)
            tuner = build_tuner(space, trainable, storage=storage, name=name, max_failures=max_failures)
        grid = tuner.fit()
        trials = summarize(
            grid, metric=space.metric, param_names=list(space.params), target_steps=space.steps
        )
    finally:
        ray.shutdown()

    out_dir = exp if not is_uri(exp) else os.path.abspath(os.path.join(DEFAULT_STORAGE, name))
    report(trials, space, out_dir)
    pending = [t for t in trials if t.status not in ("TERMINATED", "ERROR")]
    if pending or len(trials) < space.trials:
        resume = f"python -m tune.search --resume --storage {storage} --name {name}"
        print(
            f"interrupted: {len(trials) - len(pending)} of {space.trials} trials ended; continue with: {resume}"
        )
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
