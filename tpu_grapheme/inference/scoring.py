"""Ensemble probabilities to answers: reweight priors, the submission frame, scores on a labelled split."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from tpu_grapheme import ensemble, reweight
from tpu_grapheme.data.schema import HEAD_NAMES, NUM_CLASSES
from tpu_grapheme.errors import UserError
from tpu_grapheme.inference.members import Member
from tpu_grapheme.inference.streaming import Predictions, predict
from tpu_grapheme.run_dir import META

# The competition's sample_submission order: per image, these three rows in this order.
SUBMISSION_HEADS = ("consonant_diacritic", "grapheme_root", "vowel_diacritic")
PRIORS = ("off", "test", "train")


def prior_for(kind: str, probs: np.ndarray, members: Sequence[Member]) -> list[np.ndarray] | None:
    """Per-head class counts for reweighting: None (off), test-set argmax counts, or training counts."""
    if kind == "off":
        return None
    if kind == "test":
        return reweight.test_prior(probs)
    check_prior(kind, members)
    return reweight.train_prior([m.class_counts for m in members if m.class_counts])


def check_prior(kind: str, members: Sequence[Member]) -> None:
    """Fail before any prediction when the prior cannot be built: `train` needs a member's class counts."""
    if kind not in PRIORS:
        raise UserError(f"reweight prior {kind!r} is not one of {', '.join(PRIORS[1:])}")
    if kind == "train" and not any(m.class_counts for m in members):
        specs = ", ".join(m.spec for m in members)
        raise UserError(
            f"--reweight-prior train needs class_counts in a {META} next to the models ({specs}); "
            "use --reweight-prior test"
        )


def submission_frame(ids: Sequence[str], labels: np.ndarray) -> pd.DataFrame:
    """Kaggle submission rows `row_id,target`: per image `<id>_consonant_diacritic`, `_grapheme_root`, `_vowel_diacritic`."""
    ids = np.asarray(ids, dtype=str)
    labels = np.asarray(labels, dtype=np.int64).reshape(len(ids), len(HEAD_NAMES))
    cols = [HEAD_NAMES.index(h) for h in SUBMISSION_HEADS]
    row_id = np.char.add(np.repeat(ids, len(cols)), np.tile([f"_{h}" for h in SUBMISSION_HEADS], len(ids)))
    return pd.DataFrame({"row_id": row_id, "target": labels[:, cols].reshape(-1)})


def confusion_matrices(labels: np.ndarray, preds: np.ndarray) -> list[np.ndarray]:
    """One [C, C] count matrix per head (rows: true class, columns: predicted class)."""
    cms = []
    for h, k in enumerate(NUM_CLASSES):
        cm = np.zeros((k, k), np.int64)
        np.add.at(cm, (labels[:, h], preds[:, h]), 1)
        cms.append(cm)
    return cms


def score(labels: np.ndarray, preds: np.ndarray, unseen: np.ndarray | None = None) -> dict[str, float]:
    """Per-head macro recall and the 2:1:1 hierarchical recall, as the training loop reports them.

    `tpu_grapheme.metrics` follows sklearn's `recall_score(average="macro")` (the competition metric):
    a class predicted but absent from the labels counts as recall 0. With an `unseen` mask [n] holding
    some True, also the same metrics over the seen and the unseen rows (`_seen`, `_unseen` suffixes).
    """
    from tpu_grapheme.metrics import hierarchical_recall

    labels, preds = np.asarray(labels), np.asarray(preds)
    out = hierarchical_recall(confusion_matrices(labels, preds))
    if unseen is not None and np.any(unseen):
        for suffix, rows in (("_seen", ~unseen), ("_unseen", unseen)):
            if rows.any():
                group = hierarchical_recall(confusion_matrices(labels[rows], preds[rows]))
                out.update({f"{k}{suffix}": v for k, v in group.items()})
    return out


