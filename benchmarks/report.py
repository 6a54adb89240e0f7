"""The report of `throughput.py`: ratio targets, FLOPs and MFU, the console table, JSON and a plot."""

from __future__ import annotations

import json
import math

import numpy as np
from harness import Runner, best

from tpu_grapheme.model import model_flops

TARGETS = {  # ratio name -> (comparison, bound)
    "custom_vs_fit_tuned": (">=", 1.05),
    "aug_overhead": ("<=", 0.03),
    "stall_share": ("<=", 0.02),
    "accum_k4_vs_k1": (">=", 0.97),
}


SMOKE_NOTE = (
    "SMOKE FIGURES (--quick): windows of a few steps on the tiny arch check that every configuration runs; "
    "they measure nothing and are not judged against the targets"
)


def check(name: str, value: float | None) -> bool | None:
    """Whether `value` meets the target of ratio `name` (None: no target, or no finite value)."""
    if name not in TARGETS or value is None or not math.isfinite(value):
        return None
    op, bound = TARGETS[name]
    return value >= bound if op == ">=" else value <= bound


def with_targets(
    ratios: dict[str, dict | None], best_pair: list[str], *, judge: bool = True
) -> dict[str, dict]:
    """Drop missing ratios; add the target and whether it is met; name the tuned pair compared.

    `judge=False` (`--quick`: windows of a few steps, smoke figures) keeps the target for reference but
    judges nothing: `met` is None."""
    out = {k: v for k, v in ratios.items() if v is not None}
    for name, v in out.items():
        v["best_pair"] = best_pair if name == "custom_vs_fit_tuned" else None
        if name in TARGETS:
            v["target"] = f"{TARGETS[name][0]} {TARGETS[name][1]}"
            v["met"] = check(name, v["median"]) if judge else None
    return out


def _verdict(v: dict) -> str:
    """`>= 1.05: met`, `... MISSED`, or `... not judged` (a smoke run); "" without a target."""
    if not v.get("target"):
        return ""
    return f"{v['target']}: {'not judged' if v['met'] is None else 'met' if v['met'] else 'MISSED'}"


def flops_report(rs: dict[str, Runner], peak: dict) -> dict:
    """Forward and training FLOPs per image, achieved FLOP/s at the best custom-loop rate, and MFU."""
    fwd = model_flops(rs["custom_splN"].model)
    rate = best(rs, "custom_splN", "custom_splN_jit_alt").median_rate
    achieved = 3.0 * fwd * rate
    return {
        "forward_flops_per_image": fwd,
        "train_flops_per_image": 3 * fwd,
        "images_per_s": rate,
        "achieved_flop_per_s": achieved,
        "peak_matmul_flop_per_s": peak["flop_per_s"],
        "peak_matmul": peak,
        "mfu": achieved / peak["flop_per_s"] if peak["flop_per_s"] else float("nan"),
    }


