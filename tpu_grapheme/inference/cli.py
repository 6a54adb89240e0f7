"""Ensemble inference on Kaggle image parquets: a submission CSV, or a score table on a labelled split.

    python -m tpu_grapheme.inference --model-paths a.keras,runs/b4_192x330 \\
        --parquet-pattern "data/test_image_data_*.parquet" --method arithmetic --reweight

Parquets are streamed in row batches; per image only the ensemble's class probabilities (168 + 11 + 7
floats) are kept, for the optional reweighting pass (`tpu_grapheme.reweight`) that needs the whole
test set's predicted class counts. With `--valid-csv` (a train.csv-style split, with the train
parquets as `--parquet-pattern`) it scores every combining method with reweighting off and on instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from tpu_grapheme import ensemble, reweight
from tpu_grapheme.data.schema import HEAD_NAMES, HEIGHT, NUM_CLASSES, WIDTH
from tpu_grapheme.errors import UserError, cli_main

META_FILE = "model_meta.json"
BEST_MODEL = "model_best.keras"
CONFIG_FILE = "config.yaml"
CHECKPOINT_DIR = "checkpoints"
# The competition's sample_submission order: per image, these three rows in this order.
SUBMISSION_HEADS = ("consonant_diacritic", "grapheme_root", "vowel_diacritic")
PRIORS = ("off", "test", "train")


@dataclasses.dataclass
class Member:
    """One ensemble member: the loaded model, its input size and (if known) its training class counts."""

    spec: str  # what the user passed
    source: str  # the .keras file or checkpoint actually loaded
    model: Any  # keras.Model
    resize: tuple[int, int]
    class_counts: dict[str, list[int]] | None
    head_order: tuple[int, ...]  # model output index for each of HEAD_NAMES
    _fn: Callable | None = dataclasses.field(default=None, repr=False)

    def log_probs(self, images: np.ndarray) -> list[np.ndarray]:
        """Per-head log-probabilities [n, C] (float32) for raw uint8 images [n, 137, 236]."""
        if self._fn is None:
            self._fn = _predict_fn(self.model, self.resize, self.head_order)
        return [t.numpy() for t in self._fn(images)]


# --- preprocessing and prediction ---------------------------------------------------------------
def preprocess(images, resize: tuple[int, int]):
    """uint8 [n, 137, 236] Kaggle images (dark ink) -> model input float32 [n, H, W, 1], as in training.

    Uses the training pipeline's own resize and `normalize` (inverts to ink-bright, standardises), so
    inference cannot drift from what `pipeline.build_dataset` feeds the model.
    """
    import tensorflow as tf

    from tpu_grapheme.data import pipeline

    resize_fn = pipeline.resize_images  # one source of truth with training
    x = tf.cast(tf.convert_to_tensor(images)[..., None], tf.float32)
    return tf.cast(pipeline.normalize(resize_fn(x, tuple(resize))), tf.float32)


def _predict_fn(model, resize: tuple[int, int], head_order: Sequence[int]) -> Callable:
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, HEIGHT, WIDTH], tf.uint8)], reduce_retracing=True)
    def fn(images):
        outputs = model(preprocess(images, resize), training=False)
        if isinstance(outputs, dict):
            outputs = [outputs[name] for name in HEAD_NAMES]
        else:
            outputs = [outputs[i] for i in head_order]
        return [tf.nn.log_softmax(tf.cast(o, tf.float32), axis=-1) for o in outputs]

    return fn


# --- loading ------------------------------------------------------------------------------------
def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]


def read_meta(run_dir: str) -> dict | None:
    """`model_meta.json` of a run dir (None when absent); a broken file is a UserError."""
    path = os.path.join(run_dir, META_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
        if "resize" in meta:
            h, w = (int(v) for v in meta["resize"])
            meta["resize"] = (h, w)
        counts = meta.get("class_counts")
        if counts is not None:
            for name, k in zip(HEAD_NAMES, NUM_CLASSES, strict=True):
                if len(counts[name]) != k:
                    raise ValueError(f"class_counts[{name!r}] needs {k} counts")
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise UserError(f"{path}: unreadable model meta ({_first_line(e)})") from None
    return meta


def resolve_model_path(spec: str) -> tuple[str, str, str]:
    """(kind, path, run_dir): kind "keras" (a .keras file) or "checkpoint" (a checkpoint prefix).

    A run dir gives its model_best.keras, else its latest checkpoint; a checkpoints dir (or one
    checkpoint prefix such as `run/checkpoints/ckpt-5`) gives that checkpoint, rebuilt from the run's
    config.yaml.
    """
    import tensorflow as tf

    path = spec.rstrip("/") or spec
    if os.path.isfile(path):
        if not path.endswith(".keras"):
            raise UserError(
                f"model {spec}: not a .keras file (give a .keras file, a run dir or a checkpoints dir)"
            )
        return "keras", path, os.path.dirname(os.path.abspath(path))
    if os.path.isfile(path + ".index"):
        return "checkpoint", path, os.path.dirname(os.path.dirname(os.path.abspath(path)))
    if not os.path.isdir(path):
        raise UserError(f"model {spec}: no such file or directory")
    if os.path.isfile(os.path.join(path, BEST_MODEL)):
        return "keras", os.path.join(path, BEST_MODEL), os.path.abspath(path)
    for ckpt_dir, run_dir in (
        (os.path.join(path, CHECKPOINT_DIR), path),
        (path, os.path.dirname(os.path.abspath(path))),
    ):
        latest = tf.train.latest_checkpoint(ckpt_dir) if os.path.isdir(ckpt_dir) else None
        if latest:
            return "checkpoint", latest, os.path.abspath(run_dir)
    raise UserError(f"model {spec}: directory has neither {BEST_MODEL} nor a checkpoint")


def _load_keras(path: str):
    import keras

    import tpu_grapheme.model  # noqa: F401  (registers any custom objects before deserialising)

    try:
        return keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as e:  # corrupt zip, unsafe lambda, unknown layer, ...: all bad user input here
        raise UserError(f"cannot load model {path}: {_first_line(e)}") from None


def _restore_checkpoint(prefix: str, run_dir: str):
    import tensorflow as tf

    from tpu_grapheme.config import from_dict, load_yaml
    from tpu_grapheme.model import build_model

    cfg_path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.isfile(cfg_path):
        raise UserError(f"checkpoint {prefix}: no {CONFIG_FILE} in {run_dir} to rebuild the model from")
    cfg = from_dict(load_yaml(cfg_path))
    model = build_model(arch=cfg.arch, input_shape=(*cfg.resize, 1), dropout=cfg.dropout, seed=cfg.seed)
    try:
        status = tf.train.Checkpoint(model=model).restore(prefix).expect_partial()
        status.assert_existing_objects_matched()
    except (tf.errors.OpError, AssertionError, ValueError) as e:
        raise UserError(f"checkpoint {prefix} does not match a {cfg.arch} model: {_first_line(e)}") from None
    return model, tuple(cfg.resize)


def check_model(model, where: str, resize: tuple[int, int] | None) -> tuple[tuple[int, int], tuple[int, ...]]:
    """Check one image input (H, W, 1) and the three named logit heads; return (resize, head order)."""
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) != 1:
        raise UserError(f"model {where}: needs exactly one image input, has {len(inputs)}")
    shape = tuple(inputs[0].shape)
    if len(shape) != 4 or shape[-1] != 1:
        raise UserError(f"model {where}: input shape {shape[1:]} is not (H, W, 1)")
    h, w = shape[1], shape[2]
    if resize is None:
        if h is None or w is None:
            raise UserError(f"model {where}: input size is not fixed; give --resize H,W")
        resize = (int(h), int(w))
    if (h is not None and h != resize[0]) or (w is not None and w != resize[1]):
        raise UserError(f"model {where}: input is {h}x{w} but resize is {resize[0]}x{resize[1]}")
    names = list(getattr(model, "output_names", None) or [])
    outputs = list(getattr(model, "outputs", None) or [])
    if sorted(names) != sorted(HEAD_NAMES) or len(outputs) != len(HEAD_NAMES):
        raise UserError(
            f"model {where}: outputs {names or len(outputs)} are not the heads {', '.join(HEAD_NAMES)}"
        )
    order = tuple(names.index(n) for n in HEAD_NAMES)
    for name, k, i in zip(HEAD_NAMES, NUM_CLASSES, order, strict=True):
        got = tuple(outputs[i].shape)
        if len(got) != 2 or got[-1] != k:
            raise UserError(f"model {where}: head {name} has shape {got[1:]}, expected ({k},)")
    return resize, order


def load_member(spec: str, *, resize: tuple[int, int] | None = None) -> Member:
    """Load and check one `--model-paths` entry; `resize` overrides the run's own input size."""
    kind, path, run_dir = resolve_model_path(spec)
    meta = read_meta(run_dir)
    if kind == "keras":
        model, own_resize = _load_keras(path), None
    else:
        model, own_resize = _restore_checkpoint(path, run_dir)
    chosen = resize or (meta or {}).get("resize") or own_resize
    chosen, order = check_model(model, spec, tuple(chosen) if chosen else None)
    counts = (meta or {}).get("class_counts")
    return Member(spec=spec, source=path, model=model, resize=chosen, class_counts=counts, head_order=order)


