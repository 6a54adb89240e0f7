"""Ensemble inference on Kaggle image parquets: a submission CSV, or a score table on a labelled split.

    python -m tpu_grapheme.inference --model-paths a.keras,runs/b4_192x330 \\
        --parquet-pattern "data/test_image_data_*.parquet" --method arithmetic --reweight

Parquets are streamed in row batches; per image only the ensemble's class probabilities (168 + 11 + 7
floats) are kept, for the optional reweighting pass (`tpu_grapheme.reweight`) that needs the whole
test set's predicted class counts. With `--valid-csv` (a train.csv-style split, with the train
parquets as `--parquet-pattern`) it scores every combining method with reweighting off and on instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from tpu_grapheme import ensemble, reweight
from tpu_grapheme.cli_help import DefaultsFormatter
from tpu_grapheme.data.kaggle import read_train_csv
from tpu_grapheme.data.out_paths import check_out_file
from tpu_grapheme.errors import UserError, cli_main, run_and_exit
from tpu_grapheme.inference.members import Member, load_members
from tpu_grapheme.inference.scoring import check_prior, evaluate, format_table, prior_for, submission_frame
from tpu_grapheme.inference.streaming import count_images, predict
from tpu_grapheme.run_dir import META, RunDir


def _resize_arg(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected H,W, got {text!r}") from None
    if not (16 <= h <= 1024 and 16 <= w <= 1024):
        raise argparse.ArgumentTypeError(f"resize {h},{w} out of range: each side 16..1024")
    return h, w


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tpu_grapheme.inference",
        description=__doc__.splitlines()[0],
        formatter_class=DefaultsFormatter,
    )
    p.add_argument(
        "--model-paths", required=True, help="comma-separated .keras files, run dirs or checkpoints dirs"
    )
    p.add_argument(
        "--parquet-pattern", default="data/test_image_data_*.parquet", help="image parquets (glob)"
    )
    p.add_argument("--batch-size", type=int, default=64, help="images per model call")
    p.add_argument(
        "--resize", type=_resize_arg, default=None, help="H,W for every model (default: each run's own)"
    )
    p.add_argument(
        "--method", choices=ensemble.METHODS, default="arithmetic", help="how to combine the models"
    )
    p.add_argument(
        "--reweight", action="store_true", help="post-process for macro recall (predict argmax p/n^power)"
    )
    p.add_argument(
        "--reweight-power", type=float, default=reweight.DEFAULT_POWER, help="power on the class counts"
    )
    p.add_argument(
        "--reweight-prior",
        choices=("test", "train"),
        default="test",
        help="class counts: argmax counts over the test set, or training counts from model_meta.json",
    )
    p.add_argument("--output", default="submission.csv", help="submission CSV to write")
    p.add_argument(
        "--valid-csv",
        default="",
        help="score on this labelled split instead (train.csv columns; default: off)",
    )
    p.add_argument(
        "--report-json", default="", help="with --valid-csv: also write the score table as JSON here"
    )
    p.add_argument(
        "--grapheme-head-mix",
        type=float,
        default=0.0,
        metavar="W",
        help="models with a whole-grapheme head (--grapheme-head): per head, (1 - W) x its own probabilities "
        "+ W x the grapheme head's marginal (the 2nd-place mix; e.g. 0.5); 0: off (default)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _check_inputs(args: argparse.Namespace) -> None:
    """Fail before the work: images to predict, a readable --valid-csv, directories to write into."""
    count_images(args.parquet_pattern)
    if args.valid_csv:
        if len(read_train_csv(args.valid_csv)) == 0:
            raise UserError(f"{args.valid_csv}: no rows")
        if args.report_json:
            check_out_file(args.report_json, "--report-json")
    else:
        check_out_file(args.output, "--output")


def _check_distinct(specs: Sequence[str]) -> None:
    """A model listed twice (by two spellings of one file, run dir or checkpoint) is a mistake, not a weight."""
    seen: dict[str, str] = {}
    for spec in specs:
        source = RunDir.resolve_model(spec).path
        key = source if "://" in source else os.path.realpath(source)
        if key in seen:
            raise UserError(f"--model-paths lists {source} twice ({seen[key]} and {spec})")
        seen[key] = spec


def _check_grapheme_mix(mix: float, members: Sequence[Member]) -> None:
    """`--grapheme-head-mix` needs a model with a whole-grapheme head; say which models it skips."""
    if mix <= 0:
        return
    without = [m.spec for m in members if m.grapheme_index is None]
    if len(without) == len(members):
        raise UserError(
            f"--grapheme-head-mix {mix:g}: no model has a grapheme head ({', '.join(without)}; "
            "train with --grapheme-head), drop the flag"
        )
    for spec in without:
        print(f"model {spec}: no grapheme head, --grapheme-head-mix leaves it as it is", file=sys.stderr)


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    specs = [s.strip() for s in args.model_paths.split(",") if s.strip()]
    if not specs:
        raise UserError("--model-paths is empty")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not (0 <= args.reweight_power <= 10):
        raise UserError(f"--reweight-power must be in [0, 10], got {args.reweight_power}")
    if not (0 <= args.grapheme_head_mix <= 1):
        raise UserError(f"--grapheme-head-mix must be in [0, 1], got {args.grapheme_head_mix}")
    _check_inputs(args)  # everything a file or flag can get wrong, before any model is loaded
    _check_distinct(specs)
    members = load_members(specs, resize=args.resize)
    for m in members:
        print(f"model {m.spec}: {m.source} at {m.resize[0]}x{m.resize[1]}", file=sys.stderr)
    _check_grapheme_mix(args.grapheme_head_mix, members)  # before predicting
    if args.reweight and not args.valid_csv:
        check_prior(args.reweight_prior, members)  # before predicting the whole test set
    progress = not args.no_progress
    if args.valid_csv:
        rows = evaluate(
            members,
            args.parquet_pattern,
            args.valid_csv,
            batch_size=args.batch_size,
            power=args.reweight_power,
            progress=progress,
            grapheme_mix=args.grapheme_head_mix,
        )
        print(f"{rows[0]['n']} images, {len(members)} model(s), reweight power {args.reweight_power}")
        if not any(m.class_counts for m in members):
            print(f"(no train-prior rows: no class_counts in a {META} next to the models)")
        print(format_table(rows))
        if args.report_json:
            with open(args.report_json, "w", encoding="utf-8") as f:
                json.dump({"power": args.reweight_power, "models": specs, "rows": rows}, f, indent=2)
        return 0
    preds = predict(
        members,
        args.parquet_pattern,
        batch_size=args.batch_size,
        methods=(args.method,),
        progress=progress,
        grapheme_mix=args.grapheme_head_mix,
    )
    probs = preds.probs[args.method]
    prior = prior_for(args.reweight_prior if args.reweight else "off", probs, members)
    labels = reweight.predict(probs, prior, power=args.reweight_power)
    submission_frame(preds.ids, labels).to_csv(args.output, index=False)
    print(f"wrote {args.output}: {len(preds.ids)} images, {3 * len(preds.ids)} rows", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_and_exit(main)
