"""Training curves: loss and recall against the step, from a run's history rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tpu_grapheme.data.schema import HEAD_NAMES


def plot_history(history: Sequence[dict[str, Any]], *, title: str) -> Any:
    """A matplotlib Figure: train/valid loss (left), hierarchical and per-head recall (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(steps, [h["train_loss"] for h in history], label="train loss (interval mean)")
    a.plot(steps, [h["valid_loss"] for h in history], label="valid loss")
    a.set_xlabel("step")
    a.legend()
    for key in ("hierarchical_recall", *(f"recall_{n}" for n in HEAD_NAMES)):
        b.plot(steps, [h[key] for h in history], label=key, lw=2.5 if key == "hierarchical_recall" else 1)
    b.set_xlabel("step")
    b.set_ylim(0, 1)
    b.legend()
    b.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    plt.close(fig)  # the caller saves it; closing frees pyplot's reference, not the figure
    return fig
