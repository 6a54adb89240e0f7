"""tf.data pipeline: pixel-exact round trips (ours and seed's shards), shapes, determinism, sharding, errors."""

from __future__ import annotations

import os
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf

from tpu_grapheme.data import pipeline, prepare, shards, tfrecord
from tpu_grapheme.errors import UserError


@pytest.fixture(scope="module")
def ours(kaggle_dir, tmp_path_factory):
    """Our shards (3 of 8 records) of the 24-row fixture."""
    d, df, images = kaggle_dir
    out = str(tmp_path_factory.mktemp("ours"))
    prepare.prepare(os.path.join(d, "train.csv"), out, shard_mb=0.26, progress=False, overwrite=True)
    return out, df, images


@pytest.fixture(scope="module")
def seed_dir(kaggle_dir, tmp_path_factory):
    """The seed's GZIP shards `NN-COUNT.tfrec` of the same images."""
    _, df, images = kaggle_dir
    out = str(tmp_path_factory.mktemp("seed"))
    stack = np.stack([images[i] for i in df["image_id"]])
    tfrecord.write_seed_shards(
        out, stack, df[["grapheme_root", "vowel_diacritic", "consonant_diacritic"]].to_numpy(), per_shard=10
    )
    return out, df, images


def _raw(pattern, **kw):
    kw = {
        "batch_size": 5,
        "resize": None,
        "training": False,
        "normalized": False,
        "drop_remainder": False,
        **kw,
    }
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in pipeline.build_dataset(pattern, **kw)], strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def _expected(df, images):
    labels = df[["grapheme_root", "vowel_diacritic", "consonant_diacritic"]].to_numpy()
    return {images[i].tobytes(): tuple(lb) for i, lb in zip(df["image_id"], labels, strict=True)}


@pytest.mark.parametrize("which", ["ours", "seed_dir"])
def test_round_trip_pixel_exact(which, request):
    out, df, images = request.getfixturevalue(which)
    x, y = _raw(out)
    assert x.dtype == np.uint8 and x.shape == (len(df), 137, 236, 1) and y.dtype == np.int32
    got = {img[..., 0].tobytes(): tuple(lb) for img, lb in zip(x, y, strict=True)}
    assert got == _expected(df, images)


def test_normalised_resized_batches(ours):
    out, _, _ = ours
    ds = pipeline.build_dataset(out, batch_size=4, resize=(64, 112), training=True, seed=1)
    assert ds.element_spec[0].shape == (4, 64, 112, 1) and ds.element_spec[0].dtype == tf.float32
    assert ds.element_spec[1].shape == (4, 3) and ds.element_spec[1].dtype == tf.int32
    batches = list(ds.take(7))  # more than one epoch: training repeats
    assert len(batches) == 7
    full = pipeline.build_dataset(out, batch_size=5, training=False, resize=None, deterministic=True)
    ((x, _),) = list(full.take(1))
    raw, _ = _raw(out, deterministic=True)
    np.testing.assert_allclose(x.numpy(), pipeline.normalize(raw[:5]).numpy(), rtol=1e-6)
    assert len(list(pipeline.build_dataset(out, batch_size=5, training=False))) == 4  # drop_remainder


def test_normalize_constants():
    x = pipeline.normalize(tf.constant([[255, 0]], tf.uint8)).numpy()
    np.testing.assert_allclose(
        x, [[-pipeline.MEAN / pipeline.STD, (1 - pipeline.MEAN) / pipeline.STD]], rtol=1e-6
    )


def test_resize_keeps_thin_strokes():
    img = np.full((1, 137, 236, 1), 255, np.uint8)
    img[0, 60, :, 0] = 0  # a 1-pixel line must survive a 2x shrink
    small = pipeline.resize_images(tf.constant(img), (64, 112)).numpy()
    assert small.shape == (1, 64, 112, 1) and small.min() < 200
    assert pipeline.resize_images(tf.constant(img), (192, 330)).shape == (1, 192, 330, 1)


