"""The closing lines of a run (single-process and `--workers` alike): scores, best model, next command."""

from __future__ import annotations

import math
import os
import shlex

from tpu_grapheme import run_end
from tpu_grapheme.config import from_dict

METRICS = {
    "hierarchical_recall": 0.5,
    "recall_grapheme_root": 0.25,
    "recall_vowel_diacritic": 0.75,
    "recall_consonant_diacritic": 0.75,
    "hierarchical_recall_seen": 0.6,
    "recall_grapheme_root_seen": 0.3,
    "hierarchical_recall_unseen": 0.4,
    "valid_loss": 1.0,
}


def test_closing_lines_name_the_best_model_and_the_inference_command(tmp_path):
    syn = tmp_path / "syn"
    cfg = from_dict({"synthetic_dir": str(syn), "synthetic_rows": 100, "seed": 3})
    kaggle = syn / "synthetic-v2-100-s3" / "kaggle"
    kaggle.mkdir(parents=True)
    history = [{"step": 5, "hierarchical_recall": 0.7}, {"step": 10, "hierarchical_recall": 0.5}]
    best = str(tmp_path / "run" / "model_best.keras")
    scores, best_line, next_line = run_end.closing_lines(METRICS, history=history, best_model=best, cfg=cfg)
    assert scores == (
        "hierarchical_recall=0.5000 grapheme_root=0.2500 vowel_diacritic=0.7500 consonant_diacritic=0.7500"
        "  seen=0.6000 unseen=0.4000"
    )
    assert best_line == f"best model: {best} (hierarchical_recall=0.7000 at step 5)"
    parquets = os.path.join(kaggle, "test_image_data_*.parquet")
    assert shlex.split(next_line.removeprefix("next: ")) == [
        *("python", "-m", "tpu_grapheme.inference", "--model-paths", best, "--parquet-pattern", parquets)
    ]
    # `--workers` fixes the synthetic set's TFRecord folders before the workers start: same parquets
    fixed = cfg.replace(train_folder=str(kaggle.parent / "tfrecords" / "train" / "*.tfrec"), valid_folder="v")
    assert run_end.test_parquets(fixed) == parquets
    assert run_end.test_parquets(cfg.replace(train_folder="gs://b/train_0/*", valid_folder="v")) == (
        run_end.KAGGLE_TEST_PARQUETS
    )


def test_scores_line_leaves_out_seen_and_unseen_when_unknown():
    line = run_end.scores_line({**METRICS, "hierarchical_recall_unseen": math.nan})
    assert line.endswith("consonant_diacritic=0.7500")
