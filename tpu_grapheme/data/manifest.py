"""`manifest.json` of a TFRecord directory: the one writer (`prepare`) and reader (`pipeline`) of it.

It records the shards (file, record count, bytes), their encoding, the data set's label heads
(`heads`: a `schema.HeadLayout`) and the split's per-head class counts, so readers count records,
check shard sizes and learn the heads without reading them. Written last, through a
`.partial` name, so a directory with a manifest is complete.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence

import tensorflow as tf

from tpu_grapheme.data import paths
from tpu_grapheme.data.schema import BENGALI, HEIGHT, WIDTH, HeadLayout
from tpu_grapheme.data.tfrecord import PARTIAL_SUFFIX
from tpu_grapheme.errors import UserError

MANIFEST = "manifest.json"
SCHEMA_VERSION = 1


def write_manifest(
    out_dir: str,
    *,
    image_format: str,
    class_counts: dict[str, list[int]],
    shards: Sequence[dict],
    source_csv: str,
    parquet_pattern: str,
    shuffle_seed: int,
    combination_counts: Sequence[Sequence[int]] | None = None,
    extra: dict | None = None,
    layout: HeadLayout = BENGALI,
) -> dict:
    """Write `out_dir/manifest.json` for `shards` (dicts of file, count, bytes); returns the manifest.

    `layout`: the heads of the records' label vectors; `class_counts` is keyed by their names.
    `combination_counts`: [label per head..., count] per combination of the split (which validation
    graphemes are unseen is decided from the training split's); older manifests lack it.
    `extra`: further top-level keys (e.g. `rendered`: how rendered shards were made).
    """
    if set(class_counts) != set(layout.names):
        raise ValueError(f"class_counts has heads {sorted(class_counts)}, the layout {list(layout.names)}")
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "format": "tpu_grapheme",
        "image_format": image_format,
        "compression": "",
        "height": HEIGHT,
        "width": WIDTH,
        "labels": list(layout.names),
        "heads": layout.to_json(),
        # per-head label counts of this split: the training prior that inference's reweight can use
        "class_counts": class_counts,
        **(
            {"combination_counts": [list(map(int, c)) for c in combination_counts]}
            if combination_counts
            else {}
        ),
        "total": int(sum(s["count"] for s in shards)),
        "total_bytes": int(sum(s["bytes"] for s in shards)),
        "shards": list(shards),
        "source_csv": source_csv,
        "parquet_pattern": parquet_pattern,
        "shuffle_seed": shuffle_seed,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    tmp = paths.join(out_dir, MANIFEST + PARTIAL_SUFFIX)
    with tf.io.gfile.GFile(tmp, "w") as f:
        json.dump(manifest, f, indent=1)
    tf.io.gfile.rename(tmp, paths.join(out_dir, MANIFEST), overwrite=True)
    return manifest


def read_manifest(directory: str) -> dict | None:
    """The manifest of a directory, None when it has none; invalid JSON is a UserError."""
    path = paths.join(directory, MANIFEST)
    if not tf.io.gfile.exists(path):
        return None
    try:
        with tf.io.gfile.GFile(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None


def layout_of(files: Sequence[str]) -> HeadLayout:
    """The head layout the shards' manifests declare (`BENGALI` for shards without one: the seed's,
    older manifests); shards of different layouts are a UserError."""
    layouts: dict[HeadLayout, str] = {}
    for d in sorted({paths.dirname(f) for f in files}):
        m = read_manifest(d)
        try:
            layouts.setdefault(HeadLayout.from_json(m.get("heads") if m else None), d)
        except ValueError as e:
            raise UserError(f"{paths.join(d, MANIFEST)}: {e}") from None
    if len(layouts) > 1:
        (a, da), (b, db) = list(layouts.items())[:2]
        raise UserError(f"shards of different label heads: {da} has {a.names}, {db} has {b.names}")
    return next(iter(layouts), BENGALI)


def shard_entries(files: Sequence[str]) -> dict[str, dict]:
    """Shard path -> its entry (`file`, `count`, `bytes`) in the manifest of its directory, where there is one."""
    entries: dict[str, dict] = {}
    for d in {paths.dirname(f) for f in files}:
        m = read_manifest(d)
        if m:
            entries.update({paths.join(d, s["file"]): s for s in m.get("shards", [])})
    return entries
