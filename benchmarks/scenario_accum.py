"""Scenario: gradient accumulation, on one device and on several replicas (in a subprocess).

On the main strategy: our loop at k = 2 and 4 micro-batches per optimizer step, same micro-batch.
The multi-replica comparison needs logical CPU devices split before TensorFlow initialises, so it runs
in a fresh process (`throughput.py --accum-worker OUT`): ours k=1 and k=4 (one all-reduce per step),
Keras 3's design emulated (an all-reduce per micro-batch), and Keras' own `gradient_accumulation_steps`
under `model.fit` (recorded with its error when it fails).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import seed_style
import tensorflow as tf
from harness import Runner, log, paired, paired_summaries, run_group
from workload import Workload

from tpu_grapheme import distribute

K = 4  # micro-batches per optimizer step in the multi-replica comparison
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "throughput.py")


def runners(w: Workload, args) -> list[Runner]:
    return [w.custom(f"accum_k{k}", grad_accum=k, label=f"custom loop, accumulation k={k}") for k in (2, 4)]


def ratios(rs: dict[str, Runner], multi_replica: dict) -> dict[str, dict | None]:
    c = rs["custom_splN"]
    return {
        "accum_k2_vs_k1": paired(rs.get("accum_k2"), c),
        "accum_k4_vs_k1": paired(rs.get("accum_k4"), c),
        "mr_ours_k4_vs_keras_style_k4": paired_summaries(multi_replica, "ours_k4", "keras_style_k4"),
        "mr_ours_k4_vs_k1": paired_summaries(multi_replica, "ours_k4", "ours_k1"),
        "mr_keras_style_k4_vs_k1": paired_summaries(multi_replica, "keras_style_k4", "ours_k1"),
    }


def keras_style(w: Workload, k: int, *, label: str) -> Runner:
    """Keras 3's accumulation design emulated: every micro-batch's gradients all-reduced at once."""
    task, model, opt = w.pieces()
    acc = seed_style.AllReduceEveryMicroBatch(
        strategy=w.strategy,
        model=model,
        optimizer=opt,
        k=k,
        micro_batch=task.cfg.batch_size,
        head_weights=task.head_weights,
    )
    it = w.iterator(task)
    calls, per_call = w.calls(w.n)

    def window():
        for _ in range(calls):
            float(acc.loop(it, tf.constant(per_call)).numpy())

    return Runner(f"keras_style_k{k}", w.steps * w.global_batch * k, window, label)


def keras_native(w: Workload, k: int, *, windows: int) -> Runner:
    """model.fit with Keras 3's optimizer-side accumulation (all-reduce per micro-batch)."""
    label = f"model.fit + Keras gradient_accumulation_steps={k}"
    return w.fit(f"keras_native_k{k}", jit=False, spe=w.n, windows=windows, keras_accum=k, label=label)


def worker(args) -> list[Runner]:
    """Subprocess: our k-step accumulation vs Keras' designs on R logical CPU devices; JSON to a file."""
    strategy = distribute.resolve_strategy("cpu", cpu_replicas=args.replicas)
    r = strategy.num_replicas_in_sync
    args.batch_size = max(1, args.batch_size // r)  # same global micro-batch as the main run
    w = Workload(args, strategy)
    rs = [
        w.custom("ours_k1", label=f"ours k=1, {r} replicas"),
        w.custom(f"ours_k{K}", grad_accum=K, label=f"ours k={K} (one all-reduce per step), {r} replicas"),
        keras_style(w, K, label=f"Keras-style k={K} (all-reduce per micro-batch), {r} replicas"),
        # Keras 3's own `gradient_accumulation_steps`: recorded (it fails under MirroredStrategy in 3.15).
        keras_native(w, K, windows=args.repeats + 1),
    ]
    run_group(rs, args.repeats)
    out = {x.name: x.summary() for x in rs}
    out["replicas"] = r
    out["per_replica_batch"] = args.batch_size
    with open(args.accum_worker, "w") as f:
        json.dump(out, f)
    return rs


def run_subprocess(args, argv: list[str]) -> dict:
    """Run `worker` in a fresh process (logical CPU devices must be set before TF initialises)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "accum.json")
        cmd = [sys.executable, SCRIPT, *argv, "--accum-worker", out]
        log(f"multi-replica accumulation comparison in a subprocess ({args.replicas} logical CPU devices)")
        proc = subprocess.run(cmd, text=True, capture_output=True)
        for line in proc.stdout.splitlines():
            print(f"    accum| {line}", flush=True)
        if proc.returncode != 0 or not os.path.exists(out):
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            log("accumulation subprocess failed: " + " | ".join(tail))
            return {"error": " | ".join(tail)}
        with open(out) as f:
            return json.load(f)
