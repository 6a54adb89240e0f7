"""Turn a finished search into a ranked table, the best config as YAML and a metric-over-steps plot.

`summarize(result_grid, metric=..., param_names=..., target_steps=...)` reads Ray's `ResultGrid` into
plain `TrialSummary` rows; everything else here works on those rows only, so it is testable without Ray.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from tpu_grapheme.config_io import save_yaml
from tune.space import trial_config


@dataclasses.dataclass(frozen=True)
class TrialSummary:
    trial_id: str
    params: dict[str, Any]
    steps: list[int]  # reported steps, in order
    values: list[float]  # the search metric at those steps
    status: str  # TERMINATED, ERROR, RUNNING, PENDING, PAUSED
    target_steps: int  # the steps the trial would train for
    error: str = ""
    node_ids: tuple[str, ...] = ()  # nodes the trial reported from

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

    def best(self, mode: str) -> float:
        vals = [v for v in self.values if not math.isnan(v)]
        if not vals:
            return math.nan
        return max(vals) if mode == "max" else min(vals)


def rank(trials: Sequence[TrialSummary], mode: str) -> list[TrialSummary]:
    """Best first by each trial's best metric; trials without a result go last."""

    def key(t: TrialSummary) -> tuple[int, float]:
        b = t.best(mode)
        return (1, 0.0) if math.isnan(b) else (0, -b if mode == "max" else b)

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
        if t.status == "ERROR":
            ended = "error"
        elif t.stopped_early:
            ended = "stopped early"
        elif t.finished:
            ended = "completed"
        else:
            ended = t.status.lower()
        rows.append(
            [
                t.trial_id,
                *(_fmt(t.params.get(n, "")) for n in names),
                _fmt(t.best(mode)),
                str(t.last_step),
                ended,
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_best_yaml(best: TrialSummary, fixed: Mapping[str, Any], path: str) -> str:
    """The winning trial's full TrainConfig (fixed values + its params) for `tpu_grapheme.train --config`."""
    cfg = trial_config(fixed, best.params)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_yaml(cfg, path)
    return path


def plot_trials(trials: Sequence[TrialSummary], *, metric: str, mode: str, path: str, title: str = "") -> str:
    """One line per trial: the metric against the training step (early-stopped lines end early)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for t in rank(trials, mode):
        if not t.steps:
            continue
        style = "--" if t.stopped_early else "-"
        ax.plot(
            t.steps, t.values, style, marker="o", markersize=3, label=f"{t.trial_id} ({_fmt(t.best(mode))})"
        )
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} per trial (dashed: stopped early)")
    ax.grid(alpha=0.3)
    if trials:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------
def summarize(
    result_grid: Any, *, metric: str, param_names: Sequence[str], target_steps: int
) -> list[TrialSummary]:
    """Read a Ray `ResultGrid` into `TrialSummary` rows (statuses come from the experiment's trials)."""
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
        status = statuses.get(trial_id, "UNKNOWN")
        status = "ERROR" if result.error else status
        error = str(result.error).strip().splitlines()[-1] if result.error else ""
        out.append(TrialSummary(trial_id, params, steps, values, status, target_steps, error, nodes))
    return out


def _trial_statuses(result_grid: Any) -> dict[str, str]:
    analysis = getattr(result_grid, "_experiment_analysis", None)
    trials = getattr(analysis, "trials", None) or []
    return {t.trial_id: str(t.status) for t in trials}
