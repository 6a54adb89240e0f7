"""TFRecord shards on disk: list them, check them cheaply, count their records, and diagnose damage.

Cheap checks run at start-up (first record, size against `manifest.json`, counts from the manifest or
the seed's `NN-COUNT` names); the full read that finds which shard is corrupt, and how to re-create
it, runs only on an error path.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

import tensorflow as tf

from tpu_grapheme.data import paths, tfrecord
from tpu_grapheme.data.manifest import MANIFEST, read_manifest, shard_entries
from tpu_grapheme.errors import UserError


def list_shards(pattern: str) -> list[str]:
    """Shard files of a glob, or of a directory (its manifest's shards, else `*.tfrec`); never partials."""
    pattern = pattern.rstrip("/") if pattern not in ("", "/") else pattern
    if not pattern:
        raise UserError("empty TFRecord file pattern")
    try:
        if tf.io.gfile.isdir(pattern):
            m = read_manifest(pattern)
            if m is not None:
                files = [paths.join(pattern, s["file"]) for s in m.get("shards", [])]
                missing = [f for f in files if not tf.io.gfile.exists(f)]
                if missing:
                    raise UserError(f"shard listed in {MANIFEST} is missing: {missing[0]}")
            else:
                files = tf.io.gfile.glob(paths.join(pattern, "*.tfrec"))
        else:
            files = tf.io.gfile.glob(pattern)
    except tf.errors.OpError as e:
        raise UserError(f"cannot list {pattern}: {e.message.splitlines()[0]}") from None
    files = sorted(
        f for f in files if not f.endswith((tfrecord.PARTIAL_SUFFIX, ".json")) and not tf.io.gfile.isdir(f)
    )
    if not files:
        raise UserError(f"no TFRecord files match {pattern}")
    return files


def check_shards(files: list[str]) -> tfrecord.RecordFormat:
    """Cheap up-front check of every shard (first record, manifest size); returns their common format."""
    sizes = {f: e.get("bytes") for f, e in shard_entries(files).items()}
    formats = {}
    for f in files:
        fmt = tfrecord.detect_format(f)
        if fmt is None:
            raise UserError(f"empty TFRecord shard: {f}")
        want = sizes.get(f)
        if want is not None and tf.io.gfile.stat(f).length != want:
            raise UserError(
                f"corrupt TFRecord shard {f}: {tf.io.gfile.stat(f).length} bytes, manifest says {want}"
            )
        formats[f] = fmt
    kinds = set(formats.values())
    if len(kinds) > 1:
        a, b = sorted(kinds, key=str)[:2]
        fa = next(f for f, k in formats.items() if k == a)
        fb = next(f for f, k in formats.items() if k == b)
        raise UserError(f"shards mix formats: {fa} is {_kind(a)}, {fb} is {_kind(b)}")
    return kinds.pop()


def _kind(fmt: tfrecord.RecordFormat) -> str:
    return f"{fmt.image_format}/{fmt.compression or 'none'} with {fmt.num_labels} labels"


def known_counts(files: list[str]) -> dict[str, int]:
    """Record counts known without reading: from manifest.json, else seed-style `NN-COUNT.tfrec` names."""
    counts = {f: int(e["count"]) for f, e in shard_entries(files).items()}
    for f in files:
        if f not in counts and tfrecord.seed_name_count(f) is not None:
            counts[f] = tfrecord.seed_name_count(f)
    return counts


def count_records(pattern: str, *, skip_corrupt: bool = False) -> int:
    """Number of records: from manifest.json, else seed-style `NN-COUNT.tfrec` names, else by reading
    (which finds a corrupt shard at start-up; `skip_corrupt`: count the records before the damage)."""
    return sum(file_counts(list_shards(pattern), skip_corrupt=skip_corrupt))


def file_counts(files: list[str], *, skip_corrupt: bool = False) -> list[int]:
    """Records per file, in `files` order: known without reading where possible (`known_counts`)."""
    counts = known_counts(files)
    out = []
    for f in files:
        n = counts.get(f)
        if n is None:
            fmt = tfrecord.detect_format(f)
            n = 0 if fmt is None else _count_file(f, fmt.compression, skip_corrupt=skip_corrupt)
        out.append(n)
    return out


def _count_file(path: str, compression: str, *, skip_corrupt: bool = False) -> int:
    ds = tf.data.TFRecordDataset(path, compression_type=compression)
    if skip_corrupt:
        ds = ds.ignore_errors()
    try:
        return int(ds.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1).numpy())
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
        raise UserError(f"corrupt TFRecord shard {path}: {error_text(e)}") from None


