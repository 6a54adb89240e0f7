"""Split CSV + Kaggle image parquets -> shuffled, sharded TFRecords with a manifest.json.

`python -m tpu_grapheme.data.prepare SPLIT.csv OUT_DIR [--parquet-pattern GLOB] [--shard-mb 100]`.
Two passes keep memory bounded while still shuffling globally: rows get a seeded random position,
pass 1 streams parquet batches and appends each encoded record to a local spill file of its shard,
pass 2 loads one spill (one shard, ~shard-mb) at a time, orders it by position and writes the final
shard under a `.partial` name, renamed when complete. The manifest is written last.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import os
import tempfile
from collections.abc import Sequence

import numpy as np

from tpu_grapheme.cli_help import DefaultsFormatter
from tpu_grapheme.data import paths
from tpu_grapheme.data.out_paths import check_out_dir, removing_new_dirs
from tpu_grapheme.data.schema import BENGALI, IMAGE_FORMATS, NUM_PIXELS, RAW
from tpu_grapheme.errors import UserError, cli_main, run_and_exit

# TensorFlow and the modules that load it (kaggle's pyarrow too) are imported where used, so that
# `--help` and usage errors answer at once.

_RECORD_OVERHEAD = 80  # Example framing + image_id + labels, bytes
TFRECORD_FRAMING = 16  # per record in an uncompressed TFRecord file: length (8), its CRC (4), data CRC (4)


def _check_ids(df, files: list[str]) -> None:
    """Every CSV image_id must be in some parquet; name a few that are not."""
    from tpu_grapheme.data import kaggle

    have: set[str] = set()
    for f in files:
        have.update(kaggle.parquet_ids(f))
    missing = df.loc[~df["image_id"].isin(have), "image_id"].tolist()
    if missing:
        few = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise UserError(f"{len(missing)} image_id(s) of the CSV are in no parquet file: {few}")


def _prepare_out_dir(out_dir: str, overwrite: bool) -> None:
    import tensorflow as tf

    from tpu_grapheme.data import tfrecord
    from tpu_grapheme.data.manifest import MANIFEST

    tf.io.gfile.makedirs(out_dir)
    old = [
        n for n in tf.io.gfile.listdir(out_dir) if n.endswith((".tfrec", MANIFEST, tfrecord.PARTIAL_SUFFIX))
    ]
    if old and not overwrite:
        raise UserError(f"{out_dir} already holds shards ({old[0]}, ...); pass --overwrite to replace them")
    for name in old:
        tf.io.gfile.remove(paths.join(out_dir, name))


def prepare(
    split_csv: str,
    out_dir: str,
    *,
    parquet_pattern: str | None = None,
    shard_mb: float = 100.0,
    shuffle_seed: int = 0,
    image_format: str = RAW,
    batch_rows: int = 1024,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Write the TFRecord shards of one split; returns the manifest (also saved as manifest.json)."""
    from tpu_grapheme.data import kaggle
    from tpu_grapheme.data.manifest import write_manifest

    if shard_mb <= 0:
        raise UserError(f"--shard-mb must be > 0, got {shard_mb}")
    if image_format not in IMAGE_FORMATS:
        raise UserError(f"--image-format must be one of {', '.join(IMAGE_FORMATS)}")
    df = kaggle.read_train_csv(split_csv)
    if len(df) == 0:
        raise UserError(f"{split_csv}: no rows")
    csv_dir = paths.dirname(split_csv if paths.is_uri(split_csv) else os.path.abspath(split_csv))
    pattern = parquet_pattern or paths.join(csv_dir, "train_image_data_*.parquet")
    files = kaggle.parquet_files(pattern)
    _check_ids(df, files)
    _prepare_out_dir(out_dir, overwrite)

    n = len(df)
    position = np.empty(n, np.int64)
    position[np.random.default_rng(shuffle_seed).permutation(n)] = np.arange(n)
    layout = BENGALI  # a Kaggle train.csv: the competition's heads
    labels = df[list(layout.names)].to_numpy(np.int64)
    split = _Split({image_id: i for i, image_id in enumerate(df["image_id"])}, labels, position)
    with tempfile.TemporaryDirectory(prefix="tpu_grapheme_prepare_") as spill_dir:
        spill = _Spill(spill_dir, rows=n, shard_mb=shard_mb, image_format=image_format)
        try:
            written = _spill_split(files, split, spill, batch_rows=batch_rows, progress=progress)
            spill.close()
            shards = _write_shards(spill_dir, out_dir, spill.slots, progress)
        except BaseException:
            spill.abort()
            raise
    class_counts = {
        name: np.bincount(labels[written, h], minlength=c).tolist()
        for h, (name, c) in enumerate(zip(layout.names, layout.num_classes, strict=True))
    }
    combos, counts = np.unique(labels[written], axis=0, return_counts=True)
    return write_manifest(
        out_dir,
        image_format=image_format,
        class_counts=class_counts,
        combination_counts=np.column_stack([combos, counts]).tolist(),
        layout=layout,
        shards=shards,
        source_csv=split_csv,
        parquet_pattern=pattern,
        shuffle_seed=shuffle_seed,
    )


@dataclasses.dataclass(frozen=True)
class _Split:
    """The split's rows: image id -> row, labels per row, and each row's place in the shuffled order."""

    row_of: dict[str, int]
    labels: np.ndarray
    position: np.ndarray


