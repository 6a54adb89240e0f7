"""The Ray Train backend of `--workers N`: it gives each worker the `TF_CONFIG` that
MultiWorkerMirroredStrategy reads, as `ray.train.tensorflow`'s backend does, without importing TensorFlow
in the driver and in Ray Train's controller (that package imports it on import: ~5 s and ~600 MB each).

Unlike Ray's, it does not set `TF_USE_LEGACY_KERAS`: this project is Keras 3.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass

import ray
from ray.train.backend import Backend, BackendConfig


def tf_config(worker_addresses: list[str], index: int) -> str:
    """The `TF_CONFIG` of worker `index` of a cluster of `worker_addresses` (host:port each)."""
    return json.dumps(
        {"cluster": {"worker": list(worker_addresses)}, "task": {"type": "worker", "index": index}}
    )


def _set_tf_config(worker_addresses: list[str], index: int) -> None:
    os.environ["TF_CONFIG"] = tf_config(worker_addresses, index)


def _address() -> str:
    """This worker's node IP and a free port on it (host:port): where its TensorFlow server will listen."""
    ip = ray.util.get_node_ip_address()
    ipv6 = ":" in ip
    with socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET) as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    return f"[{ip}]:{port}" if ipv6 else f"{ip}:{port}"


class _TFConfigBackend(Backend):
    def on_start(self, worker_group, backend_config: TFConfig) -> None:
        addresses = worker_group.execute(_address)
        ray.get(
            [
                worker_group.execute_single_async(i, _set_tf_config, worker_addresses=addresses, index=i)
                for i in range(len(worker_group))
            ]
        )


@dataclass
class TFConfig(BackendConfig):
    """`DataParallelTrainer(backend_config=TFConfig())`: a TensorFlow multi-worker group."""

    @property
    def backend_cls(self) -> type[Backend]:
        return _TFConfigBackend
