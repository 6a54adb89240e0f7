"""Inference refuses, before predicting, an --output it cannot write, a model listed twice and a
--grapheme-head-mix no model can use: one line, exit 2, no traceback, nothing written."""

from __future__ import annotations

import os

import pytest

from tests.cli_errors import one_line_error, start_cli
from tpu_grapheme.inference import cli


def _argv(models: list[str], pattern: str, out) -> list[str]:
    return ["--model-paths", ",".join(models), "--parquet-pattern", pattern, "--output", str(out)]


def _must_not_run(*args, **kwargs):
    raise AssertionError("the command did the work before checking what it needs")


def test_output_dir_and_duplicate_models_through_the_cli(models, data, tmp_path):
    pattern = str(data["dir"] / "test_image_data_*.parquet")
    run_a = models["run_a"]
    procs = {
        "is a directory": start_cli("tpu_grapheme.inference", *_argv([run_a], pattern, tmp_path)),
        "twice": start_cli(
            "tpu_grapheme.inference",
            *_argv([run_a, os.path.join(run_a, "model_best.keras")], pattern, tmp_path / "s.csv"),
        ),
    }
    assert one_line_error(procs["is a directory"]) == (
        f"error: --output {tmp_path} is a directory; give a file name"
    )
    best = os.path.join(run_a, "model_best.keras")
    assert one_line_error(procs["twice"]) == (f"error: --model-paths lists {best} twice ({run_a} and {best})")
    assert os.listdir(tmp_path) == []


def test_refused_before_loading_or_predicting(models, data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "predict", _must_not_run)
    monkeypatch.setattr(cli, "evaluate", _must_not_run)
    pattern = str(data["dir"] / "test_image_data_*.parquet")
    out = tmp_path / "s.csv"
    cases = {
        f"--model-paths lists {models['b']} twice": _argv(
            [models["b"], models["run_a"], models["b"] + "/"], pattern, out
        ),
        "--grapheme-head-mix 0.5: no model has a grapheme head": _argv(
            [models["run_a"], models["b"]], pattern, out
        )
        + ["--grapheme-head-mix", "0.5"],
        f"--output {tmp_path} is a directory": _argv([models["run_a"]], pattern, tmp_path),
    }
    for message, argv in cases.items():
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert exc.value.code == 2 and len(errors) == 1 and message in errors[0], (message, errors)
    assert os.listdir(tmp_path) == []