def load_members(specs: Sequence[str], *, resize: tuple[int, int] | None = None) -> list[Member]:
    if not specs:
        raise UserError("no model paths given")
    return [load_member(s, resize=resize) for s in specs]


# --- streaming prediction -----------------------------------------------------------------------
@dataclasses.dataclass
class Predictions:
    """Image ids in parquet order and, per combining method, probabilities float32 [n, 186]."""

    ids: np.ndarray
    probs: dict[str, np.ndarray]


def _parquets(pattern: str) -> list[str]:
    from tpu_grapheme.data.kaggle import parquet_files

    return parquet_files(pattern)


def _total_rows(files: Sequence[str]) -> int | None:
    try:
        from tpu_grapheme.data.kaggle import parquet_num_rows
    except ImportError:
        return None
    try:
        return sum(parquet_num_rows(f) for f in files)
    except UserError:
        return None  # the streaming pass reports the bad file with its own message


def iter_batches(
    files: Sequence[str], *, batch_size: int, keep: set[str] | None = None, progress: bool = True
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, uint8 images) batches of at most `batch_size` from the parquets, optionally only `keep` ids."""
    from tqdm import tqdm

    from tpu_grapheme.data.kaggle import iter_parquet_images

    read_rows = max(batch_size, 1024 // batch_size * batch_size)
    with tqdm(
        total=_total_rows(files), unit="img", desc="predict", disable=not progress, file=sys.stderr
    ) as bar:
        for path in files:
            for ids, images in iter_parquet_images(path, batch_rows=read_rows):
                if keep is not None:
                    mask = np.fromiter((i in keep for i in ids), dtype=bool, count=len(ids))
                    ids, images = ids[mask], images[mask]
                for start in range(0, len(ids), batch_size):
                    yield ids[start : start + batch_size], images[start : start + batch_size]
                bar.update(int(mask.size) if keep is not None else len(ids))


def predict(
    members: Sequence[Member],
    pattern: str,
    *,
    batch_size: int = 64,
    methods: Sequence[str] = ("arithmetic",),
    keep: set[str] | None = None,
    progress: bool = True,
) -> Predictions:
    """Stream the parquets matching `pattern` through every member; combine with each of `methods`."""
    for m in methods:
        if m not in ensemble.METHODS:
            raise UserError(f"method {m!r} is not one of {', '.join(ensemble.METHODS)}")
    if batch_size < 1:
        raise UserError(f"batch size must be >= 1, got {batch_size}")
    files = _parquets(pattern)
    ids: list[np.ndarray] = []
    probs: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    for batch_ids, images in iter_batches(files, batch_size=batch_size, keep=keep, progress=progress):
        member_lp = [member.log_probs(images) for member in members]
        ids.append(batch_ids)
        for m in methods:
            probs[m].append(ensemble.combine_heads(member_lp, method=m).astype(np.float32))
    width = sum(NUM_CLASSES)
    return Predictions(
        ids=np.concatenate(ids) if ids else np.zeros(0, dtype=str),
        probs={m: np.concatenate(p) if p else np.zeros((0, width), np.float32) for m, p in probs.items()},
    )


# --- post-processing, submission, scoring -------------------------------------------------------
def prior_for(kind: str, probs: np.ndarray, members: Sequence[Member]) -> list[np.ndarray] | None:
    """Per-head class counts for reweighting: None (off), test-set argmax counts, or training counts."""
    if kind == "off":
        return None
    if kind == "test":
        return reweight.test_prior(probs)
    if kind == "train":
        counts = [m.class_counts for m in members if m.class_counts]
        if not counts:
            raise UserError(f"--reweight-prior train needs class_counts in a {META_FILE} next to the models")
        return reweight.train_prior(counts)
    raise UserError(f"reweight prior {kind!r} is not one of test, train")


def submission_frame(ids: Sequence[str], labels: np.ndarray) -> pd.DataFrame:
    """Kaggle submission rows `row_id,target`: per image `<id>_consonant_diacritic`, `_grapheme_root`, `_vowel_diacritic`."""
    ids = np.asarray(ids, dtype=str)
    labels = np.asarray(labels, dtype=np.int64).reshape(len(ids), len(HEAD_NAMES))
    cols = [HEAD_NAMES.index(h) for h in SUBMISSION_HEADS]
    row_id = np.char.add(np.repeat(ids, len(cols)), np.tile([f"_{h}" for h in SUBMISSION_HEADS], len(ids)))
    return pd.DataFrame({"row_id": row_id, "target": labels[:, cols].reshape(-1)})


def confusion_matrices(labels: np.ndarray, preds: np.ndarray) -> list[np.ndarray]:
    """One [C, C] count matrix per head (rows: true class, columns: predicted class)."""
    cms = []
    for h, k in enumerate(NUM_CLASSES):
        cm = np.zeros((k, k), np.int64)
        np.add.at(cm, (labels[:, h], preds[:, h]), 1)
        cms.append(cm)
    return cms


def score(labels: np.ndarray, preds: np.ndarray) -> dict[str, float]:
    """Per-head macro recall and the 2:1:1 hierarchical recall, as the training loop reports them.

    `tpu_grapheme.metrics` follows sklearn's `recall_score(average="macro")` (the competition metric):
    a class predicted but absent from the labels counts as recall 0.
    """
    from tpu_grapheme.metrics import hierarchical_recall

    return hierarchical_recall(confusion_matrices(np.asarray(labels), np.asarray(preds)))


def labelled_predictions(
    members: Sequence[Member],
    pattern: str,
    valid_csv: str,
    *,
    batch_size: int = 64,
    methods: Sequence[str] = ensemble.METHODS,
    progress: bool = True,
) -> tuple[Predictions, np.ndarray]:
    """Predictions for the ids of a labelled split (train.csv columns) and their labels [n, 3]."""
    from tpu_grapheme.data.kaggle import read_train_csv

    df = read_train_csv(valid_csv)
    if len(df) == 0:
        raise UserError(f"{valid_csv}: no rows")
    preds = predict(
        members, pattern, batch_size=batch_size, methods=methods, keep=set(df["image_id"]), progress=progress
    )
    if len(preds.ids) == 0:
        raise UserError(f"none of the {len(df)} image ids of {valid_csv} are in {pattern}")
    if len(preds.ids) < len(df):
        missing = len(df) - len(preds.ids)
        print(f"warning: {missing} of {len(df)} ids of {valid_csv} are not in {pattern}", file=sys.stderr)
    return preds, df.set_index("image_id").loc[preds.ids, list(HEAD_NAMES)].to_numpy()


def score_table(
    preds: Predictions,
    labels: np.ndarray,
    members: Sequence[Member],
    *,
    priors: Sequence[str] = PRIORS,
    power: float = reweight.DEFAULT_POWER,
) -> list[dict[str, Any]]:
    """One row (method, prior, n, metrics) per method in `preds` x prior; `train` only with class counts."""
    has_counts = any(m.class_counts for m in members)
    rows = []
    for method, probs in preds.probs.items():
        for prior in priors:
            if prior == "train" and not has_counts:
                continue
            pred = reweight.predict(probs, prior_for(prior, probs, members), power=power)
            rows.append({"method": method, "prior": prior, "n": len(labels), **score(labels, pred)})
    return rows


def evaluate(
    members: Sequence[Member],
    pattern: str,
    valid_csv: str,
    *,
    batch_size: int = 64,
    methods: Sequence[str] = ensemble.METHODS,
    priors: Sequence[str] = PRIORS,
    power: float = reweight.DEFAULT_POWER,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Score each method x prior on the labelled split (what `--valid-csv` prints)."""
    preds, labels = labelled_predictions(
        members, pattern, valid_csv, batch_size=batch_size, methods=methods, progress=progress
    )
    return score_table(preds, labels, members, priors=priors, power=power)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A fixed-width table of `evaluate` rows."""
    head = f"{'method':<11} {'reweight':<8} {'hier':>7} {'root':>7} {'vowel':>7} {'conso':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['method']:<11} {r['prior']:<8} {r['hierarchical_recall']:7.4f} {r['recall_grapheme_root']:7.4f}"
            f" {r['recall_vowel_diacritic']:7.4f} {r['recall_consonant_diacritic']:7.4f}"
        )
    return "\n".join(lines)


# --- CLI ----------------------------------------------------------------------------------------
def _resize_arg(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected H,W, got {text!r}") from None
    if not (16 <= h <= 1024 and 16 <= w <= 1024):
        raise argparse.ArgumentTypeError(f"resize {h},{w} out of range: each side 16..1024")
    return h, w


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tpu_grapheme.inference", description=__doc__.splitlines()[0])
    p.add_argument(
        "--model-paths", required=True, help="comma-separated .keras files, run dirs or checkpoints dirs"
    )
    p.add_argument(
        "--parquet-pattern", default="data/test_image_data_*.parquet", help="image parquets (glob)"
    )
    p.add_argument("--batch-size", type=int, default=64, help="images per model call")
    p.add_argument(
        "--resize", type=_resize_arg, default=None, help="H,W for every model (default: each run's own)"
    )
    p.add_argument(
        "--method", choices=ensemble.METHODS, default="arithmetic", help="how to combine the models"
    )
    p.add_argument(
        "--reweight", action="store_true", help="post-process for macro recall (predict argmax p/n^power)"
    )
    p.add_argument(
        "--reweight-power", type=float, default=reweight.DEFAULT_POWER, help="power on the class counts"
    )
    p.add_argument(
        "--reweight-prior",
        choices=("test", "train"),
        default="test",
        help="class counts: argmax counts over the test set, or training counts from model_meta.json",
    )
    p.add_argument("--output", default="submission.csv", help="submission CSV to write")
    p.add_argument("--valid-csv", default="", help="score on this labelled split instead (train.csv columns)")
    p.add_argument("--report-json", default="", help="with --valid-csv: also write the score table as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    specs = [s.strip() for s in args.model_paths.split(",") if s.strip()]
    if not specs:
        raise UserError("--model-paths is empty")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not (0 <= args.reweight_power <= 10):
        raise UserError(f"--reweight-power must be in [0, 10], got {args.reweight_power}")
    _parquets(args.parquet_pattern)  # fail on an empty pattern before loading any model
    out_dir = os.path.dirname(os.path.abspath(args.output))
    if not args.valid_csv and not os.path.isdir(out_dir):
        raise UserError(f"--output directory does not exist: {out_dir}")
    members = load_members(specs, resize=args.resize)
    for m in members:
        print(f"model {m.spec}: {m.source} at {m.resize[0]}x{m.resize[1]}", file=sys.stderr)
    progress = not args.no_progress
    if args.valid_csv:
        rows = evaluate(
            members,
            args.parquet_pattern,
            args.valid_csv,
            batch_size=args.batch_size,
            power=args.reweight_power,
            progress=progress,
        )
        print(f"{rows[0]['n']} images, {len(members)} model(s), reweight power {args.reweight_power}")
        if not any(m.class_counts for m in members):
            print(f"(no train-prior rows: no class_counts in a {META_FILE} next to the models)")
        print(format_table(rows))
        if args.report_json:
            with open(args.report_json, "w", encoding="utf-8") as f:
                json.dump({"power": args.reweight_power, "models": specs, "rows": rows}, f, indent=2)
        return 0
    preds = predict(
        members, args.parquet_pattern, batch_size=args.batch_size, methods=(args.method,), progress=progress
    )
    probs = preds.probs[args.method]
    prior = prior_for(args.reweight_prior if args.reweight else "off", probs, members)
    labels = reweight.predict(probs, prior, power=args.reweight_power)
    submission_frame(preds.ids, labels).to_csv(args.output, index=False)
    print(f"wrote {args.output}: {len(preds.ids)} images, {3 * len(preds.ids)} rows", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
