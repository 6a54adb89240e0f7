"""tf.data input pipeline: TFRecord shards (ours or the seed's) -> normalised, resized batches.

files (sharded per input pipeline) -> parallel interleaved reads -> [shuffle + repeat] -> batch ->
vectorised parse/decode -> resize (area when shrinking: keeps thin strokes) ->
normalise (ink bright) -> prefetch. Parsing after batching lets raw and seed records decode with
one op per batch instead of one per image.

With `cache_mb` and a pipeline share that fits, the decoded, resized images are kept in host memory
as uint8 after the first epoch (reads -> decode + resize -> cache -> shuffle -> repeat -> batch ->
normalise): later epochs do no parsing or resizing, which on a host whose cores also run the step
is the input pipeline's whole cost.
"""

from __future__ import annotations

import math

import tensorflow as tf

from tpu_grapheme import option_checks
from tpu_grapheme.data import shards, tfrecord
from tpu_grapheme.data.schema import HEIGHT, WIDTH
from tpu_grapheme.errors import UserError

# Mean / std of the inverted images scaled to [0, 1] (the seed's constants; shared with inference).
MEAN = 0.053
STD = 0.165
READ_BUFFER_BYTES = 8 << 20
MAX_CYCLE = 16
DECODE_BATCH = 256  # records parsed + resized per op on the way into the cache


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

    images: float32 normalised (`normalize`) by default; with `normalized=False` the parquet's pixels
    (uint8 when not resized). `repeat=None` repeats forever when training, once otherwise.
    `resize_method`: see `resize_method_for`. `cache_mb > 0`: keep decoded images in memory when this pipeline's share fits (`cache_fits`);
    cached images are resized then rounded to uint8 (at most 0.5/255 from the uncached value).
    `skipped` (an int64 variable): skip corrupt records instead of failing, and add to it how many
    records each pass over a shard lost (`skip_corrupt_records`).
    """
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    files = shards.list_shards(pattern)
    fmt = shards.check_shards(files)
    n_pipes, pipe_id = 1, 0
    if input_context is not None:
        n_pipes, pipe_id = input_context.num_input_pipelines, input_context.input_pipeline_id
    shard_files = n_pipes > 1 and len(files) >= n_pipes

    by_record = n_pipes > 1 and not shard_files  # fewer files than pipelines: split each file's records
    # Records each shard should hold, for the skip count (counted once when every pipeline reads every file).
    expected = shards.known_counts(files) if skipped is not None and not (by_record and pipe_id) else {}
    ds = tf.data.Dataset.from_tensor_slices(
        (files, tf.constant([expected.get(f, -1) for f in files], tf.int64))
    )
    if shard_files:
        ds = ds.shard(n_pipes, pipe_id)
    n_files = len(files) // n_pipes if shard_files else len(files)
    if training:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)

    def read(f, count):
        records = tf.data.TFRecordDataset(f, compression_type=fmt.compression, buffer_size=READ_BUFFER_BYTES)
        if skipped is not None:
            records = skip_corrupt_records(records, count, skipped)
        return records.shard(n_pipes, pipe_id) if by_record else records

    ds = ds.interleave(
        read,
        cycle_length=max(1, min(n_files, MAX_CYCLE)),
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    cache = cache_fits(files, resize=resize, n_pipes=n_pipes, cache_mb=cache_mb)
    if cache:  # decode + resize once, in big batches, into uint8 kept in memory
        ds = ds.batch(DECODE_BATCH).map(
            lambda s: _decode_uint8(s, fmt, resize, resize_method),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=deterministic,
        )
        ds = ds.unbatch().cache()
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    epochs = repeat if repeat is not None else (-1 if training else 1)
    if epochs != 1:
        ds = ds.repeat(epochs)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)

    def decode(serialized):
        images, labels = tfrecord.parse_batch(serialized, fmt.image_format, fmt.num_labels)
        images = resize_images(images[..., None], resize, resize_method)
        if normalized:
            images = normalize(images)
        return images, labels

    def finish(images, labels):  # cached uint8 batch -> the same dtypes as the uncached path
        if normalized:
            return normalize(images), labels
        return (tf.cast(images, tf.float32) if resizes(resize) else images), labels

    ds = ds.map(finish if cache else decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    opts = tf.data.Options()
    opts.deterministic = deterministic
    if input_context is not None:
        opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(opts)


def skip_corrupt_records(records: tf.data.Dataset, count: tf.Tensor, skipped: tf.Variable) -> tf.data.Dataset:
    """One shard's records up to its first corrupt one; at the end of each pass `count - read` (records
    the shard should hold, from its manifest or `NN-COUNT` name, -1 unknown) is added to `skipped`.

    TFRecordDataset gives up on a file at its first bad record, so what is lost is the rest of the
    shard: the count is exact per pass whenever the shard's record count is known without reading.
    """
    body = records.ignore_errors().map(lambda r: (r, False))
    ends = body.concatenate(tf.data.Dataset.from_tensors((tf.constant(b""), True)))

    def tally(n, item):
        record, end = item
        lost = tf.where(end & (count >= 0), tf.maximum(count - n, 0), tf.constant(0, tf.int64))
        return n + 1, (record, end, lost)

    def note(record, end, lost):
        with tf.control_dependencies([skipped.assign_add(lost)]):
            return tf.identity(record), end

    ds = ends.scan(tf.constant(0, tf.int64), tally).map(note)
    return ds.filter(lambda record, end: tf.logical_not(end)).map(lambda record, end: record)


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
