"""tf.data input pipeline: TFRecord shards (ours or the seed's) -> normalised, resized batches.

files (sharded per input pipeline) -> reads -> [training: the resumable order of `data.order`] ->
batch -> vectorised parse/decode -> resize (area when shrinking: keeps thin strokes) -> normalise
(ink bright) -> prefetch. Parsing after batching lets raw and seed records decode with one op per
batch instead of one per image. The training path lives in `training_stream` (with its in-memory
copy under `cache_mb`); this module holds the shared image ops and the evaluation path.
"""

from __future__ import annotations

import functools
import math

import tensorflow as tf

from tpu_grapheme import option_checks
from tpu_grapheme.data import shards, tfrecord, training_stream
from tpu_grapheme.data.schema import HEIGHT, WIDTH
from tpu_grapheme.errors import UserError

# Mean / std of the inverted images scaled to [0, 1] (the seed's constants; shared with inference).
MEAN = 0.053
STD = 0.165
MAX_CYCLE = 16


def normalize(images: tf.Tensor) -> tf.Tensor:
    """uint8/float pixels as in the parquet (dark ink) -> float32 `((255 - x) / 255 - MEAN) / STD`."""
    x = tf.cast(images, tf.float32)
    return ((255.0 - x) / 255.0 - MEAN) / STD


def resizes(resize: tuple[int, int] | None) -> bool:
    """Whether `resize` changes the image size (None and the full 137x236 do not)."""
    return resize is not None and tuple(resize) != (HEIGHT, WIDTH)


def resize_method_for(resize: tuple[int, int], method: str = "auto") -> tuple[str, bool]:
    """(tf.image method, antialias) for `method` at `resize`; `auto` picks by direction.

    auto: area when shrinking (a box average keeps 1-px strokes, and is faster than antialiased
    bilinear: benchmarks/README.md), bicubic when enlarging (the seed's method),
    antialiased bicubic when one side grows and the other shrinks. A named method is used as the seed
    used it: `tf.image.resize(method)`, no antialiasing.
    """
    option_checks.check("resize_method", method)
    if method != "auto":
        return method, False
    h, w = int(resize[0]), int(resize[1])
    if h <= HEIGHT and w <= WIDTH:
        return "area", False
    if h >= HEIGHT and w >= WIDTH:
        return "bicubic", False
    return "bicubic", True


def resize_images(images: tf.Tensor, resize: tuple[int, int] | None, method: str = "auto") -> tf.Tensor:
    """[B, H, W, 1] -> [B, h, w, 1] float32 in [0, 255] (`resize_method_for`); skipped at full size.

    Clipped to the pixel range: bicubic overshoots at stroke edges, and the uint8 cache must hold
    what the uncached path computes.
    """
    if not resizes(resize):
        return images
    h, w = int(resize[0]), int(resize[1])
    if h < 1 or w < 1:
        raise UserError(f"resize must be two positive ints, got {resize}")
    name, antialias = resize_method_for((h, w), method)
    x = tf.image.resize(tf.cast(images, tf.float32), (h, w), method=name, antialias=antialias)
    return tf.clip_by_value(x, 0.0, 255.0) if name == "bicubic" else x


def cache_fits(files: list[str], *, resize: tuple[int, int] | None, n_pipes: int, cache_mb: int) -> bool:
    """True when one pipeline's share of `files`, as uint8 images at `resize`, fits in `cache_mb` MB.

    Needs every count without reading (manifest or seed names); an unknown count means no cache.
    """
    if cache_mb <= 0:
        return False
    counts = shards.known_counts(files)
    if any(f not in counts for f in files):
        return False
    h, w = resize if resize is not None else (HEIGHT, WIDTH)
    per_pipe = math.ceil(sum(counts.values()) / max(n_pipes, 1))
    return per_pipe * (int(h) * int(w) + 64) <= cache_mb * (1 << 20)  # + labels and tensor overhead


