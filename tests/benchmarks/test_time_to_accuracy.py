"""benchmarks/time_to_accuracy.py: thresholds read off the evaluations, and one tiny end-to-end run."""

from __future__ import annotations

import json

import pytest
import time_to_accuracy as tta

from tpu_grapheme.errors import UserError

EVALS = [
    {"step": 100, "seconds": 10.0, "all": 0.5, "seen": 0.6, "unseen": 0.3},
    {"step": 200, "seconds": 19.0, "all": 0.8, "seen": 0.91, "unseen": 0.55},
    {"step": 300, "seconds": 28.0, "all": 0.85, "seen": 0.90, "unseen": 0.62},  # seen dips: first hit counts
]


def test_reached_is_the_first_evaluation_at_or_above_the_threshold():
    assert tta.reached(EVALS, "seen", 0.9) == {"step": 200, "seconds": 19.0}
    assert tta.reached(EVALS, "unseen", 0.62) == {"step": 300, "seconds": 28.0}
    assert tta.reached(EVALS, "seen", 0.97) is None


def test_variants_and_thresholds_are_checked_before_any_run():
    assert tta.parse_variant("both:rendered_share=0.25,ema_decay=0.99") == (
        "both",
        {"rendered_share": 0.25, "ema_decay": 0.99},
    )
    assert tta.parse_variant("default") == ("default", {})
    with pytest.raises(UserError, match="ema_decay|ema-decay"):
        tta.parse_variant("bad:ema_decay=1.5")
    with pytest.raises(UserError, match="thresholds must be in"):
        tta.numbers("0.9,1.2", "--seen")


def test_a_tiny_run_writes_json_table_and_plot(tmp_path, capsys):
    variant = (
        f"tiny:arch=tiny,resize=32x56,synthetic_rows=120,synthetic_dir={tmp_path / 'data'},batch_size=32,"
        "steps=8,steps_per_loop=2,log_interval=4,dropout=0.0,rendered_share=0"
    )
    out = tmp_path / "tta.json"
    tta.main(
        [
            "--seeds",
            "3",
            "--variant",
            variant,
            "--eval-every",
            "4",
            "--json",
            str(out),
            "--plot",
            str(tmp_path / "p.png"),
        ]
    )
    result = json.loads(out.read_text())
    (run,) = result["runs"]
    assert [e["step"] for e in run["evals"]] == [4, 8]
    assert 0 < run["evals"][0]["seconds"] < run["evals"][1]["seconds"] <= run["wall_seconds"]
    assert all(0 <= e[k] <= 1 for e in run["evals"] for k in ("all", "seen", "unseen"))
    assert run["config"]["seed"] == 3 and run["config"]["checkpoint_interval"] == 4
    assert set(run["reached"]) == {
        "seen>=0.9",
        "seen>=0.95",
        "seen>=0.97",
        "unseen>=0.6",
        "unseen>=0.7",
        "unseen>=0.8",
    }
    assert (tmp_path / "p.png").stat().st_size > 0
    assert "| tiny | 3 |" in capsys.readouterr().out