def test_enlarging_is_the_seeds_bicubic_by_default():
    # The seed: `tf.image.resize(image, resize, method="bicubic")` (no antialias) to 192x330.
    rng = np.random.default_rng(0)
    img = tf.constant(rng.integers(0, 256, (2, 137, 236, 1)).astype(np.uint8))
    seed_way = tf.clip_by_value(
        tf.image.resize(tf.cast(img, tf.float32), (192, 330), method="bicubic"), 0, 255
    )
    np.testing.assert_allclose(pipeline.resize_images(img, (192, 330)).numpy(), seed_way.numpy(), atol=1e-4)
    bilinear = tf.image.resize(tf.cast(img, tf.float32), (192, 330), method="bilinear")
    np.testing.assert_allclose(pipeline.resize_images(img, (192, 330), "bilinear").numpy(), bilinear.numpy())
    assert pipeline.resize_method_for((64, 112)) == ("area", False)  # shrinking keeps the box average
    with pytest.raises(UserError, match="--resize-method 'cubic' is not one of"):
        pipeline.resize_method_for((64, 112), "cubic")


def test_resize_method_reaches_the_pipeline(ours):
    out = ours[0]
    kw = {
        "batch_size": 5,
        "resize": (150, 260),
        "training": False,
        "deterministic": True,
        "normalized": False,
    }
    bicubic, _ = next(iter(pipeline.build_dataset(out, **kw)))
    nearest, _ = next(iter(pipeline.build_dataset(out, resize_method="nearest", **kw)))
    raw, _ = next(iter(pipeline.build_dataset(out, **{**kw, "resize": None})))
    ref = tf.image.resize(tf.cast(raw, tf.float32), (150, 260), method="nearest")
    np.testing.assert_array_equal(nearest.numpy(), ref.numpy())
    assert not np.array_equal(bicubic.numpy(), nearest.numpy())


def _order(pattern, seed, **kw):
    ds = pipeline.build_dataset(
        pattern,
        batch_size=4,
        resize=None,
        training=True,
        seed=seed,
        deterministic=True,
        normalized=False,
        shuffle_buffer=64,
        **kw,
    )
    return np.concatenate([y.numpy() for _, y in ds.take(12)])


def test_deterministic_order(ours):
    out, _, _ = ours
    a = _order(out, 3)
    assert (a == _order(out, 3)).all()
    assert (a != _order(out, 4)).any()


@pytest.mark.parametrize("pipes", [2, 5])  # fewer pipelines than files (by file) and more (by record)
def test_input_context_shards(ours, pipes):
    out, df, images = ours
    seen = []
    for i in range(pipes):
        ctx = tf.distribute.InputContext(
            num_input_pipelines=pipes, input_pipeline_id=i, num_replicas_in_sync=pipes
        )
        x, _ = _raw(out, input_context=ctx)
        seen += [img.tobytes() for img in x[..., 0]]
    assert sorted(seen) == sorted(_expected(df, images))


def test_count_records(ours, seed_dir, tmp_path):
    assert shards.count_records(ours[0]) == 24
    assert shards.count_records(os.path.join(seed_dir[0], "*.tfrec")) == 24
    shutil.copy(os.path.join(seed_dir[0], "00-10.tfrec"), tmp_path / "unnamed.tfrec")
    assert shards.count_records(str(tmp_path)) == 10


def test_empty_pattern(tmp_path):
    for pattern in ("", str(tmp_path / "*.tfrec"), str(tmp_path)):
        with pytest.raises(UserError, match="TFRecord"):
            pipeline.build_dataset(pattern, batch_size=2, training=True)


def test_partial_files_ignored(ours, tmp_path):
    for name in os.listdir(ours[0]):
        if name.endswith(".tfrec"):
            shutil.copy(os.path.join(ours[0], name), tmp_path / name)
    (tmp_path / "003-8.tfrec.1234.partial").write_bytes(b"half")
    assert shards.count_records(str(tmp_path)) == 24


def test_corrupt_shard_named_up_front(ours, tmp_path):
    bad = shutil.copytree(ours[0], tmp_path / "c")
    shard = sorted(p for p in os.listdir(bad) if p.endswith(".tfrec"))[1]
    with open(bad / shard, "r+b") as f:
        f.truncate(100_000)
    with pytest.raises(UserError, match=f"corrupt TFRecord shard .*{shard}"):
        pipeline.build_dataset(str(bad), batch_size=2, training=False)


