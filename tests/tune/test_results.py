"""Results: ranking, the table, best.yaml (a full TrainConfig the train CLI reads) and the plot."""

from __future__ import annotations

import math

from tpu_grapheme.config import from_dict
from tpu_grapheme.config_io import load_yaml
from tune.results import TrialSummary, format_table, plot_trials, rank, write_best_yaml


def trials() -> list[TrialSummary]:
    return [
        TrialSummary("a", {"max_lr": 1e-3}, [10, 20, 40], [0.1, 0.3, 0.5], "TERMINATED", 40),
        TrialSummary("b", {"max_lr": 1e-5}, [10], [0.05], "TERMINATED", 40),  # cut by ASHA
        TrialSummary("c", {"max_lr": 5e-3}, [10, 20, 40], [0.2, 0.6, 0.55], "TERMINATED", 40),
        TrialSummary("d", {"max_lr": 2e-3}, [], [], "ERROR", 40, error="boom"),
    ]


def test_rank_uses_each_trials_best_value_and_mode():
    assert [t.trial_id for t in rank(trials(), "max")] == ["c", "a", "b", "d"]
    assert [t.trial_id for t in rank(trials(), "min")] == ["b", "a", "c", "d"]
    assert math.isnan(trials()[3].best("max"))


def test_table_is_best_first_and_says_how_each_trial_ended():
    lines = format_table(trials(), metric="hierarchical_recall", mode="max").splitlines()
    assert lines[0].split() == ["trial", "max_lr", "best", "hierarchical_recall", "last", "step", "ended"]
    assert [line.split()[0] for line in lines[2:]] == ["c", "a", "b", "d"]
    assert lines[2].endswith("completed") and "0.6" in lines[2]
    assert lines[4].endswith("stopped early") and lines[5].endswith("error")


def test_best_yaml_is_a_full_trainconfig(tmp_path):
    best = rank(trials(), "max")[0]
    path = write_best_yaml(
        best, {"arch": "tiny", "resize": [32, 56], "steps": 40}, str(tmp_path / "best.yaml")
    )
    values = load_yaml(path)
    cfg = from_dict(values)  # what `python -m tpu_grapheme.train --config best.yaml` does
    assert cfg.max_lr == 5e-3 and cfg.arch == "tiny" and cfg.resize == (32, 56) and cfg.steps == 40
    assert "cutmix_alpha" in values and "seed" in values  # every field, not just the searched ones


def test_plot_writes_a_png(tmp_path):
    path = plot_trials(trials(), metric="hierarchical_recall", mode="max", path=str(tmp_path / "p.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
