"""Inference CLI: submissions, the --valid-csv score table, bad input as one-line errors (exit 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tests.inference.conftest import direct_log_probs
from tpu_grapheme import ensemble, reweight
from tpu_grapheme.data.schema import HEAD_NAMES, NUM_CLASSES
from tpu_grapheme.inference import cli, scoring

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_ensemble_writes_kaggle_submission(models, data, tmp_path):
    out = tmp_path / "submission.csv"
    pattern = str(data["dir"] / "test_image_data_*.parquet")
    rc = cli.main(
        ["--model-paths", f"{models['run_a']},{models['b']}", "--parquet-pattern", pattern]
        + ["--batch-size", "4", "--output", str(out), "--no-progress"]
    )
    assert rc == 0
    sub = pd.read_csv(out)
    assert list(sub.columns) == ["row_id", "target"]
    heads = sorted(HEAD_NAMES)  # the sample submission's order per image
    assert sub["row_id"].tolist() == [f"Test_{i}_{h}" for i in range(9) for h in heads]
    for h, k in zip(HEAD_NAMES, NUM_CLASSES, strict=True):
        t = sub.loc[sub["row_id"].str.endswith(h), "target"]
        assert len(t) == 9 and t.between(0, k - 1).all()
    # the file's labels are the argmax of the arithmetic mean of the two models' probabilities
    images = data["test"]
    pa_, pb = (
        direct_log_probs(models["a_model"], images, (32, 56)),
        direct_log_probs(models["b_model"], images, (40, 64)),
    )
    root = np.argmax(np.exp(pa_[0]) + np.exp(pb[0]), axis=1)
    np.testing.assert_array_equal(sub.loc[sub["row_id"].str.endswith("grapheme_root"), "target"], root)
    # a reweighted geometric ensemble of a run dir and a checkpoint: labels = argmax p * n_train^-1.2
    out2 = tmp_path / "sub_reweighted.csv"
    cli.main(
        ["--model-paths", f"{models['run_a']},{models['run_c']}", "--method", "geometric", "--reweight"]
        + ["--reweight-prior", "train", "--reweight-power", "1.2", "--output", str(out2), "--no-progress"]
        + ["--parquet-pattern", str(data["dir"] / "test_image_data_1.parquet")]
    )
    sub2 = pd.read_csv(out2)
    assert sub2["row_id"].tolist() == [f"Test_{i}_{h}" for i in range(5, 9) for h in heads]
    images = data["test"][5:]
    lp = [direct_log_probs(models[k], images, (32, 56)) for k in ("a_model", "c_model")]
    geo = np.exp(lp[0][1] + lp[1][1])  # vowel head
    n_train = np.bincount(data["labels"][:, 1], minlength=11).astype(float)
    n_train[n_train == 0] = n_train[n_train > 0].min()
    want = np.argmax(geo * n_train**-1.2, axis=1)
    np.testing.assert_array_equal(sub2.loc[sub2["row_id"].str.endswith("vowel_diacritic"), "target"], want)


def test_valid_mode_scores_every_method_and_prior(models, data, tmp_path, capsys):
    report = tmp_path / "report.json"
    cli.main(
        ["--model-paths", f"{models['run_a']},{models['b']}", "--valid-csv", str(data["dir"] / "valid.csv")]
        + ["--parquet-pattern", str(data["dir"] / "train_image_data_*.parquet"), "--no-progress"]
        + ["--report-json", str(report)]
    )
    printed = capsys.readouterr().out
    rows = json.loads(report.read_text())["rows"]
    assert [(r["method"], r["prior"]) for r in rows] == [
        (m, p) for m in ("arithmetic", "geometric", "harmonic") for p in ("off", "test", "train")
    ]
    assert all(r["n"] == 8 and 0 <= r["hierarchical_recall"] <= 1 for r in rows)
    assert "geometric" in printed and "train" in printed
    # the scores are those of the predictions: recompute two rows by hand from the models
    images, labels = data["train"][2:10], data["labels"][2:10]
    lp = [
        direct_log_probs(models["a_model"], images, (32, 56)),
        direct_log_probs(models["b_model"], images, (40, 64)),
    ]
    probs = ensemble.combine_heads(lp, method="harmonic")
    for row, prior in ((rows[6], None), (rows[7], reweight.test_prior(probs))):
        want = scoring.score(labels, reweight.predict(probs, prior, power=1.2))
        assert row["hierarchical_recall"] == pytest.approx(want["hierarchical_recall"])
        assert row["recall_vowel_diacritic"] == pytest.approx(want["recall_vowel_diacritic"])


def _bad_input_cases(models, data, tmp_path):
    test_pattern = str(data["dir"] / "test_image_data_*.parquet")
    return {
        "missing model": ([str(tmp_path / "nope.keras")], test_pattern, "no such file"),
        "wrong schema": ([models["run_a"]], str(data["dir"] / "bad_schema.parquet"), "pixel columns"),
        "wrong input shape": ([str(models["dir"] / "rgb.keras")], test_pattern, "is not (H, W, 1)"),
        "wrong heads": ([str(models["dir"] / "heads.keras")], test_pattern, "consonant_diacritic"),
        "empty pattern": ([models["run_a"]], str(tmp_path / "none_*.parquet"), "no parquet files match"),
    }


def _argv(paths, pattern, out):
    return [
        "--model-paths",
        ",".join(paths),
        "--parquet-pattern",
        pattern,
        "--output",
        str(out),
        "--no-progress",
    ]


def test_bad_inputs_exit_2_with_one_line_subprocess(models, data, tmp_path):
    """Through the real CLI (two cases run side by side: each pays a TensorFlow import)."""
    cases = dict(list(_bad_input_cases(models, data, tmp_path).items())[:2])
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "tpu_grapheme.inference", *_argv(paths, pattern, tmp_path / f"{i}.csv")],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, (name, (paths, pattern, _)) in enumerate(cases.items())
    }
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert proc.returncode == 2, (name, err[-2000:])
        assert len(errors) == 1 and cases[name][2] in errors[0], (name, err[-2000:])
        assert "Traceback" not in err, name


def test_bad_inputs_exit_2_with_one_line_in_process(models, data, tmp_path, capsys):
    for name, (paths, pattern, message) in _bad_input_cases(models, data, tmp_path).items():
        with pytest.raises(SystemExit) as exc:
            cli.main(_argv(paths, pattern, tmp_path / "out.csv"))
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert exc.value.code == 2, name
        assert len(errors) == 1 and message in errors[0], (name, err)
        assert not (tmp_path / "out.csv").exists()


def _empty_parquets(d, n: int) -> str:
    """`n` Kaggle-schema test parquets with zero rows; returns their glob."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tpu_grapheme.data.schema import PIXEL_COLUMNS

    schema = pa.schema([("image_id", pa.string())] + [(c, pa.uint8()) for c in PIXEL_COLUMNS])
    for i in range(n):
        pq.write_table(schema.empty_table(), str(d / f"empty_{i}.parquet"))
    return str(d / "empty_*.parquet")


