"""The competition's class map (label index -> Unicode component) and how a grapheme is composed from it.

Label order is Kaggle's `class_map.csv`; a model trained on our synthetic data therefore predicts the
same indices as one trained on the real data.
"""

from __future__ import annotations

import pandas as pd

from tpu_grapheme.data.schema import CLASS_MAP_COLUMNS, HEAD_NAMES

# Nukta letters are written decomposed (letter + U+09BC), which is also their NFC form.
_RRA, _RHA, _YYA = "\u09a1\u09bc", "\u09a2\u09bc", "\u09af\u09bc"

# fmt: off
ROOTS: tuple[str, ...] = (
    "ং", "ঃ", "অ", "আ", "ই", "ঈ", "উ", "ঊ", "ঋ", "এ", "ঐ", "ও", "ঔ",
    "ক", "ক্ক", "ক্ট", "ক্ত", "ক্ল", "ক্ষ", "ক্ষ্ণ", "ক্ষ্ম", "ক্স",
    "খ", "গ", "গ্ধ", "গ্ন", "গ্ব", "গ্ম", "গ্ল", "ঘ", "ঘ্ন",
    "ঙ", "ঙ্ক", "ঙ্ক্ত", "ঙ্ক্ষ", "ঙ্খ", "ঙ্গ", "ঙ্ঘ",
    "চ", "চ্চ", "চ্ছ", "চ্ছ্ব", "ছ", "জ", "জ্জ", "জ্জ্ব", "জ্ঞ", "জ্ব", "ঝ",
    "ঞ", "ঞ্চ", "ঞ্ছ", "ঞ্জ", "ট", "ট্ট", "ঠ", "ড", "ড্ড", "ঢ",
    "ণ", "ণ্ট", "ণ্ঠ", "ণ্ড", "ণ্ণ",
    "ত", "ত্ত", "ত্ত্ব", "ত্থ", "ত্ন", "ত্ব", "ত্ম", "থ",
    "দ", "দ্ঘ", "দ্দ", "দ্ধ", "দ্ব", "দ্ভ", "দ্ম", "ধ", "ধ্ব",
    "ন", "ন্জ", "ন্ট", "ন্ঠ", "ন্ড", "ন্ত", "ন্ত্ব", "ন্থ", "ন্দ", "ন্দ্ব", "ন্ধ", "ন্ন", "ন্ব", "ন্ম", "ন্স",
    "প", "প্ট", "প্ত", "প্ন", "প্প", "প্ল", "প্স", "ফ", "ফ্ট", "ফ্ফ", "ফ্ল",
    "ব", "ব্জ", "ব্দ", "ব্ধ", "ব্ব", "ব্ল", "ভ", "ভ্ল",
    "ম", "ম্ন", "ম্প", "ম্ব", "ম্ভ", "ম্ম", "ম্ল", "য", "র",
    "ল", "ল্ক", "ল্গ", "ল্ট", "ল্ড", "ল্প", "ল্ব", "ল্ম", "ল্ল",
    "শ", "শ্চ", "শ্ন", "শ্ব", "শ্ম", "শ্ল",
    "ষ", "ষ্ক", "ষ্ট", "ষ্ঠ", "ষ্ণ", "ষ্প", "ষ্ফ", "ষ্ম",
    "স", "স্ক", "স্ট", "স্ত", "স্থ", "স্ন", "স্প", "স্ফ", "স্ব", "স্ম", "স্ল", "স্স",
    "হ", "হ্ন", "হ্ব", "হ্ম", "হ্ল", "ৎ", _RRA, _RHA, _YYA,
)
# fmt: on

# Index 0 is "no vowel sign"; Kaggle writes it as the string "0".
VOWELS: tuple[str, ...] = ("0", "া", "ি", "ী", "ু", "ূ", "ৃ", "ে", "ৈ", "ো", "ৌ")

# 0 none, 1 chandrabindu, 2 reph, 3 reph + ya-phala, 4 ya-phala, 5 ra-phala, 6 ra-phala + ya-phala.
CONSONANTS: tuple[str, ...] = ("0", "ঁ", "র্", "র্য", "্য", "্র", "্র্য")

_REPH = "র্"
_VIRAMA = "্"


def compose(root: int, vowel: int, consonant: int) -> str:
    """The grapheme as typed: [reph] root [ya/ra-phala] [vowel sign] [chandrabindu]."""
    for name, value, n in (("root", root, len(ROOTS)), ("vowel", vowel, len(VOWELS))):
        if not 0 <= int(value) < n:
            raise ValueError(f"{name} label {value} out of range [0, {n})")
    if not 0 <= int(consonant) < len(CONSONANTS):
        raise ValueError(f"consonant label {consonant} out of range [0, {len(CONSONANTS)})")
    text = ROOTS[root]
    if consonant in (2, 3):  # reph is typed before the root
        text = _REPH + text
    if consonant in (3, 4):
        text += _VIRAMA + "য"
    elif consonant == 5:
        text += _VIRAMA + "র"
    elif consonant == 6:
        text += _VIRAMA + "র" + _VIRAMA + "য"
    if vowel:
        text += VOWELS[vowel]
    if consonant == 1:
        text += CONSONANTS[1]
    return text


def class_map_frame() -> pd.DataFrame:
    """Kaggle's class_map.csv as a frame: component_type, label, component (roots, then vowels, consonants)."""
    rows = []
    for head, components in zip(HEAD_NAMES, (ROOTS, VOWELS, CONSONANTS), strict=True):
        rows.extend((head, label, text) for label, text in enumerate(components))
    return pd.DataFrame(rows, columns=list(CLASS_MAP_COLUMNS))
