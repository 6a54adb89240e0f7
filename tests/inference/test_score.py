"""`python -m tpu_grapheme.inference.score`: the competition metric against scikit-learn, and every
input mistake as one line."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from tests.cli_errors import repo_env
from tpu_grapheme.data.schema import HEAD_NAMES, NUM_CLASSES
from tpu_grapheme.inference import score

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMPONENTS = sorted(HEAD_NAMES)  # Kaggle's order per image: consonant, grapheme_root, vowel


def frames(n: int = 300, seed: int = 0, noise: float = 0.3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A solution (with Kaggle's `Usage` column) and a submission that gets some labels wrong."""
    rng = np.random.default_rng(seed)
    k = dict(zip(HEAD_NAMES, NUM_CLASSES, strict=True))
    row_id = [f"Test_{i}_{c}" for i in range(n) for c in COMPONENTS]
    true = np.array([rng.integers(0, min(k[c], 20)) for _ in range(n) for c in COMPONENTS])
    wrong = rng.random(len(true)) < noise
    # Wrong guesses include classes the solution never holds (recall 0 for them in sklearn's macro).
    pred = np.where(wrong, [rng.integers(0, k[c]) for _ in range(n) for c in COMPONENTS], true)
    sol = pd.DataFrame({"row_id": row_id, "target": true, "Usage": "Public"})
    sub = pd.DataFrame({"row_id": row_id, "target": pred}).sample(frac=1.0, random_state=1)  # any order
    return sol, sub


def write(tmp_path, sol: pd.DataFrame, sub: pd.DataFrame) -> tuple[str, str]:
    sol_path, sub_path = tmp_path / "solution.csv", tmp_path / "sub.csv"
    sol.to_csv(sol_path, index=False)
    sub.to_csv(sub_path, index=False)
    return str(sub_path), str(sol_path)


def sklearn_metric(sol: pd.DataFrame, sub: pd.DataFrame) -> dict[str, float]:
    """The competition's scoring code: sklearn macro recall per component, weights 2:1:1."""
    from sklearn.metrics import recall_score

    merged = sol.merge(sub, on="row_id", suffixes=("_true", "_pred"))
    out = {}
    for head in HEAD_NAMES:
        rows = merged[merged["row_id"].str.endswith(f"_{head}")]
        out[head] = recall_score(rows["target_true"], rows["target_pred"], average="macro", zero_division=0)
    out["total"] = np.average([out[h] for h in HEAD_NAMES], weights=[2, 1, 1])
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metric_equals_sklearn_macro_recall_weighted_2_1_1(tmp_path, seed):
    sol, sub = frames(seed=seed)
    scores = score.score_files(*write(tmp_path, sol, sub))
    want = sklearn_metric(sol, sub)
    assert scores["hierarchical_recall"] == pytest.approx(want["total"], abs=1e-12)
    for head in HEAD_NAMES:
        assert scores[f"recall_{head}"] == pytest.approx(want[head], abs=1e-12)
    assert scores["images"] == 300 and 0.3 < scores["hierarchical_recall"] < 0.95


def test_perfect_submission_scores_one_and_cli_prints_metric_and_heads(tmp_path, capsys):
    sol, _ = frames(n=20)
    sub_path, sol_path = write(tmp_path, sol, sol[["row_id", "target"]])
    assert score.main(["--submission", sub_path, "--solution", sol_path]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "hierarchical_recall 1.0000  (20 images)"
    assert all(f"  {h}" in out for h in HEAD_NAMES)


def mutate(sub: pd.DataFrame, how: str) -> pd.DataFrame:
    sub = sub.astype({"target": object}).reset_index(drop=True)
    if how == "missing":
        return sub.iloc[1:]
    if how == "extra":
        return pd.concat([sub, pd.DataFrame({"row_id": ["Test_999_grapheme_root"], "target": [1]})])
    if how == "duplicate":
        return pd.concat([sub, sub.iloc[:1]])
    if how == "float":
        sub.loc[0, "target"] = "1.5"
    if how == "text":
        sub.loc[0, "target"] = "abc"
    if how == "range":
        sub.loc[sub["row_id"] == "Test_0_vowel_diacritic", "target"] = 11
    if how == "negative":
        sub.loc[sub["row_id"] == "Test_0_grapheme_root", "target"] = -1
    if how == "row_id":
        sub.loc[0, "row_id"] = "Test_0_grapheme"
    if how == "columns":
        return sub.rename(columns={"target": "label"})
    if how == "extra_column":
        return sub.assign(Usage="Public")
    return sub


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("missing", "sub.csv: 1 row id(s) of the solution missing: Test_0_consonant_diacritic"),
        ("extra", "sub.csv: 1 row id(s) not in the solution: Test_999_grapheme_root"),
        ("duplicate", "sub.csv: 1 duplicate row_id(s): Test_0_consonant_diacritic"),
        ("float", "sub.csv: target '1.5' of Test_0_consonant_diacritic is not an integer"),
        ("text", "sub.csv: target 'abc' of Test_0_consonant_diacritic is not an integer"),
        ("range", "sub.csv: target 11 of Test_0_vowel_diacritic is out of range for vowel_diacritic (0..10)"),
        ("negative", "target -1 of Test_0_grapheme_root is out of range for grapheme_root (0..167)"),
        ("row_id", "sub.csv: row_id 'Test_0_grapheme' is not <image id>_<grapheme_root|"),
        ("columns", "sub.csv: expected columns row_id,target; found row_id,label"),
        ("extra_column", "sub.csv: expected columns row_id,target; found row_id,target,Usage"),
    ],
)
def test_bad_submission_is_one_line_and_exit_2(tmp_path, capsys, how, message):
    sol, _ = frames(n=5)
    sub = sol[["row_id", "target"]]
    sub_path, sol_path = write(tmp_path, sol, mutate(sub, how))
    with pytest.raises(SystemExit) as exit_:
        score.main(["--submission", sub_path, "--solution", sol_path])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and message in err, err


def test_missing_empty_and_unreadable_files(tmp_path, capsys):
    sol, _ = frames(n=5)
    sub_path, sol_path = write(tmp_path, sol, sol[["row_id", "target"]])
    empty = tmp_path / "empty.csv"
    empty.write_text("row_id,target\n")
    blank = tmp_path / "blank.csv"
    blank.write_text("")
    cases = [
        ([sub_path, str(tmp_path / "nope.csv")], "nope.csv: no such file"),
        ([str(tmp_path / "gone.csv"), sol_path], "gone.csv: no such file"),
        ([str(empty), sol_path], "empty.csv: no rows"),
        ([str(blank), sol_path], "blank.csv: not a readable CSV"),
    ]
    for (sub, sol_file), message in cases:
        with pytest.raises(SystemExit) as exit_:
            score.main(["--submission", sub, "--solution", sol_file])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.count("\n") == 1 and message in err, err


def test_help_is_fast_and_the_module_never_imports_tensorflow(tmp_path):
    env = repo_env()
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "tpu_grapheme.inference.score", "--help"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - t0
    assert r.returncode == 0 and "--submission" in r.stdout and elapsed < 1.0, (elapsed, r.stderr)
    sol, sub = frames(n=10)
    sub_path, sol_path = write(tmp_path, sol, sub)
    probe = (
        "import sys; from tpu_grapheme.inference import score; "
        f"score.main(['--submission', {sub_path!r}, '--solution', {sol_path!r}, '--json']); "
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "False False"
    assert '"hierarchical_recall": ' in r.stdout.splitlines()[0]
