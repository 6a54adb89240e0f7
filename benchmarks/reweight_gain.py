"""Measure what prior reweighting buys: macro recall with `--reweight` off / test prior / train prior.

Renders (or reuses) a synthetic Kaggle-layout set with a strongly imbalanced class prior, holds out a
validation split, trains one small model briefly with `run_training` (TFRecords via `prepare`), and
scores every combining method x reweight prior on the held-out split with `tpu_grapheme.inference`
(what `--valid-csv` prints). Results: benchmarks/README.md.

    .venv/bin/python benchmarks/reweight_gain.py --work /tmp/reweight_gain --rows 8000 --imbalance 1.0
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import pandas as pd

from tpu_grapheme import inference
from tpu_grapheme.cli_help import DefaultsFormatter
from tpu_grapheme.data.schema import HEAD_NAMES, NUM_CLASSES
from tpu_grapheme.errors import run_and_exit


def _split(data_dir: str, work: str, *, valid_frac: float, seed: int) -> tuple[str, str]:
    df = pd.read_csv(os.path.join(data_dir, "train.csv"))
    rng = np.random.default_rng(seed)
    valid = rng.random(len(df)) < valid_frac
    paths = os.path.join(work, "train_split.csv"), os.path.join(work, "valid_split.csv")
    df[~valid].to_csv(paths[0], index=False)
    df[valid].to_csv(paths[1], index=False)
    return paths


def _class_counts(split_csv: str) -> dict[str, list[int]]:
    df = pd.read_csv(split_csv)
    return {n: np.bincount(df[n], minlength=k).tolist() for n, k in zip(HEAD_NAMES, NUM_CLASSES, strict=True)}


def _train_loop(args, train_csv: str, valid_csv: str, pattern: str, work: str) -> str:
    """The project's training loop on TFRecords written by `prepare`; returns the run dir."""
    from tpu_grapheme.config import TrainConfig
    from tpu_grapheme.data.prepare import prepare
    from tpu_grapheme.loop import run_training

    rec = {}
    for name, csv in (("train", train_csv), ("valid", valid_csv)):
        rec[name] = os.path.join(work, "tfrecords", name)
        if not os.path.isdir(rec[name]):
            prepare(csv, rec[name], parquet_pattern=pattern)
    cfg = TrainConfig(
        train_folder=os.path.join(rec["train"], "*"),
        valid_folder=os.path.join(rec["valid"], "*"),
        arch=args.arch,
        resize=tuple(args.resize),
        batch_size=args.batch_size,
        steps=args.steps,
        max_lr=args.max_lr,
        checkpoint_interval=max(1, args.steps // 2),
        log_interval=max(1, args.steps // 10),
        output_dir=os.path.join(work, "runs"),
        run_name=args.run_name or f"{args.arch}_loop_{args.steps}",
        seed=args.seed,
    )
    return run_training(cfg).run_dir


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=DefaultsFormatter)
    p.add_argument("--work", default="/tmp/reweight_gain", help="data, splits, runs and the JSON result")
    p.add_argument("--data", default="", help="existing Kaggle-layout dir (default: render into WORK/data)")
    p.add_argument("--rows", type=int, default=8000, help="rows rendered without --data")
    p.add_argument("--imbalance", type=float, default=1.0, help="root prior max/min = 100**x (1 ~ real data)")
    p.add_argument("--valid-frac", type=float, default=0.25, help="validation share of the rows")
    p.add_argument("--arch", default="small", help="model arch")
    p.add_argument(
        "--resize", type=inference._resize_arg, default=(64, 112), help="H,W of the images (default: 64,112)"
    )
    p.add_argument("--batch-size", type=int, default=64, help="training micro-batch")
    p.add_argument("--steps", type=int, default=600, help="training steps")
    p.add_argument("--max-lr", type=float, default=3e-3, help="peak learning rate")
    p.add_argument("--seed", type=int, default=0, help="seed of data, split and training")
    p.add_argument(
        "--run-name", default="", help="run dir name under WORK/runs (default: the training's own)"
    )
    p.add_argument("--powers", default="0.5,1.0,1.2", help="reweight powers to score")
    args = p.parse_args(argv)

    os.makedirs(args.work, exist_ok=True)
    data = args.data or os.path.join(args.work, "data")
    if not os.path.isfile(os.path.join(data, "train.csv")):
        from tpu_grapheme.data import synthetic

        synthetic.generate(data, rows=args.rows, seed=args.seed, test_rows=0, imbalance=args.imbalance)
    pattern = os.path.join(data, "train_image_data_*.parquet")
    train_csv, valid_csv = _split(data, args.work, valid_frac=args.valid_frac, seed=args.seed)

    t0 = time.perf_counter()
    run_dir = _train_loop(args, train_csv, valid_csv, pattern, args.work)
    train_s = time.perf_counter() - t0

    members = inference.load_members([run_dir])
    result = {"trainer": "loop", "train_seconds": round(train_s, 1), "run_dir": run_dir, "args": vars(args)}
    result["args"]["resize"] = list(args.resize)
    result["valid_counts"] = _class_counts(valid_csv)
    result["by_power"] = {}
    preds, labels = inference.labelled_predictions(members, pattern, valid_csv, methods=("arithmetic",))
    for power in (float(v) for v in args.powers.split(",")):
        rows = inference.score_table(preds, labels, members, power=power)
        result["by_power"][str(power)] = rows
        print(f"\nreweight power {power} ({rows[0]['n']} validation images):")
        print(inference.format_table(rows))
    with open(os.path.join(args.work, f"reweight_gain_{os.path.basename(run_dir)}.json"), "w") as f:
        json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    run_and_exit(main)
