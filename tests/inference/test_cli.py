"""Inference CLI: model loading and checks, streaming ensemble prediction, submission format, scoring."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from tpu_grapheme import config, ensemble, inference, reweight
from tpu_grapheme.data.schema import HEAD_NAMES, HEIGHT, NUM_CLASSES, PIXEL_COLUMNS, WIDTH
from tpu_grapheme.errors import UserError
from tpu_grapheme.model import build_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _images(n: int, seed: int) -> np.ndarray:
    """Light background, a few dark strokes: Kaggle-like uint8 images."""
    rng = np.random.default_rng(seed)
    img = rng.integers(200, 256, size=(n, HEIGHT, WIDTH), dtype=np.uint8)
    for k in range(n):
        r, c = rng.integers(10, HEIGHT - 10), rng.integers(10, WIDTH - 10)
        img[k, r - 3 : r + 3, 5:-5] = rng.integers(0, 60)
        img[k, 5:-5, c - 2 : c + 2] = rng.integers(0, 60)
    return img


def _write_parquet(path: str, ids, images: np.ndarray, columns=PIXEL_COLUMNS) -> None:
    flat = images.reshape(len(ids), -1)
    arrays = [pa.array(list(ids), pa.string())] + [pa.array(flat[:, j]) for j in range(len(columns))]
    pq.write_table(pa.Table.from_arrays(arrays, names=["image_id", *columns]), path)


def _labels(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, k, n) for k in NUM_CLASSES], axis=1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two test parquets (5 + 4 images), one labelled train parquet (12), one parquet of the wrong schema."""
    d = tmp_path_factory.mktemp("kaggle")
    test = _images(9, 0)
    _write_parquet(str(d / "test_image_data_0.parquet"), [f"Test_{i}" for i in range(5)], test[:5])
    _write_parquet(str(d / "test_image_data_1.parquet"), [f"Test_{i}" for i in range(5, 9)], test[5:])
    train, labels = _images(12, 1), _labels(12, 2)
    ids = [f"Train_{i}" for i in range(12)]
    _write_parquet(str(d / "train_image_data_0.parquet"), ids, train)
    frame = pd.DataFrame(labels, columns=list(HEAD_NAMES))
    frame.insert(0, "image_id", ids)
    frame["grapheme"] = "x"
    frame.to_csv(d / "train.csv", index=False)
    frame.iloc[2:10].to_csv(d / "valid.csv", index=False)
    _write_parquet(str(d / "bad_schema.parquet"), ["Test_0"], test[:1, :1, :10], columns=PIXEL_COLUMNS[:10])
    return {"dir": d, "test": test, "train": train, "labels": labels}


def _fit(model, data, resize, steps=2):
    """A couple of plain-Keras steps on the labelled images, so the weights are not the initial ones."""
    x = inference.preprocess(data["train"], resize)
    y = [data["labels"][:, h] for h in range(3)]
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2), loss=[keras.losses.SparseCategoricalCrossentropy(True)] * 3
    )
    model.fit(x, y, batch_size=6, epochs=1, steps_per_epoch=steps, verbose=0)
    return model


def _meta(resize, labels):
    counts = {
        n: np.bincount(labels[:, h], minlength=k).tolist()
        for h, (n, k) in enumerate(zip(HEAD_NAMES, NUM_CLASSES, strict=True))
    }
    return {"schema_version": 1, "arch": "tiny", "resize": list(resize), "class_counts": counts}


