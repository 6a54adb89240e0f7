"""TF profiler trace of one timed window, reduced to time per TensorFlow op type (for throughput.py).

    python benchmarks/throughput.py --profile runs/profile   # traces of our loop and of tuned fit

The trace (`*.xplane.pb`, viewable in TensorBoard's profile tab) is kept under the directory; the
reduction sums every `name:OpType` event of the host planes, so two configurations that run the
same kernels show the same rows, and where their step times differ the table says which ops differ.
"""

from __future__ import annotations

import collections
import glob
import os
from collections.abc import Callable
from typing import TypeVar

import tensorflow as tf

T = TypeVar("T")


def capture(window: Callable[[], T], logdir: str) -> tuple[str, T]:
    """Run `window()` under the TF profiler: the path of the `.xplane.pb` it wrote, and what it returned."""
    os.makedirs(logdir, exist_ok=True)
    before = set(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))
    tf.profiler.experimental.start(logdir)
    try:
        result = window()
    finally:
        tf.profiler.experimental.stop()
    new = sorted(set(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)) - before)
    if not new:
        raise RuntimeError(f"the profiler wrote no trace under {logdir}")
    return new[-1], result


def op_times(xplane_path: str) -> dict[str, dict[str, float]]:
    """{op type: {"ms": summed duration over all threads, "count": events}} from one trace file."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(xplane_path, "rb") as f:
        space.ParseFromString(f.read())
    ms: collections.Counter = collections.Counter()
    count: collections.Counter = collections.Counter()
    for plane in space.planes:
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            for ev in line.events:
                name = names.get(ev.metadata_id, "")
                op_type = name.rsplit(":", 1)[1] if ":" in name else ""
                if not op_type or op_type[0] == " " or "::" in name:
                    continue  # only "scope/op:OpType" kernels: executor scopes and calls would count twice
                ms[op_type] += ev.duration_ps / 1e9
                count[op_type] += 1
    return {k: {"ms": ms[k], "count": count[k]} for k in sorted(ms, key=ms.get, reverse=True)}


def per_step(table: dict[str, dict[str, float]], steps: int, top: int = 15) -> dict[str, dict[str, float]]:
    """The `top` op types by time, divided by the steps of the window."""
    return {k: {"ms": v["ms"] / steps, "count": v["count"] / steps} for k, v in list(table.items())[:top]}
