"""Render one grapheme image from its labels with real Bengali fonts, as the synthetic data set draws it.

Each image is the grapheme of its (root, vowel, consonant) labels shaped by HarfBuzz (Pillow's RAQM
layout: conjuncts, reph and vowel signs come out right), drawn dark on light paper at 137x236 with a
random font weight/width, scale, rotation, shear, local warp, blur, paper level and noise. Every image
depends only on (seed, split, row), so worker count and chunking never change a byte. This module
imports no pandas, pyarrow or TensorFlow: the synthetic data set's render workers load only it.
"""

from __future__ import annotations

import glob
import importlib.util
import math
import os
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from tpu_grapheme.data.classmap import compose
from tpu_grapheme.data.schema import HEIGHT, NUM_PIXELS, WIDTH
from tpu_grapheme.errors import UserError

DEFAULT_DISTORTION = 1.0
FONT_SIZE = 60  # render size; the grapheme is then scaled by about 1 into the frame
SPLITS = {"train": 0, "test": 1}  # split -> the id that seeds its rows


# ---------------------------------------------------------------------------------------------- fonts


def noto_path() -> str:
    spec = importlib.util.find_spec("justmytype_intl_south_asia")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("package justmytype-intl-south-asia (Noto Sans Bengali) is not installed")
    root = list(spec.submodule_search_locations)[0]
    hits = sorted(glob.glob(os.path.join(root, "**", "NotoSansBengali*.ttf"), recursive=True))
    if not hits:
        raise UserError(f"Noto Sans Bengali not found under {root}")
    return hits[0]


_SYSTEM_PATTERNS = (
    "/usr/share/fonts/**/Lohit-Bengali*.ttf",
    "/usr/share/fonts/**/ttf-bengali-fonts/*.ttf",
    "/usr/share/fonts/**/fonts-beng-extra/*.ttf",
)


@lru_cache(maxsize=4)
def font_files(system_fonts: bool = True) -> tuple[str, ...]:
    """Noto Sans Bengali (variable, always) then any Debian Bengali fonts present, sorted for determinism."""
    files = [noto_path()]
    if system_fonts:
        extra = set()
        for pattern in _SYSTEM_PATTERNS:
            extra.update(glob.glob(pattern, recursive=True))
        files.extend(sorted(extra))
    return tuple(files)


@lru_cache(maxsize=256)
def _font(path: str, weight: int, width: int) -> ImageFont.FreeTypeFont:
    """One cached font instance per (file, weight, width): worker-local, built on first use."""
    font = ImageFont.truetype(path, FONT_SIZE, layout_engine=ImageFont.Layout.RAQM)
    try:
        axes = font.get_variation_axes()
    except OSError:  # not a variable font
        return font
    values = []
    for axis in axes:
        name = axis["name"].decode() if isinstance(axis["name"], bytes) else str(axis["name"])
        want = {"Weight": weight, "Width": width}.get(name, axis["default"])
        values.append(min(max(want, axis["minimum"]), axis["maximum"]))
    font.set_variation_by_axes(values)
    return font


# ------------------------------------------------------------------------------------------ rendering


@dataclass(frozen=True)
class Style:
    """Distortion ranges for one strength d (0 clean, 1 default, 2 hard)."""

    d: float

    def draw(self, rng: np.random.Generator, n_fonts: int) -> dict:
        d = self.d
        lo_w, hi_w = max(100.0, 450 - 175 * d), min(900.0, 550 + 175 * d)
        return {
            "font": int(rng.integers(n_fonts)) if rng.random() < 0.5 else 0,  # Noto half the time
            "weight": int(round(rng.uniform(lo_w, hi_w) / 50) * 50),
            "width": int(round(rng.uniform(max(62.5, 100 - 19 * d), 100) / 12.5) * 12.5),
            "height": float(np.clip(rng.uniform(0.74 - 0.12 * d, 0.74 + 0.08 * d), 0.35, 0.95)),
            "aspect": float(math.exp(rng.normal(0, 0.08 * d))),
            "rot": float(np.clip(rng.normal(0, 4.0 * d), -12 * d, 12 * d) if d else 0.0),
            "shear": float(rng.uniform(-0.15 * d, 0.15 * d)),
            "shift": rng.uniform(-1, 1, 2) * min(1.0, 0.6 * d),
            "warp": 0.03 * d,
            "blur": float(rng.uniform(0, 0.9 * d)) if rng.random() < 0.5 else 0.0,
            "paper": float(rng.uniform(252 - 14 * d, 254)),
            "grad": rng.normal(0, 4 * d, 2),
            "noise": float(rng.uniform(0, 4.0 * d)),
            "ink": float(rng.uniform(0, 20 + 45 * d)),
            "stray": bool(rng.random() < 0.12 * d),
        }


_YY, _XX = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
_YY = (_YY - HEIGHT / 2) / HEIGHT
_XX = (_XX - WIDTH / 2) / WIDTH


