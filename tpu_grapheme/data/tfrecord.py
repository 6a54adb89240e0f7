"""TFRecord formats: encode/parse our shards and the seed's, detect which one a file holds.

Our format (one `tf.train.Example` per image): `image_id` bytes, `image` bytes (the 137x236 uint8
pixels exactly as in the parquet, dark ink on light), `labels` int64, one per head of the data set's
layout (`schema.HeadLayout`, recorded in its manifest; [root, vowel, consonant] for Bengali).
`image` is raw bytes by default or PNG (`image_format="png"`); records are uncompressed by default.

The seed's format: GZIP files `NN-COUNT.tfrec`, `image` = Int64List of 32,332 pixels stored inverted
(255 - pixel), `labels` = Int64List [3]. Parsing the seed format un-inverts, so both formats parse to
the parquet's pixels and the pipeline treats them alike.

Format and compression are read from the first record of a file, never from a flag.

Choice: raw bytes, uncompressed. PNG and GZIP records save bytes but decode several times slower
(`benchmarks/data_throughput.py --codec`; figures in benchmarks/README.md); on a TPU VM the host CPU
feeding the cores is the scarce resource, while the bandwidth raw needs from GCS is not.
`--image-format png` remains for small disks; the reader handles either, and GZIP/ZLIB records too.
"""

from __future__ import annotations

import dataclasses
import os
import re
import uuid
from collections.abc import Iterable, Sequence

import numpy as np
import tensorflow as tf

from tpu_grapheme.data.schema import HEIGHT, IMAGE_FORMATS, NUM_PIXELS, PNG, RAW, WIDTH
from tpu_grapheme.errors import UserError

SEED = "seed"
COMPRESSIONS = ("", "GZIP", "ZLIB")
PARTIAL_SUFFIX = ".partial"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_SEED_NAME = re.compile(r"(?:^|/)(\d+)-(\d+)\.tfrec$")


@dataclasses.dataclass(frozen=True)
class RecordFormat:
    """What a shard holds: `image_format` in raw/png/seed, the TFRecord compression, labels per record."""

    image_format: str
    compression: str
    num_labels: int = 3


# ---------------------------------------------------------------------------------- encoding
def _bytes(v: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))


def _ints(v: Iterable[int]) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(v)))


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.shape != (HEIGHT, WIDTH) or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 [{HEIGHT},{WIDTH}], got {image.dtype} {image.shape}")
    return image


def encode_png(image: np.ndarray) -> bytes:
    """Lossless PNG of one uint8 [H, W] image."""
    return tf.io.encode_png(_check_image(image)[..., None], compression=6).numpy()


def encode_example(
    image_id: str, image: np.ndarray, labels: Sequence[int], *, image_format: str = RAW
) -> bytes:
    """One serialized Example in our format."""
    if image_format == RAW:
        data = _check_image(image).tobytes()
    elif image_format == PNG:
        data = encode_png(image)
    else:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    feats = {"image_id": _bytes(str(image_id).encode()), "image": _bytes(data), "labels": _ints(labels)}
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def encode_seed_example(image: np.ndarray, labels: Sequence[int]) -> bytes:
    """One serialized Example in the seed's format (pixels inverted, Int64List)."""
    inv = 255 - _check_image(image).astype(np.int64).reshape(-1)
    feats = {"image": _ints(inv), "labels": _ints(labels)}
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


class ShardWriter:
    """Write one TFRecord file under a `.partial` name; `close()` renames it into place.

    An interrupted run leaves only `*.partial` files, which readers skip, never a shard that looks whole.
    """

    def __init__(self, path: str, *, compression: str = ""):
        self.path = path
        self.tmp_path = f"{path}.{uuid.uuid4().hex[:8]}{PARTIAL_SUFFIX}"
        self.count = 0
        opts = tf.io.TFRecordOptions(compression_type=compression)
        self._writer = tf.io.TFRecordWriter(self.tmp_path, opts)

    def write(self, record: bytes) -> None:
        self._writer.write(record)
        self.count += 1

    def close(self) -> None:
        """Finish the file and rename it to its final name."""
        self._writer.close()
        tf.io.gfile.rename(self.tmp_path, self.path, overwrite=True)

    def abort(self) -> None:
        """Drop the partial file."""
        self._writer.close()
        if tf.io.gfile.exists(self.tmp_path):
            tf.io.gfile.remove(self.tmp_path)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_seed_shards(
    out_dir: str, images: np.ndarray, labels: np.ndarray, *, per_shard: int = 10_000
) -> list[str]:
    """Write the seed's shards (`NN-COUNT.tfrec`, GZIP); used by tests and for compatibility checks."""
    tf.io.gfile.makedirs(out_dir)
    paths = []
    for shard, start in enumerate(range(0, len(images), per_shard)):
        part = range(start, min(start + per_shard, len(images)))
        path = os.path.join(out_dir, f"{shard:02d}-{len(part)}.tfrec")
        with ShardWriter(path, compression="GZIP") as w:
            for i in part:
                w.write(encode_seed_example(images[i], labels[i]))
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------- detection
def seed_name_count(path: str) -> int | None:
    """COUNT from a seed-style `NN-COUNT.tfrec` name, else None."""
    m = _SEED_NAME.search(path)
    return int(m.group(2)) if m else None


