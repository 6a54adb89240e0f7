"""Time to accuracy: training seconds and steps for a config to reach given seen and unseen recall.

    python benchmarks/time_to_accuracy.py [--seeds 1,2] [--variant NAME[:FIELD=VALUE,...]] ...
        [--eval-every 100] [--seen 0.9,0.95,0.97] [--unseen 0.6,0.7,0.8] [--json OUT] [--plot OUT.png]

Trains each variant (TrainConfig's defaults, changed by its FIELD=VALUE list) once per seed on the
embedded synthetic default (the seed also draws its data set), evaluating every `--eval-every` steps.
The seconds are the run's `train_seconds` (training steps, first-step compile included, evaluations
not); `wall` is the whole run, start-up and evaluations included. For each threshold: the first
evaluation at or above it, or null when the run never gets there. Prints the README's table (Markdown)
and plots recall against seconds. Without --variant: the default alone.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from typing import Any

from tpu_grapheme.cli_help import DefaultsFormatter
from tpu_grapheme.config import TrainConfig, from_dict, to_dict
from tpu_grapheme.errors import UserError, cli_main, run_and_exit
from tpu_grapheme.loop import run_training
from tune.overrides import parse_sets

KEYS = {
    "all": "hierarchical_recall",
    "seen": "hierarchical_recall_seen",
    "unseen": "hierarchical_recall_unseen",
}


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """`NAME` or `NAME:field=value,field=value` -> (name, checked TrainConfig changes)."""
    name, _, changes = text.partition(":")
    if not name.strip():
        raise UserError(f"--variant needs a name, got {text!r}")
    values = parse_sets([c for c in changes.split(",") if c.strip()])
    from_dict(values)  # every value checked before any run
    return name.strip(), values


def numbers(text: str, flag: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{flag} needs comma-separated numbers, got {text!r}") from None
    if not all(0 < v <= 1 for v in values):
        raise UserError(f"{flag}: recall thresholds must be in (0, 1], got {text!r}")
    return values


def run_one(cfg: TrainConfig) -> dict[str, Any]:
    """Train `cfg`; every evaluation as (step, train_seconds, recalls), the final metrics and wall time."""
    rows: list[dict[str, float]] = []

    def on_eval(r) -> None:
        row = {"step": r.step, "seconds": r.metrics["train_seconds"]}
        rows.append(row | {k: r.metrics.get(key, math.nan) for k, key in KEYS.items()})

    t0 = time.perf_counter()
    run_training(cfg, on_eval=on_eval, log=lambda line: line.startswith("eval step") and print("  " + line))
    wall = time.perf_counter() - t0
    return {"evals": rows, "final": rows[-1], "wall_seconds": wall, "images_per_sec": _rate(cfg, rows)}


def _rate(cfg: TrainConfig, rows: list[dict]) -> float:
    return cfg.steps * cfg.batch_size * cfg.grad_accum / rows[-1]["seconds"] if rows else math.nan


def reached(evals: list[dict], group: str, threshold: float) -> dict[str, float] | None:
    """The first evaluation with `group` recall >= threshold: {step, seconds}, None when never."""
    for row in evals:
        if row[group] >= threshold:
            return {"step": row["step"], "seconds": row["seconds"]}
    return None


def measure(variants: list[tuple[str, dict]], seeds: list[int], eval_every: int, out_dir: str) -> dict:
    """Every (variant, seed) run, in that order; the configs' full values are recorded with them."""
    runs = []
    for name, changes in variants:
        for seed in seeds:
            cfg = TrainConfig(
                **changes,
                seed=seed,
                checkpoint_interval=eval_every,
                output_dir=out_dir,
                run_name=f"{name}-s{seed}",
            )
            print(f"{name}, seed {seed}: {changes or 'TrainConfig defaults'}", flush=True)
            runs.append({"variant": name, "seed": seed, "changes": changes, **run_one(cfg)})
            runs[-1]["config"] = to_dict(cfg)
    return {"runs": runs}


