"""The metric names the training loop reports after every evaluation, and which way each is better.

TensorFlow-free on purpose: the search driver checks a space's metric against it before any trial starts.
"""

from __future__ import annotations

from tpu_grapheme.data.schema import HEAD_NAMES

# name -> "max" or "min" (the better direction); None: bookkeeping, not a score to optimise.
REPORTED_METRICS: dict[str, str | None] = {
    "hierarchical_recall": "max",
    **{f"recall_{name}": "max" for name in HEAD_NAMES},
    "train_loss": "min",
    "valid_loss": "min",
    "images_per_sec": "max",
    "valid_images": None,
    "lr": None,
    "step": None,
    "skipped_steps": None,
}
