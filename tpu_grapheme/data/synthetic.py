"""A synthetic Bengali.AI data set in the exact Kaggle layout, rendered from real Bengali fonts.

Each image is the grapheme of its (root, vowel, consonant) labels shaped by HarfBuzz (Pillow's RAQM
layout: conjuncts, reph and vowel signs come out right), drawn dark on light paper at 137x236 with a
random font weight/width, scale, rotation, shear, local warp, blur, paper level and noise. Every image
depends only on (seed, split, row), so worker count and chunking never change a byte.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import math
import multiprocessing as mp
import os
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from tpu_grapheme.data.classmap import CONSONANTS, ROOTS, class_map_frame, compose
from tpu_grapheme.data.schema import HEAD_NAMES, HEIGHT, NUM_PIXELS, PIXEL_COLUMNS, WIDTH
from tpu_grapheme.errors import UserError, cli_main

DEFAULT_DISTORTION = 1.0
DEFAULT_IMBALANCE = 0.3  # max/min root frequency = 100**imbalance: 0 uniform, 0.3 ~4x, 1 ~100x (real data)
DEFAULT_TEST_ROWS = 12  # Kaggle's public test.csv has 12 images
DEFAULT_PARQUET_FILES = 4  # Kaggle splits train (and test) images over 4 parquets
CHUNK_ROWS = 128  # rows per worker task
ROW_GROUP_ROWS = 8192  # parquet row group: 32k columns cost ~1.5 CPU-s of metadata per group, keep groups big
FONT_SIZE = 60  # render size; the grapheme is then scaled by about 1 into the frame

_SPLITS = {"train": 0, "test": 1}

# Joint (vowel, consonant) counts of the real train.csv (rows: vowel 0..10, columns: consonant 0..6);
# zeros are combinations that never occur and are never sampled.
_VC_COUNTS = np.array(
    [
        [23960, 768, 6262, 619, 5413, 4180, 306],
        [18799, 2843, 3838, 0, 6573, 3752, 1081],
        [17449, 464, 3764, 0, 1255, 3035, 0],
        [11391, 0, 2290, 0, 0, 2471, 0],
        [11832, 1215, 1563, 0, 2206, 2032, 0],
        [3794, 0, 297, 0, 784, 422, 0],
        [3873, 0, 463, 0, 0, 0, 0],
        [16991, 1197, 3778, 0, 4072, 2685, 0],
        [3210, 0, 0, 0, 167, 151, 0],
        [10727, 774, 1210, 0, 800, 2521, 0],
        [3252, 163, 0, 0, 0, 148, 0],
    ],
    dtype=np.float64,
)


# ----------------------------------------------------------------------------------------------- labels


def _root_groups() -> np.ndarray:
    """0 = bare consonant, 1 = independent vowel / sign, 2 = two-letter conjunct, 3 = longer conjunct."""
    groups = []
    for i, r in enumerate(ROOTS):
        if i <= 12 or r == "ৎ":
            groups.append(1)
        else:
            groups.append({0: 0, 1: 2}.get(r.count("\u09cd"), 3))
    return np.array(groups)


def root_prior(imbalance: float) -> np.ndarray:
    """Root class probabilities: log-linear in a fixed commonness rank, max/min ratio 100**imbalance."""
    groups = _root_groups()
    jitter = np.random.default_rng(20200114).random(len(ROOTS))  # fixed: the prior never depends on seed
    rank = np.empty(len(ROOTS))
    rank[np.lexsort((jitter, groups))] = np.arange(len(ROOTS))
    weights = 100.0 ** (imbalance * (1.0 - rank / (len(ROOTS) - 1)))
    return weights / weights.sum()


def allowed_combos(root: int) -> np.ndarray:
    """Bool [11, 7]: the (vowel, consonant) pairs that make a sensible grapheme with this root."""
    ok = _VC_COUNTS > 0
    text = ROOTS[root]
    if root <= 12 or text == "ৎ":  # ং ঃ, independent vowels, khanda ta: written alone
        ok = np.zeros_like(ok)
        ok[0, 0] = True
    elif text == "র":  # no reph or phala on ra itself (র্র, র্য would read as other labels)
        ok[:, 2:] = False
    elif text in ("য", "য়"):  # reph + ya reads as consonant 3; no ya-phala on ya
        ok[:, [2, 3, 4, 6]] = False
    return ok


def vc_prior(imbalance: float) -> np.ndarray:
    """Joint (vowel, consonant) probabilities: the real counts tempered towards flat for learnability."""
    exponent = min(1.0, 0.35 + 0.65 * imbalance)
    p = _VC_COUNTS**exponent
    return p / p.sum()


def sample_labels(rows: int, *, seed: int, split: str, imbalance: float) -> np.ndarray:
    """int64 [rows, 3] (root, vowel, consonant), vectorised and deterministic for (seed, split)."""
    rng = np.random.default_rng([seed, _SPLITS[split], 7])
    roots = rng.choice(len(ROOTS), size=rows, p=root_prior(imbalance))
    vc = vc_prior(imbalance).ravel()
    labels = np.zeros((rows, 3), np.int64)
    labels[:, 0] = roots
    u = rng.random(rows)
    for r in np.unique(roots):
        p = vc * allowed_combos(int(r)).ravel()
        cdf = np.cumsum(p / p.sum())
        idx = np.flatnonzero(roots == r)
        flat = np.minimum(np.searchsorted(cdf, u[idx], side="right"), len(cdf) - 1)
        labels[idx, 1], labels[idx, 2] = np.divmod(flat, len(CONSONANTS))
    return labels


# ---------------------------------------------------------------------------------------------- fonts


def _noto_path() -> str:
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
    files = [_noto_path()]
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
    text = compose(root, vowel, consonant)
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


@lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
    """Fixed unit Gaussian field [2H, 2W]; each image takes a random crop (cheaper than fresh noise)."""
    return np.random.default_rng(1234).standard_normal((2 * HEIGHT, 2 * WIDTH), dtype=np.float32)


def _render_chunk(task: tuple) -> np.ndarray:
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
    cols = _render_chunk(
        (seed, _SPLITS[split], start, np.asarray(labels), float(distortion), font_files(system_fonts))
    )
    return np.ascontiguousarray(cols.T).reshape(len(labels), HEIGHT, WIDTH)


# -------------------------------------------------------------------------------------------- writing


def _tmp(path: str) -> str:
    return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")


def _write_csv(df, path: str) -> None:
    df.to_csv(_tmp(path), index=False)
    os.replace(_tmp(path), path)


@lru_cache(maxsize=1)
def _pixel_schema():
    import pyarrow as pa

    return pa.schema([("image_id", pa.string())] + [(c, pa.uint8()) for c in PIXEL_COLUMNS])


def _table(ids: Sequence[str], cols: np.ndarray):
    """Arrow table image_id + 32,332 uint8 columns from column-major pixels [32332, n] (zero-copy columns)."""
    import pyarrow as pa

    arrays = [pa.array(list(ids), pa.string())] + [pa.array(cols[j]) for j in range(NUM_PIXELS)]
    return pa.Table.from_arrays(arrays, schema=_pixel_schema())


class _ParquetSink:
    """Streams column-major chunks into parquet files [bounds[i], bounds[i+1]) in order, via temp names."""

    def __init__(self, paths: Sequence[str], bounds: Sequence[int], prefix: str):
        self.paths, self.bounds, self.prefix = list(paths), list(bounds), prefix
        self.file, self.writer, self.buffer, self.row = 0, None, [], 0

    def add(self, cols: np.ndarray) -> None:
        end = self.bounds[self.file + 1]
        n = cols.shape[1]
        assert self.row + n <= end, "chunks never straddle a file"
        self.buffer.append(cols)
        self.row += n
        if sum(b.shape[1] for b in self.buffer) >= ROW_GROUP_ROWS or self.row == end:
            self._flush()
        if self.row == end:
            self.writer.close()
            os.replace(_tmp(self.paths[self.file]), self.paths[self.file])
            self.writer = None
            self.file += 1

    def _flush(self) -> None:
        import pyarrow.parquet as pq

        cols = self.buffer[0] if len(self.buffer) == 1 else np.concatenate(self.buffer, axis=1)
        first = self.row - cols.shape[1]
        ids = [f"{self.prefix}_{k}" for k in range(first, self.row)]
        if self.writer is None:
            self.writer = pq.ParquetWriter(
                _tmp(self.paths[self.file]),
                _pixel_schema(),
                compression="snappy",
                use_dictionary=True,
                write_statistics=False,
            )
        self.writer.write_table(_table(ids, cols), row_group_size=cols.shape[1])
        self.buffer = []


@dataclass(frozen=True)
class GenerateResult:
    """What `generate` wrote and how fast."""

    out_dir: str
    train_rows: int
    test_rows: int
    files: tuple[str, ...]
    seconds: float

    @property
    def images_per_sec(self) -> float:
        return (self.train_rows + self.test_rows) / max(self.seconds, 1e-9)


def _check(
    rows: int,
    seed: int,
    test_rows: int,
    parquet_files: int,
    distortion: float,
    imbalance: float,
    workers: int,
) -> None:
    def integer(name, v, lo):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise UserError(f"{name} must be an integer >= {lo}, got {v!r}")

    integer("rows", rows, 1)
    integer("seed", seed, 0)
    integer("test_rows", test_rows, 0)
    integer("parquet_files", parquet_files, 1)
    integer("workers", workers, 1)
    for name, v, hi in (("distortion", distortion, 3.0), ("imbalance", imbalance, 2.0)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= hi:
            raise UserError(f"{name} must be a number in [0, {hi:g}], got {v!r}")


def _bounds(n: int, files: int) -> list[int]:
    files = max(1, min(files, n))
    return [round(i * n / files) for i in range(files + 1)]


def _tasks(
    seed: int, split: str, labels: np.ndarray, distortion: float, fonts: tuple[str, ...], bounds: list[int]
) -> Iterator[tuple]:
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):  # chunks never straddle a file
        for start in range(a, b, CHUNK_ROWS):
            stop = min(start + CHUNK_ROWS, b)
            yield (seed, _SPLITS[split], start, labels[start:stop], float(distortion), fonts)


def generate(
    out_dir: str,
    *,
    rows: int,
    seed: int,
    test_rows: int = DEFAULT_TEST_ROWS,
    parquet_files: int = DEFAULT_PARQUET_FILES,
    distortion: float = DEFAULT_DISTORTION,
    imbalance: float = DEFAULT_IMBALANCE,
    workers: int | None = None,
    system_fonts: bool = True,
    progress: bool = True,
) -> GenerateResult:
    """Write a Kaggle-layout data set (train/test CSVs and parquets, class_map, sample_submission) to out_dir.

    Also writes `test_solution.csv` (row_id, target): the hidden test labels Kaggle keeps, for scoring.
    """
    import time

    import pandas as pd
    from tqdm import tqdm

    workers = workers if workers is not None else max(1, min(os.cpu_count() or 1, 8))
    _check(rows, seed, test_rows, parquet_files, distortion, imbalance, workers)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UserError(f"--out {out_dir} exists and is not a directory")
    os.makedirs(out_dir, exist_ok=True)
    for stale in glob.glob(os.path.join(out_dir, "*_image_data_*.parquet")):  # an earlier, larger run's parts
        if os.path.basename(stale).split("_image_data_")[0] in _SPLITS:
            os.remove(stale)
    fonts = font_files(system_fonts)
    t0 = time.perf_counter()

    train = sample_labels(rows, seed=seed, split="train", imbalance=imbalance)
    test = sample_labels(test_rows, seed=seed, split="test", imbalance=imbalance) if test_rows else train[:0]
    train_bounds, test_bounds = _bounds(rows, parquet_files), _bounds(test_rows, parquet_files)
    train_paths = [
        os.path.join(out_dir, f"train_image_data_{i}.parquet") for i in range(len(train_bounds) - 1)
    ]
    test_paths = [os.path.join(out_dir, f"test_image_data_{i}.parquet") for i in range(len(test_bounds) - 1)]
    tasks = list(_tasks(seed, "train", train, distortion, fonts, train_bounds))
    n_train_tasks = len(tasks)
    if test_rows:
        tasks += list(_tasks(seed, "test", test, distortion, fonts, test_bounds))
    sinks = [_ParquetSink(train_paths, train_bounds, "Train"), _ParquetSink(test_paths, test_bounds, "Test")]

    bar = tqdm(total=rows + test_rows, unit="img", desc="synthetic", disable=not progress, dynamic_ncols=True)
    pool = mp.get_context("spawn").Pool(workers) if workers > 1 and len(tasks) > 1 else None
    try:
        results = pool.imap(_render_chunk, tasks) if pool else map(_render_chunk, tasks)
        for k, cols in enumerate(results):
            sinks[0 if k < n_train_tasks else 1].add(cols)
            bar.update(cols.shape[1])
    finally:
        bar.close()
        if pool:
            pool.terminate()
            pool.join()

    frame = pd.DataFrame(train, columns=list(HEAD_NAMES))
    frame.insert(0, "image_id", [f"Train_{i}" for i in range(rows)])
    frame["grapheme"] = [compose(*map(int, t)) for t in train]
    _write_csv(frame, os.path.join(out_dir, "train.csv"))
    _write_csv(class_map_frame(), os.path.join(out_dir, "class_map.csv"))
    heads = sorted(HEAD_NAMES)  # Kaggle lists each image's components alphabetically
    row_ids = [f"Test_{i}_{h}" for i in range(test_rows) for h in heads]
    _write_csv(
        pd.DataFrame(
            {
                "row_id": row_ids,
                "image_id": [f"Test_{i}" for i in range(test_rows) for _ in heads],
                "component": heads * test_rows,
            }
        ),
        os.path.join(out_dir, "test.csv"),
    )
    _write_csv(pd.DataFrame({"row_id": row_ids, "target": 0}), os.path.join(out_dir, "sample_submission.csv"))
    col = {h: HEAD_NAMES.index(h) for h in heads}
    targets = [int(test[i, col[h]]) for i in range(test_rows) for h in heads]
    _write_csv(
        pd.DataFrame({"row_id": row_ids, "target": targets}), os.path.join(out_dir, "test_solution.csv")
    )
    names = ["train.csv", "test.csv", "class_map.csv", "sample_submission.csv", "test_solution.csv"]
    files = tuple(os.path.join(out_dir, n) for n in names) + tuple(train_paths) + tuple(test_paths)
    return GenerateResult(out_dir, rows, test_rows, files, time.perf_counter() - t0)


# -------------------------------------------------------------------------------------------- preview


def contact_sheet(out_dir: str, path: str, *, n: int = 64, cols: int = 8) -> None:
    """PNG grid of the first n train images, each captioned with its labels and the clean grapheme."""
    import pandas as pd
    import pyarrow.parquet as pq

    df = pd.read_csv(os.path.join(out_dir, "train.csv"))
    images = []
    for f in sorted(
        glob.glob(os.path.join(out_dir, "train_image_data_*.parquet")),
        key=lambda s: int(s.rsplit("_", 1)[1].split(".")[0]),
    ):
        table = pq.read_table(f)
        arr = np.stack([table.column(c).to_numpy() for c in PIXEL_COLUMNS], axis=1)
        images.extend(arr.reshape(-1, HEIGHT, WIDTH))
        if len(images) >= n:
            break
    n = min(n, len(images))
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    cap = 34
    sheet = Image.new("L", (cols * (WIDTH + 4), rows * (HEIGHT + cap + 4)), 128)
    label_font = ImageFont.truetype(_noto_path(), 22, layout_engine=ImageFont.Layout.RAQM)
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


# ------------------------------------------------------------------------------------------------ CLI


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one-line UserErrors (exit 2 via cli_main) instead of usage dumps."""

    def error(self, message: str):
        raise UserError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m tpu_grapheme.data.synthetic", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output directory (Kaggle layout)")
    p.add_argument("--rows", type=int, required=True, help="train images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--test-rows", type=int, default=DEFAULT_TEST_ROWS, help="test images (3 test.csv rows each)"
    )
    p.add_argument(
        "--parquet-files", type=int, default=DEFAULT_PARQUET_FILES, help="image parquets per split"
    )
    p.add_argument("--distortion", type=float, default=DEFAULT_DISTORTION, help="0 clean, 1 default, 2 hard")
    p.add_argument(
        "--imbalance",
        type=float,
        default=DEFAULT_IMBALANCE,
        help="root prior max/min = 100**x (0 uniform, 1 ~ real data)",
    )
    p.add_argument("--workers", type=int, default=None, help="render processes (default: all cores)")
    p.add_argument("--no-system-fonts", action="store_true", help="use only the bundled Noto Sans Bengali")
    p.add_argument(
        "--preview", default="", help="also write a contact sheet PNG of the first 64 train images"
    )
    p.add_argument("--no-progress", action="store_true")
    return p


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    res = generate(
        args.out,
        rows=args.rows,
        seed=args.seed,
        test_rows=args.test_rows,
        parquet_files=args.parquet_files,
        distortion=args.distortion,
        imbalance=args.imbalance,
        workers=args.workers,
        system_fonts=not args.no_system_fonts,
        progress=not args.no_progress,
    )
    print(
        f"wrote {res.train_rows} train + {res.test_rows} test images to {res.out_dir} in {res.seconds:.1f}s ({res.images_per_sec:.0f} img/s)"
    )
    if args.preview:
        contact_sheet(args.out, args.preview)
        print(f"preview: {args.preview}")


if __name__ == "__main__":
    main()