@pytest.mark.parametrize("compressed", [False, True])
def test_corrupt_shard_named_while_reading(seed_dir, tmp_path, compressed):
    _, df, images = seed_dir
    stack = np.stack([images[i] for i in df["image_id"]])
    labels = df[["grapheme_root", "vowel_diacritic", "consonant_diacritic"]].to_numpy()
    if compressed:
        paths = tfrecord.write_seed_shards(str(tmp_path), stack, labels, per_shard=12)
    else:
        paths = []
        for s in range(2):
            paths.append(str(tmp_path / f"part{s}.tfrec"))
            with tfrecord.ShardWriter(paths[-1]) as w:
                for i in range(12 * s, 12 * s + 12):
                    w.write(tfrecord.encode_example(str(i), stack[i], labels[i]))
    size = os.path.getsize(paths[1])
    with open(paths[1], "r+b") as f:  # damage the middle: first record still reads
        f.seek(size // 2)
        f.write(b"\x00" * 64)
    pattern = str(tmp_path / "*.tfrec")
    ds = pipeline.build_dataset(pattern, batch_size=4, training=False)
    with pytest.raises(UserError, match=f"corrupt TFRecord shard {paths[1]}"):
        for _ in shards.checked_iterator(ds, pattern):
            pass


def test_mixed_formats_rejected(ours, seed_dir, tmp_path):
    shutil.copy(os.path.join(seed_dir[0], "00-10.tfrec"), tmp_path / "a.tfrec")
    first = sorted(p for p in os.listdir(ours[0]) if p.endswith(".tfrec"))[0]
    shutil.copy(os.path.join(ours[0], first), tmp_path / "b.tfrec")
    with pytest.raises(UserError, match="shards mix formats"):
        pipeline.build_dataset(str(tmp_path), batch_size=2, training=False)


@pytest.mark.parametrize("which", ["ours", "seed_dir"])
def test_cache_full_size_is_pixel_exact(which, request):
    out, df, images = request.getfixturevalue(which)
    x, y = _raw(out, cache_mb=64, training=True, repeat=1, batch_size=1)  # the in-memory copy, one epoch
    assert x.dtype == np.uint8 and x.shape == (len(df), 137, 236, 1)
    got = {img[..., 0].tobytes(): tuple(lb) for img, lb in zip(x, y, strict=True)}
    assert got == _expected(df, images)


def test_in_memory_copy_gives_the_streamed_order_within_half_a_level(ours):
    out, df, _ = ours
    kw = {"batch_size": 4, "resize": (64, 112), "training": True, "seed": 3}
    batches = 3 * len(df) // 4  # 3 epochs
    streamed = list(pipeline.build_dataset(out, **kw).take(batches).as_numpy_iterator())
    cached = list(pipeline.build_dataset(out, cache_mb=64, **kw).take(batches).as_numpy_iterator())
    labels = np.concatenate([y for _, y in streamed])
    np.testing.assert_array_equal(labels, np.concatenate([y for _, y in cached]))  # the same order
    diff = np.abs(np.concatenate([x for x, _ in cached]) - np.concatenate([x for x, _ in streamed])).max()
    assert 0 < diff <= 0.5 / 255 / pipeline.STD + 1e-6  # rounded to uint8, no more
    want = df[["grapheme_root", "vowel_diacritic", "consonant_diacritic"]].to_numpy()
    epochs = labels.reshape(3, len(df), 3)
    for epoch in epochs:  # every epoch sees each image once
        assert sorted(map(tuple, epoch)) == sorted(map(tuple, want))
    assert not np.array_equal(epochs[0], epochs[1])  # and reshuffles


def test_training_stream_resumes_at_any_element(ours):
    out, _, _ = ours
    kw = {"batch_size": 1, "resize": (32, 56), "training": True, "seed": 5, "shuffle_buffer": 4}
    for cache_mb in (0, 64):
        whole = [
            y for _, y in pipeline.build_dataset(out, cache_mb=cache_mb, **kw).take(30).as_numpy_iterator()
        ]
        for start in (1, 7, 13):
            resumed = pipeline.build_dataset(out, cache_mb=cache_mb, start=start, **kw).take(30 - start)
            np.testing.assert_array_equal(
                np.concatenate(whole[start:]), np.concatenate([y for _, y in resumed])
            )


def test_cache_fits_budget_and_known_counts(ours, tmp_path, monkeypatch):
    out, _, _ = ours
    files = shards.list_shards(out)
    assert pipeline.cache_fits(files, resize=(64, 112), n_pipes=1, cache_mb=1)
    assert not pipeline.cache_fits(files, resize=(64, 112), n_pipes=1, cache_mb=0)
    with monkeypatch.context() as m:  # 200k images at 64x112 need ~1.4 GB, 1/8 of that per pipeline
        m.setattr(shards, "known_counts", lambda fs: {f: 200_000 // len(fs) for f in fs})
        assert not pipeline.cache_fits(files, resize=(64, 112), n_pipes=1, cache_mb=1024)
        assert pipeline.cache_fits(files, resize=(64, 112), n_pipes=8, cache_mb=1024)
    for i, f in enumerate(files):  # no manifest, no `NN-COUNT` names: counts need a full read -> no cache
        shutil.copy(f, tmp_path / f"part{i}.tfrec")
    assert not pipeline.cache_fits(shards.list_shards(str(tmp_path)), resize=None, n_pipes=1, cache_mb=64)


def _damage(path: str, at: float = 0.5) -> None:
    """Overwrite 64 bytes at `at` of the file's size (the first record still reads; the size is unchanged)."""
    with open(path, "r+b") as f:
        f.seek(int(os.path.getsize(path) * at))
        f.write(b"\x00" * 64)


@pytest.mark.parametrize("which", ["ours", "seed_dir"])
def test_skipping_corrupt_records_counts_what_each_pass_lost(which, request, tmp_path):
    out, df, _ = request.getfixturevalue(which)
    bad = shutil.copytree(out, tmp_path / "c")
    shard = sorted(p for p in os.listdir(bad) if p.endswith(".tfrec"))[1]
    _damage(str(bad / shard))
    with pytest.raises(tf.errors.DataLossError):
        _raw(str(bad))
    skipped = tf.Variable(0, dtype=tf.int64)
    x, _ = _raw(str(bad), skipped=skipped)
    assert 0 < len(x) < len(df) and int(skipped.numpy()) == len(df) - len(x)
    x, _ = _raw(str(bad), skipped=skipped)  # a second pass loses the same records again
    assert int(skipped.numpy()) == 2 * (len(df) - len(x))


def test_error_text_drops_graph_internals(ours, tmp_path):
    bad = shutil.copytree(ours[0], tmp_path / "c")
    shard = sorted(p for p in os.listdir(bad) if p.endswith(".tfrec"))[1]
    _damage(str(bad / shard))
    ds = tf.data.TFRecordDataset(str(bad / shard))
    with pytest.raises(tf.errors.DataLossError) as e:
        ds.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1)
    assert "{{function_node" in e.value.message
    assert re.fullmatch(r"corrupted record at \d+", shards.error_text(e.value)), shards.error_text(e.value)


def test_corrupt_shard_found_by_reading_counts_and_named_with_its_prepare_command(ours, tmp_path):
    bad = shutil.copytree(ours[0], tmp_path / "c")
    shard = str(bad / sorted(p for p in os.listdir(bad) if p.endswith(".tfrec"))[2])
    _damage(shard)
    err = shards.corrupt_data_error(RuntimeError("x"), [str(bad)], note="n", then=", or t")
    msg = str(err)
    assert msg.startswith(f"corrupt TFRecord shard {shard}: corrupted record at ") and "\n" not in msg
    assert (
        "good records); n; re-create it with `python -m tpu_grapheme.data.prepare " in msg
        and msg.endswith("--overwrite`, or t")
    )
    with open(shard, "r+b") as f:  # cut at a record boundary: every record reads, one is missing
        f.truncate(_record_end(shard, 1))
    assert shards.find_corrupt_shard([shard]) == (shard, "holds 1 records, 8 expected (truncated)")


def _record_end(path: str, n: int) -> int:
    """Byte offset after the first `n` records of an uncompressed TFRecord file (8 + 4 + len + 4 each)."""
    import struct

    offset = 0
    with open(path, "rb") as f:
        for _ in range(n):
            f.seek(offset)
            (length,) = struct.unpack("<Q", f.read(8))
            offset += 16 + length
    return offset
