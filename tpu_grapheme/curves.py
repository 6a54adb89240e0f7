"""Training curves against the step: train loss at every logged point, valid loss and the learning rate
(left), recall (right), from a run's history rows and its log-interval points (`train_log.json`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from tpu_grapheme.metric_names import GROUP_SUFFIXES


def _finite(rows: Sequence[dict[str, Any]], key: str) -> tuple[list, list]:
    """(steps, values) of the rows where `key` is a finite number (older rows lack seen/unseen keys)."""
    rows = [h for h in rows if isinstance(h.get(key), int | float) and math.isfinite(h[key])]
    return [h["step"] for h in rows], [h[key] for h in rows]


def _loss_and_lr(a: Any, history: Sequence[dict[str, Any]], train_log: Sequence[dict[str, Any]]) -> None:
    """Train loss per log interval (or the eval-interval mean when there is no log), valid loss, and the
    learning rate on a second axis."""
    if train_log:
        xs, ys = _finite(train_log, "loss")
        a.plot(xs, ys, ".-", ms=3, lw=1, color="C0", label="train loss (log interval)")
    else:
        xs, ys = _finite(history, "train_loss")
        a.plot(xs, ys, "o-", ms=3, color="C0", label="train loss (eval-interval mean)")
    xs, ys = _finite(history, "valid_loss")
    a.plot(xs, ys, "s-", ms=4, color="C1", label="valid loss")
    a.set_xlabel("step")
    a.set_ylabel("loss")
    a.grid(alpha=0.3)
    xs, ys = _finite(train_log or history, "lr")
    lines, labels = a.get_legend_handles_labels()
    if xs:
        lr = a.twinx()
        lines += lr.plot(xs, ys, "--", color="gray", lw=1)
        labels.append("learning rate (right axis)")
        lr.set_ylabel("learning rate")
        lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    a.legend(lines, labels, fontsize=8)


def plot_history(
    history: Sequence[dict[str, Any]], *, title: str, train_log: Sequence[dict[str, Any]] = ()
) -> Any:
    """A matplotlib Figure: losses and learning rate (left), hierarchical and per-head recall (right),
    with the seen / unseen-grapheme hierarchical recall (dashed, dotted) when the validation split has
    unseen ones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    heads = [k for k in history[-1] if k.startswith("recall_") and not k.endswith(GROUP_SUFFIXES[1:])]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    _loss_and_lr(a, history, train_log)
    a.set_title("loss and learning rate", fontsize=10)
    for key in ("hierarchical_recall", *heads):  # per-head keys: whatever heads the run's layout has
        b.plot(
            steps,
            [h[key] for h in history],
            "o-",
            ms=3,
            label=key,
            lw=2.5 if key == "hierarchical_recall" else 1,
        )
    for key, style in (("hierarchical_recall_seen", "--"), ("hierarchical_recall_unseen", ":")):
        xs, ys = _finite(history, key)
        if xs and _finite(history, "hierarchical_recall_unseen")[0]:
            b.plot(xs, ys, style, color="black", lw=1.5, label=key)
    b.set_xlabel("step")
    b.set_ylabel("validation recall (macro)")
    b.set_title("validation recall", fontsize=10)
    b.set_ylim(0, 1)
    b.legend(fontsize=8)
    b.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    plt.close(fig)  # the caller saves it; closing frees pyplot's reference, not the figure
    return fig
