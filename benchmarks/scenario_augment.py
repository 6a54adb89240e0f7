"""Scenario: MixUp/CutMix inside our step against no augmentation and against the seed's host design.

`aug_on` mixes inside the step (`augment.mix_batch`); `aug_jit_kernels` compiles the kernels alone
(`jit_augment`, only when the step itself is not compiled); `seed_host_aug` mixes in tf.data on the
host after batching, with the same N-step in-graph loop, so only where the augmentation runs differs.
"""

from __future__ import annotations

import seed_style
import tensorflow as tf
from harness import Runner, paired
from workload import MIX, Workload


def seed_host_aug(w: Workload) -> Runner:
    """The seed's design by choice: its own step on (y, y[perm], lam) targets mixed on the host."""
    task, ss = w.seed_step()
    it = w.iterator(task, transform=lambda ds: seed_style.seed_mix_dataset(ds, **MIX))
    calls, per_call = w.calls(w.n)

    def window():
        for _ in range(calls):
            float(ss.loop(it, tf.constant(per_call)).numpy())

    return Runner("seed_host_aug", w.steps * w.global_batch, window, "seed: MixUp/CutMix in tf.data (host)")


def runners(w: Workload, args) -> list[Runner]:
    rs = [w.custom("aug_on", **MIX, label="custom loop + MixUp/CutMix in the step")]
    if not w.auto_jit:  # the kernels can be compiled on their own only when the step is not
        rs.append(
            w.custom(
                "aug_jit_kernels",
                **MIX,
                jit_augment=True,
                label="custom loop + MixUp/CutMix, kernels XLA-compiled alone",
            )
        )
    rs.append(seed_host_aug(w))
    return rs


def ratios(rs: dict[str, Runner]) -> dict[str, dict | None]:
    on = rs.get("aug_on")
    return {
        "aug_overhead": paired(on, rs["custom_splN"], lambda with_aug, without: without / with_aug - 1.0),
        "aug_jit_vs_nojit": paired(rs.get("aug_jit_kernels"), on),
        "ours_aug_vs_seed_host_aug": paired(on, rs.get("seed_host_aug")),
    }
