"""Every trial as a session of TensorBoard's HParams dashboard (KerasTuner's convention).

`<dir>/` holds the experiment config (`hparams_config`: the searched params with their domains, the
metrics); `<dir>/trial_<id>/` one session per trial: its sampled params (`hparams`), the metrics at
every reported step, and how it ended. Open with `tensorboard --logdir <experiment dir>`.

Written with the protos of `tensorboard.plugins.hparams.summary_v2` (what `hp.hparams_pb` and
`hp.hparams_config_pb` return; `hparams.api` re-exports them but imports TensorFlow) into event files
framed by TensorBoard's TF-free `RecordWriter` (its `EventFileWriter` opens files through `tf.io.gfile`,
which imports TensorFlow): the search driver never imports TensorFlow.
"""

from __future__ import annotations

import glob
import json
import os
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ray.tune import Callback

from tune.space import Param, SearchSpace

HPARAMS_DIR = "hparams"
EVENT_GLOB = "events.out.tfevents.*"


def _domain(p: Param) -> Any:
    from tensorboard.plugins.hparams import summary_v2 as hp

    if p.kind in ("uniform", "loguniform"):
        return hp.RealInterval(float(p.low), float(p.high))
    if p.kind == "int":
        return hp.IntInterval(int(p.low), int(p.high))
    values = [hparam_value(v) for v in p.values]
    return hp.Discrete(values) if len({type(v) for v in values}) == 1 else None


def hparam_value(value: Any) -> bool | int | float | str:
    """A value TensorBoard can hold: bool, number or string (lists and None as their JSON text)."""
    if isinstance(value, bool | int | float | str):
        return value
    return json.dumps(value)


def metric_tags(space: SearchSpace) -> list[str]:
    """The search metric first, then `valid_loss` (every trial reports it) when it is not the metric."""
    return list(dict.fromkeys([space.metric, "valid_loss"]))


def _open_event_file(run_dir: str) -> tuple[Any, Any]:
    """A new event file in `run_dir` (named as TensorBoard names them), its version record written."""
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    os.makedirs(run_dir, exist_ok=True)
    name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}"
    f = open(os.path.join(run_dir, name), "wb")  # noqa: SIM115 (kept open across reports)
    records = RecordWriter(f)
    records.write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString())
    return f, records


class HParamsLog(Callback):
    """A Ray Tune callback writing the HParams dashboard's files under `log_dir` (on the driver's disk)."""

    def __init__(self, space: SearchSpace, log_dir: str) -> None:
        self.log_dir = os.path.abspath(log_dir)
        self.params = dict(space.params)
        self.metrics = metric_tags(space)
        self._writers: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:  # Ray pickles callbacks with the experiment
        return {**self.__dict__, "_writers": {}}

    # --- writing ----------------------------------------------------------------------------------
    def _write(self, run: str, summary: Any, step: int = 0) -> None:
        from tensorboard.compat.proto import event_pb2

        if run not in self._writers:
            self._writers[run] = _open_event_file(os.path.join(self.log_dir, run))
        f, records = self._writers[run]
        records.write(event_pb2.Event(wall_time=time.time(), step=step, summary=summary).SerializeToString())
        f.flush()  # the dashboard shows a running search as it goes

    def _close(self, run: str) -> None:
        entry = self._writers.pop(run, None)
        if entry is not None:
            entry[0].close()

    def write_config(self) -> None:
        """The experiment's `hparams_config` (once: a resumed search finds it already there)."""
        from tensorboard.plugins.hparams import summary_v2 as hp

        if glob.glob(os.path.join(self.log_dir, EVENT_GLOB)):
            return
        hparams = [hp.HParam(name, _domain(p)) for name, p in self.params.items()]
        metrics = [hp.Metric(tag, display_name=tag) for tag in self.metrics]
        self._write("", hp.hparams_config_pb(hparams=hparams, metrics=metrics))
        self._close("")

    def start(self, trial_id: str, config: Mapping[str, Any]) -> None:
        from tensorboard.plugins.hparams import summary_v2 as hp

        values = {k: hparam_value(config[k]) for k in self.params if k in config}
        self._write(f"trial_{trial_id}", hp.hparams_pb(values, trial_id=trial_id))

    def result(self, trial_id: str, result: Mapping[str, Any]) -> None:
        from tensorboard.plugins.scalar.summary_v2 import scalar_pb

        if "step" not in result:
            return
        for tag in self.metrics:
            if isinstance(result.get(tag), int | float):
                self._write(f"trial_{trial_id}", scalar_pb(tag, float(result[tag])), int(result["step"]))

    def end(self, trial_id: str, *, failed: bool) -> None:
        from tensorboard.compat.proto import summary_pb2
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

        status = api_pb2.STATUS_FAILURE if failed else api_pb2.STATUS_SUCCESS
        data = plugin_data_pb2.HParamsPluginData(
            session_end_info=plugin_data_pb2.SessionEndInfo(status=status, end_time_secs=time.time())
        )
        summary = summary_pb2.Summary()
        summary.value.add(
            tag=metadata.SESSION_END_INFO_TAG,
            metadata=metadata.create_summary_metadata(data),
            tensor=metadata.NULL_TENSOR,
        )
        self._write(f"trial_{trial_id}", summary)
        self._close(f"trial_{trial_id}")

    # --- Ray Tune's hooks -------------------------------------------------------------------------
    def setup(self, **info: Any) -> None:
        self.write_config()

    def on_trial_start(self, iteration: int, trials: Sequence[Any], trial: Any, **info: Any) -> None:
        self.start(trial.trial_id, trial.config)

    def on_trial_result(
        self, iteration: int, trials: Sequence[Any], trial: Any, result: dict, **info: Any
    ) -> None:
        self.result(trial.trial_id, result)

    def on_trial_complete(self, iteration: int, trials: Sequence[Any], trial: Any, **info: Any) -> None:
        self.end(trial.trial_id, failed=False)

    def on_trial_error(self, iteration: int, trials: Sequence[Any], trial: Any, **info: Any) -> None:
        self.end(trial.trial_id, failed=True)

    def on_experiment_end(self, trials: Sequence[Any], **info: Any) -> None:
        for run in list(self._writers):
            self._close(run)