def unseen_rows(valid_csv: str, ids: Sequence[str], labels: np.ndarray, members: Sequence[Member]):
    """bool [n] or None: the CSV's `unseen` column (`data.split`), else graphemes outside every member's
    training combinations (model_meta.json, or a grapheme head's classes); None when neither is known."""
    import pandas as pd

    from tpu_grapheme.data.graphemes import unseen_mask
    from tpu_grapheme.data.split import UNSEEN

    header = pd.read_csv(valid_csv, nrows=0).columns
    if UNSEEN in header:
        column = pd.read_csv(valid_csv, usecols=["image_id", UNSEEN], dtype={"image_id": str})
        return column.set_index("image_id").loc[list(ids), UNSEEN].to_numpy().astype(bool)
    known = [m.seen_graphemes for m in members if m.seen_graphemes]
    if not known:
        return None
    return unseen_mask(labels, np.unique(np.concatenate([np.asarray(k) for k in known])))


def labelled_predictions(
    members: Sequence[Member],
    pattern: str,
    valid_csv: str,
    *,
    batch_size: int = 64,
    methods: Sequence[str] = ensemble.METHODS,
    progress: bool = True,
    grapheme_mix: float = 0.0,
) -> tuple[Predictions, np.ndarray]:
    """Predictions for the ids of a labelled split (train.csv columns) and their labels [n, 3]."""
    from tpu_grapheme.data.kaggle import read_train_csv

    df = read_train_csv(valid_csv)
    if len(df) == 0:
        raise UserError(f"{valid_csv}: no rows")
    preds = predict(
        members,
        pattern,
        batch_size=batch_size,
        methods=methods,
        keep=set(df["image_id"]),
        progress=progress,
        grapheme_mix=grapheme_mix,
    )
    if len(preds.ids) == 0:
        raise UserError(f"none of the {len(df)} image ids of {valid_csv} are in {pattern}")
    if len(preds.ids) < len(df):
        missing = len(df) - len(preds.ids)
        print(f"warning: {missing} of {len(df)} ids of {valid_csv} are not in {pattern}", file=sys.stderr)
    return preds, df.set_index("image_id").loc[preds.ids, list(HEAD_NAMES)].to_numpy()


def score_table(
    preds: Predictions,
    labels: np.ndarray,
    members: Sequence[Member],
    *,
    priors: Sequence[str] = PRIORS,
    power: float = reweight.DEFAULT_POWER,
    unseen: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """One row (method, prior, n, metrics) per method in `preds` x prior; `train` only with class counts.

    `unseen` (bool [n]): also the seen / unseen-grapheme metrics of each row."""
    has_counts = any(m.class_counts for m in members)
    rows = []
    for method, probs in preds.probs.items():
        for prior in priors:
            if prior == "train" and not has_counts:
                continue
            pred = reweight.predict(probs, prior_for(prior, probs, members), power=power)
            rows.append({"method": method, "prior": prior, "n": len(labels), **score(labels, pred, unseen)})
    return rows


def evaluate(
    members: Sequence[Member],
    pattern: str,
    valid_csv: str,
    *,
    batch_size: int = 64,
    methods: Sequence[str] = ensemble.METHODS,
    priors: Sequence[str] = PRIORS,
    power: float = reweight.DEFAULT_POWER,
    progress: bool = True,
    grapheme_mix: float = 0.0,
) -> list[dict[str, Any]]:
    """Score each method x prior on the labelled split (what `--valid-csv` prints), with seen / unseen
    grapheme metrics when the split marks them or the members know their training graphemes."""
    preds, labels = labelled_predictions(
        members,
        pattern,
        valid_csv,
        batch_size=batch_size,
        methods=methods,
        progress=progress,
        grapheme_mix=grapheme_mix,
    )
    unseen = unseen_rows(valid_csv, preds.ids, labels, members)
    return score_table(preds, labels, members, priors=priors, power=power, unseen=unseen)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A fixed-width table of `evaluate` rows."""
    groups = [g for g in ("seen", "unseen") if rows and f"hierarchical_recall_{g}" in rows[0]]
    head = f"{'method':<11} {'reweight':<8} {'hier':>7} {'root':>7} {'vowel':>7} {'conso':>7}"
    head += "".join(f" {g:>7}" for g in groups)
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['method']:<11} {r['prior']:<8} {r['hierarchical_recall']:7.4f} {r['recall_grapheme_root']:7.4f}"
            f" {r['recall_vowel_diacritic']:7.4f} {r['recall_consonant_diacritic']:7.4f}"
            + "".join(f" {r[f'hierarchical_recall_{g}']:7.4f}" for g in groups)
        )
    return "\n".join(lines)
