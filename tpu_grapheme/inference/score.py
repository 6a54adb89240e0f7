"""Score a Kaggle submission CSV against a solution file with the competition's metric.

    python -m tpu_grapheme.inference.score --submission submission.csv --solution test_solution.csv

Both files hold `row_id,target` rows, one per image and component (`Test_0_grapheme_root`, ...); the
solution may carry more columns (Kaggle's has `Usage`). The metric is the competition's: per component
sklearn's macro recall (`recall_score(average="macro")`: a class predicted but absent from the solution
counts as recall 0), averaged with weights 2:1:1 for root:vowel:consonant. Imports nothing heavy before
the arguments are parsed, and never TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Sequence
from typing import Any

from tpu_grapheme.cli_help import DefaultsFormatter
from tpu_grapheme.data.schema import BENGALI, HEAD_NAMES, NUM_CLASSES
from tpu_grapheme.errors import UserError, cli_main, run_and_exit

COLUMNS = ("row_id", "target")
_ROW_ID = re.compile(rf"^(?P<image>.+)_(?P<head>{'|'.join(HEAD_NAMES)})$")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tpu_grapheme.inference.score",
        description=__doc__.splitlines()[0],
        formatter_class=DefaultsFormatter,
    )
    p.add_argument("--submission", required=True, help="the submission CSV to score (row_id,target)")
    p.add_argument(
        "--solution",
        required=True,
        help="the labels (row_id,target[,...]); the synthetic data set writes test_solution.csv",
    )
    p.add_argument(
        "--json", action="store_true", help="print the scores as one JSON object instead of a table"
    )
    return p


def _show(row_ids: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(str(r) for r in list(row_ids)[:limit])
    return shown + (", ..." if len(row_ids) > limit else "")


def read_rows(path: str, *, exact_columns: bool) -> Any:
    """A `row_id` -> integer `target` Series of the CSV at `path`, every row checked (one-line errors)."""
    import pandas as pd

    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise UserError(f"{name}: not a readable CSV ({str(e).strip().splitlines()[0]})") from None
    cols = [str(c) for c in df.columns]
    if any(c not in cols for c in COLUMNS) or (exact_columns and len(cols) != len(COLUMNS)):
        raise UserError(f"{name}: expected columns row_id,target; found {','.join(cols) or 'none'}")
    if df.empty:
        raise UserError(f"{name}: no rows")
    dup = df["row_id"][df["row_id"].duplicated()]
    if len(dup):
        raise UserError(f"{name}: {len(dup)} duplicate row_id(s): {_show(dup.unique())}")
    bad = df["row_id"][~df["row_id"].str.fullmatch(_ROW_ID)]
    if len(bad):
        raise UserError(f"{name}: row_id {bad.iloc[0]!r} is not <image id>_<{'|'.join(HEAD_NAMES)}>")
    text = df["target"].str.strip()
    not_int = ~text.str.fullmatch(r"[+-]?\d+")
    if not_int.any():
        i = int(not_int.to_numpy().argmax())
        raise UserError(f"{name}: target {text.iloc[i]!r} of {df['row_id'].iloc[i]} is not an integer")
    targets = pd.Series(text.astype("int64").to_numpy(), index=df["row_id"].to_numpy(), name="target")
    _check_ranges(name, targets)
    return targets


def _check_ranges(name: str, targets: Any) -> None:
    heads = targets.index.str.extract(_ROW_ID)["head"].to_numpy()
    for head, k in zip(HEAD_NAMES, NUM_CLASSES, strict=True):
        values = targets[heads == head]
        out = values[(values < 0) | (values >= k)]
        if len(out):
            raise UserError(
                f"{name}: target {out.iloc[0]} of {out.index[0]} is out of range for {head} (0..{k - 1})"
            )


def align(submission: Any, solution: Any, name: str) -> Any:
    """The submission's targets in the solution's row order; refuses missing or extra row ids."""
    missing = solution.index.difference(submission.index, sort=False)
    if len(missing):
        raise UserError(f"{name}: {len(missing)} row id(s) of the solution missing: {_show(missing)}")
    extra = submission.index.difference(solution.index, sort=False)
    if len(extra):
        raise UserError(f"{name}: {len(extra)} row id(s) not in the solution: {_show(extra)}")
    return submission.loc[solution.index]


def macro_recall(y_true: Any, y_pred: Any) -> float:
    """sklearn's `recall_score(average="macro")`: mean recall over every class in either array."""
    import numpy as np

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = np.union1d(y_true, y_pred)
    recalls = [float(np.mean(y_pred[y_true == c] == c)) if np.any(y_true == c) else 0.0 for c in labels]
    return float(np.mean(recalls)) if recalls else 0.0


def score_rows(submission: Any, solution: Any) -> dict[str, Any]:
    """Per-head macro recall (`recall_<head>`), their 2:1:1 average and the number of images."""
    heads = solution.index.str.extract(_ROW_ID)["head"].to_numpy()
    out: dict[str, Any] = {}
    for head in HEAD_NAMES:
        rows = heads == head
        out[f"recall_{head}"] = macro_recall(solution.to_numpy()[rows], submission.to_numpy()[rows])
    weighted = sum(w * out[f"recall_{h}"] for h, w in zip(HEAD_NAMES, BENGALI.metric_weights, strict=True))
    out = {"hierarchical_recall": weighted / sum(BENGALI.metric_weights), **out}
    out["images"] = len(set(solution.index.str.extract(_ROW_ID)["image"]))
    return out


def score_files(submission_csv: str, solution_csv: str) -> dict[str, Any]:
    """The competition metric of the submission at `submission_csv` against `solution_csv`."""
    solution = read_rows(solution_csv, exact_columns=False)
    submission = read_rows(submission_csv, exact_columns=True)
    return score_rows(align(submission, solution, os.path.basename(submission_csv)), solution)


def format_scores(scores: dict[str, Any]) -> str:
    lines = [f"hierarchical_recall {scores['hierarchical_recall']:.4f}  ({scores['images']} images)"]
    weights = dict(zip(HEAD_NAMES, BENGALI.metric_weights, strict=True))
    lines += [f"  {h:<20} {scores[f'recall_{h}']:.4f}  (weight {weights[h]:g})" for h in HEAD_NAMES]
    return "\n".join(lines)


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    scores = score_files(args.submission, args.solution)
    print(json.dumps(scores) if args.json else format_scores(scores))
    return 0


if __name__ == "__main__":
    run_and_exit(main)
