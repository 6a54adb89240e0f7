"""Scenario: one more window of our loop and of the best tuned fit under the TF profiler.

Each traced window is reduced to wall time and op time per step, and the top op types per step
(`profile_ops`), so a gap between the two loops shows up as the kernels that differ.
"""

from __future__ import annotations

import os

import profile_ops
from harness import Runner, best, log


def profile_runners(rs: dict[str, Runner], logdir: str, *, steps: int) -> dict:
    """One traced window of `custom_splN` and of the best tuned fit: wall time and op time per step."""
    out = {}
    for r in (rs["custom_splN"], best(rs, "fit_spe", "fit_spe_jit")):
        if r.error:
            continue
        path, seconds = profile_ops.capture(r.timed, os.path.join(logdir, r.name))
        table = profile_ops.op_times(path)
        out[r.name] = {
            "trace": path,
            "ms_per_step": 1000 * seconds / steps,
            "op_ms_per_step": sum(v["ms"] for v in table.values()) / steps,
            "top_ops_per_step": profile_ops.per_step(table, steps),
        }
        log(f"profiled {r.name}: {out[r.name]['ms_per_step']:.1f} ms/step, trace {path}")
    return out
