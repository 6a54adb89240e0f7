"""Pick the `tf.distribute.Strategy` (TPU, GPUs, one device, or a CPU split into N replicas) and precision.

`cpu` with N > 1 splits the host CPU into N logical devices under a MirroredStrategy: the same
multi-replica code path (per-replica batches, cross-replica reductions) a TPU's cores take, testable
without an accelerator. Logical devices are process-global and fixed once TensorFlow initialises them.

`multiworker` (and `auto` when $TF_CONFIG names more than one worker, as `tf_config`'s Ray Train backend
sets it) is a MultiWorkerMirroredStrategy: one process per host, one all-reduce per step across them.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os

import keras
import tensorflow as tf

from tpu_grapheme.errors import UserError

KINDS = ("auto", "tpu", "mirrored", "one", "cpu", "multiworker")
_AUTO_PRECISION = {"tpu": "bfloat16", "gpu": "float16", "cpu": "float32"}


def resolve_strategy(kind: str = "auto", *, tpu: str = "", cpu_replicas: int = 1) -> tf.distribute.Strategy:
    """Build the strategy `kind` names; `auto`: TPU if reachable, else GPUs, else the CPU.

    `auto` on a CPU-only machine honours `cpu_replicas` (default 1: the default strategy); with a
    $TF_CONFIG of several workers it is `multiworker`. Create it before any TensorFlow op runs.
    """
    if kind not in KINDS:
        raise UserError(f"strategy {kind!r} is not one of {', '.join(KINDS)}")
    if int(cpu_replicas) < 1:
        raise UserError(f"cpu_replicas must be >= 1, got {cpu_replicas}")
    if kind == "multiworker" or (kind == "auto" and tf_config_workers() > 1):
        return _multiworker_strategy()
    if kind == "tpu" or (kind == "auto" and (tpu or tpu_reachable())):
        return _tpu_strategy(tpu)
    gpus = tf.config.list_logical_devices("GPU") if kind in ("auto", "mirrored", "one") else []
    if kind == "mirrored":
        if not gpus:
            raise UserError("strategy mirrored needs GPUs and none were found (try --strategy cpu)")
        return tf.distribute.MirroredStrategy([d.name for d in gpus])
    if kind == "one" or (kind == "auto" and len(gpus) == 1):
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if kind == "auto" and gpus:
        return tf.distribute.MirroredStrategy([d.name for d in gpus])
    return _cpu_strategy(int(cpu_replicas))


def tf_config_workers() -> int:
    """How many worker tasks $TF_CONFIG's cluster names (0 without a TF_CONFIG)."""
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    except ValueError:
        raise UserError("TF_CONFIG is not valid JSON") from None
    return sum(len(cluster.get(job, [])) for job in ("chief", "worker"))


def _multiworker_strategy() -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy over $TF_CONFIG's workers: ring/NCCL all-reduce chosen by TensorFlow."""
    if tf_config_workers() < 1:
        raise UserError("strategy multiworker needs TF_CONFIG (Ray Train sets it: use --workers N)")
    return tf.distribute.MultiWorkerMirroredStrategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True in the one process that writes a run's files: the only one, or the multi-worker chief
    (task `chief`, else worker 0 when the cluster has no `chief` job)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or task_type in (None, "chief"):
        return True
    return task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().jobs


def tpu_reachable() -> bool:
    """A TPU is named in $TPU_NAME or this is a TPU VM (/dev/accel* or numbered /dev/vfio groups)."""
    if os.environ.get("TPU_NAME"):
        return True
    return bool(glob.glob("/dev/accel*")) or any(p.isdigit() for p in _listdir("/dev/vfio"))


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _tpu_strategy(name: str) -> tf.distribute.Strategy:
    """Connect to and initialise the TPU `name` (or $TPU_NAME, or 'local' on a TPU VM)."""
    name = name or os.environ.get("TPU_NAME", "") or "local"
    if name == "local" and not tpu_reachable():
        raise UserError(
            "no TPU found on this machine (no /dev/accel* or /dev/vfio); give --tpu NAME or set TPU_NAME"
        )
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=name)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    except UserError:
        raise
    except Exception as e:  # any failure to reach the TPU is the user's setup, not a bug: one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"cannot connect to TPU {name!r}: {type(e).__name__}: {first}") from None


