"""Results: ranking, the table, best.yaml (a full TrainConfig the train CLI reads) and the plot."""

from __future__ import annotations

import math
import os
import pathlib
import types

from tpu_grapheme.config import from_dict
from tpu_grapheme.config_io import load_yaml
from tune.results import (
    INTERRUPTED,
    TrialSummary,
    format_table,
    plot_trials,
    rank,
    summarize,
    write_best_yaml,
)


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


def test_an_interrupted_trial_says_so_and_asha_cuts_only_done_trials():
    """Ray marks a trial an interrupted search stopped TERMINATED, but its last result is not `done`."""
    cut = TrialSummary("b", {}, [10], [0.05], "TERMINATED", 40, done=True)
    assert cut.ended == "stopped early"
    stopped = TrialSummary("e", {}, [10], [0.2], INTERRUPTED, 40, done=False)
    assert stopped.ended == "interrupted" and not stopped.stopped_early
    lines = format_table([cut, stopped], metric="m", mode="max").splitlines()
    assert lines[2].split()[0] == "e" and lines[2].endswith("interrupted")


def _grid(*rows):
    """A stand-in for Ray's ResultGrid: (trial id, status, steps, values, last result's done)."""
    import pandas as pd

    trials = [types.SimpleNamespace(trial_id=i, status=st) for i, st, *_ in rows]
    results = [
        types.SimpleNamespace(
            metrics={"trial_id": i, "done": done},
            metrics_dataframe=pd.DataFrame({"step": steps, "m": values}),
            config={},
            path=f"/x/trial_{i}",
            error=None,
        )
        for i, _, steps, values, done in rows
    ]

    class Grid(list):
        _experiment_analysis = types.SimpleNamespace(trials=trials)

    return Grid(results)


def test_summarize_reads_interruption_from_rays_done_flag():
    grid = _grid(
        ("a", "TERMINATED", [10, 20], [0.1, 0.2], True),  # reached the end
        ("b", "TERMINATED", [10], [0.1], True),  # ASHA's STOP sets done
        ("c", "TERMINATED", [10], [0.3], False),  # stopped by the interrupt
        ("d", "PENDING", [], [], False),
    )
    ended = {t.trial_id: t.ended for t in summarize(grid, metric="m", param_names=[], target_steps=20)}
    assert ended == {"a": "completed", "b": "stopped early", "c": "interrupted", "d": "pending"}
    # Without a scheduler that stops trials, a trial short of its steps was interrupted, whatever `done`.
    fifo = summarize(grid, metric="m", param_names=[], target_steps=20, early_stopping=False)
    assert [t.ended for t in fifo] == ["completed", "interrupted", "interrupted", "pending"]


def test_ties_rank_by_the_step_that_reached_the_value_then_trial_id():
    tied = [
        TrialSummary("z", {}, [10, 20], [0.5, 0.5], "TERMINATED", 20),
        TrialSummary("y", {}, [10, 20], [0.1, 0.5], "TERMINATED", 20),
        TrialSummary("x", {}, [10, 20], [0.1, 0.5], "TERMINATED", 20),
    ]
    for order in (tied, tied[::-1], [tied[1], tied[0], tied[2]]):
        assert [t.trial_id for t in rank(order, "max")] == ["z", "x", "y"]


def test_best_yaml_says_partial_and_is_not_rewritten_when_unchanged(tmp_path):
    best = rank(trials(), "max")[0]
    fixed = {"arch": "tiny", "steps": 40}
    path = str(tmp_path / "best.yaml")
    write_best_yaml(best, fixed, path, metric="hierarchical_recall", partial="interrupted, 1 of 4 ended")
    with open(path) as f:
        first, second = f.readline(), f.readline()
    assert first == "# best trial c: hierarchical_recall 0.6\n"
    assert second == "# PARTIAL: interrupted, 1 of 4 ended\n"
    assert from_dict(load_yaml(path)).max_lr == 5e-3  # still what `train --config` reads
    write_best_yaml(best, fixed, path, metric="hierarchical_recall")
    text = pathlib.Path(path).read_text()
    assert "PARTIAL" not in text
    os.utime(path, (0, 0))
    write_best_yaml(best, fixed, path, metric="hierarchical_recall")  # the same results again
    assert os.stat(path).st_mtime == 0 and pathlib.Path(path).read_text() == text


def test_plot_legend_names_each_trials_parameters_and_end():
    from tune.results import _END_MARKERS, _trial_label

    label = _trial_label(trials()[1], "max")
    assert label.startswith("b: max_lr=1e-05") and "stopped early at step 10" in label
    assert {t.ended for t in trials()} <= set(_END_MARKERS)  # every end has its marker
