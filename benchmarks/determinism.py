"""What `--deterministic` costs: training images/s with it on against off, same command otherwise.

    python benchmarks/determinism.py [--arch small] [--batch-size 64] [--resize 56,96] [--steps 60]
        [--repeats 2] [--json out.json]

Each run is a fresh process (op determinism is process-wide and cannot be switched off again), run one
after another, off and on alternating so machine load drifts hit both alike. A run's figure is the
loop's own rate over its whole training (first compiled step excluded). The ratio is the median of
the per-pair ratios `deterministic / default`: below 1 is the cost. Same synthetic default data.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child(args: argparse.Namespace) -> None:
    """One training run; prints its images/s as the last line."""
    from tpu_grapheme.config import TrainConfig
    from tpu_grapheme.loop import run_training

    cfg = TrainConfig(
        arch=args.arch,
        batch_size=args.batch_size,
        resize=args.resize,
        steps=args.steps,
        steps_per_loop=args.steps_per_loop,
        checkpoint_interval=args.steps,
        log_interval=args.steps,
        synthetic_rows=args.synthetic_rows,
        output_dir=args.out,
        run_name="run",
        deterministic=args.deterministic,
    )
    rates: list[float] = []
    run_training(cfg, on_eval=lambda r: rates.append(r.metrics["images_per_sec"]), log=lambda s: None)
    print(f"{rates[-1]:.3f}")


def run_child(args: argparse.Namespace, deterministic: bool) -> float:
    with tempfile.TemporaryDirectory(prefix="determinism_bench_") as out:
        argv = [sys.executable, os.path.abspath(__file__), "--child", "--out", out]
        argv += ["--arch", args.arch, "--batch-size", str(args.batch_size), "--steps", str(args.steps)]
        argv += ["--resize", ",".join(map(str, args.resize)), "--steps-per-loop", str(args.steps_per_loop)]
        argv += ["--synthetic-rows", str(args.synthetic_rows)] + (
            ["--deterministic"] if deterministic else []
        )
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"benchmark run failed:\n{done.stderr[-3000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def measure(args: argparse.Namespace) -> dict:
    pairs = []
    for r in range(args.repeats):
        order = (False, True) if r % 2 == 0 else (True, False)
        rates = {d: run_child(args, d) for d in order}
        pairs.append(rates)
        print(
            f"repeat {r + 1}: default {rates[False]:.1f} img/s, deterministic {rates[True]:.1f} img/s",
            flush=True,
        )
    return {
        "config": {k: v for k, v in vars(args).items() if k not in ("child", "out", "json", "deterministic")},
        "default_img_s": [p[False] for p in pairs],
        "deterministic_img_s": [p[True] for p in pairs],
        "deterministic_vs_default": statistics.median(p[True] / p[False] for p in pairs),
    }


def _resize(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.replace("x", ",").split(","))
    return h, w


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="small", help="model arch (default: %(default)s)")
    p.add_argument(
        "--batch-size", type=int, default=64, help="micro-batch per replica (default: %(default)s)"
    )
    p.add_argument("--resize", type=_resize, default=(56, 96), help="H,W of the images (default: 56,96)")
    p.add_argument(
        "--steps", type=int, default=60, help="optimizer steps per timed run (default: %(default)s)"
    )
    p.add_argument(
        "--steps-per-loop", type=int, default=10, help="steps per tf.function call (default: %(default)s)"
    )
    p.add_argument(
        "--synthetic-rows", type=int, default=16000, help="rows of the synthetic data (default: %(default)s)"
    )
    p.add_argument("--repeats", type=int, default=2, help="timed runs of each setting (default: %(default)s)")
    p.add_argument("--json", default="", help="write the result here")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--deterministic", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    result = measure(args)
    print(f"deterministic_vs_default: {result['deterministic_vs_default']:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