def write_json(result: dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(result, f, indent=1)


def _rows(result: dict) -> list[dict]:
    mr = result["multi_replica"]
    return list(result["runners"].values()) + [v for v in mr.values() if isinstance(v, dict) and "label" in v]


def _print_runners(result: dict) -> None:
    print(f"{'configuration':58s} {'img/s median':>12s} {'[min - max]':>20s} {'compile s':>9s}")
    for s in _rows(result):
        if s.get("error") or "median" not in s:
            print(f"{s['label'][:58]:58s} {'failed: ' + str(s.get('error'))[:60]}")
            continue
        span = f"[{s['min']:,.1f} - {s['max']:,.1f}]"
        print(f"{s['label'][:58]:58s} {s['median']:12,.1f} {span:>20s} {s['compile_s']:9.1f}")


def _print_ratios(result: dict) -> None:
    print(f"\n{'ratio (median of per-round ratios)':40s} {'median':>8s} {'[min - max]':>18s}  target")
    for name, v in result["ratios"].items():
        span = f"[{v['min']:.3f} - {v['max']:.3f}]"
        print(f"{name:40s} {v['median']:8.3f} {span:>18s}  {_verdict(v)}")
    f = result["flops"]
    print(
        f"\nmodel FLOPs/image (forward) {f['forward_flops_per_image'] / 1e6:.1f} M; training ~3x; achieved "
        f"{f['achieved_flop_per_s'] / 1e9:.2f} GFLOP/s vs measured matmul peak "
        f"{f['peak_matmul_flop_per_s'] / 1e9:.1f} GFLOP/s: MFU {100 * f['mfu']:.1f} %"
    )


def _print_profile(prof: dict) -> None:
    names = list(prof)
    print(f"\nprofile (ms per step, summed over threads){'':14s}" + "".join(f"{n:>22s}" for n in names))
    print(f"{'wall':58s}" + "".join(f"{prof[n]['ms_per_step']:22.1f}" for n in names))
    print(f"{'all ops':58s}" + "".join(f"{prof[n]['op_ms_per_step']:22.1f}" for n in names))
    for op in dict.fromkeys(k for n in names for k in prof[n]["top_ops_per_step"]):
        cells = [prof[n]["top_ops_per_step"].get(op) for n in names]
        print(
            f"  {op[:56]:56s}"
            + "".join(f"{c['ms']:12.2f} ({c['count']:6.1f})" if c else f"{'-':>22s}" for c in cells)
        )


def print_table(result: dict) -> None:
    d, c = result["device"], result["config"]
    print(
        f"\n== throughput: arch {c['arch']}, resize {c['resize']}, global batch {c['global_batch']}, "
        f"windows of {c['steps']} steps x {c['repeats']} rounds =="
    )
    if c.get("quick"):
        print(SMOKE_NOTE)
    print(
        f"device: {d['device_kind']} ({', '.join(d['accelerators']) or d['cpu_model']}), {d['cpu_cores']} cores, "
        f"TF {d['tensorflow']}, Keras {d['keras']}, load avg {d['load_average_start']} -> {d['load_average_end']}"
    )
    _print_runners(result)
    _print_ratios(result)
    if result.get("profile"):
        _print_profile(result["profile"])
    print(f"total {result['elapsed_s']:.0f}s\n", flush=True)


def _runner_items(result: dict) -> list[tuple[str, dict]]:
    mr = result["multi_replica"]
    items = [(s["label"], s) for s in result["runners"].values() if "median" in s]
    return items + [
        (f"[{mr.get('replicas')} replicas] {s['label']}", s)
        for s in mr.values()
        if isinstance(s, dict) and "median" in s
    ]


def _plot_runners(ax, items: list[tuple[str, dict]], title: str) -> None:
    y = np.arange(len(items))
    med = np.array([s["median"] for _, s in items])
    err = np.array([[m - s["min"], s["max"] - m] for m, (_, s) in zip(med, items, strict=True)]).T
    ax.barh(y, med, xerr=err, color="tab:blue", alpha=0.8, capsize=3)
    for i, (m, (_, st)) in enumerate(zip(med, items, strict=True)):
        ax.text(st["max"], i, f"  {m:,.0f}", va="center", fontsize=7)
    ax.set_yticks(y, [lbl for lbl, _ in items], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.2 * float(np.max(med + err[1])))
    ax.set_xlabel("images/s (median, min-max whiskers)")
    ax.set_title(title, fontsize=9)


def _plot_ratios(ax, result: dict) -> None:
    """Ratios on a log axis (1 = equal; the input-headroom ratio is in the hundreds): green met, red
    missed (and labelled so), gray no target; a black tick at each target."""
    rat = list(result["ratios"].items())
    y = np.arange(len(rat))
    colors = [
        "tab:green" if v.get("met") else "tab:red" if v.get("met") is False else "tab:gray" for _, v in rat
    ]
    ax.barh(y, np.array([v["median"] for _, v in rat]), color=colors, alpha=0.8, left=0)
    ax.set_xscale("log")
    for i, (_, v) in enumerate(rat):
        if v.get("target"):
            ax.plot([float(v["target"].split()[1])] * 2, [i - 0.4, i + 0.4], "k-", lw=2)
        verdict = {True: "  met", False: "  MISSED"}.get(v.get("met"), "")
        ax.text(
            v["median"],
            i,
            f" {v['median']:.3g}{verdict}",
            va="center",
            fontsize=7,
            color="tab:red" if v.get("met") is False else "black",
            weight="bold" if verdict else None,
        )
    ax.axvline(1.0, color="gray", lw=0.8, ls=":")
    ax.set_xlim(right=5 * max([v["median"] for _, v in rat] + [1.0]))  # room for the value labels
    ax.set_yticks(y, [n for n, _ in rat], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ratio, log axis\ngreen: met, red: MISSED, gray: no target; black tick: the target")


def plot(result: dict, path: str) -> None:
    """A PNG: img/s of the training configurations (left top), of the input pipeline alone (left
    bottom, its own axis: it runs orders of magnitude faster) and every ratio against its target (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = _runner_items(result)
    alone = [it for it in items if it[0].startswith("input pipeline")]
    steps = [it for it in items if it not in alone]
    n = len(items)
    fig = plt.figure(figsize=(16, max(6, 0.4 * n)))
    grid = fig.add_gridspec(
        2, 2, width_ratios=[3, 2], height_ratios=[max(1, len(steps)), max(1, len(alone)) + 1]
    )
    _plot_runners(fig.add_subplot(grid[0, 0]), steps, "training configurations")
    if alone:
        _plot_runners(fig.add_subplot(grid[1, 0]), alone, "input pipeline alone (no model): its own axis")
    _plot_ratios(fig.add_subplot(grid[:, 1]), result)
    d, c = result["device"], result["config"]
    fig.suptitle(
        f"{c['arch']} {c['resize']} batch {c['global_batch']} on "
        f"{d['device_kind']} ({d['cpu_model'][:40]}, {d['cpu_cores']} cores), TF {d['tensorflow']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
