"""The data contract: the head layout a data set declares, and Kaggle's image size and CSV columns.

A `HeadLayout` (names, class counts, metric weights of the label heads) is a value: the model, the
step, the evaluator, the metrics and inference receive it, none of them knows a head by name. A data
set records its layout in its TFRecord manifest (`data.manifest`), a run in `model_meta.json`; seed-
format shards and older files without one have `BENGALI`, the competition's three heads.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterator, Sequence
from typing import Any

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")  # a Keras layer name and a metric-key part


@dataclasses.dataclass(frozen=True)
class Head:
    """One label head: its name (output layer, metric keys), class count and weight in the metric."""

    name: str
    num_classes: int
    metric_weight: float = 1.0

    def __post_init__(self) -> None:
        if not _NAME.match(self.name) or self.name == "grapheme":
            raise ValueError(f"head name {self.name!r} must be an identifier other than 'grapheme'")
        if int(self.num_classes) < 2:
            raise ValueError(f"head {self.name}: num_classes must be >= 2, got {self.num_classes}")
        if not (float(self.metric_weight) > 0 and math.isfinite(self.metric_weight)):
            raise ValueError(f"head {self.name}: metric_weight must be > 0, got {self.metric_weight}")


@dataclasses.dataclass(frozen=True)
class HeadLayout:
    """The label heads of a data set, in label-vector order; the metric is their weighted macro recall."""

    heads: tuple[Head, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", tuple(self.heads))
        if not self.heads:
            raise ValueError("a head layout needs at least one head")
        if len(set(self.names)) != len(self.heads):
            raise ValueError(f"head names must be distinct, got {self.names}")

    def __len__(self) -> int:
        return len(self.heads)

    def __iter__(self) -> Iterator[Head]:
        return iter(self.heads)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.heads)

    @property
    def num_classes(self) -> tuple[int, ...]:
        return tuple(int(h.num_classes) for h in self.heads)

    @property
    def metric_weights(self) -> tuple[float, ...]:
        return tuple(float(h.metric_weight) for h in self.heads)

    @property
    def num_combinations(self) -> int:
        """How many label combinations exist (the mixed-radix range of `graphemes.combination_ids`)."""
        return math.prod(self.num_classes)

    def to_json(self) -> list[dict[str, Any]]:
        """The layout as manifest / model_meta.json rows."""
        return [dataclasses.asdict(h) for h in self.heads]

    @classmethod
    def from_json(cls, rows: Sequence[dict[str, Any]] | None) -> HeadLayout:
        """A layout from `to_json` rows; None (a file written before layouts were recorded): `BENGALI`."""
        if rows is None:
            return BENGALI
        try:
            return cls(
                tuple(Head(str(r["name"]), int(r["num_classes"]), float(r["metric_weight"])) for r in rows)
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"heads must be rows of name, num_classes, metric_weight ({e})") from None


# The competition's heads (csv columns of train.csv); hierarchical macro recall counts the root twice.
BENGALI = HeadLayout(
    (
        Head("grapheme_root", 168, 2.0),
        Head("vowel_diacritic", 11, 1.0),
        Head("consonant_diacritic", 7, 1.0),
    )
)

# Kaggle's files (data/kaggle.py, classmap.py, synthetic.py, render.py, split.py and the submission) are
# Bengali's: their image size, pixel columns and label columns.
HEIGHT = 137
WIDTH = 236
NUM_PIXELS = HEIGHT * WIDTH  # 32,332 columns named "0".."32331"
RAW, PNG = "raw", "png"  # how a TFRecord stores the image (`tfrecord`); here so CLIs parse without TensorFlow
IMAGE_FORMATS = (RAW, PNG)
PIXEL_COLUMNS = tuple(str(i) for i in range(NUM_PIXELS))
HEADS: tuple[tuple[str, int], ...] = tuple(zip(BENGALI.names, BENGALI.num_classes, strict=True))
HEAD_NAMES = BENGALI.names
NUM_CLASSES = BENGALI.num_classes

TRAIN_CSV_COLUMNS = ("image_id", *HEAD_NAMES, "grapheme")
CLASS_MAP_COLUMNS = ("component_type", "label", "component")
