"""benchmarks/report.py on a hand-made result: targets, the console table and the plot."""

from __future__ import annotations

import math

import report


def _ratio(median: float) -> dict:
    return {"median": median, "min": median - 0.1, "max": median + 0.1, "a": "x", "b": "y"}


def test_targets_are_checked_and_missing_ratios_dropped():
    out = report.with_targets(
        {
            "custom_vs_fit_tuned": _ratio(1.1),
            "stall_share": _ratio(0.5),
            "splN_vs_spl1": _ratio(1.0),
            "cache_gain": None,
        },
        ["custom_splN", "fit_spe"],
    )
    assert set(out) == {"custom_vs_fit_tuned", "stall_share", "splN_vs_spl1"}
    assert out["custom_vs_fit_tuned"]["met"] is True and out["custom_vs_fit_tuned"]["target"] == ">= 1.05"
    assert out["custom_vs_fit_tuned"]["best_pair"] == ["custom_splN", "fit_spe"]
    assert out["stall_share"]["met"] is False and out["stall_share"]["best_pair"] is None
    assert "target" not in out["splN_vs_spl1"]
    assert report.check("aug_overhead", math.nan) is None and report.check("cache_gain", 1.0) is None


def _result() -> dict:
    runner = {
        "label": "custom loop",
        "median": 10.0,
        "min": 9.0,
        "max": 11.0,
        "compile_s": 1.0,
        "error": None,
    }
    failed = {"label": "keras native", "error": "RuntimeError: boom"}
    return {
        "device": {
            "device_kind": "cpu",
            "accelerators": [],
            "cpu_model": "test cpu",
            "cpu_cores": 2,
            "tensorflow": "2",
            "keras": "3",
            "load_average_start": None,
            "load_average_end": None,
        },
        "config": {"arch": "tiny", "resize": [16, 28], "global_batch": 8, "steps": 2, "repeats": 2},
        "runners": {"custom_splN": runner},
        "multi_replica": {"ours_k1": runner, "keras_native_k4": failed, "replicas": 2},
        "ratios": report.with_targets({"stall_share": _ratio(0.01)}, []),
        "flops": {
            "forward_flops_per_image": 1e6,
            "achieved_flop_per_s": 1e9,
            "peak_matmul_flop_per_s": 1e10,
            "mfu": 0.1,
        },
        "profile": {
            "custom_splN": {
                "ms_per_step": 5.0,
                "op_ms_per_step": 4.0,
                "top_ops_per_step": {"Conv2D": {"ms": 1.0, "count": 2.0}},
            }
        },
        "elapsed_s": 1.0,
    }


def test_table_and_plot(capsys, tmp_path):
    result = _result()
    report.print_table(result)
    out = capsys.readouterr().out
    assert "custom loop" in out and "failed: RuntimeError: boom" in out and "MFU 10.0 %" in out
    assert "stall_share" in out and "met" in out and "Conv2D" in out
    report.plot(result, str(tmp_path / "p.png"))
    report.write_json(result, str(tmp_path / "r.json"))
    assert (tmp_path / "p.png").stat().st_size > 1000 and (tmp_path / "r.json").stat().st_size > 100


def test_quick_runs_are_smoke_figures_never_judged(capsys):
    """`--quick` (windows of a few steps) keeps each target for reference but says nothing met or missed."""
    ratios = report.with_targets(
        {"stall_share": _ratio(0.5), "custom_vs_fit_tuned": _ratio(1.1)}, [], judge=False
    )
    assert [v["met"] for v in ratios.values()] == [None, None]
    assert ratios["stall_share"]["target"] == "<= 0.02"
    result = {**_result(), "ratios": ratios}
    result["config"] = {**result["config"], "quick": True}
    report.print_table(result)
    out = capsys.readouterr().out
    assert report.SMOKE_NOTE in out and "MISSED" not in out and " met" not in out
    assert "<= 0.02: not judged" in out
    result["config"]["quick"] = False
    report.print_table({**result, "ratios": report.with_targets({"stall_share": _ratio(0.5)}, [])})
    out = capsys.readouterr().out
    assert "SMOKE" not in out and "<= 0.02: MISSED" in out
