"""A validated search space as data: fixed `TrainConfig` values, searched params, and how to search.

`space_yaml` builds it from a YAML file (and is the only place that validates); this module only holds it,
derives what the search needs (Optuna distributions, ASHA's time axis) and writes it back as YAML.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from tpu_grapheme.config import TrainConfig, from_dict
from tpu_grapheme.metric_names import REPORTED_METRICS

DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice", "fixed")
# Metrics a search can optimise (the loop's scores, not its bookkeeping) -> their default mode.
METRICS = {name: mode for name, mode in REPORTED_METRICS.items() if mode}


def trial_config(fixed: Mapping[str, Any], params: Mapping[str, Any], **extra: Any) -> TrainConfig:
    """The TrainConfig of one trial: the fixed values, then the sampled params, then `extra`."""
    return from_dict({**fixed, **params, **extra})


@dataclasses.dataclass(frozen=True)
class Param:
    """One searched field. `low`/`high` for ranges (int: `step` too), `values` for choice."""

    name: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    step: int = 1
    values: tuple[Any, ...] = ()

    def probes(self) -> list[tuple[str, Any]]:
        """(label, value) pairs TrainConfig must accept: both range ends, or every choice."""
        if self.kind == "choice":
            return [(repr(v), v) for v in self.values]
        return [(f"low={self.low!r}", self.low), (f"high={self.high!r}", self.high)]

    def to_optuna(self) -> Any:
        import optuna.distributions as od

        if self.kind == "uniform":
            return od.FloatDistribution(self.low, self.high)
        if self.kind == "loguniform":
            return od.FloatDistribution(self.low, self.high, log=True)
        if self.kind == "int":
            return od.IntDistribution(self.low, self.high, step=self.step)
        return od.CategoricalDistribution(list(self.values))

    def to_yaml(self) -> dict[str, Any]:
        if self.kind == "choice":
            return {"choice": list(self.values)}
        if self.kind == "int" and self.step != 1:
            return {"int": [self.low, self.high, self.step]}
        return {self.kind: [self.low, self.high]}


@dataclasses.dataclass(frozen=True)
class Scheduler:
    name: str = "asha"  # asha | fifo
    max_t: int | None = None  # None: the trials' `steps`
    grace_period: int | None = None  # None: the trials' `checkpoint_interval` (their first report)
    reduction_factor: float = 3.0


@dataclasses.dataclass(frozen=True)
class Resources:
    """Per-trial (per-worker, when `workers` > 1) resources. `tpu: host` asks for all TPU chips of one host
    (one trial per TPU VM); `tpu: slice` asks for a multi-host slice's `TPU-<gen>-<chips>-head` resource,
    which only the slice's worker 0 carries, once: one trial per slice, driving the whole slice from there.
    """

    cpu: float = 1.0
    gpu: float = 0.0
    tpu: float | str = 0.0

    def bundle(self, *, host_tpu_chips: float = 0.0, slice_head: str = "") -> dict[str, float]:
        """Ray resource bundle of one trial (TPU chips are Ray's native `TPU` resource)."""
        tpu = host_tpu_chips if self.tpu in ("host", "slice") else float(self.tpu)
        out = {"CPU": self.cpu, "GPU": self.gpu, "TPU": tpu}
        if self.tpu == "slice":
            out[slice_head] = 1.0
        return {k: v for k, v in out.items() if v > 0} or {"CPU": 0.0}


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """A validated search: fixed TrainConfig values, searched params and how to search them."""

    source: str
    fixed: dict[str, Any]
    params: dict[str, Param]
    metric: str = "hierarchical_recall"
    mode: str = "max"
    trials: int = 8
    max_concurrent: int = 1
    seed: int | None = 0
    sampler: str = "tpe"
    scheduler: Scheduler = dataclasses.field(default_factory=Scheduler)
    resources: Resources = dataclasses.field(default_factory=Resources)
    points_to_evaluate: tuple[dict[str, Any], ...] = ()

    @property
    def name(self) -> str:
        return os.path.splitext(os.path.basename(self.source))[0] or "search"

    @property
    def steps(self) -> int:
        """The trials' `steps` (fixed, or TrainConfig's default)."""
        return from_dict(self.fixed).steps

    @property
    def checkpoint_interval(self) -> int:
        """Steps between a trial's reports: the fixed `checkpoint_interval`, or TrainConfig's default."""
        return from_dict(self.fixed).checkpoint_interval

    @property
    def may_render(self) -> bool:
        """Whether some trial may mix rendered images in (a searched or fixed `rendered_share` > 0)."""
        return "rendered_share" in self.params or from_dict(self.fixed).effective_rendered_share > 0

    @property
    def max_t(self) -> int:
        return self.scheduler.max_t or self.steps

    @property
    def grace_period(self) -> int:
        return self.scheduler.grace_period or self.checkpoint_interval

    def optuna_space(self) -> dict[str, Any]:
        return {name: p.to_optuna() for name, p in self.params.items()}

    def to_yaml_dict(self) -> dict[str, Any]:
        """The canonical YAML form; `parse_space(space.to_yaml_dict())` gives the same space back."""
        sched = {k: v for k, v in dataclasses.asdict(self.scheduler).items() if v is not None}
        search = {
            "metric": self.metric,
            "mode": self.mode,
            "trials": self.trials,
            "max_concurrent": self.max_concurrent,
            "seed": self.seed,
            "sampler": self.sampler,
            "scheduler": sched,
            "resources": dataclasses.asdict(self.resources),
        }
        if self.points_to_evaluate:
            search["points_to_evaluate"] = [dict(p) for p in self.points_to_evaluate]
        space = {k: {"fixed": v} for k, v in self.fixed.items()}
        space.update({k: p.to_yaml() for k, p in self.params.items()})
        return {"search": search, "space": space}