def build_dataset(
    pattern: str,
    *,
    batch_size: int,
    resize: tuple[int, int] | None = (HEIGHT, WIDTH),
    training: bool,
    seed: int = 0,
    start: int = 0,
    deterministic: bool = False,
    input_context: tf.distribute.InputContext | None = None,
    shuffle_buffer: int = 4096,
    repeat: int | None = None,
    normalized: bool = True,
    drop_remainder: bool = True,
    cache_mb: int = 0,
    resize_method: str = "auto",
    skipped: tf.Variable | None = None,
) -> tf.data.Dataset:
    """Batches `(images [B, H, W, 1], labels int32 [B, heads])`; B is the per-replica batch.

    Training: the resumable order of `data.order` from element `start` of this pipeline's stream,
    shuffled within windows of `shuffle_buffer` records (`training_stream`); `repeat=None` is endless.
    Otherwise: every record once, in file order (`repeat` times). images: float32 normalised
    (`normalize`) by default; with `normalized=False` the parquet's pixels (uint8 when not resized).
    `cache_mb > 0`: hold this pipeline's decoded images in memory when they fit (`cache_fits`), resized
    and rounded to uint8 (at most 0.5/255 from the decoded value). `skipped` (an int64 variable): skip
    corrupt records instead of failing, adding how many each pass over a shard lost.
    """
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    files = shards.list_shards(pattern)
    fmt = shards.check_shards(files)
    part = training_stream.Partition.of(files, input_context)
    decode = functools.partial(_decode, fmt=fmt, resize=resize, method=resize_method, normalized=normalized)
    finish = functools.partial(_finish, resize=resize, normalized=normalized)
    in_memory = cache_fits(files, resize=resize, n_pipes=part.n_pipes, cache_mb=cache_mb)
    if training:
        ds = training_stream.training_batches(
            part,
            fmt,
            batch_size=batch_size,
            seed=seed,
            start=start,
            window=max(1, shuffle_buffer),
            decode=decode,
            decode_uint8=lambda s: _decode_uint8(s, fmt, resize, resize_method),
            finish=finish,
            in_memory=in_memory,
            skipped=skipped,
            epochs=repeat,
        )
    else:
        ds = _in_file_order(part, fmt, skipped=skipped, deterministic=deterministic)
        ds = ds.repeat(repeat or 1).batch(batch_size, drop_remainder=drop_remainder)
        ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    opts = tf.data.Options()
    opts.deterministic = deterministic or training  # the training order is part of a run's state
    if input_context is not None:
        opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.prefetch(tf.data.AUTOTUNE).with_options(opts)


def _decode(serialized, *, fmt, resize, method: str, normalized: bool):
    """A batch of serialized records -> (images as `build_dataset` returns them, labels)."""
    images, labels = tfrecord.parse_batch(serialized, fmt.image_format, fmt.num_labels)
    images = resize_images(images[..., None], resize, method)
    return (normalize(images) if normalized else images), labels


def _finish(images, labels, *, resize, normalized: bool):
    """An in-memory uint8 batch -> the same dtypes as `_decode` gives."""
    if normalized:
        return normalize(images), labels
    return (tf.cast(images, tf.float32) if resizes(resize) else images), labels


def _in_file_order(part, fmt, *, skipped, deterministic: bool) -> tf.data.Dataset:
    """This pipeline's records, interleaved over its files (file order when `deterministic`)."""
    read = part.reader(fmt, skipped)
    return tf.data.Dataset.range(len(part.files)).interleave(
        read,
        cycle_length=max(1, min(len(part.files), MAX_CYCLE)),
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )


def _decode_uint8(
    serialized: tf.Tensor, fmt: tfrecord.RecordFormat, resize, method: str
) -> tuple[tf.Tensor, tf.Tensor]:
    """Serialized [N] -> (uint8 [N, h, w, 1] resized and rounded, labels int32 [N, heads])."""
    images, labels = tfrecord.parse_batch(serialized, fmt.image_format, fmt.num_labels)
    images = images[..., None]
    if resizes(resize):
        images = tf.cast(
            tf.round(tf.clip_by_value(resize_images(images, resize, method), 0.0, 255.0)), tf.uint8
        )
    return images, labels