@pytest.mark.parametrize("files", [1, 2])
def test_empty_test_set_is_refused_before_loading_models(models, data, tmp_path, capsys, monkeypatch, files):
    pattern = _empty_parquets(tmp_path, files)
    monkeypatch.setattr(cli, "load_members", _must_not_run)
    out = tmp_path / "submission.csv"
    with pytest.raises(SystemExit) as exc:
        cli.main(_argv([models["run_a"]], pattern, out))
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and line == (
        f"error: no images in {pattern}: {files} parquet file(s), all empty; nothing to predict"
    )
    assert not out.exists()


def test_predict_refuses_zero_images(models, data, tmp_path):
    from tpu_grapheme.errors import UserError
    from tpu_grapheme.inference import load_members, predict

    pattern = _empty_parquets(tmp_path, 1)
    with pytest.raises(UserError, match="no images in"):
        predict(load_members([models["run_a"]]), pattern, progress=False)


def _must_not_run(*args, **kwargs):
    raise AssertionError("the command did the work before checking what it needs")


def test_late_failures_fail_before_the_work(models, data, tmp_path, capsys, monkeypatch):
    """--reweight-prior train without model_meta.json, a --report-json into a missing directory, an
    unreadable --valid-csv: each refused before a single image is predicted."""
    monkeypatch.setattr(cli, "predict", _must_not_run)
    monkeypatch.setattr(cli, "evaluate", _must_not_run)
    pattern = str(data["dir"] / "test_image_data_*.parquet")
    cases = {
        "--reweight-prior train needs class_counts": _argv([models["b"]], pattern, tmp_path / "s.csv")
        + ["--reweight", "--reweight-prior", "train"],
        "--report-json directory does not exist": _argv([models["run_a"]], pattern, tmp_path / "s.csv")
        + ["--valid-csv", str(data["dir"] / "valid.csv"), "--report-json", str(tmp_path / "no" / "r.json")],
        "valid-missing.csv": _argv([models["run_a"]], pattern, tmp_path / "s.csv")
        + ["--valid-csv", str(tmp_path / "valid-missing.csv")],
    }
    for message, argv in cases.items():
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
        assert exc.value.code == 2 and line.startswith("error: ") and message in line, (message, line)
