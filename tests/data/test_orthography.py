"""The valid-combination rule against triples written by hand from Bengali orthography, not from the rule."""

from __future__ import annotations

import numpy as np
import pytest

from tpu_grapheme.data import orthography
from tpu_grapheme.data.classmap import CONSONANTS, ROOTS, VOWELS, class_map_frame

# Consonant diacritic labels of class_map.csv, by name.
NONE, CANDRA, REPH, REPH_YA, YA, RA, RA_YA = range(7)


def triple(root: str, vowel: str, consonant: int) -> tuple[int, int, int]:
    return ROOTS.index(root), VOWELS.index(vowel), consonant


# (root, vowel sign, consonant diacritic, the written grapheme or why it cannot be written)
VALID = [
    ("ক", "0", NONE, "ক: a bare consonant"),
    ("ক", "া", CANDRA, "কাঁ: candrabindu after a vowel sign (কাঁদা)"),
    ("ক", "ৃ", NONE, "কৃ: vocalic-r sign on a consonant (কৃষক)"),
    ("ত", "ৃ", REPH, "র্তৃ: reph with vocalic-r sign (কর্তৃ)"),
    ("চ", "0", REPH, "র্চ: reph on a consonant (অর্চনা)"),
    ("ঘ", "0", REPH_YA, "র্ঘ্য: reph and ya-phala (অর্ঘ্য)"),
    ("ক্ষ", "0", YA, "ক্ষ্য: ya-phala on a conjunct (লক্ষ্য)"),
    ("ন্ত", "0", RA, "ন্ত্র: ra-phala on a conjunct (মন্ত্র)"),
    ("প", "ি", RA, "প্রি: ra-phala then i-kar (প্রিয়)"),
    ("ব", "া", YA, "ব্যা: ya-phala then aa-kar (ব্যাঙ)"),
    ("য", "0", REPH, "র্য: reph over ya (সূর্য, কার্য)"),
    ("য", "া", YA, "য্যা: ya + ya-phala (শয্যা)"),
    ("র", "া", NONE, "রা: ra with a vowel sign"),
    ("র", "0", CANDRA, "রঁ: candrabindu on ra"),
    ("আ", "0", CANDRA, "আঁ: nasalised independent vowel (আঁকা)"),
    ("ই", "0", CANDRA, "ইঁ: nasalised independent vowel (ইঁদুর)"),
    ("এ", "0", NONE, "এ: independent vowel alone"),
    ("ং", "0", NONE, "ং written alone"),
    ("ঃ", "0", NONE, "ঃ written alone"),
    ("ৎ", "0", NONE, "ৎ written alone"),
    ("\u09a1\u09bc", "া", NONE, "ড়া: nukta letter with a vowel sign (পড়া)"),
    ("\u09af\u09bc", "ে", NONE, "য়ে: nukta letter with a vowel sign (মেয়ে)"),
    ("\u09a2\u09bc", "0", CANDRA, "ঢ়ঁ: candrabindu on a nukta letter"),
]

INVALID = [
    ("আ", "া", NONE, "a vowel sign attaches to consonants only, never to an independent vowel"),
    ("অ", "0", REPH, "reph needs a consonant base"),
    ("উ", "0", YA, "ya-phala needs a consonant base"),
    ("ঋ", "0", CANDRA, "the vocalic-r vowel is never nasalised"),
    ("ং", "া", NONE, "anusvara as a root is a sign written alone"),
    ("ঃ", "0", CANDRA, "visarga as a root is a sign written alone"),
    ("ৎ", "ি", NONE, "khanda ta is a dead consonant: no vowel sign"),
    ("ৎ", "0", REPH, "khanda ta takes no diacritic"),
    ("র", "0", REPH, "র্র: Bengali never writes reph on ra"),
    ("র", "0", RA, "র্র: ra-phala never follows ra"),
    ("র", "া", YA, "র + ্ + য without ZWJ spells reph over ya, the label (য, া, reph)"),
    ("র", "ৃ", NONE, "vocalic-r sign never follows ra"),
    ("ক", "ৃ", RA, "vocalic-r sign after ra-phala would write r twice"),
    ("ক", "ৃ", YA, "vocalic-r sign takes no ya-phala"),
    ("ক", "ৃ", CANDRA, "vocalic-r sign takes no candrabindu"),
    ("\u09a1\u09bc", "0", REPH, "nukta letters never enter a conjunct: no reph"),
    ("\u09af\u09bc", "0", YA, "nukta letters never enter a conjunct: no ya-phala"),
    ("\u09a2\u09bc", "া", RA, "nukta letters never enter a conjunct: no ra-phala"),
]


@pytest.fixture(scope="module")
def mask() -> np.ndarray:
    return orthography.valid_mask(class_map_frame())


@pytest.mark.parametrize("root,vowel,consonant,why", VALID)
def test_valid_by_hand(mask, root, vowel, consonant, why):
    assert mask[triple(root, vowel, consonant)], why


@pytest.mark.parametrize("root,vowel,consonant,why", INVALID)
def test_invalid_by_hand(mask, root, vowel, consonant, why):
    assert not mask[triple(root, vowel, consonant)], why
    assert orthography.invalid_reason(root, vowel, CONSONANTS[consonant])


def test_count_matches_hand_arithmetic(mask):
    # 150 consonant/conjunct bases x (10 vowels x 7 diacritics + vocalic-r x {none, reph}) = 10,800
    # + র: 10 vowels x {none, candrabindu} = 20; + 3 nukta letters x (10 x 2 + 1) = 63
    # + 11 independent vowels: 10 x 2 + ঋ alone = 21; + ং ঃ ৎ alone = 3
    assert mask.shape == (168, 11, 7)
    assert int(mask.sum()) == 10_800 + 20 + 63 + 21 + 3


def test_unseen_valid_is_valid_minus_training(mask):
    train = np.array([[13, 0, 0], [13, 0, 0], [13, 1, 2], [0, 0, 0]])
    unseen = orthography.unseen_valid(mask, train)
    assert len(unseen) == int(mask.sum()) - 3
    ids = {tuple(t) for t in unseen.tolist()}
    assert (13, 0, 0) not in ids and (13, 1, 1) in ids and (2, 1, 0) not in ids  # (আ, া) is invalid
    assert orthography.invalid_seen(mask, np.array([[2, 1, 0], [13, 0, 0]])).tolist() == [[2, 1, 0]]


def test_rule_reads_strings_not_indices():
    # The same rule from a class map whose rows are shuffled (labels, not row order, define classes).
    frame = class_map_frame().sample(frac=1.0, random_state=0)
    assert orthography.valid_mask(frame).sum() == orthography.valid_mask(class_map_frame()).sum()
