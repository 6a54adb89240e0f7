"""benchmarks/harness.py with fake runners: interleaved rounds, warm-up failures as data, paired ratios."""

from __future__ import annotations

import harness
import pytest


def _runner(name: str, images: int, calls: list[str], fail: bool = False) -> harness.Runner:
    def window():
        calls.append(name)
        if fail:
            raise RuntimeError("no such kernel\nsecond line")

    return harness.Runner(name, images, window, label=f"{name} label")


def test_run_group_warms_up_then_rotates_the_order_every_round():
    calls: list[str] = []
    rs = [_runner(n, 10, calls) for n in ("a", "b", "c")]
    harness.run_group(rs, repeats=3)
    assert calls == ["a", "b", "c"] + ["a", "b", "c"] + ["b", "c", "a"] + ["c", "a", "b"]
    for r in rs:
        assert r.first_s is not None and len(r.times) == 3 and r.error is None


def test_a_failing_warm_up_is_recorded_and_the_runner_left_out():
    calls: list[str] = []
    ok, bad = _runner("ok", 10, calls), _runner("bad", 10, calls, fail=True)
    harness.run_group([ok, bad], repeats=2)
    assert bad.error == "RuntimeError: no such kernel" and bad.times == []
    assert calls.count("bad") == 1 and len(ok.times) == 2
    s = bad.summary()
    assert s["error"] and "median" not in s and s["label"] == "bad label"


def test_summary_and_paired_ratios_use_windows_of_the_same_round():
    a, b = harness.Runner("a", 100, lambda: None), harness.Runner("b", 100, lambda: None)
    a.times, b.times, a.first_s = [1.0, 2.0, 4.0], [2.0, 2.0, 2.0], 5.0
    s = a.summary()
    assert s["images_per_s"] == [100.0, 50.0, 25.0]
    assert (s["median"], s["min"], s["max"]) == (50.0, 25.0, 100.0)
    assert s["compile_s"] == pytest.approx(3.0)  # first window - median window
    r = harness.paired(a, b)
    assert (r["median"], r["min"], r["max"], r["a"], r["b"]) == (1.0, 0.5, 2.0, "a", "b")
    assert harness.paired(a, None) is None and harness.paired(a, harness.Runner("c", 1, lambda: None)) is None
    fast = harness.Runner("fast", 100, lambda: None)
    fast.times = [0.5]
    assert harness.best({"a": a, "b": b, "fast": fast}, "a", "fast", "missing") is fast


def test_paired_summaries_reads_the_subprocess_json():
    d = {"x": {"images_per_s": [2.0, 4.0]}, "y": {"images_per_s": [1.0, 1.0]}, "z": {"error": "boom"}}
    assert harness.paired_summaries(d, "x", "y")["median"] == 3.0
    assert harness.paired_summaries(d, "x", "z") is None and harness.paired_summaries({}, "x", "y") is None


def test_device_info_and_matmul_peak():
    import tensorflow as tf

    info = harness.device_info(tf.distribute.get_strategy(), "cpu")
    assert info["cpu_cores"] >= 1 and info["replicas"] == 1 and info["device_kind"] == "cpu"
    peak = harness.matmul_peak("cpu", seconds=0.0)
    assert peak["n"] == 1024 and peak["flop_per_s"] > 0
