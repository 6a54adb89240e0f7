"""What may change when a run dir is resumed, and the check that refuses the rest before any work.

A run dir holds one run: resuming it with another model, input size, data set, batch, optimizer or
precision would either fail deep in TensorFlow (a shape mismatch) or, worse, train on silently and
overwrite the run's models. `check_resume` compares the new config with the run dir's `config.yaml`
and `model_meta.json` and raises one `UserError` naming every field that differs. The fields that may
change are declared once here (`MAY_CHANGE`, `SAME_REPLICAS`); `--help` and the README list them.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Mapping
from typing import Any

from tpu_grapheme.config import FIELDS, TrainConfig
from tpu_grapheme.data import paths
from tpu_grapheme.errors import UserError
from tpu_grapheme.run_dir import RunDir, meta_layout

# Fields a resume may change freely: how the run is executed, logged and checkpointed, not what it computes.
MAY_CHANGE: Mapping[str, str] = {
    "steps": "any value >= the checkpoint's step (the lr schedule then spans the new total)",
    "log_interval": "progress lines only",
    "checkpoint_interval": "when evaluations and checkpoints happen",
    "eval_batches": "how much of the validation split an evaluation reads",
    "keep_checkpoints": "how many checkpoints are kept",
    "steps_per_loop": "steps per host call, not the steps themselves",
    "cache_mb": "memory only: the same images in the same order",
    "skip_corrupt": "what a corrupt record does (the corrupt-shard error says to resume with it)",
    "jit_compile": "how the step is compiled, not what it computes",
    "jit_augment": "how MixUp/CutMix are compiled",
    "output_dir": "names the run dir, which is the one being resumed",
    "output_suffix": "names the run dir",
    "run_name": "names the run dir",
    "address": "which Ray cluster the workers run on",
    "cpus_per_worker": "what Ray reserves per worker",
    "max_failures": "restarts of the worker group",
}
# Where the replicas run: may change while the replica count (so the global batch) stays the same.
SAME_REPLICAS = ("strategy", "cpu_replicas", "tpu", "workers", "gpus_per_worker")
# The data set: compared as the (train, valid) patterns they name, the synthetic default's included.
DATA_FIELDS = ("train_folder", "valid_folder", "synthetic_dir", "synthetic_rows")
HOW = "pass a new --run-name or --output-dir to start another run"


def refused_fields() -> tuple[str, ...]:
    """Every TrainConfig field a resume must keep as the run dir recorded it (the data set aside)."""
    free = set(MAY_CHANGE) | set(SAME_REPLICAS) | set(DATA_FIELDS)
    return tuple(name for name in FIELDS if name not in free)


def help_text(width: int = 100) -> str:
    """The `--help` paragraph on resuming, generated from the declaration above (wrapped, no flag split)."""
    free = [n for n in MAY_CHANGE if n != "steps"]
    text = (
        "Resuming: the same command again (same --output-dir/--run-name) resumes the run dir's last "
        "checkpoint. A resume may change --steps (not below the checkpoint's step; the lr schedule then "
        f"spans the new total), {_flags(free)}; and {_flags(SAME_REPLICAS)} while the replica count, "
        "so the global batch, stays the same. Any other flag or another data set is refused before any "
        f"work, naming the field: {HOW}."
    )
    return textwrap.fill(text, width=width, break_on_hyphens=False, break_long_words=False)


def _flags(names: Any) -> str:
    return ", ".join("--" + n.replace("_", "-") for n in names)


def data_patterns_of(cfg: TrainConfig) -> tuple[str, str]:
    """(train, valid) patterns `cfg` trains on, without building anything; local paths made absolute."""
    if cfg.train_folder:
        train, valid = cfg.train_folder, cfg.valid_folder
    else:
        from tpu_grapheme.data.synthetic_default import synthetic_patterns

        train, valid = synthetic_patterns(rows=cfg.synthetic_rows, seed=cfg.seed, root=cfg.synthetic_dir)
    return _absolute(train), _absolute(valid)


def _absolute(path: str) -> str:
    return path if paths.is_uri(path) else os.path.abspath(os.path.expanduser(path))


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) or "empty"
    return repr(value)


def config_changes(old: TrainConfig, new: TrainConfig) -> dict[str, tuple[str, str]]:
    """Refused differences between the recorded and the new config: name -> (run dir's, new), shown."""
    changes = {
        name: (_show(getattr(old, name)), _show(getattr(new, name)))
        for name in refused_fields()
        if getattr(old, name) != getattr(new, name)
    }
    old_data, new_data = data_patterns_of(old), data_patterns_of(new)
    if old_data != new_data:
        changes["data set"] = ("train={} valid={}".format(*old_data), "train={} valid={}".format(*new_data))
    return changes


def meta_changes(meta: Mapping[str, Any] | None, new: TrainConfig) -> dict[str, tuple[str, str]]:
    """Differences between `model_meta.json` and what `new` would train: model input, and the data set's
    heads and class counts (data rewritten under the same patterns). Data that cannot be read is left
    to the run's own error."""
    if not meta:
        return {}
    changes: dict[str, tuple[str, str]] = {}
    for name in ("arch", "resize", "resize_method"):
        if name not in meta:
            continue
        old = tuple(meta[name]) if name == "resize" else meta[name]
        if old != getattr(new, name):
            changes[name] = (_show(old), _show(getattr(new, name)))
    try:
        layout, counts = _data_heads(data_patterns_of(new)[0])
    except (UserError, OSError):
        return changes
    if "heads" in meta and meta_layout(dict(meta)) != layout:
        changes["heads"] = (",".join(meta_layout(dict(meta)).names), ",".join(layout.names))
    elif counts is not None and meta.get("class_counts") not in (None, counts):
        changes["data set"] = ("its training class counts", "other class counts under the same patterns")
    return changes


def _data_heads(pattern: str) -> tuple[Any, dict[str, list[int]] | None]:
    """The heads the training shards' manifests declare and their summed class counts (None: unknown)."""
    from tpu_grapheme.data.manifest import layout_of, read_manifest
    from tpu_grapheme.data.shards import list_shards

    files = list_shards(pattern)
    layout = layout_of(files)
    manifests = [read_manifest(d) for d in sorted({paths.dirname(f) for f in files})]
    if not all(m and "class_counts" in m and "combination_counts" in m for m in manifests):
        return layout, None  # the run counted its labels itself (older manifests): nothing to compare
    counts = {n: [0] * k for n, k in zip(layout.names, layout.num_classes, strict=True)}
    for m in manifests:
        for name, row in m["class_counts"].items():
            counts[name] = [a + int(b) for a, b in zip(counts.get(name, []), row, strict=False)]
    return layout, counts


def check_resume(
    cfg: TrainConfig,
    run_dir: RunDir,
    *,
    replicas: int | None = None,
    log: Callable[[str], None] = print,
) -> int | None:
    """Refuse, in one `UserError`, a resume of `run_dir` that would train another run than it holds;
    returns the checkpoint's step (None: nothing to resume, any config starts afresh). `replicas`: the
    new run's replica count, compared with the one the run dir recorded (None: not known yet)."""
    latest = run_dir.latest_checkpoint()
    if latest is None:
        return None
    step = run_dir.checkpoint_step(latest) or 0
    old, meta = run_dir.read_config(), run_dir.read_meta()
    changes = config_changes(old, cfg) if old is not None else {}
    for name, diff in meta_changes(meta, cfg).items():
        changes.setdefault(name, diff)
    recorded = (meta or {}).get("replicas")
    if replicas is not None and recorded is not None and int(recorded) != replicas:
        changes["replicas"] = (f"{recorded} (global batch {_batch(cfg, recorded)})", _replicas(cfg, replicas))
    if changes:
        was = ", ".join(f"{k}={a}" for k, (a, _) in changes.items())
        now = ", ".join(f"{k}={b}" for k, (_, b) in changes.items())
        raise UserError(f"{run_dir.path} holds a run with {was}; this command asks for {now}: {HOW}")
    if cfg.steps < step:
        raise UserError(
            f"{run_dir.path} holds a checkpoint at step {step}, past --steps {cfg.steps}; nothing is trained "
            f"or rewritten: pass --steps {step} or more to continue it, or {HOW}"
        )
    if old is not None and old.steps != cfg.steps and cfg.schedule != "constant":
        log(
            f"resume: --steps {old.steps} -> {cfg.steps}: the learning-rate schedule now spans {cfg.steps} steps"
        )
    return step


def _batch(cfg: TrainConfig, replicas: Any) -> int:
    return cfg.batch_size * int(replicas) * cfg.grad_accum


def _replicas(cfg: TrainConfig, replicas: int) -> str:
    return f"{replicas} (global batch {_batch(cfg, replicas)})"


def multiworker_replicas(cfg: TrainConfig) -> int:
    """Replicas of a `--workers N` run as the driver can tell before any worker starts: one per worker
    on CPUs, one per whole GPU a worker reserves."""
    return cfg.workers * max(1, int(cfg.gpus_per_worker))
