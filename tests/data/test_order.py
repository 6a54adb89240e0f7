"""The training order: a stream resumed at t is the uninterrupted stream from t; every epoch is a permutation."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tpu_grapheme.data import order

SIZES = {b"a": 7, b"b": 5, b"c": 9}  # a fake shard's records are its name + index
FILES = list(SIZES)
N = sum(SIZES.values())


def _read(f: tf.Tensor) -> tf.data.Dataset:
    sizes = tf.constant([SIZES[k] for k in FILES], tf.int64)
    size = tf.gather(sizes, tf.argmax(tf.cast(tf.equal(tf.constant(FILES), f), tf.int32)))
    return tf.data.Dataset.range(size).map(lambda i: tf.strings.join([f, tf.strings.as_string(i)], ":"))


def _streamed(start: int, count: int, *, window: int = 4, seed: int = 3, pipe: int = 0) -> list[bytes]:
    ds = order.streamed_epochs(
        FILES, records_per_epoch=N, read=_read, window=window, seed=seed, pipe=pipe, start=start
    )
    return list(ds.take(count).as_numpy_iterator())


def _in_memory(start: int, count: int, *, n: int = 13, seed: int = 3, pipe: int = 0) -> list[int]:
    ds = order.in_memory_indices(n=n, seed=seed, pipe=pipe, start=start)
    return [int(v) for v in ds.take(count).as_numpy_iterator()]


def test_in_memory_epochs_are_permutations_and_differ():
    stream = _in_memory(0, 39)
    epochs = [stream[i : i + 13] for i in range(0, 39, 13)]
    for e in epochs:
        assert sorted(e) == list(range(13))
    assert epochs[0] != epochs[1] and epochs[0] != list(range(13))


@pytest.mark.parametrize("start", [1, 12, 13, 14, 30])
def test_in_memory_resume_is_the_same_stream(start):
    assert _in_memory(start, 20) == _in_memory(0, start + 20)[start:]


def test_in_memory_order_depends_on_seed_and_pipeline():
    assert _in_memory(0, 13) != _in_memory(0, 13, seed=4)
    assert _in_memory(0, 13) != _in_memory(0, 13, pipe=1)


def test_streamed_epochs_cover_every_record_once_and_reshuffle():
    stream = _streamed(0, 3 * N)
    epochs = [stream[i : i + N] for i in range(0, 3 * N, N)]
    every = sorted(f"{k.decode()}:{i}".encode() for k, n in SIZES.items() for i in range(n))
    for e in epochs:
        assert sorted(e) == every
    assert epochs[0] != epochs[1]


@pytest.mark.parametrize("start", [1, 3, 4, 5, 20, N, N + 6, 2 * N + 1])
def test_streamed_resume_is_the_same_stream(start):
    assert _streamed(start, 25) == _streamed(0, start + 25)[start:]


def test_streamed_windows_mix_within_and_keep_order_across():
    # window 4: each block of 4 elements of epoch 0 is a permutation of 4 consecutive records of the
    # epoch's shard order (shuffling never crosses a window boundary).
    stream = _streamed(0, N, window=4)
    order_of_files = [FILES[i] for i in order.shard_order(3, seed=3, pipe=0, epoch=tf.constant(0)).numpy()]
    sequential = [f"{f.decode()}:{i}".encode() for f in order_of_files for i in range(SIZES[f])]
    for w in range(0, N, 4):
        assert sorted(stream[w : w + 4]) == sorted(sequential[w : w + 4])
    assert stream != sequential


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError):
        order.in_memory_indices(n=0, seed=0, pipe=0, start=0)
    with pytest.raises(ValueError):
        order.streamed_epochs(FILES, records_per_epoch=N, read=_read, window=0, seed=0, pipe=0, start=0)


def test_shard_order_is_a_permutation():
    got = order.shard_order(10, seed=1, pipe=2, epoch=tf.constant(5)).numpy()
    assert sorted(got) == list(range(10)) and not np.array_equal(got, np.arange(10))