class _Spill:
    """Records spilled to one temp file per shard in the split's shuffled order; the shard size comes
    from the encoded size of the first records (PNG sizes vary)."""

    def __init__(self, spill_dir: str, *, rows: int, shard_mb: float, image_format: str) -> None:
        self.dir, self.rows, self.shard_mb, self.image_format = spill_dir, rows, shard_mb, image_format
        self.writers: list = []  # tfrecord.ShardWriter, one per shard
        self.slots: list[list[int]] = []
        self.per_shard = 0

    def size_from(self, sample: list[bytes]) -> None:
        rec_bytes = float(np.mean([len(r) for r in sample])) if sample else NUM_PIXELS + _RECORD_OVERHEAD
        per_shard = max(1, int(self.shard_mb * 1e6 // rec_bytes))
        num_shards = math.ceil(self.rows / per_shard)
        self.per_shard = math.ceil(self.rows / num_shards)  # even shards
        from tpu_grapheme.data import tfrecord

        self.writers = [tfrecord.ShardWriter(os.path.join(self.dir, f"{s}.spill")) for s in range(num_shards)]
        self.slots = [[] for _ in range(num_shards)]

    def add(self, position: int, record: bytes) -> None:
        shard = position // self.per_shard
        self.writers[shard].write(record)
        self.slots[shard].append(position)

    def close(self) -> None:
        for w in self.writers:
            w.close()

    def abort(self) -> None:
        import tensorflow as tf

        for w in self.writers:
            if tf.io.gfile.exists(w.tmp_path):
                w.abort()


def _spill_split(
    files: list[str], split: _Split, spill: _Spill, *, batch_rows: int, progress: bool
) -> np.ndarray:
    """Encode every image of the split from the parquets into `spill`; returns which rows were found."""
    from tqdm import tqdm

    from tpu_grapheme.data import kaggle, tfrecord

    written = np.zeros(len(split.labels), bool)
    encode = functools.partial(tfrecord.encode_example, image_format=spill.image_format)
    with tqdm(total=len(written), unit="img", desc="encode", disable=not progress, smoothing=0.1) as bar:
        for path in files:
            for ids, images in kaggle.iter_parquet_images(path, batch_rows=batch_rows):
                rows = [split.row_of.get(i, -1) for i in ids]
                if not spill.per_shard:
                    spill.size_from(
                        [encode(ids[k], images[k], split.labels[max(r, 0)]) for k, r in enumerate(rows[:16])]
                    )
                for k, r in enumerate(rows):
                    if r < 0 or written[r]:  # not in this split, or a duplicate across parquets
                        continue
                    written[r] = True
                    spill.add(int(split.position[r]), encode(ids[k], images[k], split.labels[r]))
                    bar.update(1)
    return written


def _write_shards(spill_dir: str, out_dir: str, slots: list[list[int]], progress: bool) -> list[dict]:
    """Pass 2: each spill in position order -> final shard `NNN-COUNT.tfrec` (temp name, then rename)."""
    import tensorflow as tf
    from tqdm import tqdm

    from tpu_grapheme.data import tfrecord

    shards = []
    for s in tqdm(range(len(slots)), unit="shard", desc="write", disable=not progress):
        spill = os.path.join(spill_dir, f"{s}.spill")
        records = [r.numpy() for r in tf.data.TFRecordDataset(spill)]
        name = f"{s:03d}-{len(records)}.tfrec"
        path = paths.join(out_dir, name)
        with tfrecord.ShardWriter(path) as w:
            for i in np.argsort(slots[s], kind="stable"):
                w.write(records[i])
        os.remove(spill)
        shards.append({"file": name, "count": len(records), "bytes": _check_written(path, records)})
    return shards


def _check_written(path: str, records: list[bytes]) -> int:
    """The shard's size, checked against the bytes its records need (a stat, no read): a short write
    or a partial upload to a bucket is caught here, not as a corrupt record hours into training."""
    import tensorflow as tf

    want = sum(len(r) + TFRECORD_FRAMING for r in records)
    got = int(tf.io.gfile.stat(path).length)
    if got != want:
        raise UserError(
            f"{path}: holds {got} bytes, {want} were written (truncated); run the same command again"
        )
    return want


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tpu_grapheme.data.prepare",
        description=__doc__.splitlines()[0],
        formatter_class=DefaultsFormatter,
    )
    p.add_argument("split_csv", help="train.csv or a train_split_i.csv / valid_split_i.csv")
    p.add_argument("out_dir", help="output directory (local or gs://)")
    p.add_argument(
        "--parquet-pattern",
        default=None,
        help="image parquets (default: train_image_data_*.parquet beside the CSV)",
    )
    p.add_argument("--shard-mb", type=float, default=100.0, help="target shard size in MB")
    p.add_argument("--shuffle-seed", type=int, default=0, help="seed of the row shuffle")
    p.add_argument(
        "--image-format", choices=IMAGE_FORMATS, default=RAW, help="how images are stored: raw bytes or PNG"
    )
    p.add_argument(
        "--batch-rows", type=int, default=1024, help="parquet rows decoded at a time (memory bound)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace shards already in OUT_DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    check_out_dir(args.out_dir, "OUT_DIR")  # before reading the CSV and the parquets
    with removing_new_dirs(args.out_dir):
        m = prepare(
            args.split_csv,
            args.out_dir,
            parquet_pattern=args.parquet_pattern,
            shard_mb=args.shard_mb,
            shuffle_seed=args.shuffle_seed,
            image_format=args.image_format,
            batch_rows=args.batch_rows,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
    print(
        f"wrote {m['total']} images in {len(m['shards'])} shard(s), {m['total_bytes'] / 1e6:.1f} MB, to {args.out_dir}"
    )


if __name__ == "__main__":
    run_and_exit(main)
