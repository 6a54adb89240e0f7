"""The Ray cluster a search or a multi-worker training runs on: join or start it, check what every node sees.

Shared by `tune/` (trials over hosts) and `multiworker` (one training over hosts). Each check turns a
problem that would otherwise surface as a stuck or failing run (storage a node cannot see, a data set
built at different paths) into one `UserError` before anything starts.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from tpu_grapheme import ray_quiet
from tpu_grapheme.config import from_dict
from tpu_grapheme.data import paths
from tpu_grapheme.errors import UserError


def connect(address: str | None, *, num_cpus: int | None = None, what: str = "search") -> None:
    """Join `address`, or start a private local Ray instance on this machine's CPUs."""
    import ray

    env = ray_quiet.runtime_env()  # every Ray process as quiet as the CLI
    if address:
        wait_for_cluster(address)  # bounded: ray.init retries an address nobody answers forever
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=True, runtime_env=env)
        except (ConnectionError, RuntimeError) as e:
            raise UserError(f"cannot join the Ray cluster at {address}: {str(e).splitlines()[0]}") from None
        return
    # Without an address ray.init() would join a cluster that `ray start` left on this machine (or
    # RAY_ADDRESS), where num_cpus is refused: say what to do instead.
    running = os.environ.get("RAY_ADDRESS") or _address_of_ray_start()
    if running:
        raise UserError(
            f"a Ray cluster is already running here ({running}, from `ray start` or RAY_ADDRESS): "
            f"pass --address auto to {what} on it, or stop it (`ray stop`) for a private local {what}"
        )
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private local instance: no token needed
    ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, runtime_env=env)


def _address_of_ray_start() -> str | None:
    """The address `ray start` records for `ray.init()` on this machine (None: nothing running)."""
    try:
        from ray._private.utils import read_ray_address
    except ImportError:  # moved in another Ray version: let ray.init() decide
        return None
    return read_ray_address()


def alive_nodes() -> list[dict[str, Any]]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def check_shared_storage(
    storage: str,
    nodes: Sequence[Mapping[str, Any]],
    *,
    sees: Any = None,
    flag: str = "--storage",
    what: str = "search",
) -> None:
    """A multi-node run needs storage every node can see: gs:// (any URI), or a shared mount (NFS).

    A local path is checked, not assumed: the driver writes a marker file and every node looks for it
    (`sees(marker, nodes) -> [bool per node]`; default: a zero-CPU Ray task pinned to each node).
    """
    if paths.is_uri(storage) or len(nodes) < 2:
        return
    sees = sees or (lambda path, ns: on_each_node(os.path.exists, ns, path))
    marker = os.path.join(os.path.abspath(storage), f".shared_probe_{uuid.uuid4().hex}")
    os.makedirs(os.path.dirname(marker), exist_ok=True)
    with open(marker, "w") as f:
        f.write("probe\n")
    try:
        seen = sees(marker, nodes)
    finally:
        os.remove(marker)
    blind = [n["NodeManagerAddress"] for n, ok in zip(nodes, seen, strict=True) if not ok]
    if blind:
        raise UserError(
            f"{flag} {storage} is a local path that node(s) {', '.join(blind)} cannot see: a multi-node "
            f"{what} needs shared storage (gs://bucket/path, or an NFS mount at the same path on every node)"
        )


def on_each_node(fn: Any, nodes: Sequence[Mapping[str, Any]], *args: Any, timeout: float = 600) -> list[Any]:
    """Run `fn(*args)` once on every node (zero CPUs asked, so busy nodes still answer)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    remote = ray.remote(num_cpus=0)(fn)
    refs = [
        remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
            *args
        )
        for n in nodes
    ]
    return ray.get(refs, timeout=timeout)


def _ensure_synthetic_here(fixed: Mapping[str, Any], rendered: bool) -> tuple[str, ...]:
    from tpu_grapheme.data.synthetic_default import data_patterns, synthetic_rendered

    cfg = from_dict(fixed)
    return (*data_patterns(cfg), synthetic_rendered(cfg) if rendered else "")


def prepare_data(
    fixed: Mapping[str, Any],
    nodes: Sequence[Mapping[str, Any]],
    *,
    tag: str = "[tune]",
    rendered: bool = False,
) -> dict[str, Any]:
    """Synthetic default: build (or find cached) the data set once, before any worker, on every node,
    with its rendered set when a run may mix it in (`rendered`: some trial may have a rendered share).

    Workers get the resulting file patterns as fixed `train_folder`/`valid_folder` (and `rendered_folder`),
    so none regenerates.
    """
    if not from_dict(fixed).uses_synthetic:
        return dict(fixed)
    import ray

    t0 = time.time()
    here_patterns = _ensure_synthetic_here(fixed, rendered)  # this (the driver's) node first
    here = ray.get_runtime_context().get_node_id()
    others = [n for n in nodes if n["NodeID"] != here]
    # then every other node, in parallel; a shared cache dir makes these instant
    if others and any(
        tuple(p) != here_patterns for p in on_each_node(_ensure_synthetic_here, others, dict(fixed), rendered)
    ):
        raise UserError(
            "the synthetic data set landed at different paths on different nodes; "
            "pass --set synthetic_dir=<a path that is the same on every node>"
        )
    train, valid, rendered_set = here_patterns
    print(f"{tag} synthetic data ready in {time.time() - t0:.0f}s: {train} | {valid}", flush=True)
    extra = {"rendered_folder": rendered_set} if rendered_set else {}
    return {**fixed, "train_folder": train, "valid_folder": valid, **extra}


JOIN_TIMEOUT_S = 10.0  # how long `connect` waits for a cluster (one that is just starting) to answer


def wait_for_cluster(address: str, *, timeout: float = JOIN_TIMEOUT_S) -> None:
    """Wait until something listens at `address`'s host:port (`auto`: the address `ray start` recorded),
    at most `timeout` seconds; then a one-line UserError. `ray://` client addresses are left to Ray."""
    target = _address_of_ray_start() if address == "auto" else address
    if not target or "://" in target:
        return
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--address {address}: expected host:port or auto")
    deadline, reason = time.monotonic() + timeout, ""
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=max(0.1, min(2.0, timeout))):
                return
        except OSError as e:
            reason = e.strerror or type(e).__name__
        if time.monotonic() >= deadline:
            raise UserError(
                f"no Ray cluster answers at {target} ({reason.lower()} for {timeout:g}s): start one there "
                "(`ray start --head`) or fix --address"
            )
        time.sleep(0.5)


def check_resources(workers: int, *, cpus: float, gpus: float = 0.0, where: str = "the Ray cluster") -> None:
    """`workers` workers of `cpus` CPUs and `gpus` GPUs each fit the alive nodes' total resources (each
    worker on one node), or a one-line UserError: Ray would otherwise wait for them forever."""
    nodes = [n.get("Resources", {}) for n in alive_nodes()]
    for name, each, flag in (("CPU", cpus, "--cpus-per-worker"), ("GPU", gpus, "--gpus-per-worker")):
        if each <= 0:
            continue
        have = [float(r.get(name, 0)) for r in nodes]
        fits = sum(int(h // each) for h in have)  # workers of this size the nodes can hold
        if fits < workers:
            raise UserError(
                f"--workers {workers} x {flag} {each:g} asks for {workers * each:g} {name}s, {where} has "
                f"{sum(have):g} on {len(nodes)} node(s) (room for {fits} worker(s)): lower --workers or "
                f"{flag}, or add nodes"
            )
