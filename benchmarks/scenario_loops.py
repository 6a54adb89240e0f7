"""Scenario: our custom loop against Keras `model.fit`, the tf-helper-bot loop and mixed precision.

The same model, data and global batch under each driver: our `TrainStep.train_loop` at 1 and N steps
per call (and the other XLA setting with the jit probe), `model.fit` with default and tuned settings,
the seed's one-`strategy.run`-per-call loop, and our loop under the mixed precision policies.
"""

from __future__ import annotations

import seed_style
from harness import Runner, best, paired
from workload import Workload


def custom_runners(w: Workload, *, jit_probe: bool) -> list[Runner]:
    auto = "on" if w.auto_jit else "off"
    rs = [
        w.custom("custom_spl1", spl=1, label=f"custom loop, steps_per_loop 1 (jit {auto})"),
        w.custom("custom_splN", label=f"custom loop, steps_per_loop {w.n} (jit {auto})"),
    ]
    if jit_probe:
        other = "off" if w.auto_jit else "on"
        rs.append(
            w.custom(
                "custom_splN_jit_alt",
                jit_compile="off" if w.auto_jit else "on",
                label=f"custom loop, steps_per_loop {w.n} (jit {other})",
            )
        )
    return rs


def fit_runners(w: Workload, *, jit_probe: bool, windows: int) -> list[Runner]:
    """fit with Keras defaults, and tuned (steps_per_execution N; jit off, and on with the probe)."""
    rs = [
        w.fit("fit_default", jit="auto", spe=1, windows=windows, label="model.fit, default settings"),
        w.fit("fit_spe", jit=False, spe=w.n, windows=windows, label=f"model.fit, spe {w.n}, jit off"),
    ]
    if jit_probe:
        rs.append(
            w.fit("fit_spe_jit", jit=True, spe=w.n, windows=windows, label=f"model.fit, spe {w.n}, jit on")
        )
    return rs


def helper_bot(w: Workload) -> Runner:
    """The tf-helper-bot loop: one `strategy.run` per Python call, loss fetched every step."""
    task, ss = w.seed_step()
    it = w.iterator(task, transform=seed_style.plain_targets)

    def window():
        for _ in range(w.steps):
            ss.helper_bot_step(it)

    return Runner("helper_bot_loop", w.steps * w.global_batch, window, "seed: tf-helper-bot loop")


def precision_runners(w: Workload, precisions: list[str]) -> list[Runner]:
    return [
        w.custom(f"precision_{p}", mixed_precision=p, label=f"custom loop, mixed {p}")
        for p in precisions
        if p != "float32"
    ]


def runners(w: Workload, args) -> list[Runner]:
    windows = args.repeats + 1 + bool(args.profile)  # fit runs exactly this many epochs
    return [
        *custom_runners(w, jit_probe=args.jit_probe),
        *fit_runners(w, jit_probe=args.jit_probe, windows=windows),
        helper_bot(w),
        *precision_runners(w, args.precisions),
    ]


def ratios(rs: dict[str, Runner]) -> dict[str, dict | None]:
    c = rs["custom_splN"]
    out = {
        "custom_vs_fit_default": paired(c, rs.get("fit_default")),
        "custom_vs_fit_tuned": paired(
            best(rs, "custom_splN", "custom_splN_jit_alt"), best(rs, "fit_spe", "fit_spe_jit")
        ),
        "splN_vs_spl1": paired(c, rs.get("custom_spl1")),
        "splN_vs_helper_bot": paired(c, rs.get("helper_bot_loop")),
    }
    for name, r in rs.items():
        if name.startswith("precision_"):
            out[f"{name}_vs_float32"] = paired(r, c)
    return out
