"""Training throughput: our custom loop against Keras `model.fit` and the designs we replaced.

    python benchmarks/throughput.py [--arch small] [--batch-size 64] [--resize 64,112] [--steps 10]
        [--steps-per-loop 5] [--repeats 5] [--quick] [--json out.json] [--plot out.png]

Every figure is images/s over timed windows of `--steps` optimizer steps, taken after a warm-up window
(its time, compile included, is reported separately). All runners of one group are built first and
their windows are interleaved round-robin (`harness`), so machine load drifts hit every runner alike; a
figure is the median window with min/max, a ratio is the median of the per-round ratios. The scenarios
(`scenario_*.py`) build the runners; `report.py` prints and writes the result. See benchmarks/README.md
for how to read each figure.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the sibling modules, run as a script
from tpu_grapheme import quiet_tf  # noqa: E402

quiet_tf.install()  # before TensorFlow's first import (in `report`): no C++ info lines, as in the CLIs

import report  # noqa: E402
import scenario_accum  # noqa: E402
import scenario_augment  # noqa: E402
import scenario_batchnorm  # noqa: E402
import scenario_loops  # noqa: E402
import scenario_pipeline  # noqa: E402
import scenario_profile  # noqa: E402
import tensorflow as tf  # noqa: E402
from harness import Runner, best, device_info, elapsed, load_average, log, matmul_peak, run_group  # noqa: E402
from workload import MIX, Workload  # noqa: E402

from tpu_grapheme import distribute  # noqa: E402
from tpu_grapheme.cli_help import DefaultsFormatter  # noqa: E402
from tpu_grapheme.errors import UserError, cli_main, run_and_exit  # noqa: E402

SCENARIOS = (scenario_loops, scenario_pipeline, scenario_augment, scenario_accum, scenario_batchnorm)
# The runners stay referenced until the process exits: freeing their models, pipelines and fit threads
# can take tens of seconds; the script ends without that teardown (`run_and_exit`) once results are written.
_ALIVE: list = []


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=DefaultsFormatter)
    p.add_argument("--arch", default=None, help="model arch (default: small; tiny with --quick)")
    p.add_argument(
        "--batch-size", type=int, default=None, help="per-replica micro-batch (default: 64; 32 with --quick)"
    )
    p.add_argument("--resize", default=None, help="H,W (default: 64,112; 32,56 with --quick)")
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="optimizer steps per timed window (default: 5; 4 with --quick)",
    )
    p.add_argument(
        "--steps-per-loop",
        type=int,
        default=None,
        help="N for steps_per_loop / steps_per_execution (default: 5; 2 with --quick)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed windows per configuration (default: 5; 3 with --quick)",
    )
    p.add_argument(
        "--precisions", default="float32,bfloat16,float16", help="mixed precision policies to time"
    )
    p.add_argument(
        "--jit-probe",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also time the other XLA setting for our loop and fit (default: on; off with --quick)",
    )
    p.add_argument(
        "--replicas", type=int, default=2, help="logical CPU devices of the accumulation comparison"
    )
    p.add_argument("--no-multi-replica", action="store_true", help="skip the multi-replica subprocess")
    p.add_argument("--train-folder", default="", help="TFRecord pattern (default: the synthetic default)")
    p.add_argument("--synthetic-rows", type=int, default=3000, help="rows of the synthetic default data set")
    p.add_argument(
        "--synthetic-dir", default="", help="cache dir of the synthetic data (default: ~/.cache/tpu_grapheme)"
    )
    p.add_argument("--seed", type=int, default=42, help="seed of weights, data and augmentation")
    p.add_argument("--quick", action="store_true", help="tiny windows on the tiny arch: a smoke test")
    p.add_argument(
        "--profile", default="", help="also trace one window of our loop and of tuned fit (TF profiler) here"
    )
    p.add_argument("--json", default="", help="write every raw number here")
    p.add_argument("--plot", default="", help="write a PNG bar chart here")
    p.add_argument("--accum-worker", default="", help=argparse.SUPPRESS)
    return _resolve(p.parse_args(argv))


def _resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the defaults of the mode (--quick or not) and check every value; one line on bad input."""
    q = args.quick
    args.arch = args.arch or ("tiny" if q else "small")
    args.batch_size = args.batch_size or (32 if q else 64)
    args.steps_per_loop = args.steps_per_loop or (2 if q else 5)
    args.steps = args.steps or (4 if q else 5)
    args.repeats = args.repeats or (3 if q else 5)
    args.jit_probe = (not q) if args.jit_probe is None else args.jit_probe
    try:
        args.resize = [int(v) for v in (args.resize or ("32,56" if q else "64,112")).split(",")]
        assert len(args.resize) == 2 and min(args.resize) > 0
    except (ValueError, AssertionError):
        raise UserError(f"--resize must be H,W (two positive ints), got {args.resize!r}") from None
    args.precisions = [s.strip() for s in args.precisions.split(",") if s.strip()]
    bad = [s for s in args.precisions if s not in ("float32", "bfloat16", "float16")]
    if bad:
        raise UserError(f"--precisions: unknown policy {bad[0]!r} (float32, bfloat16, float16)")
    if min(args.batch_size, args.steps, args.steps_per_loop, args.repeats, args.replicas) < 1:
        raise UserError("--batch-size, --steps, --steps-per-loop, --repeats and --replicas must be >= 1")
    if args.steps % args.steps_per_loop:
        raise UserError(
            f"--steps ({args.steps}) must be a multiple of --steps-per-loop ({args.steps_per_loop})"
        )
    return args


