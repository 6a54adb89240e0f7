"""`TrainConfig`: every training knob in one typed, validated, frozen dataclass.

The CLI, YAML search spaces and the Ray trainable all build this one class: one copy of each default.
Field metadata carries the CLI help; the lower layers' option classes take these field names without
defaults, and `options_for` fills them from a config."""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from tpu_grapheme.errors import UserError, did_you_mean
from tpu_grapheme.field_types import coerce
from tpu_grapheme.option_checks import (
    ARCHS,
    OPTIMIZERS,
    PRECISIONS,
    RESIZE_METHODS,
    SCHEDULES,
    STRATEGIES,
    check_decay_rule,
    check_fields,
    check_weights,
    flag,
)

T = TypeVar("T")

RANGER_LOOKAHEAD_SYNC = 6  # Lookahead's k for --optimizer ranger (when --lookahead-sync is 0)
# The embedded default's values that our own searches chose (tune/spaces/default.yaml: the decay;
# tune/spaces/default_unseen.yaml: the share, learning rate, EMA decay and label smoothing; tune/results/).
SEARCHED_RENDERED_SHARE = 0.4  # 51 of 128
SEARCHED_ADAMW_DECAY = 1.6e-4


def _f(default: Any, help: str, **extra: Any) -> Any:
    return dataclasses.field(default=default, metadata={"help": help, **extra})


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """One training run. Defaults are the embedded synthetic CPU default that `make train` runs."""

    # --- data -------------------------------------------------------------------------------
    train_folder: str = _f(
        "", "TFRecord file pattern for training (local or gs://); empty: synthetic default"
    )
    valid_folder: str = _f("", "TFRecord file pattern for validation; empty: synthetic default")
    synthetic_dir: str = _f("", "cache dir of the synthetic default data set", shown="~/.cache/tpu_grapheme")
    synthetic_rows: int = _f(16000, "rows rendered for the synthetic default (train + valid)")
    resize: tuple[int, int] = _f((56, 96), "H,W the images are resized to")
    resize_method: str = _f(
        "auto", f"{', '.join(RESIZE_METHODS)}; auto: bicubic when enlarging (the seed), area when shrinking"
    )
    shuffle_buffer: int = _f(4096, "shuffle buffer (images) of the training pipeline")
    cache_mb: int = _f(
        4096, "keep decoded, resized training images (uint8) in memory when they fit in this many MB; 0: off"
    )
    rendered_share: float = _f(
        -1.0,
        "share of each training micro-batch drawn from rendered images of valid grapheme combinations "
        f"absent from training, in other typefaces (the 1st place's idea); -1: {SEARCHED_RENDERED_SHARE} "
        "(searched) with the synthetic default or a --rendered-folder, else 0; 0: off",
    )
    rendered_folder: str = _f(
        "",
        "TFRecord pattern of those rendered images (python -m tpu_grapheme.data.render_unseen); empty: "
        "rendered once for the synthetic default (needed with --train-folder)",
    )
    skip_corrupt: bool = _f(
        False,
        "go on past corrupt TFRecord records (a shard is read up to its first bad record), counting the "
        "records lost in the log and history.json; off: stop with a checkpoint and name the shard",
    )
    # --- model ------------------------------------------------------------------------------
    arch: str = _f("small", f"backbone: {', '.join(ARCHS[:4])}, ..., b7, b0g..b7g (SE-gated heads)")
    dropout: float = _f(0.2, "dropout before the three heads (the seed used 0.5 for EfficientNet)")
    batch_norm: str = _f(
        "fused",
        "BatchNormalization's training kernel: fused (TF's FusedBatchNormV3, Keras' math in one pass) or "
        "keras (Keras' own ops: the figures of runs before the fused kernel, to the digit)",
    )
    weights: str = _f(
        "",
        "backbone weights (local or gs://; never downloaded): a Keras-applications or efficientnet-package "
        "(noisy-student) EfficientNet file, or one of our .keras models (warm start, heads too when they fit); "
        "none: random weights, also for a recipe that names weights_required",
    )
    weights_required: str = _f("", "a recipe's weights file: it needs --weights FILE or --weights none")
    grapheme_head: bool = _f(
        False,
        "add a fourth softmax over the grapheme combinations seen in training (the 2nd place's head); "
        "inference can mix it into the three heads (--grapheme-head-mix)",
    )
    # --- optimisation -----------------------------------------------------------------------
    batch_size: int = _f(128, "micro-batch size per replica (global batch = batch_size x replicas)")
    grad_accum: int = _f(1, "micro-batches accumulated per optimizer step")
    steps: int = _f(1000, "optimizer steps")
    optimizer: str = _f("adamw", f"one of {', '.join(OPTIMIZERS)} (ranger = RAdam + Lookahead)")
    radam: bool = _f(False, "seed flag: use RAdam (same as --optimizer radam)")
    max_lr: float = _f(1.3e-2, "peak learning rate (searched for the default)")
    weight_decay: float = _f(
        -1.0,
        "decoupled weight decay, applied as --weight-decay-rule says; "
        f"-1: the optimizer's default (adamw: {SEARCHED_ADAMW_DECAY:g}, searched; sgd: 1e-4 and "
        "radam/ranger/adam: 0, as the seed)",
    )
    weight_decay_rule: str = _f(
        "tfa",
        "tfa (the seed's tfa AdamW/SGDW): var -= wd * var every step, all variables, no lr factor; "
        "keras (Keras AdamW): var -= lr * wd * var, skipping biases and normalisation",
    )
    schedule: str = _f("cosine", f"lr schedule: {', '.join(SCHEDULES)}")
    warmup_frac: float = _f(0.2, "share of steps spent warming up linearly from 1e-6")
    final_lr_ratio: float = _f(1e-4, "cosine decays to max_lr x this")
    lookahead_sync: int = _f(
        0, f"Lookahead's k: > 0 wraps any optimizer (the seed's flag); 0: off, ranger {RANGER_LOOKAHEAD_SYNC}"
    )
    lookahead_alpha: float = _f(0.5, "Lookahead: slow-weights step alpha")
    ema_decay: float = _f(
        0.995, "weight EMA d: ema = d*ema + (1-d)*w per step (searched); evaluated and exported; 0: off"
    )
    ema_dynamic_decay: bool = _f(
        True,
        "EMA decay min(d, (1+n)/(10+n)) at update n (TF's num_updates rule): early averages follow the weights",
    )
    label_smoothing: float = _f(
        0.1, "label smoothing on the soft targets (searched for the default; the seed: 0)"
    )
    head_weights: tuple[float, ...] = _f(
        (), "loss weight per head (root,vowel,consonant); empty: the head layout's metric weights"
    )
    grapheme_head_weight: float = _f(1.0, "loss weight of the whole-grapheme head (with --grapheme-head)")
    # --- augmentation -----------------------------------------------------------------------
    mixup_alpha: float = _f(-1.0, "MixUp Beta(alpha, alpha) concentration; <= 0 disables")
    cutmix_alpha: float = _f(-1.0, "CutMix Beta(alpha, alpha) concentration; <= 0 disables")
    mix_prob: float = _f(1.0, "probability a batch is mixed at all (when an alpha > 0)")
    cutmix_share: float = _f(0.5, "when both alphas > 0: share of mixed batches that use CutMix")
    fold_lambda: bool = _f(
        True, "fold the mixing weight to max(lam, 1 - lam) (the seed); --no-fold-lambda: the papers' rule"
    )
    # --- numerics and execution -------------------------------------------------------------
    mixed_precision: str = _f("float32", f"{', '.join(PRECISIONS)}; auto: bfloat16 on TPU, float16 on GPU")
    loss_scale: float = _f(2.0**15, "initial dynamic loss scale (float16 only)")
    loss_scale_growth: int = _f(2000, "finite steps before the loss scale doubles (float16 only)")
    jit_compile: str = _f("auto", "XLA for the model step: auto (on for TPU/GPU, off on CPU), on, off")
    jit_augment: bool = _f(
        False,
        "XLA-compile MixUp/CutMix on their own when the step is not compiled (off: no consistent gain on "
        "a CPU, benchmarks/README.md; a compiled step includes them anyway)",
    )
    steps_per_loop: int = _f(50, "optimizer steps per tf.function call (host loop)")
    strategy: str = _f("auto", f"{', '.join(STRATEGIES)}; cpu splits the CPU into --cpu-replicas")
    cpu_replicas: int = _f(1, "logical CPU devices for --strategy cpu (tests a TPU's replica path)")
    tpu: str = _f("", "TPU name or 'local' for a TPU VM", shown="$TPU_NAME, else local")
    seed: int = _f(42, "seed for weights, data order and augmentation")
    deterministic: bool = _f(
        False,
        "same command, same weights (bit-identical on one machine): TensorFlow op determinism and a "
        "fixed-order input pipeline; costs images/s when input-bound, more on GPU (benchmarks/README.md); "
        "ops with no deterministic kernel raise",
    )
    # --- loop, logging, output --------------------------------------------------------------
    checkpoint_interval: int = _f(250, "steps between evaluation + checkpoint")
    log_interval: int = _f(50, "steps between progress lines")
    eval_batches: int = _f(0, "validation batches per evaluation (0: the whole split)")
    output_dir: str = _f("runs", "parent dir of the run dir (local or gs://)")
    output_suffix: str = _f("", "appended to the run name (seed flag)")
    run_name: str = _f("", "run dir name", shown="arch + resize + suffix, e.g. small_56x96")
    keep_checkpoints: int = _f(3, "checkpoints kept by the CheckpointManager")
    # --- several hosts (Ray Train) ----------------------------------------------------------
    workers: int = _f(
        1,
        "Ray Train workers of one training (MultiWorkerMirroredStrategy, one input shard each, only "
        "worker 0 writes the run dir); 1: train in this process",
    )
    address: str = _f("", "Ray cluster of the workers (host:port or auto); empty: a local Ray instance")
    cpus_per_worker: float = _f(1.0, "CPUs Ray reserves for each worker")
    gpus_per_worker: float = _f(0.0, "GPUs Ray reserves for each worker")
    max_failures: int = _f(
        2, "restarts of the worker group after a worker dies (resumes from the last checkpoint); -1: no limit"
    )

    def __post_init__(self) -> None:
        _coerce_fields(self)
        _validate(self)

    # --- derived ------------------------------------------------------------------------------
    @property
    def optimizer_name(self) -> str:
        """The optimizer actually used (`--radam` is the seed's spelling of `--optimizer radam`)."""
        return "radam" if self.radam and self.optimizer == "adamw" else self.optimizer

    @property
    def effective_weight_decay(self) -> float:
        """`weight_decay`, with -1 resolved: the searched value for adamw, 1e-4 for sgd, 0 for
        radam/ranger/adam (the seed)."""
        if self.weight_decay >= 0:
            return self.weight_decay
        return {"adamw": SEARCHED_ADAMW_DECAY, "sgd": 1e-4}.get(self.optimizer_name, 0.0)

    @property
    def effective_rendered_share(self) -> float:
        """`rendered_share`, with -1 resolved: the searched share where rendered images exist (the
        synthetic default renders its own; real data needs --rendered-folder) and it makes at least one
        image of a micro-batch, else 0."""
        if self.rendered_share >= 0:
            return self.rendered_share
        exists = self.rendered_folder or not self.train_folder
        return SEARCHED_RENDERED_SHARE if exists and round(SEARCHED_RENDERED_SHARE * self.batch_size) else 0.0

    @property
    def effective_lookahead_sync(self) -> int:
        """Lookahead's k (0: none): `lookahead_sync` on any optimizer, else ranger's own."""
        return self.lookahead_sync or (RANGER_LOOKAHEAD_SYNC if self.optimizer_name == "ranger" else 0)

    @property
    def weights_file(self) -> str:
        """The weights file to load, "" for random weights (`--weights none` or no `--weights`)."""
        return "" if self.weights.lower() == "none" else self.weights

    @property
    def run_dir(self) -> str:
        name = self.run_name or f"{self.arch}_{self.resize[0]}x{self.resize[1]}{self.output_suffix}"
        return os.path.join(self.output_dir, name)

    @property
    def uses_synthetic(self) -> bool:
        return not self.train_folder

    def replace(self, **changes: Any) -> TrainConfig:
        return from_dict({**to_dict(self), **changes})


