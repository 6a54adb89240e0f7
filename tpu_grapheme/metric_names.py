"""The metric names the training loop reports after every evaluation, and which way each is better.

TensorFlow-free on purpose: the search driver checks a space's metric against it before any trial starts.
Every evaluation reports every name; the `_seen` / `_unseen` recalls (images whose grapheme combination
is / is not in the training split) are NaN when the validation split has no image of that group.
"""

from __future__ import annotations

from tpu_grapheme.data.schema import BENGALI, HeadLayout

GROUP_SUFFIXES = ("", "_seen", "_unseen")  # all validation images, seen graphemes, unseen graphemes


def reported_metrics(layout: HeadLayout = BENGALI) -> dict[str, str | None]:
    """name -> "max" or "min" (the better direction), None: bookkeeping, for a run of `layout`'s heads."""
    return {
        **{
            name: "max"
            for suffix in GROUP_SUFFIXES
            for name in (f"hierarchical_recall{suffix}", *(f"recall_{h}{suffix}" for h in layout.names))
        },
        "train_loss": "min",
        "valid_loss": "min",
        "images_per_sec": "max",
        "valid_images": None,
        "valid_images_unseen": None,
        "lr": None,
        "step": None,
        "skipped_steps": None,
        "train_seconds": None,  # this process's time in training steps (compile included, evaluations not)
    }


# The names of a run on the default (Bengali) heads: the ones a search validates its metric against.
REPORTED_METRICS: dict[str, str | None] = reported_metrics(BENGALI)
