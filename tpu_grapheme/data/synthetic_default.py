"""The embedded default data set: render synthetic Kaggle-layout data once, split it, write TFRecords.

The split is the competition's real difficulty in small: 10 % of the grapheme combinations are held
out whole (`data.split.unseen_split`), so the 20 % validation split holds seen and unseen graphemes
and a run reports `hierarchical_recall_seen` and `hierarchical_recall_unseen` beside the overall one.

Cached under `~/.cache/tpu_grapheme` (or `--synthetic-dir`), keyed by rows and seed; a `READY`
marker is written last, so an interrupted preparation is redone rather than half used, and a lock file
makes a second process that wants the same set at the same time wait for the first to finish it.
`data_patterns` is the one place that reads these settings from a `TrainConfig`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Callable, Iterator
from typing import Protocol

SCHEMA = "v2"  # v2: a fixed grapheme set (`synthetic_labels.grapheme_set`) and an unseen-grapheme split
VALID_FRACTION = 0.2  # validation share of the rows, seen and unseen together
HOLDOUT_GRAPHEMES = 0.1  # share of the grapheme combinations held out of training (unseen)
# Kaggle's 4 image parquets per split for the full default; a small set gets fewer: each parquet of
# 32,332 pixel columns costs about a second to write and again to read, whatever its row count.
ROWS_PER_PARQUET = 4000
# The rendered set (`rendered_pattern`): one image of every valid combination the training fold lacks,
# in the other typefaces (`typefaces.default_typefaces`), never in the data set's own.
RENDERED_SCHEMA = "r1"
RENDERED_PER_COMBINATION = 1


class DataSettings(Protocol):
    """What `data_patterns` reads of a run's config (`TrainConfig` has these fields)."""

    train_folder: str
    valid_folder: str
    synthetic_rows: int
    synthetic_dir: str
    seed: int
    effective_rendered_share: float
    rendered_folder: str


def data_patterns(cfg: DataSettings, log: Callable[[str], None] = print) -> tuple[str, str]:
    """(train, valid) TFRecord patterns of a run: its folders, else the synthetic default's."""
    if cfg.train_folder:
        return cfg.train_folder, cfg.valid_folder
    return ensure_synthetic(rows=cfg.synthetic_rows, seed=cfg.seed, root=cfg.synthetic_dir, log=log)


def rendered_pattern(cfg: DataSettings, log: Callable[[str], None] = print) -> str:
    """The rendered images a run mixes into training: "" when its rendered share is 0, its
    `rendered_folder` when given, else the synthetic default's (rendered on first use)."""
    if not cfg.effective_rendered_share:
        return ""
    return cfg.rendered_folder or synthetic_rendered(cfg, log)


def synthetic_rendered(cfg: DataSettings, log: Callable[[str], None] = print) -> str:
    """The synthetic default's rendered set (built on first use, with the data set if needed): one image
    of every valid combination its training fold lacks, in the other typefaces."""
    data_patterns(cfg, log)  # the training fold the rendered set is computed from
    out = cache_dir(rows=cfg.synthetic_rows, seed=cfg.seed, root=cfg.synthetic_dir)
    rendered = os.path.join(out, f"rendered-{RENDERED_SCHEMA}")
    if not os.path.exists(os.path.join(rendered, "READY")):
        with _exclusive(rendered):
            if not os.path.exists(os.path.join(rendered, "READY")):
                _build_rendered(out, rendered, seed=cfg.seed, log=log)
    return os.path.join(rendered, "*.tfrec")


def _build_rendered(out: str, rendered: str, *, seed: int, log: Callable[[str], None]) -> None:
    from tpu_grapheme.data.render_unseen import render_unseen

    log(
        f"synthetic default: rendering the valid graphemes its training fold lacks into {rendered} (once; cached)"
    )
    m = render_unseen(
        os.path.join(out, "kaggle"),
        rendered,
        per_combination=RENDERED_PER_COMBINATION,
        train_records=os.path.join(out, "tfrecords", "train"),
        seed=seed,
        overwrite=True,
    )
    log(f"synthetic default: {m['total']} rendered images in {', '.join(m['rendered']['typefaces'])}")
    with open(os.path.join(rendered, "READY"), "w") as f:
        f.write("ok\n")


def cache_dir(*, rows: int, seed: int, root: str = "") -> str:
    """Where the synthetic default of `rows` images and `seed` lives (under `root`, default ~/.cache)."""
    root = root or os.path.join(os.path.expanduser("~"), ".cache", "tpu_grapheme")
    return os.path.join(root, f"synthetic-{SCHEMA}-{rows}-s{seed}")


def parquet_files(rows: int) -> int:
    """Image parquets per split: Kaggle's 4 for the full default (16,000 rows), fewer for a small set."""
    from tpu_grapheme.data.synthetic import DEFAULT_PARQUET_FILES

    return max(1, min(DEFAULT_PARQUET_FILES, rows // ROWS_PER_PARQUET))


def synthetic_patterns(*, rows: int, seed: int, root: str = "") -> tuple[str, str]:
    """(train, valid) TFRecord patterns of the synthetic default, built or not (a run's data identity)."""
    out = cache_dir(rows=rows, seed=seed, root=root)
    train, valid = (os.path.join(out, "tfrecords", split, "*.tfrec") for split in ("train", "valid"))
    return train, valid


def ensure_synthetic(
    *, rows: int, seed: int, root: str = "", log: Callable[[str], None] = print
) -> tuple[str, str]:
    """Return (train_pattern, valid_pattern) of the synthetic default, building it on first use."""
    out = cache_dir(rows=rows, seed=seed, root=root)
    patterns = synthetic_patterns(rows=rows, seed=seed, root=root)
    if os.path.exists(os.path.join(out, "READY")):
        return patterns
    with _exclusive(out):
        if not os.path.exists(os.path.join(out, "READY")):  # not built meanwhile by another process
            _build(out, rows=rows, seed=seed, log=log)
    return patterns


@contextlib.contextmanager
def _exclusive(out: str) -> Iterator[None]:
    """Hold `<out>.lock` (an advisory lock, released when the process dies) while building `out`."""
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(f"{out}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _build(out: str, *, rows: int, seed: int, log: Callable[[str], None]) -> None:
    from tpu_grapheme.data import kaggle, prepare, split, synthetic

    if os.path.exists(out):
        shutil.rmtree(out)
    raw = os.path.join(out, "kaggle")
    log(f"synthetic default: rendering {rows} images into {raw} (once; cached)")
    synthetic.generate(raw, rows=rows, seed=seed, parquet_files=parquet_files(rows))
    df = kaggle.read_train_csv(os.path.join(raw, "train.csv"))
    valid, unseen = split.unseen_split(
        df, holdout=HOLDOUT_GRAPHEMES, valid_fraction=VALID_FRACTION, seed=seed
    )
    split.write_unseen_split(df, valid, unseen, raw)
    log(f"synthetic default: {int(valid.sum())} validation images, {int(unseen.sum())} of unseen graphemes")
    for name in ("train", "valid"):
        prepare.prepare(
            os.path.join(raw, f"{name}_split_0.csv"),
            os.path.join(out, "tfrecords", name),
            parquet_pattern=os.path.join(raw, "train_image_data_*.parquet"),
        )
    with open(os.path.join(out, "READY"), "w") as f:
        f.write("ok\n")