@pytest.fixture(scope="module")
def models(tmp_path_factory, data):
    """run_a: run dir with model_best.keras + meta (32x56); b.keras: a bare file (40x64, no meta);
    run_c: config.yaml + checkpoints only (32x56); also models of the wrong input shape and heads."""
    d = tmp_path_factory.mktemp("models")
    out = {"dir": d}
    run_a = d / "run_a"
    run_a.mkdir()
    a = _fit(build_model(arch="tiny", input_shape=(32, 56, 1), seed=0), data, (32, 56))
    a.save(run_a / "model_best.keras")
    (run_a / "model_meta.json").write_text(json.dumps(_meta((32, 56), data["labels"])))
    b = _fit(build_model(arch="tiny", input_shape=(40, 64, 1), seed=1), data, (40, 64))
    b.save(d / "b.keras")
    run_c = d / "run_c"
    run_c.mkdir()
    c = _fit(build_model(arch="tiny", input_shape=(32, 56, 1), seed=2), data, (32, 56))
    config.save_yaml(config.TrainConfig(arch="tiny", resize=(32, 56), seed=2), str(run_c / "config.yaml"))
    ckpt = tf.train.Checkpoint(model=c, optimizer=c.optimizer, step=tf.Variable(3, dtype=tf.int64))
    tf.train.CheckpointManager(ckpt, str(run_c / "checkpoints"), max_to_keep=2).save(checkpoint_number=3)
    out.update(run_a=str(run_a), b=str(d / "b.keras"), run_c=str(run_c), a_model=a, b_model=b, c_model=c)
    # wrong input: 3 channels; wrong heads: the consonant head has 8 classes
    inp = keras.Input((32, 56, 3))
    feat = keras.layers.GlobalAveragePooling2D()(inp)
    heads = [keras.layers.Dense(k, name=n)(feat) for n, k in zip(HEAD_NAMES, NUM_CLASSES, strict=True)]
    keras.Model(inp, heads).save(d / "rgb.keras")
    inp = keras.Input((32, 56, 1))
    feat = keras.layers.GlobalAveragePooling2D()(inp)
    heads = [keras.layers.Dense(k, name=n)(feat) for n, k in zip(HEAD_NAMES, (168, 11, 8), strict=True)]
    keras.Model(inp, heads).save(d / "heads.keras")
    (d / "junk.keras").write_bytes(b"not a zip file")
    return out


def _direct_log_probs(model, images, resize):
    outs = model(inference.preprocess(images, resize), training=False)
    return [tf.nn.log_softmax(o).numpy() for o in outs]


def test_preprocess_matches_the_training_pipeline(data):
    from tpu_grapheme.data import pipeline

    images = data["test"][:2]
    for resize in ((32, 56), (40, 300), (HEIGHT, WIDTH)):
        want = pipeline.normalize(pipeline.resize_images(tf.constant(images)[..., None], resize))
        got = inference.preprocess(images, resize)
        assert got.shape == (2, *resize, 1) and got.dtype == tf.float32
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)


def test_members_load_from_file_run_dir_and_checkpoint(models, data):
    a = inference.load_member(models["run_a"])
    b = inference.load_member(models["b"])
    c = inference.load_member(models["run_c"])
    c2 = inference.load_member(os.path.join(models["run_c"], "checkpoints"))
    assert a.source.endswith("model_best.keras") and a.resize == (32, 56) and a.class_counts is not None
    assert b.resize == (40, 64) and b.class_counts is None
    assert c.source.endswith("ckpt-3") and c.resize == (32, 56) and c2.source == c.source
    images = data["test"][:3]
    for member, model in ((a, models["a_model"]), (b, models["b_model"]), (c, models["c_model"])):
        got = member.log_probs(images)
        want = _direct_log_probs(model, images, member.resize)
        assert [g.shape for g in got] == [(3, k) for k in NUM_CLASSES]
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, atol=1e-5)
    # the restored checkpoint really carries the trained weights (a fresh model would differ)
    fresh = build_model(arch="tiny", input_shape=(32, 56, 1), seed=2)
    assert not np.allclose(_direct_log_probs(fresh, images, (32, 56))[0], c.log_probs(images)[0], atol=1e-4)


def test_ensemble_writes_kaggle_submission(models, data, tmp_path):
    out = tmp_path / "submission.csv"
    pattern = str(data["dir"] / "test_image_data_*.parquet")
    rc = inference.main(
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
        _direct_log_probs(models["a_model"], images, (32, 56)),
        _direct_log_probs(models["b_model"], images, (40, 64)),
    )
    root = np.argmax(np.exp(pa_[0]) + np.exp(pb[0]), axis=1)
    np.testing.assert_array_equal(sub.loc[sub["row_id"].str.endswith("grapheme_root"), "target"], root)
    # a reweighted geometric ensemble of a run dir and a checkpoint: labels = argmax p * n_train^-1.2
    out2 = tmp_path / "sub_reweighted.csv"
    inference.main(
        ["--model-paths", f"{models['run_a']},{models['run_c']}", "--method", "geometric", "--reweight"]
        + ["--reweight-prior", "train", "--reweight-power", "1.2", "--output", str(out2), "--no-progress"]
        + ["--parquet-pattern", str(data["dir"] / "test_image_data_1.parquet")]
    )
    sub2 = pd.read_csv(out2)
    assert sub2["row_id"].tolist() == [f"Test_{i}_{h}" for i in range(5, 9) for h in heads]
    images = data["test"][5:]
    lp = [_direct_log_probs(models[k], images, (32, 56)) for k in ("a_model", "c_model")]
    geo = np.exp(lp[0][1] + lp[1][1])  # vowel head
    n_train = np.bincount(data["labels"][:, 1], minlength=11).astype(float)
    n_train[n_train == 0] = n_train[n_train > 0].min()
    want = np.argmax(geo * n_train**-1.2, axis=1)
    np.testing.assert_array_equal(sub2.loc[sub2["row_id"].str.endswith("vowel_diacritic"), "target"], want)


