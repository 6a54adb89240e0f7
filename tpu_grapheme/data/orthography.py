"""Which (root, vowel, consonant) label triples are valid written Bengali, from `class_map.csv` alone.

The rule reads each component's Unicode string (never a list of graphemes), so it works on Kaggle's
class map as on ours. A root is one of five kinds, and each kind takes what Bengali orthography (the
Unicode Bengali block's structure plus the spelling conventions below) lets it take:

1. lone sign (ং anusvara, ঃ visarga as roots): a sign written alone; no vowel sign, no consonant
   diacritic.
2. independent vowel (অ..ঔ): vowel signs attach only to consonants, so vowel 0; candrabindu ঁ may
   nasalise it (আঁ, ইঁ, এঁ), except the vocalic-r vowel ঋ; never reph or a phala (they need a consonant).
3. khanda ta ৎ: a dead consonant with no vowel of its own; takes nothing.
4. nukta letter (ড় ঢ় য়, written with U+09BC): any vowel sign and candrabindu, but never part of a
   conjunct, so no reph, ya-phala or ra-phala.
5. consonant or conjunct (anything else): any vowel sign and any consonant diacritic, except
   - reph (র্ before the base) never on a base beginning with র, and ra-phala (্র after it) never on a
     base ending in র: Bengali never doubles r that way;
   - ya-phala on র is not what the class map's string spells: র + ্ + য without ZWJ is reph over য
     (সূর্য), i.e. another label, so র takes no ya-phala (nor reph + ya-phala);
   - the vocalic-r sign ৃ takes no phala, no candrabindu and no base ending in র (it is itself an r):
     only consonant 0 or reph (কর্তৃ).

Counts with the competition's class map (168 x 11 x 7 = 12,936 label triples): the rule allows 10,907
(150 consonant/conjunct bases x 72 + র 20 + nukta letters 3 x 21 + independent vowels 21 + signs 2 +
khanda ta 1). The real train.csv holds 1,295 of them and the competition's test added graphemes
absent from training (the data set's paper: 900 uncommon ones). `unseen_valid` gives the valid
triples a training split lacks: the ones a renderer can add.
"""

from __future__ import annotations

import argparse
import unicodedata
from collections.abc import Sequence

import numpy as np
import pandas as pd

from tpu_grapheme.cli_help import DefaultsFormatter
from tpu_grapheme.data.schema import HEAD_NAMES, NUM_CLASSES
from tpu_grapheme.errors import UserError, cli_main, run_and_exit

SIGN, VOWEL, KHANDA_TA, NUKTA, CONSONANT = "sign", "vowel", "khanda_ta", "nukta", "consonant"
_RA = "\u09b0"
_VIRAMA = "\u09cd"
_NUKTA = "\u09bc"
_KHANDA_TA = "\u09ce"
_CANDRABINDU = "\u0981"
_VOCALIC_R = ("\u098b", "\u09c3")  # ঋ (independent), ৃ (sign)
_INDEPENDENT_VOWELS = range(0x0985, 0x0995)  # অ .. ঔ


def root_kind(root: str) -> str:
    """One of sign / vowel / khanda_ta / nukta / consonant for a root's Unicode string."""
    if not root:
        raise ValueError("empty root component")
    if unicodedata.category(root[0]).startswith("M"):
        return SIGN
    if len(root) == 1 and ord(root) in _INDEPENDENT_VOWELS:
        return VOWEL
    if root == _KHANDA_TA:
        return KHANDA_TA
    if _NUKTA in root:
        return NUKTA
    return CONSONANT


def _diacritic(text: str) -> tuple[bool, bool, bool, bool]:
    """(candrabindu, reph, ya-phala, ra-phala) of a consonant-diacritic string ("0" = none)."""
    text = "" if text == "0" else text
    reph = text.startswith(_RA + _VIRAMA)
    # after the reph, what is left are phalas: "য" in "র্য" (reph + ya-phala), "্র্য", "্য", "্র"
    rest = (text[2:] if reph else text).lstrip(_VIRAMA)
    return _CANDRABINDU in text, reph, rest.endswith("\u09af"), rest.startswith(_RA)


