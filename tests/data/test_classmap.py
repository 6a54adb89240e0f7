"""The class map matches Kaggle's label order and composes graphemes as they are typed."""

from __future__ import annotations

import pandas as pd
import pytest

from tpu_grapheme.data.classmap import CONSONANTS, ROOTS, VOWELS, class_map_frame, compose
from tpu_grapheme.data.schema import CLASS_MAP_COLUMNS, HEADS


def test_counts_and_uniqueness():
    assert (len(ROOTS), len(VOWELS), len(CONSONANTS)) == (168, 11, 7)
    for components in (ROOTS, VOWELS, CONSONANTS):
        assert len(set(components)) == len(components)


def test_known_labels():
    # anchors from Kaggle's class_map.csv / the first rows of train.csv
    assert ROOTS[0] == "ং" and ROOTS[2] == "অ" and ROOTS[13] == "ক" and ROOTS[18] == "ক্ষ"
    assert (ROOTS[15], ROOTS[22], ROOTS[53], ROOTS[71], ROOTS[159]) == ("ক্ট", "খ", "ট", "থ", "হ")
    assert ROOTS[164] == "ৎ" and ROOTS[167] == "য\u09bc"
    assert VOWELS[0] == "0" and VOWELS[9] == "ো"
    assert CONSONANTS == ("0", "ঁ", "র্", "র্য", "্য", "্র", "্র্য")


@pytest.mark.parametrize(
    "labels, grapheme",
    [
        ((15, 9, 5), "ক্ট্রো"),  # Train_0
        ((159, 0, 0), "হ"),  # Train_1
        ((22, 3, 5), "খ্রী"),  # Train_2
        ((53, 2, 2), "র্টি"),  # Train_3: reph goes before the root
        ((71, 9, 5), "থ্রো"),  # Train_4
        ((13, 1, 1), "কাঁ"),  # chandrabindu after the vowel sign
        ((13, 0, 3), "র্ক্য"),
        ((13, 1, 6), "ক্র্যা"),
        ((107, 0, 4), "ব্য"),
    ],
)
def test_compose(labels, grapheme):
    assert compose(*labels) == grapheme


@pytest.mark.parametrize("labels", [(168, 0, 0), (0, 11, 0), (0, 0, 7), (-1, 0, 0)])
def test_compose_rejects_out_of_range(labels):
    with pytest.raises(ValueError, match="out of range"):
        compose(*labels)


def test_class_map_frame_round_trip(tmp_path):
    df = class_map_frame()
    assert tuple(df.columns) == CLASS_MAP_COLUMNS
    for head, n in HEADS:
        part = df[df.component_type == head]
        assert list(part.label) == list(range(n))
    path = tmp_path / "class_map.csv"
    df.to_csv(path, index=False)
    back = pd.read_csv(path, dtype={"component": str})
    pd.testing.assert_frame_equal(back, df)
    assert back.loc[back.component_type == "vowel_diacritic", "component"].iloc[0] == "0"
