"""The Ray cluster a search runs on: join or start it, check it can hold a trial, prepare data on every node.

Each check turns a problem that would otherwise surface as a stuck or failing trial (no node with the
resources, storage a node cannot see) into one `UserError` before any trial starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from tpu_grapheme.config import from_dict
from tpu_grapheme.errors import UserError
from tpu_grapheme.ray_cluster import alive_nodes, check_shared_storage, connect, prepare_data
from tune.space import SearchSpace

__all__ = [
    "alive_nodes",
    "check_local",
    "check_shared_storage",
    "connect",
    "describe_nodes",
    "prepare_data",
    "trial_bundle",
]

TRIAL_RESOURCES = ("CPU", "GPU", "TPU")  # the node resources a trial can ask for


def _offer(node: Mapping[str, Any]) -> str:
    """`CPU=8, TPU=4`: what a node offers trials."""
    return ", ".join(
        f"{k}={v:g}"
        for k, v in sorted(node["Resources"].items())
        if k in TRIAL_RESOURCES or k.endswith("-head")
    )


def describe_nodes(nodes: Sequence[Mapping[str, Any]]) -> str:
    """One line per node: id, address and the resources trials can ask for."""
    return "\n".join(f"[tune] node {n['NodeID']} {n['NodeManagerAddress']}: {_offer(n)}" for n in nodes)


def slice_heads(nodes: Sequence[Mapping[str, Any]]) -> list[str]:
    """The `TPU-<gen>-<chips>-head` resources in the cluster: one per multi-host slice, on its worker 0."""
    return sorted({k for n in nodes for k in n["Resources"] if k.startswith("TPU-") and k.endswith("-head")})


def trial_bundle(space: SearchSpace, nodes: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The per-trial bundle (per worker when the trials are `workers` > 1 trainings); an error now if the
    cluster could never run a trial."""
    tpu_hosts = [n["Resources"].get("TPU", 0) for n in nodes if n["Resources"].get("TPU", 0) > 0]
    if space.resources.tpu == "host" and not tpu_hosts:
        raise UserError("resources tpu=host, but no node in the Ray cluster advertises TPU chips")
    head = ""
    if space.resources.tpu == "slice":
        heads = slice_heads(nodes)
        if len(heads) != 1:
            raise UserError(
                "resources tpu=slice needs the Ray cluster to hold multi-host TPU slices of one type "
                f"(a TPU-<gen>-<chips>-head resource on each slice's worker 0); found {heads or 'none'}"
            )
        head = heads[0]
        tpu_hosts = [n["Resources"].get("TPU", 0) for n in nodes if n["Resources"].get(head)]
    bundle = space.resources.bundle(host_tpu_chips=min(tpu_hosts) if tpu_hosts else 0, slice_head=head)
    workers = from_dict(space.fixed).workers
    if workers > 1 and head:
        raise UserError("resources tpu=slice drives a slice from one process: it takes workers=1")
    fits = [min(n["Resources"].get(k, 0) // v if v else workers for k, v in bundle.items()) for n in nodes]
    if not any(fits):
        offer = "; ".join(_offer(n) for n in nodes)
        raise UserError(f"no Ray node can hold one trial's resources {bundle}; the nodes offer: {offer}")
    if sum(fits) < workers:
        raise UserError(
            f"a trial of workers={workers} needs {workers} x {bundle}, but the Ray cluster holds only "
            f"{int(sum(fits))} such bundle(s)"
        )
    if workers > 1 and space.trials > 1:
        _check_cpu_headroom(space, workers, bundle.get("CPU", 0.0), nodes)
    return bundle


def _check_cpu_headroom(
    space: SearchSpace, workers: int, cpu: float, nodes: Sequence[Mapping[str, Any]]
) -> None:
    """Trials of several Ray Train workers must leave a CPU of the cluster free: when the running trials'
    workers reserve every CPU, the next trial's worker group never starts (measured with Ray 2.60 on a
    2-CPU cluster: the second trial waited for its workers until killed; with one CPU free it started)."""
    at_once = min(space.max_concurrent, space.trials)
    total = sum(n["Resources"].get("CPU", 0) for n in nodes)
    if at_once * workers * cpu >= total:
        raise UserError(
            f"{at_once} trial(s) at once of workers={workers} x {cpu:g} CPU reserve all {total:g} CPUs of the "
            "Ray cluster, and Ray Train then never starts the next trial's workers: leave a CPU free "
            "(lower --resources cpu or --max-concurrent)"
        )


def check_local(space: SearchSpace, num_cpus: int | None, *, address: str | None = None) -> None:
    """Before Ray starts: `--num-cpus` at least 1, and (for a local instance, no `address`) the trials'
    CPUs fit in it: the checks `trial_bundle` makes on a running cluster. GPUs and TPUs are known only
    once Ray has looked, so a space that asks for them is checked after the start."""
    if num_cpus is not None and num_cpus < 1:
        raise UserError(f"--num-cpus must be at least 1, got {num_cpus} (leave it out for all CPUs)")
    if address or space.resources.gpu or space.resources.tpu:
        return
    cpus = num_cpus or os.cpu_count() or 1
    local = {"NodeID": "local", "NodeManagerAddress": "this machine", "Resources": {"CPU": float(cpus)}}
    try:
        trial_bundle(space, [local])
    except UserError as e:
        raise UserError(f"{e} (a local Ray instance of {cpus} CPUs; --num-cpus sets it)") from None
