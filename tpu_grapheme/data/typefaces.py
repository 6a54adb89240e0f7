"""The "other" typefaces: Bengali fonts from packages the project installs, never the data set's own.

Searched on the package index (names and summaries with bengali/bangla/beng, font packs such as
justmytype-*, noto*, font-*, fonts-*, deckr-fonts): the only packages that ship Bengali TTFs are
`justmytype-intl-south-asia` (Noto Sans Bengali, variable weight and width: the synthetic data's own
typeface) and `bengali-captcha` (MIT code; bundles four Unicode Bengali fonts with OpenType `beng`
shaping that Pillow's RAQM layout shapes: Bangla (GPL), BenSen Handwriting, Ekushey Kolom Bold (GPL),
SolaimanLipi (OFL)). `bangla-render`, `bangla-text-renderer`, `banglapdf` and `lbfi` ship no font.

`--typefaces` specs (`parse_typefaces`): `bengali-captcha` (its four fonts), `noto-extremes` (Noto
Sans Bengali's corner instances, outside the weights/widths the synthetic data draws), a font file
path, or `PATH@wght=100,wdth=62.5` for one instance of a variable font.
"""

from __future__ import annotations

import glob
import importlib.util
import os
from collections.abc import Sequence

from tpu_grapheme.data.render import Typeface, noto_path
from tpu_grapheme.errors import UserError

CAPTCHA = "bengali-captcha"
NOTO_EXTREMES = "noto-extremes"
# Noto Sans Bengali's axes: wght 100..900, wdth 62.5..100; the data set draws wght 275..725, wdth >= 81
_NOTO_CORNERS = ((100, 62.5), (900, 62.5), (100, 100.0), (900, 100.0))


def captcha_typefaces() -> list[Typeface]:
    """The four fonts `bengali-captcha` bundles, sorted; [] when the package is not installed."""
    spec = importlib.util.find_spec("bengali_captcha")
    if spec is None or not spec.submodule_search_locations:
        return []
    root = list(spec.submodule_search_locations)[0]
    return [Typeface(p) for p in sorted(glob.glob(os.path.join(root, "assets", "fonts", "*.ttf")))]


def noto_extremes() -> list[Typeface]:
    """Noto Sans Bengali at its four corner instances (thinnest/boldest x most condensed/normal)."""
    path = noto_path()
    return [Typeface(path, weight=w, width=d) for w, d in _NOTO_CORNERS]


def default_typefaces() -> list[Typeface]:
    """The bengali-captcha fonts when installed, else Noto Sans Bengali's extreme instances."""
    return captcha_typefaces() or noto_extremes()


def _instance(spec: str) -> Typeface:
    path, _, axes = spec.partition("@")
    if not os.path.isfile(path):
        raise UserError(f"--typefaces: {path!r} is not a font file nor one of {CAPTCHA}, {NOTO_EXTREMES}")
    values: dict[str, float] = {}
    for item in filter(None, axes.split(",")):
        key, _, value = item.partition("=")
        if key not in ("wght", "wdth"):
            raise UserError(f"--typefaces: unknown axis {key!r} in {spec!r} (wght, wdth)")
        try:
            values[key] = float(value)
        except ValueError:
            raise UserError(f"--typefaces: axis {key} needs a number in {spec!r}") from None
    return Typeface(path, weight=values.get("wght"), width=values.get("wdth"))


def parse_typefaces(specs: Sequence[str]) -> list[Typeface]:
    """Typefaces from `--typefaces` specs (see the module docstring); none given -> `default_typefaces`."""
    out: list[Typeface] = []
    for spec in specs:
        if spec == CAPTCHA:
            found = captcha_typefaces()
            if not found:
                raise UserError(f"--typefaces {CAPTCHA}: package bengali-captcha is not installed")
            out.extend(found)
        elif spec == NOTO_EXTREMES:
            out.extend(noto_extremes())
        else:
            out.append(_instance(spec))
    return out or default_typefaces()