def test_streamed_batches_match_whole_set_prediction(models, data):
    """Batches of 2 over a 5-image parquet (2 + 2 + 1) give the probabilities of one whole-set call."""
    members = inference.load_members([models["run_a"], models["b"]])
    pattern = str(data["dir"] / "test_image_data_0.parquet")
    got = inference.predict(
        members, pattern, batch_size=2, methods=("harmonic", "arithmetic"), progress=False
    )
    assert got.ids.tolist() == [f"Test_{i}" for i in range(5)]
    assert got.probs["harmonic"].shape == (5, sum(NUM_CLASSES)) and got.probs["harmonic"].dtype == np.float32
    images = data["test"][:5]
    lp = [
        _direct_log_probs(models["a_model"], images, (32, 56)),
        _direct_log_probs(models["b_model"], images, (40, 64)),
    ]
    for method in ("harmonic", "arithmetic"):
        want = ensemble.combine_heads(lp, method=method)
        np.testing.assert_allclose(got.probs[method], want, atol=1e-5)


def test_valid_mode_scores_every_method_and_prior(models, data, tmp_path, capsys):
    report = tmp_path / "report.json"
    inference.main(
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
        _direct_log_probs(models["a_model"], images, (32, 56)),
        _direct_log_probs(models["b_model"], images, (40, 64)),
    ]
    probs = ensemble.combine_heads(lp, method="harmonic")
    for row, prior in ((rows[6], None), (rows[7], reweight.test_prior(probs))):
        want = inference.score(labels, reweight.predict(probs, prior, power=1.2))
        assert row["hierarchical_recall"] == pytest.approx(want["hierarchical_recall"])
        assert row["recall_vowel_diacritic"] == pytest.approx(want["recall_vowel_diacritic"])


def test_score_matches_sklearn():
    from sklearn.metrics import recall_score

    rng = np.random.default_rng(0)
    labels, preds = _labels(200, 1), _labels(200, 2)
    preds[:120] = labels[:120]
    got = inference.score(labels, preds)
    want = [recall_score(labels[:, h], preds[:, h], average="macro", zero_division=0) for h in range(3)]
    assert got["recall_grapheme_root"] == pytest.approx(want[0])
    assert got["hierarchical_recall"] == pytest.approx((2 * want[0] + want[1] + want[2]) / 4)
    del rng


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("rgb.keras", "is not (H, W, 1)"),
        ("heads.keras", "head consonant_diacritic"),
        ("junk.keras", "cannot load"),
    ],
)
def test_incompatible_models_are_user_errors(models, name, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        inference.load_member(str(models["dir"] / name))


def test_resize_must_match_a_fixed_model_input(models):
    with pytest.raises(UserError, match="input is 32x56 but resize is 40x64"):
        inference.load_member(models["run_a"], resize=(40, 64))


def test_submission_frame_order():
    frame = inference.submission_frame(["Test_7", "Test_9"], np.array([[5, 1, 2], [0, 10, 6]]))
    assert frame["row_id"].tolist() == [
        "Test_7_consonant_diacritic",
        "Test_7_grapheme_root",
        "Test_7_vowel_diacritic",
        "Test_9_consonant_diacritic",
        "Test_9_grapheme_root",
        "Test_9_vowel_diacritic",
    ]
    assert frame["target"].tolist() == [2, 5, 1, 6, 0, 10]


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
            inference.main(_argv(paths, pattern, tmp_path / "out.csv"))
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert exc.value.code == 2, name
        assert len(errors) == 1 and message in errors[0], (name, err)
        assert not (tmp_path / "out.csv").exists()