# ------------------------------------------------------------------------------------------------
FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_HINTS = typing.get_type_hints(TrainConfig)


def field_type(name: str) -> Any:
    return _HINTS[name]


def _coerce_fields(cfg: TrainConfig) -> None:
    for name in FIELDS:
        object.__setattr__(cfg, name, coerce(getattr(cfg, name), _HINTS[name], flag(name)))


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise UserError(msg)


def _validate(c: TrainConfig) -> None:
    """Each field's range or choices (`option_checks`, shared with the option classes), then the
    checks that involve several fields."""
    check_fields(c)
    check_decay_rule(c.weight_decay_rule, c.effective_weight_decay)
    _check(not (c.radam and c.optimizer not in ("adamw", "radam")), "--radam contradicts --optimizer")
    check_weights(c.arch, c.weights, c.weights_file, c.weights_required)
    _check(
        c.workers == 1 or c.strategy in ("auto", "multiworker"),
        f"workers={c.workers} trains under the multiworker strategy, not --strategy {c.strategy}",
    )
    share = c.effective_rendered_share
    _check(
        not share or round(share * c.batch_size) >= 1,
        f"--rendered-share {share} puts no rendered image into a micro-batch of {c.batch_size}; "
        f"use at least {1 / c.batch_size:.3g} or 0 (off)",
    )
    _check(
        not share or c.rendered_folder or not c.train_folder,
        "--rendered-share with --train-folder needs --rendered-folder (python -m tpu_grapheme.data.render_unseen)",
    )
    _check(
        bool(c.train_folder) == bool(c.valid_folder),
        "give both --train-folder and --valid-folder, or neither (synthetic default)",
    )


