"""The closing lines of a training run: its scores, its best model, and the inference command for it.

One function for both ends: `loop` (a single-process run) and `multiworker` (the driver of a `--workers`
run, from the metrics the workers reported), so both runs end in the same words. TensorFlow-free.
"""

from __future__ import annotations

import math
import os
import shlex
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tpu_grapheme.data.synthetic_default import cache_dir

if TYPE_CHECKING:
    from tpu_grapheme.config import TrainConfig

KAGGLE_TEST_PARQUETS = "data/test_image_data_*.parquet"  # the competition's files, where the README puts them
_GROUPS = ("_seen", "_unseen")
# True in a Ray Train worker process (`multiworker.worker_loop`): the driver prints the closing lines,
# from the metrics the workers reported, so a `--workers` run ends once, like a single-process run.
DRIVER_PRINTS = False


def test_parquets(cfg: TrainConfig) -> str:
    """The test parquets that go with the run's data: the synthetic set's own (also when `--workers` fixed
    its TFRecord folders), else the competition's in `data/`."""
    if cfg.uses_synthetic:
        root = cache_dir(rows=cfg.synthetic_rows, seed=cfg.seed, root=cfg.synthetic_dir)
    else:  # <root>/tfrecords/train/*.tfrec: the synthetic default's layout
        root = os.path.dirname(os.path.dirname(os.path.dirname(cfg.train_folder)))
    kaggle = os.path.join(root, "kaggle")
    if root and os.path.isdir(kaggle):
        return os.path.join(kaggle, "test_image_data_*.parquet")
    return KAGGLE_TEST_PARQUETS


def scores_line(metrics: Mapping[str, float]) -> str:
    """`hierarchical_recall=0.84 grapheme_root=0.85 ...  seen=0.92 unseen=0.59` (seen/unseen when known)."""
    heads = [k for k in metrics if k.startswith("recall_") and not k.endswith(_GROUPS)]
    line = f"hierarchical_recall={metrics['hierarchical_recall']:.4f} " + " ".join(
        f"{k[len('recall_') :]}={metrics[k]:.4f}" for k in heads
    )
    if math.isfinite(metrics.get("hierarchical_recall_unseen", math.nan)):
        line += f"  seen={metrics['hierarchical_recall_seen']:.4f} unseen={metrics['hierarchical_recall_unseen']:.4f}"
    return line


def closing_lines(
    metrics: Mapping[str, float],
    *,
    history: Sequence[Mapping[str, Any]],
    best_model: str,
    cfg: TrainConfig,
) -> list[str]:
    """The last lines a run prints: final scores, the best model (with its score and step), and the
    inference command for it."""
    best = max(history, key=lambda row: row["hierarchical_recall"]) if history else None
    at = f" (hierarchical_recall={best['hierarchical_recall']:.4f} at step {best['step']})" if best else ""
    command = shlex.join(
        [
            "python",
            "-m",
            "tpu_grapheme.inference",
            "--model-paths",
            best_model,
            "--parquet-pattern",
            test_parquets(cfg),
        ]
    )
    scores = [scores_line(metrics)] if "hierarchical_recall" in metrics else []
    return [*scores, f"best model: {best_model}{at}", f"next: {command}"]
