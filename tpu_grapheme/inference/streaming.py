"""Streaming ensemble prediction: parquet row batches through every member, combined per method.

Per image only the combined class probabilities (one float per class of every head: 168 + 11 + 7 for
Bengali) are kept, so memory grows with the number of images, not with their pixels.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator, Sequence

import numpy as np

from tpu_grapheme import ensemble
from tpu_grapheme.data.kaggle import iter_parquet_images, parquet_files, parquet_num_rows
from tpu_grapheme.errors import UserError
from tpu_grapheme.inference.members import Member


@dataclasses.dataclass
class Predictions:
    """Image ids in parquet order and, per combining method, probabilities float32 [n, sum of classes]."""

    ids: np.ndarray
    probs: dict[str, np.ndarray]


def _total_rows(files: Sequence[str]) -> int | None:
    """Rows of all files from their footers, for the progress bar; None when a footer is unreadable."""
    try:
        return sum(parquet_num_rows(f) for f in files)
    except UserError:
        return None  # the streaming pass reports the bad file with its own message


def count_images(pattern: str) -> int:
    """Images in the parquets of `pattern`, from their footers; zero is a UserError (checked before any
    model is loaded, so an empty test set never becomes an empty submission)."""
    files = parquet_files(pattern)
    total = sum(parquet_num_rows(f) for f in files)
    if total == 0:
        raise _no_images(pattern, files)
    return total


def _no_images(pattern: str, files: Sequence[str]) -> UserError:
    return UserError(f"no images in {pattern}: {len(files)} parquet file(s), all empty; nothing to predict")


def iter_batches(
    files: Sequence[str], *, batch_size: int, keep: set[str] | None = None, progress: bool = True
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, uint8 images) batches of at most `batch_size` from the parquets, optionally only `keep` ids."""
    from tqdm import tqdm

    read_rows = max(batch_size, 1024 // batch_size * batch_size)
    with tqdm(
        total=_total_rows(files), unit="img", desc="predict", disable=not progress, file=sys.stderr
    ) as bar:
        for path in files:
            for ids, images in iter_parquet_images(path, batch_rows=read_rows):
                if keep is not None:
                    mask = np.fromiter((i in keep for i in ids), dtype=bool, count=len(ids))
                    ids, images = ids[mask], images[mask]
                for start in range(0, len(ids), batch_size):
                    yield ids[start : start + batch_size], images[start : start + batch_size]
                bar.update(int(mask.size) if keep is not None else len(ids))


def predict(
    members: Sequence[Member],
    pattern: str,
    *,
    batch_size: int = 64,
    methods: Sequence[str] = ("arithmetic",),
    keep: set[str] | None = None,
    progress: bool = True,
    grapheme_mix: float = 0.0,
) -> Predictions:
    """Stream the parquets matching `pattern` through every member; combine with each of `methods`.

    `grapheme_mix` W: members with a whole-grapheme head mix its marginals in with weight W first."""
    for m in methods:
        if m not in ensemble.METHODS:
            raise UserError(f"method {m!r} is not one of {', '.join(ensemble.METHODS)}")
    if batch_size < 1:
        raise UserError(f"batch size must be >= 1, got {batch_size}")
    files = parquet_files(pattern)
    ids: list[np.ndarray] = []
    probs: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    for batch_ids, images in iter_batches(files, batch_size=batch_size, keep=keep, progress=progress):
        member_lp = [member.log_probs(images, grapheme_mix=grapheme_mix) for member in members]
        ids.append(batch_ids)
        for m in methods:
            probs[m].append(ensemble.combine_heads(member_lp, method=m).astype(np.float32))
    if not ids and keep is None:
        raise _no_images(pattern, files)
    width = sum(members[0].layout.num_classes) if members else 0
    return Predictions(
        ids=np.concatenate(ids) if ids else np.zeros(0, dtype=str),
        probs={m: np.concatenate(p) if p else np.zeros((0, width), np.float32) for m, p in probs.items()},
    )