def invalid_reason(root: str, vowel: str, consonant: str) -> str:
    """Why the triple of component strings is not valid Bengali; "" when it is."""
    kind = root_kind(root)
    vowel = "" if vowel == "0" else vowel
    candra, reph, ya, ra = _diacritic(consonant)
    any_diacritic = candra or reph or ya or ra
    if kind in (SIGN, KHANDA_TA):
        return f"{kind} {root} is written alone" if vowel or any_diacritic else ""
    if kind == VOWEL:
        if vowel:
            return "a vowel sign never attaches to an independent vowel"
        if reph or ya or ra:
            return "reph and phalas need a consonant base"
        return "the vocalic-r vowel is never nasalised" if candra and root in _VOCALIC_R else ""
    if kind == NUKTA and (reph or ya or ra):
        return f"nukta letter {root} never enters a conjunct"
    if reph and root.startswith(_RA):
        return "reph never stands on ra"
    if ra and root.endswith(_RA):
        return "ra-phala never follows ra"
    if ya and root == _RA:
        return "ra + virama + ya spells reph over ya, another label"
    if vowel in _VOCALIC_R:
        if ya or ra or candra:
            return "the vocalic-r sign takes no phala and no candrabindu"
        if root.endswith(_RA):
            return "the vocalic-r sign never follows ra"
    return ""


def components_of(class_map: pd.DataFrame) -> tuple[list[str], list[str], list[str]]:
    """(roots, vowels, consonants) component strings in label order, from a class_map frame."""
    out = []
    for head in HEAD_NAMES:
        part = class_map[class_map["component_type"] == head].sort_values("label")
        out.append([str(c) for c in part["component"]])
    return out[0], out[1], out[2]


def valid_mask(class_map: pd.DataFrame) -> np.ndarray:
    """bool [roots, vowels, consonants]: True where the triple is valid Bengali (`invalid_reason` empty)."""
    roots, vowels, consonants = components_of(class_map)
    mask = np.zeros((len(roots), len(vowels), len(consonants)), bool)
    for r, root in enumerate(roots):
        for v, vowel in enumerate(vowels):
            for c, consonant in enumerate(consonants):
                mask[r, v, c] = not invalid_reason(root, vowel, consonant)
    return mask


def unseen_valid(mask: np.ndarray, train_labels: np.ndarray) -> np.ndarray:
    """int64 [n, 3]: the valid triples absent from `train_labels` [rows, 3], in (root, vowel, consonant) order."""
    labels = np.asarray(train_labels, np.int64).reshape(-1, 3)
    seen = np.zeros_like(mask)
    if len(labels):
        seen[labels[:, 0], labels[:, 1], labels[:, 2]] = True
    return np.argwhere(mask & ~seen).astype(np.int64)


def invalid_seen(mask: np.ndarray, train_labels: np.ndarray) -> np.ndarray:
    """int64 [n, 3]: distinct triples of the labels that the rule calls invalid (a check of the rule)."""
    labels = np.unique(np.asarray(train_labels, np.int64).reshape(-1, 3), axis=0)
    return labels[~mask[labels[:, 0], labels[:, 1], labels[:, 2]]]


# ------------------------------------------------------------------------------------------------ CLI


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    """Print the rule's counts for a Kaggle-layout directory (class_map.csv + a training CSV)."""
    import os

    from tpu_grapheme.data.kaggle import read_class_map, read_train_csv

    p = argparse.ArgumentParser(
        prog="python -m tpu_grapheme.data.orthography",
        description=__doc__.split("\n")[0],
        formatter_class=DefaultsFormatter,
    )
    p.add_argument("--data-dir", required=True, help="directory with class_map.csv and train.csv")
    p.add_argument("--train-csv", default="", help="training rows (default: DATA_DIR/train.csv)")
    args = p.parse_args(argv)
    mask = valid_mask(read_class_map(os.path.join(args.data_dir, "class_map.csv")))
    if mask.shape != NUM_CLASSES:
        raise UserError(f"class map has {mask.shape} classes, expected {NUM_CLASSES}")
    train = read_train_csv(args.train_csv or os.path.join(args.data_dir, "train.csv"))
    labels = train[list(HEAD_NAMES)].to_numpy(np.int64)
    seen = len(np.unique(labels, axis=0))
    bad = invalid_seen(mask, labels)
    print(f"{mask.size} label triples, {int(mask.sum())} valid; training holds {seen} combinations")
    print(f"{len(unseen_valid(mask, labels))} valid combinations absent from training")
    if len(bad):
        print(f"warning: {len(bad)} training combinations break the rule, e.g. {bad[:5].tolist()}")


if __name__ == "__main__":
    run_and_exit(main)
