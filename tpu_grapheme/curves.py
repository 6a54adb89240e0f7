"""Training curves: loss and recall against the step, from a run's history rows."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from tpu_grapheme.metric_names import GROUP_SUFFIXES


def _finite(history: Sequence[dict[str, Any]], key: str) -> tuple[list, list]:
    """(steps, values) of the rows where `key` is a finite number (older rows lack seen/unseen keys)."""
    rows = [h for h in history if isinstance(h.get(key), int | float) and math.isfinite(h[key])]
    return [h["step"] for h in rows], [h[key] for h in rows]


def plot_history(history: Sequence[dict[str, Any]], *, title: str) -> Any:
    """A matplotlib Figure: train/valid loss (left), hierarchical and per-head recall (right), with the
    seen / unseen-grapheme hierarchical recall (dashed, dotted) when the validation split has unseen ones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    heads = [k for k in history[-1] if k.startswith("recall_") and not k.endswith(GROUP_SUFFIXES[1:])]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(steps, [h["train_loss"] for h in history], label="train loss (interval mean)")
    a.plot(steps, [h["valid_loss"] for h in history], label="valid loss")
    a.set_xlabel("step")
    a.legend()
    for key in ("hierarchical_recall", *heads):  # per-head keys: whatever heads the run's layout has
        b.plot(steps, [h[key] for h in history], label=key, lw=2.5 if key == "hierarchical_recall" else 1)
    for key, style in (("hierarchical_recall_seen", "--"), ("hierarchical_recall_unseen", ":")):
        xs, ys = _finite(history, key)
        if xs and _finite(history, "hierarchical_recall_unseen")[0]:
            b.plot(xs, ys, style, color="black", lw=1.5, label=key)
    b.set_xlabel("step")
    b.set_ylim(0, 1)
    b.legend(fontsize=8)
    b.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    plt.close(fig)  # the caller saves it; closing frees pyplot's reference, not the figure
    return fig
