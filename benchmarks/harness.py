"""Timing harness of `throughput.py`: runners, interleaved rounds, paired ratios, device facts.

A runner is one configuration whose `window()` does a fixed amount of work; `run_group` warms every
runner up once, then times one window of each per round, rotating the order, so load drifts on a shared
machine hit every configuration alike. Ratios pair two runners' windows of the same round.
"""

from __future__ import annotations

import logging
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable

import keras
import tensorflow as tf

from tpu_grapheme import quiet_tf

_T0 = time.perf_counter()


class _NoRetracingNote(logging.Filter):
    """Drops TensorFlow's "triggered tf.function retracing" warning: every runner builds its own step, and
    the detector counts traces of one Python function across all instances, so here it warns of the
    benchmark's design (one trace per runner), not of a retracing step."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


tf.get_logger().addFilter(_NoRetracingNote())


def elapsed() -> float:
    """Seconds since this module was imported (the start of the benchmark)."""
    return time.perf_counter() - _T0


def log(msg: str) -> None:
    print(f"[{elapsed():6.1f}s] {msg}", flush=True)


class Runner:
    """One configuration: `window()` runs `steps` optimizer steps and returns when the work is done."""

    def __init__(self, name: str, images_per_window: int, window: Callable[[], None], label: str = ""):
        self.name, self.images, self._window, self.label = name, images_per_window, window, label or name
        self.first_s: float | None = None
        self.times: list[float] = []
        self.error: str | None = None
        self.model: keras.Model | None = None  # the model it trains, when there is one (FLOPs)

    def timed(self) -> float:
        t = time.perf_counter()
        self._window()
        return time.perf_counter() - t

    @property
    def rates(self) -> list[float]:
        return [self.images / t for t in self.times]

    @property
    def median_rate(self) -> float:
        return statistics.median(self.rates) if self.times else 0.0

    def summary(self) -> dict:
        rates = self.rates
        out = {
            "label": self.label,
            "images_per_window": self.images,
            "window_s": self.times,
            "images_per_s": rates,
            "first_window_s": self.first_s,
            "error": self.error,
        }
        if rates:
            med_t = statistics.median(self.times)
            out.update(
                median=statistics.median(rates),
                min=min(rates),
                max=max(rates),
                compile_s=max(0.0, (self.first_s or 0.0) - med_t),
            )
        return out


class FitRunner(Runner):
    """`model.fit` in a thread, one epoch (`steps` steps) per window, paced by the main thread.

    One fit call keeps its iterator across epochs (steps_per_epoch is set), so no window pays for a
    pipeline restart; the callback only waits for its turn and stops the clock at the epoch's end.
    """

    def __init__(self, name, images_per_window, *, model, dataset, steps, windows, strategy, label=""):
        super().__init__(name, images_per_window, self._turn, label)
        self.model = model
        self._go, self._done = threading.Event(), threading.Event()
        self._elapsed = 0.0
        self._exc: BaseException | None = None
        self._thread = threading.Thread(
            target=self._fit, args=(model, dataset, steps, windows, strategy), daemon=True, name=name
        )
        self._thread.start()

    def _pace(self) -> keras.callbacks.Callback:
        runner = self

        class Pace(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                runner._go.wait()
                runner._go.clear()
                runner._t = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                float((logs or {}).get("loss", 0.0))  # the step's result is on the host: work done
                runner._elapsed = time.perf_counter() - runner._t
                runner._done.set()

        return Pace()

    def _fit(self, model, dataset, steps, windows, strategy) -> None:
        try:
            with strategy.scope():
                model.fit(
                    dataset,
                    epochs=windows,
                    steps_per_epoch=steps,
                    shuffle=False,  # a tf.data pipeline shuffles itself (Keras warns of the default True)
                    verbose=0,
                    callbacks=[self._pace()],
                )
        except BaseException as e:  # surfaced in the main thread by _turn
            self._exc = e
            self._done.set()

    def _turn(self) -> None:
        self._done.clear()
        self._go.set()
        while not self._done.wait(1.0):
            if not self._thread.is_alive():
                raise RuntimeError(f"{self.name}: fit thread ended early")
        if self._exc is not None:
            raise self._exc

    def timed(self) -> float:
        self._turn()
        return self._elapsed


def _warm_up(runners: list[Runner]) -> list[Runner]:
    """Time every runner's first window (compile included); a runner that fails keeps its error."""
    live = []
    for r in runners:
        log(f"warm-up {r.name} ...")
        try:
            # a first run logs oneDNN's known notes (its float16 fallback): kept off the console
            with quiet_tf.filtered_stderr():
                r.first_s = r.timed()
            live.append(r)
            log(f"warm-up {r.name}: {r.first_s:.1f}s (compile + 1 window)")
        except Exception as e:  # one failing configuration (e.g. a precision the device lacks) is data
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            r.error = f"{type(e).__name__}: {first}"
            log(f"warm-up {r.name} failed: {r.error}")
    return live


