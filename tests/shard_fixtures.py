"""Small TFRecord train/valid directories (with manifests) for loop-level tests, without rendering fonts."""

from __future__ import annotations

import os

from tests.data.conftest import write_kaggle_dir


def tiny_shard_dirs(
    root: str, *, rows: int = 160, valid: int = 32, shard_mb: float = 100.0
) -> tuple[str, str]:
    """(train_dir, valid_dir) of `rows - valid` and `valid` random Kaggle-like images: one shard each,
    or shards of about `shard_mb` MB (32 KB an image)."""
    from tpu_grapheme.data import prepare

    df, _ = write_kaggle_dir(os.path.join(root, "kaggle"), rows=rows, files=1)
    dirs = []
    for name, part in (("train", df.iloc[valid:]), ("valid", df.iloc[:valid])):
        csv = os.path.join(root, "kaggle", f"{name}.csv")
        part.to_csv(csv, index=False)
        out = os.path.join(root, name)
        pattern = os.path.join(root, "kaggle", "train_image_data_*.parquet")
        prepare.prepare(csv, out, parquet_pattern=pattern, shard_mb=shard_mb, progress=False)
        dirs.append(out)
    return dirs[0], dirs[1]
