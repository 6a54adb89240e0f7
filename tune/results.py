"""Turn a search into a ranked table, the best config as YAML and a metric-over-steps plot.

`summarize(result_grid, metric=..., param_names=..., target_steps=...)` reads Ray's `ResultGrid` into
plain `TrialSummary` rows; everything else here works on those rows only, so it is testable without Ray.

How a trial ended comes from Ray's `done` flag on its last result: Ray sets it when the trial function
returns or the scheduler stops the trial, never when an interrupted search stops it (Ray then marks the
trial TERMINATED in memory too, so the status alone cannot tell).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from tpu_grapheme.config_io import to_yaml
from tune.space import trial_config

INTERRUPTED = "INTERRUPTED"  # our status for a trial an interrupted search stopped (Ray says TERMINATED)


@dataclasses.dataclass(frozen=True)
class TrialSummary:
    trial_id: str
    params: dict[str, Any]
    steps: list[int]  # reported steps, in order
    values: list[float]  # the search metric at those steps
    status: str  # TERMINATED, ERROR, RUNNING, PENDING, PAUSED, or INTERRUPTED
    target_steps: int  # the steps the trial would train for
    error: str = ""
    node_ids: tuple[str, ...] = ()  # nodes the trial reported from
    done: bool = True  # Ray's `done` on the last result: the trial ended itself or the scheduler ended it

    @property
    def last_step(self) -> int:
        return self.steps[-1] if self.steps else 0

    @property
    def finished(self) -> bool:
        return self.status == "TERMINATED"

    @property
    def stopped_early(self) -> bool:
        """Ended cleanly before its last step: the scheduler (ASHA) cut it."""
        return self.finished and self.last_step < self.target_steps

    @property
    def ended(self) -> str:
        """How the trial ended, as the table says it: completed, stopped early, error, interrupted, ..."""
        if self.status == "ERROR":
            return "error"
        if self.stopped_early:
            return "stopped early"
        return "completed" if self.finished else self.status.lower()

    def best(self, mode: str) -> float:
        vals = [v for v in self.values if not math.isnan(v)]
        if not vals:
            return math.nan
        return max(vals) if mode == "max" else min(vals)


def rank(trials: Sequence[TrialSummary], mode: str) -> list[TrialSummary]:
    """Best first by each trial's best metric; trials without a result go last. Ties: the trial that
    reached the value at the earlier step first, then the smaller trial id (a fixed order, so the same
    results always rank the same, whatever order Ray lists the trials in)."""

    def key(t: TrialSummary) -> tuple[int, float, int, str]:
        b = t.best(mode)
        if math.isnan(b):
            return (1, 0.0, 0, t.trial_id)
        first = next(s for s, v in zip(t.steps, t.values, strict=True) if v == b)
        return (0, -b if mode == "max" else b, first, t.trial_id)

    return sorted(trials, key=key)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def format_table(trials: Sequence[TrialSummary], *, metric: str, mode: str) -> str:
    """A plain-text table, best first: trial, params, best metric, last step, how it ended."""
    ranked = rank(trials, mode)
    names = sorted({k for t in ranked for k in t.params})
    header = ["trial", *names, f"best {metric}", "last step", "ended"]
    rows = [header]
    for t in ranked:
        params = [_fmt(t.params.get(n, "")) for n in names]
        rows.append([t.trial_id, *params, _fmt(t.best(mode)), str(t.last_step), t.ended])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_best_yaml(
    best: TrialSummary,
    fixed: Mapping[str, Any],
    path: str,
    *,
    metric: str = "",
    mode: str = "max",
    partial: str = "",
) -> str:
    """The winning trial's full TrainConfig (fixed values + its params) for `tpu_grapheme.train --config`,
    under comment lines naming the trial (and, for an interrupted search, `partial`: why it is the best so
    far only). The same results give the same bytes; an unchanged file is not rewritten."""
    header = [f"# best trial {best.trial_id}" + (f": {metric} {best.best(mode):.6g}" if metric else "")]
    if partial:
        header.append(f"# PARTIAL: {partial}")
    text = "\n".join(header) + "\n" + to_yaml(trial_config(fixed, best.params))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if os.path.exists(path):
        with open(path) as f:
            if f.read() == text:
                return path
    with open(path, "w") as f:
        f.write(text)
    return path


# How each trial's last point is marked: (marker, size, legend text), by `TrialSummary.ended`.
_END_MARKERS = {
    "completed": ("o", 7, "completed"),
    "stopped early": ("X", 11, "stopped early (scheduler)"),
    "error": ("s", 9, "error"),
    "interrupted": ("^", 9, "interrupted"),
}


def _trial_label(t: TrialSummary, mode: str) -> str:
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(t.params.items()))
    return f"{t.trial_id}: {params}\n  best {_fmt(t.best(mode))}, {t.ended} at step {t.last_step}"


def plot_trials(trials: Sequence[TrialSummary], *, metric: str, mode: str, path: str, title: str = "") -> str:
    """One line per trial: the metric against the training step, its last point marked by how the
    trial ended (a trial stopped after one report is a lone cross); its parameters in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(12, 5))
    for t in rank(trials, mode):
        if not t.steps:  # listed in the legend all the same
            ax.plot([], [], " ", label=_trial_label(t, mode).split("\n")[0] + f"\n  no result ({t.ended})")
            continue
        style = "--" if t.stopped_early else "-"
        (line,) = ax.plot(t.steps, t.values, style, marker="o", markersize=3, label=_trial_label(t, mode))
        marker, size, _ = _END_MARKERS.get(t.ended, ("D", 8, ""))
        ax.plot(t.steps[-1:], t.values[-1:], marker, ms=size, color=line.get_color(), mec="black", mew=0.8)
    ax.set_xlabel("training step")
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} per trial (last point marked by how the trial ended)")
    ax.grid(alpha=0.3)
    extra = []
    if trials:
        ends = [
            Line2D([], [], ls="", marker=m, ms=s * 0.8, color="gray", mec="black", label=text)
            for m, s, text in _END_MARKERS.values()
        ]
        first = ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="trial: parameters")
        ax.add_artist(first)
        extra.append(first)
        ax.legend(handles=ends, fontsize=7, loc="lower left", bbox_to_anchor=(1.01, 0.0), title="last point")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight", bbox_extra_artists=extra)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------