def _ink_mask(text: str, font: ImageFont.FreeTypeFont, p: dict, rng: np.random.Generator) -> Image.Image:
    """Grapheme ink as an L image (255 = ink) placed into the 137x236 frame by one quad warp."""
    side = int(FONT_SIZE * 2.6)
    canvas = Image.new("L", (side, side), 0)
    ImageDraw.Draw(canvas).text((side / 2, side / 2), text, fill=255, font=font, anchor="mm")
    box = canvas.getbbox() or (side // 3, side // 3, 2 * side // 3, 2 * side // 3)
    gw, gh = max(box[2] - box[0], 1), max(box[3] - box[1], 1)
    scale = p["height"] * HEIGHT / gh  # output pixels per source pixel
    sx, sy = scale * p["aspect"], scale / p["aspect"]
    cos, sin = math.cos(math.radians(p["rot"])), math.sin(math.radians(p["rot"]))
    # forward map source -> output: A = R @ Shear @ S; PIL wants the inverse (output -> source)
    fwd = np.array([[cos, -sin], [sin, cos]]) @ np.array([[1.0, p["shear"]], [0.0, 1.0]]) @ np.diag([sx, sy])
    out_w, out_h = np.abs(fwd) @ np.array([gw, gh])  # bounding box of the warped glyph
    fit = min(1.0, 0.93 * WIDTH / out_w, 0.9 * HEIGHT / out_h)  # never crop the grapheme
    fwd, out_w, out_h = fwd * fit, out_w * fit, out_h * fit
    inv = np.linalg.inv(fwd)
    room = np.maximum(np.array([WIDTH - out_w, HEIGHT - out_h]) / 2 - 2, 0)
    centre_out = np.array([WIDTH / 2, HEIGHT / 2]) + p["shift"] * room
    centre_src = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])

    # output corners -> source corners through the inverse affine, each jittered: one QUAD warp gives a
    # smooth, slightly non-affine (keystone-like) distortion at the cost of one resampling pass
    corners = np.array([[0, 0], [0, HEIGHT], [WIDTH, HEIGHT], [WIDTH, 0]], np.float64)  # NW SW SE NE
    src = centre_src + (corners - centre_out) @ inv.T + rng.normal(0, p["warp"] * max(gw, gh), (4, 2))
    quad = tuple(float(v) for v in src.ravel())
    mask = canvas.transform((WIDTH, HEIGHT), Image.Transform.QUAD, quad, resample=Image.Resampling.BILINEAR)
    if p["stray"]:  # a stroke of a neighbouring character cut by the crop, as in the real scans
        edge = int(rng.integers(4))
        t = rng.uniform(0.1, 0.9, 2)
        a = {
            0: (0, t[0] * HEIGHT),
            1: (WIDTH - 1, t[0] * HEIGHT),
            2: (t[0] * WIDTH, 0),
            3: (t[0] * WIDTH, HEIGHT - 1),
        }[edge]
        length = rng.uniform(8, 25)
        ang = rng.uniform(0, 2 * math.pi)
        b = (a[0] + length * math.cos(ang), a[1] + length * math.sin(ang))
        ImageDraw.Draw(mask).line([a, b], fill=255, width=int(rng.integers(2, 6)))
    if p["blur"] > 0.2:
        mask = mask.filter(ImageFilter.GaussianBlur(p["blur"]))
    return mask


def render(
    root: int,
    vowel: int,
    consonant: int,
    *,
    rng: np.random.Generator,
    distortion: float,
    fonts: Sequence[str],
) -> np.ndarray:
    """One uint8 [137, 236] image of the grapheme: dark ink on light, slightly noisy paper."""
    p = Style(distortion).draw(rng, len(fonts))
    font = _font(fonts[p["font"]], p["weight"], p["width"])
    return _draw(compose(root, vowel, consonant), font, p, rng)


def _draw(text: str, font: ImageFont.FreeTypeFont, p: dict, rng: np.random.Generator) -> np.ndarray:
    """The grapheme text drawn with `font` and the drawn style `p`: ink warped onto noisy paper."""
    if unicodedata.category(text[0]).startswith("M"):  # lone sign (ং ঃ): NBSP base, no dotted circle
        text = "\u00a0" + text
    mask = np.asarray(_ink_mask(text, font, p, rng), dtype=np.float32)
    oy, ox = rng.integers(HEIGHT), rng.integers(WIDTH)
    img = _noise_bank()[oy : oy + HEIGHT, ox : ox + WIDTH] * np.float32(p["noise"])
    img += np.float32(p["paper"] + 0.5)
    img += np.float32(p["grad"][0]) * _XX + np.float32(p["grad"][1]) * _YY
    img -= (img - np.float32(p["ink"])) * (mask * np.float32(1 / 255))
    np.clip(img, 0, 255, out=img)
    return img.astype(np.uint8)