def error_text(e: BaseException) -> str:
    """The part of a TensorFlow error a user can act on: its first line without the graph internals
    (`{{function_node __wrapped__ReduceDataset...}}`, `[Op:ReduceDataset]`, `[[{{node ...}}]]`)."""
    text = getattr(e, "message", None) or str(e) or type(e).__name__
    text = re.sub(r"\{\{[^}]*\}\}", "", text)
    text = re.sub(r"\s*\[\[.*?\]\]", "", text, flags=re.S)
    text = re.sub(r"\s*\[Op:[^\]]*\].*", "", text, flags=re.S)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[0] if lines else type(e).__name__)[:300]


def find_corrupt_shard(files: Iterable[str]) -> tuple[str, str] | None:
    """Read every shard fully; the first that fails (or holds fewer records than its manifest or
    `NN-COUNT` name says) and what is wrong, else None. Costs a full read: for error paths only."""
    files = list(files)
    counts = known_counts(files)
    for f in files:
        try:
            fmt = tfrecord.detect_format(f)
        except UserError as e:
            return f, str(e).removeprefix(f"{f}: ")
        if fmt is None:
            continue
        ds = tf.data.TFRecordDataset(f, compression_type=fmt.compression).batch(256)
        ds = ds.map(
            lambda s, fmt=fmt: tf.shape(tfrecord.parse_batch(s, fmt.image_format, fmt.num_labels)[1])[0]
        )
        read = 0
        try:
            for n in ds:
                read += int(n)
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
            return f, f"{error_text(e)} (after {read} good records)"
        if f in counts and read != counts[f]:
            return f, f"holds {read} records, {counts[f]} expected (truncated)"
    return None


def checked_iterator(dataset: Iterable, pattern: str | None = None, *, then: str = "") -> Iterator:
    """Iterate `dataset` in Python; a corrupt record becomes a one-line UserError naming the shard
    (`corrupt_data_error`, `then` appended). Iterators consumed inside a tf.function (the training
    loop's) raise in the graph instead: the loop catches those itself."""
    it = iter(dataset)
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
            raise corrupt_data_error(e, [pattern] if pattern else [], then=then) from None
        yield item


def corrupt_data_error(
    e: BaseException, patterns: Iterable[str], *, note: str = "", then: str = ""
) -> UserError:
    """A one-line UserError for a read error `e` of the shards of `patterns`: the shard, what is wrong,
    `note`, how to re-create it and `then` (what else to do). Finding the shard reads every shard: error
    paths only."""
    patterns = list(patterns)
    bad = find_corrupt_shard([f for p in patterns for f in list_shards(p)])
    if bad is None:
        where = ", ".join(patterns) or "the input"
        return UserError(f"corrupt TFRecord data in {where}: {error_text(e)}" + (f"; {note}" if note else ""))
    path, what = bad
    note = f"{note}; " if note else ""
    return UserError(f"corrupt TFRecord shard {path}: {what}; {note}{recreate_hint(path)}{then}")


def recreate_hint(shard: str) -> str:
    """How to re-create one shard: the `prepare` command its manifest records, else re-copy it."""
    d = paths.dirname(shard)
    m = read_manifest(d)
    if m and m.get("source_csv"):
        return (
            f"re-create it with `python -m tpu_grapheme.data.prepare {m['source_csv']} {d} "
            f"--parquet-pattern '{m.get('parquet_pattern', '')}' --shuffle-seed {m.get('shuffle_seed', 0)} "
            f"--image-format {m.get('image_format', tfrecord.RAW)} --overwrite`"
        )
    return "copy or convert it again"