def with_thresholds(result: dict, seen: list[float], unseen: list[float]) -> dict:
    for run in result["runs"]:
        run["reached"] = {
            f"{group}>={t:g}": reached(run["evals"], group, t)
            for group, ts in (("seen", seen), ("unseen", unseen))
            for t in ts
        }
    return result


def markdown_table(result: dict) -> str:
    """One row per run: variant, seed, all / seen / unseen recall, training and wall seconds, img/s."""
    lines = [
        "| variant | seed | all | seen | unseen | training s | wall s | img/s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["runs"]:
        f = r["final"]
        lines.append(
            f"| {r['variant']} | {r['seed']} | {f['all']:.4f} | {f['seen']:.4f} | {f['unseen']:.4f} "
            f"| {f['seconds']:.0f} | {r['wall_seconds']:.0f} | {r['images_per_sec']:.0f} |"
        )
    return "\n".join(lines)


def thresholds_table(result: dict) -> str:
    """Steps and seconds to each threshold (— when never reached)."""
    keys = list(result["runs"][0]["reached"]) if result["runs"] else []
    lines = ["| variant | seed | " + " | ".join(keys) + " |", "| --- | --- |" + " --- |" * len(keys)]
    for r in result["runs"]:
        cells = [f"{v['seconds']:.0f} s ({v['step']})" if v else "—" for v in r["reached"].values()]
        lines.append(f"| {r['variant']} | {r['seed']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(result: dict, path: str, seen: list[float], unseen: list[float]) -> None:
    """Seen (left) and unseen (right) recall against training seconds, a line per run, thresholds dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharex=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = list(dict.fromkeys(r["variant"] for r in result["runs"]))
    for ax, group, ts in ((axes[0], "seen", seen), (axes[1], "unseen", unseen)):
        for r in result["runs"]:
            x = [e["seconds"] for e in r["evals"]]
            y = [e[group] for e in r["evals"]]
            style = "-" if r["seed"] == result["runs"][0]["seed"] else "--"
            colour = colours[names.index(r["variant"]) % len(colours)]
            ax.plot(x, y, style, color=colour, marker=".", label=f"{r['variant']} (seed {r['seed']})")
        for t in ts:
            ax.axhline(t, color="grey", linestyle=":", linewidth=1)
        ax.set(title=f"{group} graphemes", xlabel="training seconds", ylabel="hierarchical recall")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python benchmarks/time_to_accuracy.py",
        description=__doc__.splitlines()[0],
        formatter_class=DefaultsFormatter,
    )
    p.add_argument("--seeds", default="1,2", help="comma-separated seeds (each its own data set)")
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        help="NAME or NAME:FIELD=VALUE,... (repeatable), e.g. rendered:rendered_share=0.25 (default: the default)",
    )
    p.add_argument("--eval-every", type=int, default=100, help="steps between evaluations")
    p.add_argument("--seen", default="0.9,0.95,0.97", help="seen recall thresholds")
    p.add_argument("--unseen", default="0.6,0.7,0.8", help="unseen recall thresholds")
    p.add_argument("--output-dir", default="", help="run dirs (default: a temporary dir, removed)")
    p.add_argument("--json", default="", help="write the result here")
    p.add_argument("--plot", default="", help="write recall against seconds here (PNG)")
    return p


@cli_main
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds needs comma-separated integers, got {args.seeds!r}") from None
    if not seeds or args.eval_every < 1:
        raise UserError("--seeds needs at least one seed and --eval-every must be >= 1")
    variants = [parse_variant(v) for v in args.variant] or [("default", {})]
    seen, unseen = numbers(args.seen, "--seen"), numbers(args.unseen, "--unseen")
    with tempfile.TemporaryDirectory(prefix="tta-") as tmp:
        result = measure(variants, seeds, args.eval_every, args.output_dir or tmp)
    result = with_thresholds(result, seen, unseen)
    print(markdown_table(result), thresholds_table(result), sep="\n\n")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    if args.plot:
        plot(result, args.plot, seen, unseen)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    run_and_exit(main)