def summarize(
    result_grid: Any,
    *,
    metric: str,
    param_names: Sequence[str],
    target_steps: int,
    early_stopping: bool = True,
) -> list[TrialSummary]:
    """Read a Ray `ResultGrid` into `TrialSummary` rows (statuses come from the experiment's trials). A
    TERMINATED trial whose last result is not `done` was stopped by an interrupt: status INTERRUPTED; so
    is one that ended short of `target_steps` when no scheduler stops trials (`early_stopping` False)."""
    statuses = _trial_statuses(result_grid)
    out = []
    for result in result_grid:
        df = result.metrics_dataframe
        steps: list[int] = []
        values: list[float] = []
        nodes: tuple[str, ...] = ()
        if df is not None and "step" in df and metric in df:
            rows = df[["step", metric]].dropna(subset=["step"])
            steps = [int(s) for s in rows["step"]]
            values = [float(v) for v in rows[metric]]
            if "node_id" in df:
                nodes = tuple(dict.fromkeys(str(n) for n in df["node_id"].dropna()))
        # Trial dirs are named trial_<id> by the search (`_trial_dirname`).
        trial_id = str(
            (result.metrics or {}).get("trial_id") or os.path.basename(result.path).removeprefix("trial_")
        )
        params = {k: result.config[k] for k in param_names if k in (result.config or {})}
        done = bool((result.metrics or {}).get("done"))
        status = "ERROR" if result.error else statuses.get(trial_id, "UNKNOWN")
        short = bool(steps) and steps[-1] < target_steps
        if status == "TERMINATED" and (not done or (short and not early_stopping)):
            status = INTERRUPTED
        error = str(result.error).strip().splitlines()[-1] if result.error else ""
        out.append(TrialSummary(trial_id, params, steps, values, status, target_steps, error, nodes, done))
    return out


def _trial_statuses(result_grid: Any) -> dict[str, str]:
    analysis = getattr(result_grid, "_experiment_analysis", None)
    trials = getattr(analysis, "trials", None) or []
    return {t.trial_id: str(t.status) for t in trials}
