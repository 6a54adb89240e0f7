"""Ray's worker processes (search trials, Ray Train controller and workers) as quiet as the train CLI.

Every process Ray starts gets `setup_worker` as its `worker_process_setup_hook` (Ray's runtime_env field,
run before any task or actor of the job): TensorFlow's import-time C++ lines are filtered as in the CLI
(`quiet_tf`), TensorFlow's absl INFO records stay off the console (Ray Train sets the worker's root
logger to INFO), and Ray Train's PlacementGroupCleaner asks the GCS instead of the dashboard. The
runtime_env also turns off Ray Train's PreemptionWatcher, whose actor start logs a core_worker E-line
every run. Warnings and errors of everything else still reach the driver's console (`log_to_driver`).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from tpu_grapheme import quiet_tf

QUIET_LOGGERS = {"absl": logging.WARNING}

# Ray Train's PreemptionWatcher feeds `ray.train.get_preemption_info`, which this project never reads
# (preemption here is SIGTERM: a checkpoint, then Ray Train's group restart); Ray 2.60 logs an E-line
# from core_worker.cc when it creates that actor (ray-project/ray#53727). The user's own setting wins.
RAY_ENV_DEFAULTS = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}


def runtime_env() -> dict[str, Any]:
    """The job's runtime_env: the setup hook, Ray Train's flags, and the user's TF_CPP_MIN_LOG_LEVEL."""
    env = {k: os.environ.get(k, v) for k, v in RAY_ENV_DEFAULTS.items()}
    if (level := quiet_tf.user_level()) is not None:  # the user's choice: `quiet_tf` then filters nothing
        env["TF_CPP_MIN_LOG_LEVEL"] = level
    for k, v in env.items():  # this driver starts Ray Train controllers too (`--workers`)
        os.environ.setdefault(k, v)
    return {"env_vars": env, "worker_process_setup_hook": setup_worker}


def setup_worker() -> None:
    """Ray's per-process hook: filter TensorFlow's import, quiet absl, let the cleaner ask the GCS."""
    quiet_tf.install()
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    _cleaner_asks_the_gcs()


_PG_CLEANER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"


def _cleaner_asks_the_gcs() -> None:
    """Ray Train v2's detached PlacementGroupCleaner asks Ray's state API, every second, whether the
    controller is alive (`state.util.is_actor_alive`). That API is served by the dashboard, which our Ray
    instances run without: each query failed with a warning ("Failed to query Ray Train Controller actor
    state"), or the cleaner's thread died with a traceback where several Ray instances share the machine.
    The same answer comes from the GCS actor table, which needs no dashboard. Patched when the module is
    imported (only the cleaner's process does): importing Ray Train in every worker would cost seconds."""
    if _PG_CLEANER in sys.modules:
        _patch_cleaner(sys.modules[_PG_CLEANER])
    elif not any(isinstance(f, _AfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(_PG_CLEANER, _patch_cleaner))


def _patch_cleaner(cleaner: Any) -> None:
    def is_actor_alive(actor_id: str, timeout: float) -> bool:
        from ray._private import state

        info = state.actors(actor_id=actor_id)
        return bool(info) and info.get("State") != "DEAD"  # gone from the table: dead

    cleaner.is_actor_alive = is_actor_alive


class _AfterImport(importlib.abc.MetaPathFinder):
    """Calls `then(module)` once module `name` has executed in this process (one shot)."""

    def __init__(self, name: str, then: Callable[[Any], None]) -> None:
        self.name, self.then = name, then

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenLoader(spec.loader, self.then)
        return spec


class _ThenLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader, then: Callable[[Any], None]) -> None:
        self._loader, self._then = loader, then

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        self._then(module)