def _first_record(path: str, compression: str) -> bytes | None:
    ds = tf.data.TFRecordDataset(path, compression_type=compression)
    try:
        for rec in ds.take(1):
            return rec.numpy()
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError):
        return None
    return b""  # an empty file is a valid, empty TFRecord file


def _guess_compression(path: str) -> list[str]:
    with tf.io.gfile.GFile(path, "rb") as f:
        head = f.read(2)
    if head == b"\x1f\x8b":
        return ["GZIP", "", "ZLIB"]
    if head[:1] == b"\x78":
        return ["ZLIB", "", "GZIP"]
    return ["", "GZIP", "ZLIB"]


def image_format_of(record: bytes) -> str:
    """raw / png / seed, from one serialized Example."""
    try:
        ex = tf.train.Example.FromString(record)
    except Exception:  # noqa: BLE001 - protobuf raises its own DecodeError
        return ""
    feats = ex.features.feature
    if "image" not in feats or "labels" not in feats or not feats["labels"].int64_list.value:
        return ""
    image = feats["image"]
    if len(image.int64_list.value) == NUM_PIXELS:
        return SEED
    if len(image.bytes_list.value) == 1:
        data = image.bytes_list.value[0]
        if data.startswith(_PNG_MAGIC):
            return PNG
        if len(data) == NUM_PIXELS:
            return RAW
    return ""


def detect_format(path: str) -> RecordFormat | None:
    """Read the first record of `path`; None for an empty file. Unreadable -> UserError naming it."""
    if not tf.io.gfile.exists(path):
        raise UserError(f"TFRecord shard not found: {path}")
    if tf.io.gfile.stat(path).length == 0:
        return None
    for compression in _guess_compression(path):
        rec = _first_record(path, compression)
        if rec:
            fmt = image_format_of(rec)
            if fmt:
                labels = tf.train.Example.FromString(rec).features.feature["labels"].int64_list.value
                return RecordFormat(fmt, compression, len(labels))
            raise UserError(f"{path}: records are not grapheme Examples (need 'image' and 'labels' features)")
    raise UserError(f"{path}: corrupt or not a TFRecord file")


# ---------------------------------------------------------------------------------- parsing
def parse_batch(serialized: tf.Tensor, image_format: str, num_labels: int = 3) -> tuple[tf.Tensor, tf.Tensor]:
    """Serialized Examples [B] -> (images uint8 [B, H, W] as in the parquet, labels int32 [B, num_labels])."""
    labels = tf.io.FixedLenFeature([num_labels], tf.int64)
    if image_format == SEED:
        spec = {"image": tf.io.FixedLenFeature([NUM_PIXELS], tf.int64), "labels": labels}
        ex = tf.io.parse_example(serialized, spec)
        images = tf.cast(255 - ex["image"], tf.uint8)
    else:
        spec = {"image": tf.io.FixedLenFeature([], tf.string), "labels": labels}
        ex = tf.io.parse_example(serialized, spec)
        if image_format == RAW:
            images = tf.io.decode_raw(ex["image"], tf.uint8, fixed_length=NUM_PIXELS)
        elif image_format == PNG:
            images = tf.map_fn(
                lambda b: tf.reshape(tf.io.decode_png(b, channels=1), [NUM_PIXELS]),
                ex["image"],
                fn_output_signature=tf.TensorSpec([NUM_PIXELS], tf.uint8),
            )
        else:
            raise ValueError(f"unknown image format {image_format!r}")
    images = tf.reshape(images, [-1, HEIGHT, WIDTH])
    return images, tf.cast(ex["labels"], tf.int32)


def parse_single(
    serialized: tf.Tensor, image_format: str, num_labels: int = 3
) -> tuple[tf.Tensor, tf.Tensor]:
    """One serialized Example -> (image uint8 [H, W], labels int32 [num_labels])."""
    images, labels = parse_batch(tf.reshape(serialized, [1]), image_format, num_labels)
    return images[0], labels[0]


def read_ids(path: str, compression: str = "") -> list[str]:
    """image_id of every record of one of our shards (tests, debugging)."""
    spec = {"image_id": tf.io.FixedLenFeature([], tf.string, default_value="")}
    ds = tf.data.TFRecordDataset(path, compression_type=compression).map(
        lambda s: tf.io.parse_single_example(s, spec)
    )
    return [x["image_id"].numpy().decode() for x in ds]