# ------------------------------------------------------------------------------------------------
def unknown_field_error(name: str) -> UserError:
    return UserError(f"unknown TrainConfig field {name!r}{did_you_mean(name, FIELDS)}")


def field_name(key: Any) -> str:
    """The field a user's spelling names: YAML and CLI accept `max-lr` for `max_lr`."""
    return str(key).replace("-", "_")


def normalize_keys(values: Mapping[str, Any], *, unique: bool = False) -> dict[str, Any]:
    """`values` keyed by field name; an unknown key is an error with a hint. Two spellings of one field:
    the later wins, or (`unique`) an error.
    """
    out: dict[str, Any] = {}
    for k, v in values.items():
        key = field_name(k)
        if key not in FIELDS:
            raise unknown_field_error(str(k))
        if unique and key in out:
            raise UserError(f"field {key!r} appears twice")
        out[key] = v
    return out


def from_dict(values: Mapping[str, Any]) -> TrainConfig:
    """Build a config from plain values (YAML, Ray params); unknown keys are an error with a hint."""
    return TrainConfig(**normalize_keys(values))


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Plain YAML-able values (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


# The resolved values a lower layer takes instead of the raw field (`--radam`, weight decay -1).
RESOLVED = (
    "optimizer_name",
    "effective_weight_decay",
    "effective_lookahead_sync",
    "effective_rendered_share",
)


def options_for(cls: type[T], cfg: TrainConfig, **derived: Any) -> T:
    """An option class of a lower layer (`StepConfig`, `InputConfig`, ...) filled from `cfg`: each field
    takes the `TrainConfig` field (or resolved property) of its name, else a `derived` value (what the
    device or the data decide), else the class's own default. The one projection, so no layer repeats a
    default: a field found nowhere, a derived value for a config field or an unknown one is a TypeError.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if shadow := sorted(set(derived) & (set(FIELDS) | set(RESOLVED))):
        raise TypeError(f"{cls.__name__}: {', '.join(shadow)} come from the TrainConfig, not derived values")
    if unknown := sorted(set(derived) - set(fields)):
        raise TypeError(f"{cls.__name__} has no field {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        if name in FIELDS or name in RESOLVED:
            values[name] = getattr(cfg, name)
        elif name in derived:
            values[name] = derived[name]
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{name} is neither a TrainConfig field nor a derived value")
    return cls(**values)