def _cpu_strategy(replicas: int) -> tf.distribute.Strategy:
    """The default strategy for 1 replica, else a MirroredStrategy over `replicas` logical CPU devices."""
    if replicas == 1:
        return tf.distribute.get_strategy()
    cpu = tf.config.list_physical_devices("CPU")[0]
    with contextlib.suppress(RuntimeError):  # TF already initialised its devices: fine if the split matches
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
    devices = tf.config.list_logical_devices("CPU")
    if len(devices) != replicas:
        raise UserError(
            f"cannot split the CPU into {replicas} replicas: TensorFlow already initialised {len(devices)} "
            "CPU device(s) in this process; choose the strategy before any TensorFlow op runs"
        )
    return tf.distribute.MirroredStrategy(
        [d.name for d in devices], cross_device_ops=tf.distribute.ReductionToOneDevice()
    )


def device_kind(strategy: tf.distribute.Strategy) -> str:
    """'tpu', 'gpu' or 'cpu': the kind of device the strategy's replicas run on."""
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "tpu"
    try:
        devices = list(strategy.extended.worker_devices)
    except (AttributeError, RuntimeError):
        devices = []
    if not devices:  # the default strategy places ops on the first GPU if there is one
        return "gpu" if tf.config.list_logical_devices("GPU") else "cpu"
    names = " ".join(devices).upper()
    return "tpu" if "TPU" in names else "gpu" if "GPU" in names else "cpu"


def resolve_jit(mode: str, device_kind: str) -> bool:
    """XLA for the model step. auto: on for TPU (compiles everything anyway) and GPU; off on CPU, where
    XLA slows depthwise convolutions (benchmarks/README.md)."""
    if mode not in ("auto", "on", "off"):
        raise UserError(f"jit_compile {mode!r} is not one of auto, on, off")
    return mode == "on" or (mode == "auto" and device_kind in ("tpu", "gpu"))


def enable_gpu_memory_growth() -> int:
    """Let TF grow GPU memory on demand (Ray trials share a GPU); returns the number of GPUs seen."""
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        with contextlib.suppress(RuntimeError):  # already initialised: the setting can no longer change
            tf.config.experimental.set_memory_growth(gpu, True)
    return len(gpus)


def set_precision_policy(name: str, device_kind: str) -> str:
    """Resolve `auto` (bfloat16 on TPU, float16 on GPU, float32 on CPU), set the Keras global policy.

    Returns the resolved precision: 'float32', 'bfloat16' or 'float16' (the loop loss-scales float16).
    """
    if name not in ("auto", *_AUTO_PRECISION.values()):
        raise UserError(f"mixed_precision {name!r} is not one of auto, float32, bfloat16, float16")
    if device_kind not in _AUTO_PRECISION:
        raise UserError(f"device kind {device_kind!r} is not one of {', '.join(_AUTO_PRECISION)}")
    precision = _AUTO_PRECISION[device_kind] if name == "auto" else name
    keras.mixed_precision.set_global_policy("float32" if precision == "float32" else f"mixed_{precision}")
    return precision


def replica_local_sum(initial, *, name: str) -> tf.Variable:
    """A variable each replica updates locally (no communication) and that reads as the sum over replicas.

    Create inside `strategy.scope()`; `assign_add` in replica context, `read_value()` in cross-replica
    context gives the total: one aggregation per read instead of one per update.
    """
    return tf.Variable(
        initial,
        trainable=False,
        synchronization=tf.VariableSynchronization.ON_READ,
        aggregation=tf.VariableAggregation.SUM,
        name=name,
    )
