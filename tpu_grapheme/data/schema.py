"""The Kaggle data contract: image size, pixel columns, label heads and their class counts."""

from __future__ import annotations

HEIGHT = 137
WIDTH = 236
NUM_PIXELS = HEIGHT * WIDTH  # 32,332 columns named "0".."32331"
PIXEL_COLUMNS = tuple(str(i) for i in range(NUM_PIXELS))

# (csv column, number of classes), in the order the model's three heads use.
HEADS: tuple[tuple[str, int], ...] = (
    ("grapheme_root", 168),
    ("vowel_diacritic", 11),
    ("consonant_diacritic", 7),
)
HEAD_NAMES = tuple(name for name, _ in HEADS)
NUM_CLASSES = tuple(n for _, n in HEADS)
HEAD_WEIGHTS = (2.0, 1.0, 1.0)  # hierarchical macro recall: root counts twice

TRAIN_CSV_COLUMNS = ("image_id", *HEAD_NAMES, "grapheme")
CLASS_MAP_COLUMNS = ("component_type", "label", "component")
