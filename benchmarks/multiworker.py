"""Multi-worker step throughput next to one worker, on the same machine: a ratio.

    python benchmarks/multiworker.py                      # tiny arch, 32x56, batch 32 per worker, 2 workers
    python benchmarks/multiworker.py --arch small --resize 64,112 --workers 2 --steps 120

Both runs are the real CLI path (`run_training`; the multi-worker one through Ray Train and
MultiWorkerMirroredStrategy on a private local Ray instance) with the same per-worker batch; the figure is
the steady-state img/s the loop reports at its last evaluation (the first window, which compiles, is not
in it). On one machine the workers share its cores, so the ratio measures the overhead of the
multi-worker path (gRPC all-reduce, one process per worker), not a speed-up: across N hosts the ideal
is N x one worker.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(flags: list[str], out: str, name: str) -> float:
    """Train with `flags`; the img/s of the last evaluation row in history.json."""
    cmd = [sys.executable, "-m", "tpu_grapheme.train", *flags, "--output-dir", out, "--run-name", name]
    env = dict(os.environ, PYTHONPATH=REPO, RAY_AUTH_MODE="disabled")
    subprocess.run(cmd, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(out, name, "history.json")) as f:
        return float(json.load(f)[-1]["images_per_sec"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="tiny", help="model arch (default: %(default)s)")
    p.add_argument("--resize", default="32,56", help="H,W of the images (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="micro-batch per worker (default: %(default)s)")
    p.add_argument(
        "--workers",
        type=int,
        default=2,
        help="Ray Train workers of the multi-worker run (default: %(default)s)",
    )
    p.add_argument("--steps", type=int, default=80, help="optimizer steps of each run (default: %(default)s)")
    p.add_argument(
        "--synthetic-dir", default="", help="cache dir of the synthetic data (default: ~/.cache/tpu_grapheme)"
    )
    args = p.parse_args()
    common = [
        f"--arch={args.arch}",
        f"--resize={args.resize}",
        f"--batch-size={args.batch_size}",
        f"--steps={args.steps}",
        f"--checkpoint-interval={args.steps}",
        f"--log-interval={args.steps}",
        "--eval-batches=1",
        "--synthetic-rows=3000",
        *([f"--synthetic-dir={args.synthetic_dir}"] if args.synthetic_dir else []),
    ]
    with tempfile.TemporaryDirectory() as out:
        one = run(common, out, "one")
        many = run([*common, f"--workers={args.workers}", "--cpus-per-worker=1"], out, "many")
    result = {
        "arch": args.arch,
        "resize": args.resize,
        "batch_per_worker": args.batch_size,
        "workers": args.workers,
        "one_worker_img_s": round(one, 1),
        "multi_worker_img_s": round(many, 1),
        "ratio": round(many / one, 3),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
