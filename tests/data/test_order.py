"""The training order: a stream resumed at t is the uninterrupted stream from t; every epoch is a permutation."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tpu_grapheme.data import order

SIZES = {b"a": 7, b"b": 5, b"c": 9}  # a fake shard's records are its name + index
FILES = list(SIZES)
N = sum(SIZES.values())


def _read(i: tf.Tensor) -> tf.data.Dataset:
    size = tf.gather(tf.constant([SIZES[k] for k in FILES], tf.int64), i)
    f = tf.gather(tf.constant(FILES), i)
    return tf.data.Dataset.range(size).map(lambda i: tf.strings.join([f, tf.strings.as_string(i)], ":"))


def _streamed(start: int, count: int, *, window: int = 4, seed: int = 3, pipe: int = 0) -> list[bytes]:
    ds = order.streamed_epochs(
        len(FILES), records_per_epoch=N, read=_read, window=window, seed=seed, pipe=pipe, start=start
    )
    return list(ds.take(count).as_numpy_iterator())


def _in_memory(start: int, count: int, *, window: int = 4, batch: int = 5) -> list[int]:
    ds = order.record_indices(
        list(SIZES.values()), window=window, seed=3, pipe=0, start=start, batch_size=batch
    )
    out: list[int] = []
    for b in ds.as_numpy_iterator():
        out += [int(v) for v in b]
        if len(out) >= count:
            return out[:count]
    return out


def _index_of(name: bytes) -> int:
    f, i = name.split(b":")
    return sum(SIZES[k] for k in FILES[: FILES.index(f)]) + int(i)


@pytest.mark.parametrize("start", [0, 3, N + 2])
def test_in_memory_indices_follow_the_streamed_order(start):
    assert _in_memory(start, 2 * N) == [_index_of(r) for r in _streamed(start, 2 * N)]


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
        order.record_indices([0, 0], window=4, seed=0, pipe=0, start=0, batch_size=2)
    with pytest.raises(ValueError):
        order.streamed_epochs(len(FILES), records_per_epoch=N, read=_read, window=0, seed=0, pipe=0, start=0)


def test_shard_order_is_a_permutation():
    got = order.shard_order(10, seed=1, pipe=2, epoch=tf.constant(5)).numpy()
    assert sorted(got) == list(range(10)) and not np.array_equal(got, np.arange(10))