@dataclass(frozen=True)
class Typeface:
    """A font file and, for a variable font, an optional fixed instance; None axes follow the style's draw."""

    path: str
    weight: float | None = None
    width: float | None = None

    @property
    def name(self) -> str:
        stem = os.path.splitext(os.path.basename(self.path))[0]
        axes = [f"{k}={v:g}" for k, v in (("wght", self.weight), ("wdth", self.width)) if v is not None]
        return stem + (f"[{','.join(axes)}]" if axes else "")


@lru_cache(maxsize=64)
def _is_variable(path: str) -> bool:
    try:
        ImageFont.truetype(path, FONT_SIZE).get_variation_axes()
    except OSError:
        return False
    return True


def render_typefaces(
    root: int,
    vowel: int,
    consonant: int,
    *,
    rng: np.random.Generator,
    distortion: float,
    typefaces: Sequence[Typeface],
) -> np.ndarray:
    """One uint8 [137, 236] image as `render` draws it, in a typeface drawn uniformly from `typefaces`.

    The style (scale, rotation, warp, blur, paper, noise) has `render`'s distribution; a typeface's fixed
    instance replaces the drawn weight/width. `render` itself is untouched, so the data set's images are too.
    """
    if not typefaces:
        raise ValueError("typefaces must not be empty")
    p = Style(distortion).draw(rng, 1)
    face = typefaces[int(rng.integers(len(typefaces)))]
    if _is_variable(face.path):
        weight = face.weight if face.weight is not None else p["weight"]
        width = face.width if face.width is not None else p["width"]
    else:  # one cached instance per static file
        weight = width = 0
    return _draw(compose(root, vowel, consonant), _font(face.path, weight, width), p, rng)


@lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
    """Fixed unit Gaussian field [2H, 2W]; each image takes a random crop (cheaper than fresh noise)."""
    return np.random.default_rng(1234).standard_normal((2 * HEIGHT, 2 * WIDTH), dtype=np.float32)


def render_chunk(task: tuple) -> np.ndarray:
    """Worker: pixels column-major uint8 [32332, n] for rows start.. of one split (one generator per row).

    Column-major because parquet stores one column per pixel: the transpose happens here, in parallel.
    """
    seed, split_id, start, labels, distortion, fonts = task
    out = np.empty((NUM_PIXELS, len(labels)), np.uint8)
    for k, (r, v, c) in enumerate(labels):
        rng = np.random.default_rng([seed, split_id, start + k])
        out[:, k] = render(int(r), int(v), int(c), rng=rng, distortion=distortion, fonts=fonts).ravel()
    return out


def render_rows(
    labels: np.ndarray,
    *,
    seed: int,
    split: str = "train",
    start: int = 0,
    distortion: float = DEFAULT_DISTORTION,
    system_fonts: bool = True,
) -> np.ndarray:
    """Images uint8 [n, 137, 236] exactly as `generate` writes rows start.. of a split (for tests and previews)."""
    cols = render_chunk(
        (seed, SPLITS[split], start, np.asarray(labels), float(distortion), font_files(system_fonts))
    )
    return np.ascontiguousarray(cols.T).reshape(len(labels), HEIGHT, WIDTH)


# -------------------------------------------------------------------------------------------- preview


def contact_sheet(out_dir: str, path: str, *, n: int = 64, cols: int = 8) -> None:
    """PNG grid of the first n train images, each captioned with its labels and the clean grapheme."""
    import pandas as pd

    from tpu_grapheme.data.kaggle import iter_parquet_images

    df = pd.read_csv(os.path.join(out_dir, "train.csv"))
    images = []
    for f in sorted(
        glob.glob(os.path.join(out_dir, "train_image_data_*.parquet")),
        key=lambda s: int(s.rsplit("_", 1)[1].split(".")[0]),
    ):
        for _, batch in iter_parquet_images(f):
            images.extend(batch)
        if len(images) >= n:
            break
    n = min(n, len(images))
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    cap = 34
    sheet = Image.new("L", (cols * (WIDTH + 4), rows * (HEIGHT + cap + 4)), 128)
    label_font = ImageFont.truetype(noto_path(), 22, layout_engine=ImageFont.Layout.RAQM)
    for k in range(n):
        x, y = (k % cols) * (WIDTH + 4), (k // cols) * (HEIGHT + cap + 4)
        sheet.paste(Image.fromarray(images[k]), (x, y))
        draw = ImageDraw.Draw(sheet)
        draw.rectangle((x, y + HEIGHT, x + WIDTH - 1, y + HEIGHT + cap - 1), fill=255)
        r = df.iloc[k]
        draw.text(
            (x + 4, y + HEIGHT + 6), f"{r.grapheme_root}/{r.vowel_diacritic}/{r.consonant_diacritic}", fill=0
        )
        draw.text((x + 120, y + HEIGHT + cap // 2), r.grapheme, fill=0, font=label_font, anchor="lm")
    sheet.save(path)
