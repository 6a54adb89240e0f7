"""Typefaces: the data set's own renders are byte-for-byte those of before; the other typefaces render."""

from __future__ import annotations

import hashlib

import numpy as np
import PIL
import pytest
from PIL import features

from tpu_grapheme.data import render, typefaces
from tpu_grapheme.errors import UserError

LABELS = np.array([[103, 7, 0], [93, 1, 2], [40, 5, 5], [42, 1, 1], [136, 10, 0], [0, 0, 0], [18, 4, 0]])
# sha256 of render_rows(LABELS, seed=3, split, start=5, system_fonts=False), computed with the code
# before `Typeface`/`render_typefaces` existed; pixels depend on Pillow's FreeType/raqm build too.
BEFORE = {
    ("13.0.0", "2.14.3"): {
        "train": "e7d87dc6ce24118f311edc46001a75e1b65717199d751b14ad2907a98f80f39b",
        "test": "2a8471d98697b9eb1f8e84fa3f78ccb091c8ec8088d1fefa7cc2c632faeb107d",
    }
}


def _hash(split: str) -> str:
    imgs = render.render_rows(LABELS, seed=3, split=split, start=5, system_fonts=False)
    return hashlib.sha256(imgs.tobytes()).hexdigest()


@pytest.mark.parametrize("split", ["train", "test"])
def test_data_set_renders_unchanged(split):
    want = BEFORE.get((PIL.__version__, features.version("freetype2")))
    if want is None:
        pytest.skip(f"hashes recorded for Pillow 13.0.0 / FreeType 2.14.3, not {PIL.__version__}")
    assert _hash(split) == want[split]


def test_render_typefaces_is_deterministic_and_uses_every_face():
    faces = typefaces.noto_extremes()
    a = [
        render.render_typefaces(13, 1, 2, rng=np.random.default_rng([1, k]), distortion=1.0, typefaces=faces)
        for k in range(3)
    ]
    b = [
        render.render_typefaces(13, 1, 2, rng=np.random.default_rng([1, k]), distortion=1.0, typefaces=faces)
        for k in range(3)
    ]
    for x, y in zip(a, b, strict=True):
        assert x.shape == (137, 236) and x.dtype == np.uint8 and np.array_equal(x, y)
        assert np.median(x) > 200 and x.min() < 120  # ink on paper


def test_typeface_instances_differ():
    path = render.noto_path()
    thin, black = (render.Typeface(path, weight=w, width=100) for w in (100, 900))
    imgs = [
        render.render_typefaces(13, 0, 0, rng=np.random.default_rng(0), distortion=0.0, typefaces=[f])
        for f in (thin, black)
    ]
    ink = [int((img < 128).sum()) for img in imgs]
    assert ink[1] > 2 * ink[0]  # black strokes cover far more paper than thin ones
    assert thin.name.endswith("[wght=100,wdth=100]")


def test_captcha_fonts_when_installed():
    faces = typefaces.captcha_typefaces()
    if not faces:
        pytest.skip("bengali-captcha not installed")
    assert [f.name for f in faces] == ["Bangla", "ben", "ek_kolom_bold", "sole"]
    assert typefaces.default_typefaces() == faces
    for face in faces:  # every font shapes a reph + conjunct + vowel sign grapheme without failing
        img = render.render_typefaces(
            19, 2, 3, rng=np.random.default_rng(0), distortion=0.0, typefaces=[face]
        )
        assert img.min() < 100


def test_parse_typefaces(tmp_path):
    path = render.noto_path()
    (face,) = typefaces.parse_typefaces([f"{path}@wght=200,wdth=75"])
    assert face == render.Typeface(path, weight=200.0, width=75.0)
    assert len(typefaces.parse_typefaces(["noto-extremes"])) == 4
    assert typefaces.parse_typefaces([]) == typefaces.default_typefaces()
    with pytest.raises(UserError, match="not a font file"):
        typefaces.parse_typefaces([str(tmp_path / "none.ttf")])
    with pytest.raises(UserError, match="unknown axis"):
        typefaces.parse_typefaces([f"{path}@slnt=3"])
