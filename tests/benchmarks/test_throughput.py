"""benchmarks/throughput.py --quick end to end in a subprocess: every JSON field there and sane (not speed)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from tpu_grapheme.data import tfrecord
from tpu_grapheme.data.schema import HEIGHT, NUM_CLASSES, WIDTH

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "benchmarks", "throughput.py")
MAIN_RUNNERS = (
    "custom_spl1",
    "custom_splN",
    "cached_step",
    "custom_nocache",
    "pipeline_alone",
    "fit_default",
    "fit_spe",
    "aug_on",
    "aug_jit_kernels",  # CPU only: the step is not compiled, so the kernels can be on their own
    "seed_host_aug",
    "helper_bot_loop",
    "accum_k2",
    "accum_k4",
)
RATIOS = (
    "custom_vs_fit_default",
    "custom_vs_fit_tuned",
    "splN_vs_spl1",
    "aug_overhead",
    "aug_jit_vs_nojit",
    "stall_share",
    "stall_share_nocache",
    "cache_gain",
    "accum_k2_vs_k1",
    "accum_k4_vs_k1",
    "ours_aug_vs_seed_host_aug",
    "splN_vs_helper_bot",
    "pipeline_vs_step",
)


def _finite_positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("throughput")
    rng = np.random.default_rng(0)
    with tfrecord.ShardWriter(str(tmp / "00-96.tfrec")) as w:  # tiny data set, count in the name (cached)
        for i in range(96):
            image = rng.integers(0, 256, (HEIGHT, WIDTH), dtype=np.uint8)
            w.write(tfrecord.encode_example(f"T{i}", image, [int(rng.integers(n)) for n in NUM_CLASSES]))
    out = tmp / "out.json"
    cmd = [
        sys.executable,
        SCRIPT,
        "--quick",
        "--arch=tiny",
        "--resize=16,28",
        "--batch-size=8",
        "--steps=2",
        "--steps-per-loop=2",
        "--repeats=2",
        "--precisions=float32,bfloat16",
        "--no-multi-replica",
        f"--train-folder={tmp / '*.tfrec'}",
        f"--json={out}",
        f"--plot={tmp / 'out.png'}",
        f"--profile={tmp / 'prof'}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ratio" in proc.stdout and "MFU" in proc.stdout  # the console table
    assert (tmp / "out.png").stat().st_size > 1000
    return json.loads(out.read_text())


def test_runners_have_positive_finite_rates(result):
    runners = result["runners"]
    for name in (*MAIN_RUNNERS, "precision_bfloat16"):
        r = runners[name]
        assert r["error"] is None, (name, r["error"])
        assert len(r["images_per_s"]) == 2 and all(_finite_positive(v) for v in r["images_per_s"])
        assert r["min"] <= r["median"] <= r["max"]
        assert _finite_positive(r["first_window_s"]) and r["compile_s"] >= 0
        factor = int(name[-1]) if name.startswith("accum_k") else 20 if name == "pipeline_alone" else 1
        assert r["images_per_window"] == 2 * 8 * factor


def test_ratios_are_sane(result):
    ratios = result["ratios"]
    for name in (*RATIOS, "precision_bfloat16_vs_float32"):
        v = ratios[name]
        assert all(math.isfinite(v[k]) for k in ("median", "min", "max")), name
        assert v["min"] <= v["median"] <= v["max"]
    for name in RATIOS:
        if name not in ("aug_overhead", "stall_share", "stall_share_nocache"):
            assert ratios[name]["median"] > 0
    for name in ("stall_share", "stall_share_nocache"):
        assert 0.0 <= ratios[name]["min"] <= ratios[name]["max"] <= 1.0
    assert ratios["aug_overhead"]["median"] > -1.0
    assert ratios.get("fused_bn_vs_keras_bn") is None  # --quick's tiny arch has no BatchNormalization
    for name in ("custom_vs_fit_tuned", "aug_overhead", "stall_share", "accum_k4_vs_k1"):
        assert ratios[name]["target"] and ratios[name]["met"] is None  # --quick: smoke figures, never judged


def test_flops_device_and_config(result):
    f = result["flops"]
    for key in ("forward_flops_per_image", "achieved_flop_per_s", "peak_matmul_flop_per_s", "mfu"):
        assert _finite_positive(f[key]), key
    assert f["train_flops_per_image"] == 3 * f["forward_flops_per_image"]
    d = result["device"]
    assert d["device_kind"] == "cpu" and d["cpu_cores"] >= 1 and d["tensorflow"] and d["cpu_model"]
    assert result["config"]["global_batch"] == 8 and result["config"]["arch"] == "tiny"
    assert result["multi_replica"] == {}  # --no-multi-replica


def test_profile_breaks_both_loops_into_op_types(result):
    prof = result["profile"]
    assert set(prof) == {"custom_splN", result["ratios"]["custom_vs_fit_tuned"]["best_pair"][1]}
    for p in prof.values():
        assert os.path.exists(p["trace"]) and p["trace"].endswith(".xplane.pb")
        assert _finite_positive(p["ms_per_step"]) and _finite_positive(p["op_ms_per_step"])
        assert any("Conv2D" in op for op in p["top_ops_per_step"])  # the model's kernels (maybe fused)
        assert not any("::" in op or op.startswith(" ") for op in p["top_ops_per_step"])
        assert all(_finite_positive(v["ms"]) and v["count"] > 0 for v in p["top_ops_per_step"].values())