def main_group(w: Workload, args: argparse.Namespace) -> dict[str, Runner]:
    """Every scenario's runners on the main strategy, timed as one interleaved group."""
    rs = [r for scenario in SCENARIOS for r in scenario.runners(w, args)]
    log(f"built {len(rs)} runners; warming up (compiles)")
    run_group(rs, args.repeats)
    return {r.name: r for r in rs}


def all_ratios(rs: dict[str, Runner], multi_replica: dict, *, judge: bool = True) -> dict:
    out = {
        **scenario_loops.ratios(rs),
        **scenario_pipeline.ratios(rs),
        **scenario_augment.ratios(rs),
        **scenario_accum.ratios(rs, multi_replica),
        **scenario_batchnorm.ratios(rs),
    }
    pair = [best(rs, "custom_splN", "custom_splN_jit_alt").name, best(rs, "fit_spe", "fit_spe_jit").name]
    return report.with_targets(out, pair, judge=judge)


def config_summary(w: Workload, args: argparse.Namespace) -> dict:
    keys = ("arch", "steps", "steps_per_loop", "repeats", "jit_probe", "quick")
    return {
        **{k: getattr(args, k) for k in keys},
        "resize": list(args.resize),
        "per_replica_batch": args.batch_size,
        "global_batch": w.global_batch,
        "auto_jit": w.auto_jit,
        "data": w.pattern,
        "mix": MIX,
    }


def measure(args: argparse.Namespace, argv: list[str]) -> dict:
    """The whole benchmark: matmul peak, the multi-replica subprocess, the main group, the profile."""
    w = Workload(args, distribute.resolve_strategy("auto"))
    info = device_info(w.strategy, w.kind)
    log(
        f"{w.kind} x{w.replicas} ({info['cpu_model']}, {info['cpu_cores']} cores), TF {tf.__version__}; "
        f"arch {args.arch} {tuple(args.resize)}, global batch {w.global_batch}, data {w.pattern}"
    )
    burst = 1.0 if args.quick else 3.0
    peak = matmul_peak(w.kind, seconds=burst)
    log(f"matmul peak {peak['flop_per_s'] / 1e9:.1f} GFLOP/s")
    # The subprocess first: later the main process holds every runner's pipeline and threads.
    multi = {} if args.no_multi_replica else scenario_accum.run_subprocess(args, argv)
    rs = main_group(w, args)
    _ALIVE.append(rs)
    peak = max(peak, matmul_peak(w.kind, seconds=burst), key=lambda p: p["flop_per_s"])  # before or after
    prof = scenario_profile.profile_runners(rs, args.profile, steps=w.steps) if args.profile else {}
    info["load_average_end"] = load_average()
    return {
        "device": info,
        "config": config_summary(w, args),
        "runners": {n: r.summary() for n, r in rs.items()},
        "multi_replica": multi,
        "ratios": all_ratios(rs, multi, judge=not args.quick),  # --quick: smoke figures, never judged
        "flops": report.flops_report(rs, peak),
        "profile": prof,
        "elapsed_s": elapsed(),
    }


@cli_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.accum_worker:
        _ALIVE.append(scenario_accum.worker(args))
        return
    result = measure(args, sys.argv[1:] if argv is None else list(argv))
    report.print_table(result)
    if args.json:
        report.write_json(result, args.json)
        log(f"wrote {args.json}")
    if args.plot:
        report.plot(result, args.plot)
        log(f"wrote {args.plot}")


if __name__ == "__main__":
    run_and_exit(main)
