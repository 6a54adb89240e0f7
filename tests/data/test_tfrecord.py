"""TFRecord formats: encode/parse pixel-exact for ours (raw, PNG) and the seed's; detection; writer."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf

from tests.data.conftest import make_images
from tpu_grapheme.data import tfrecord
from tpu_grapheme.errors import UserError

IMAGES = make_images(3, 7)
LABELS = np.array([[167, 10, 6], [0, 0, 0], [5, 3, 1]])


def _write(path, records, compression=""):
    with tfrecord.ShardWriter(str(path), compression=compression) as w:
        for r in records:
            w.write(r)
    return str(path)


@pytest.mark.parametrize("image_format", [tfrecord.RAW, tfrecord.PNG, tfrecord.SEED])
@pytest.mark.parametrize("compression", ["", "GZIP", "ZLIB"])
def test_round_trip_and_detect(tmp_path, image_format, compression):
    if image_format == tfrecord.SEED:
        recs = [tfrecord.encode_seed_example(im, lb) for im, lb in zip(IMAGES, LABELS, strict=True)]
    else:
        recs = [
            tfrecord.encode_example(f"id{i}", im, lb, image_format=image_format)
            for i, (im, lb) in enumerate(zip(IMAGES, LABELS, strict=True))
        ]
    path = _write(tmp_path / "s.tfrec", recs, compression)
    fmt = tfrecord.detect_format(path)
    assert fmt == tfrecord.RecordFormat(image_format, compression)
    ds = tf.data.TFRecordDataset(path, compression_type=compression).batch(8)
    images, labels = next(iter(ds.map(lambda s: tfrecord.parse_batch(s, fmt.image_format))))
    assert images.dtype == tf.uint8 and labels.dtype == tf.int32
    np.testing.assert_array_equal(images.numpy(), IMAGES)
    np.testing.assert_array_equal(labels.numpy(), LABELS)


def test_seed_stores_inverted_int64():
    ex = tf.train.Example.FromString(tfrecord.encode_seed_example(IMAGES[0], LABELS[0]))
    pixels = np.array(ex.features.feature["image"].int64_list.value)
    np.testing.assert_array_equal(pixels, 255 - IMAGES[0].reshape(-1).astype(np.int64))


def test_write_seed_shards_names(tmp_path):
    paths = tfrecord.write_seed_shards(str(tmp_path), IMAGES, LABELS, per_shard=2)
    assert [os.path.basename(p) for p in paths] == ["00-2.tfrec", "01-1.tfrec"]
    assert [tfrecord.seed_name_count(p) for p in paths] == [2, 1]
    assert tfrecord.seed_name_count("x/train.tfrec") is None
    with open(paths[0], "rb") as f:
        assert f.read(2) == b"\x1f\x8b"  # GZIP


def test_detect_rejects_other_files(tmp_path):
    other = tmp_path / "o.tfrec"
    ex = tf.train.Example(features=tf.train.Features(feature={"x": tf.train.Feature()}))
    _write(other, [ex.SerializeToString()])
    with pytest.raises(UserError, match="not grapheme Examples"):
        tfrecord.detect_format(str(other))
    junk = tmp_path / "j.tfrec"
    junk.write_bytes(os.urandom(100))
    with pytest.raises(UserError, match="j.tfrec: corrupt or not a TFRecord"):
        tfrecord.detect_format(str(junk))
    empty = tmp_path / "e.tfrec"
    empty.write_bytes(b"")
    assert tfrecord.detect_format(str(empty)) is None
    with pytest.raises(UserError, match="not found"):
        tfrecord.detect_format(str(tmp_path / "missing.tfrec"))


def test_interrupted_writer_leaves_no_shard(tmp_path):
    path = tmp_path / "000-3.tfrec"
    with pytest.raises(RuntimeError), tfrecord.ShardWriter(str(path)) as w:
        w.write(tfrecord.encode_example("a", IMAGES[0], LABELS[0]))
        raise RuntimeError("killed")
    assert os.listdir(tmp_path) == []
    w = tfrecord.ShardWriter(str(path))  # a process killed before close(): only a .partial remains
    w.write(tfrecord.encode_example("a", IMAGES[0], LABELS[0]))
    w._writer.flush()
    (name,) = os.listdir(tmp_path)
    assert name.endswith(tfrecord.PARTIAL_SUFFIX) and not path.exists()
    w.close()
    assert os.listdir(tmp_path) == ["000-3.tfrec"]
    assert tfrecord.read_ids(str(path)) == ["a"]
