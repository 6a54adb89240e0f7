"""Ensemble inference on Kaggle image parquets: a submission CSV, or a score table on a labelled split.

`members` loads and checks the models, `streaming` runs the parquets through them, `scoring` turns
probabilities into a submission or a score table, `cli` is `python -m tpu_grapheme.inference`.
The names below are the package's public API (benchmarks and notebooks import them from here).
"""

from tpu_grapheme.inference.cli import _resize_arg, build_parser, main
from tpu_grapheme.inference.members import Member, load_member, load_members, preprocess, read_meta
from tpu_grapheme.inference.scoring import (
    evaluate,
    format_table,
    labelled_predictions,
    prior_for,
    score,
    score_table,
    submission_frame,
)
from tpu_grapheme.inference.streaming import Predictions, predict

__all__ = [
    "Member",
    "Predictions",
    "_resize_arg",  # benchmarks/reweight_gain.py parses --resize with it
    "build_parser",
    "evaluate",
    "format_table",
    "labelled_predictions",
    "load_member",
    "load_members",
    "main",
    "predict",
    "preprocess",
    "prior_for",
    "read_meta",
    "score",
    "score_table",
    "submission_frame",
]