def run_group(runners: list[Runner], repeats: int) -> list[Runner]:
    """Warm every runner up, then `repeats` rounds of one window each, rotating the order per round."""
    live = _warm_up(runners)
    for i in range(repeats):
        order = live[i % len(live) :] + live[: i % len(live)] if live else []
        for r in order:
            r.times.append(r.timed())
        log(
            f"round {i + 1}/{repeats}: " + ", ".join(f"{r.name} {r.images / r.times[-1]:,.0f}" for r in order)
        )
    return runners


def _spread(vals: list[float], a: str, b: str) -> dict:
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "a": a, "b": b}


def paired(a: Runner | None, b: Runner | None, fn=lambda x, y: x / y) -> dict | None:
    """Median/min/max over rounds of fn(rate_a, rate_b) (both measured in the same round)."""
    if a is None or b is None or not a.times or not b.times:
        return None
    return _spread([fn(x, y) for x, y in zip(a.rates, b.rates, strict=False)], a.name, b.name)


def paired_summaries(d: dict, a: str, b: str) -> dict | None:
    """`paired` for runner summaries read back from JSON (the multi-replica subprocess)."""
    x, y = (d.get(a) or {}).get("images_per_s"), (d.get(b) or {}).get("images_per_s")
    if not x or not y:
        return None
    return _spread([p / q for p, q in zip(x, y, strict=False)], a, b)


def best(rs: dict[str, Runner], *names: str) -> Runner:
    """The runner of the highest median rate among `names` (those present)."""
    return max((rs[n] for n in names if n in rs), key=lambda r: r.median_rate)


def matmul_peak(kind: str, *, seconds: float) -> dict:
    """Dense float32 matmul FLOP/s on the device (the best of several timed bursts)."""
    n = 4096 if kind in ("gpu", "tpu") else 1024
    a = tf.random.stateless_normal([n, n], seed=[1, 2])
    b = tf.random.stateless_normal([n, n], seed=[3, 4])
    reps = 8

    @tf.function
    def burst(a, b):
        c = a
        for _ in range(reps):
            c = tf.matmul(c, b) * 1e-3
        return tf.reduce_sum(c)

    float(burst(a, b))
    top, t_end = 0.0, time.perf_counter() + seconds
    while True:
        t = time.perf_counter()
        float(burst(a, b))
        top = max(top, 2.0 * n**3 * reps / (time.perf_counter() - t))
        if time.perf_counter() > t_end:
            break
    return {"n": n, "dtype": "float32", "flop_per_s": top}


def load_average() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        if names:
            return names[0]
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(strategy: tf.distribute.Strategy, kind: str) -> dict:
    """The host and device a run measured, for the report."""
    accel = []
    for d in tf.config.list_physical_devices():
        if d.device_type != "CPU":
            details = tf.config.experimental.get_device_details(d) if d.device_type == "GPU" else {}
            accel.append(f"{d.device_type}:{details.get('device_name', d.name)}")
    return {
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "load_average_start": load_average(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "device_kind": kind,
        "accelerators": accel,
        "replicas": strategy.num_replicas_in_sync,
        "strategy": type(strategy).__name__,
    }
