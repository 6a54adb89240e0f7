"""Ensemble members: resolve a `--model-paths` entry (a .keras file, a run dir, a checkpoint), load it, check it.

A member predicts exactly as training fed the model: the training pipeline's own resize and
`normalize` run inside one `tf.function` per member.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tpu_grapheme.data.graphemes import mix_heads, seen_ids
from tpu_grapheme.data.schema import BENGALI, HEIGHT, WIDTH, HeadLayout
from tpu_grapheme.errors import UserError
from tpu_grapheme.gfile_io import local_copy
from tpu_grapheme.run_dir import CONFIG, META, RunDir, meta_layout

GRAPHEME = "grapheme"  # the optional whole-grapheme output (`model.GRAPHEME`; no Keras import here)


@dataclasses.dataclass
class Member:
    """One ensemble member: the loaded model, its input size, label heads and (if known) its training
    class counts."""

    spec: str  # what the user passed
    source: str  # the .keras file or checkpoint actually loaded
    model: Any  # keras.Model
    resize: tuple[int, int]
    class_counts: dict[str, list[int]] | None
    head_order: tuple[int, ...]  # model output index for each head of `layout`
    resize_method: str  # the training pipeline's (model_meta.json)
    layout: HeadLayout = BENGALI  # the run's label heads (model_meta.json; Bengali's in older metas)
    grapheme_index: int | None = None  # model output index of a whole-grapheme head, if it has one
    grapheme_classes: tuple[int, ...] = ()  # that head's combination ids (`model.GraphemeHead`)
    seen_graphemes: tuple[int, ...] | None = None  # training combination ids (model_meta.json or head)
    _fn: Callable | None = dataclasses.field(default=None, repr=False)

    def log_probs(self, images: np.ndarray, *, grapheme_mix: float = 0.0) -> list[np.ndarray]:
        """Per-head log-probabilities [n, C] (float32), in layout order, for raw uint8 images [n, 137, 236].

        `grapheme_mix` W > 0 with a grapheme head: each head's probabilities become (1 - W) x its own +
        W x the grapheme head's marginal (`graphemes.mix_heads`); without such a head it changes nothing.
        """
        if self._fn is None:
            order = self.head_order + (() if self.grapheme_index is None else (self.grapheme_index,))
            names = (*self.layout.names, GRAPHEME)[: len(order)]
            self._fn = _predict_fn(self.model, self.resize, order, names, self.resize_method)
        out = [t.numpy() for t in self._fn(images)]
        n = len(self.layout)
        if self.grapheme_index is None or grapheme_mix <= 0:
            return out[:n]
        probs = [np.exp(lp) for lp in out[:n]]
        mixed = mix_heads(probs, np.exp(out[n]), self.grapheme_classes, grapheme_mix, self.layout)
        return [np.log(np.maximum(p, 1e-30)).astype(np.float32) for p in mixed]


def preprocess(images, resize: tuple[int, int], method: str = "auto"):
    """uint8 [n, 137, 236] Kaggle images (dark ink) -> model input float32 [n, H, W, 1], as in training.

    Uses the training pipeline's own resize and `normalize` (inverts to ink-bright, standardises), so
    inference cannot drift from what `pipeline.build_dataset` feeds the model.
    """
    import tensorflow as tf

    from tpu_grapheme.data import pipeline

    resize_fn = pipeline.resize_images  # one source of truth with training
    x = tf.cast(tf.convert_to_tensor(images)[..., None], tf.float32)
    return tf.cast(pipeline.normalize(resize_fn(x, tuple(resize), method)), tf.float32)


def _predict_fn(
    model, resize: tuple[int, int], head_order: Sequence[int], names: Sequence[str], method: str
) -> Callable:
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, HEIGHT, WIDTH], tf.uint8)], reduce_retracing=True)
    def fn(images):
        outputs = model(preprocess(images, resize, method), training=False)
        if isinstance(outputs, dict):
            outputs = [outputs[name] for name in names]
        else:
            outputs = [outputs[i] for i in head_order]
        return [tf.nn.log_softmax(tf.cast(o, tf.float32), axis=-1) for o in outputs]

    return fn


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]


def read_meta(run_dir: str) -> dict | None:
    """`model_meta.json` of a run dir (None when absent); a broken file is a UserError."""
    return RunDir(run_dir).read_meta()


def _load_keras(path: str):
    import keras

    import tpu_grapheme.model  # noqa: F401  (registers any custom objects before deserialising)

    try:
        with local_copy(path) as local:  # a .keras file on a URI (gs://) is read from a local copy
            return keras.models.load_model(local, safe_mode=True, compile=False)
    except Exception as e:  # corrupt zip, unsafe lambda, unknown layer, ...: all bad user input here
        raise UserError(f"cannot load model {path}: {_first_line(e)}") from None


def _restore_checkpoint(prefix: str, run: RunDir, meta: dict):
    import tensorflow as tf

    from tpu_grapheme.ema import WeightEMA
    from tpu_grapheme.model import grapheme_classes
    from tpu_grapheme.task import model_from_config

    cfg = run.read_config()
    if cfg is None:
        raise UserError(f"checkpoint {prefix}: no {CONFIG} in {run.path} to rebuild the model from")
    layout = meta_layout(meta)
    classes = ()
    if getattr(cfg, "grapheme_head", False):  # its classes: the training combinations the meta records
        if not meta.get("combination_counts"):
            raise UserError(f"checkpoint {prefix}: a grapheme head needs combination_counts in {META}")
        classes = grapheme_classes(meta["combination_counts"], layout)
    model = model_from_config(cfg, grapheme_classes=classes, layout=layout)  # as the run built it
    # A run with a weight EMA predicts with the averages, as its exported models do.
    ema = (
        WeightEMA(model, cfg.ema_decay, dynamic=cfg.ema_dynamic_decay, strategy=tf.distribute.get_strategy())
        if cfg.ema_decay > 0
        else None
    )
    try:
        items = ema.checkpoint_items() if ema is not None else {}
        status = tf.train.Checkpoint(model=model, **items).restore(prefix).expect_partial()
        status.assert_existing_objects_matched()
    except (tf.errors.OpError, AssertionError, ValueError) as e:
        raise UserError(f"checkpoint {prefix} does not match a {cfg.arch} model: {_first_line(e)}") from None
    if ema is not None:
        ema.copy_to_model()
    return model, tuple(cfg.resize), cfg.resize_method


def check_model(
    model, where: str, resize: tuple[int, int] | None, layout: HeadLayout = BENGALI
) -> tuple[tuple[int, int], tuple[int, ...]]:
    """Check one image input (H, W, 1) and a logit head named by each `layout` head (and an optional
    `grapheme` head); return (resize, head order)."""
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
    extra = 1 if GRAPHEME in names else 0  # a whole-grapheme head, checked in `_grapheme_head`
    heads = [n for n in names if n != GRAPHEME]
    if sorted(heads) != sorted(layout.names) or len(outputs) != len(layout) + extra:
        raise UserError(
            f"model {where}: outputs {names or len(outputs)} are not the heads {', '.join(layout.names)}"
        )
    order = tuple(names.index(n) for n in layout.names)
    for name, k, i in zip(layout.names, layout.num_classes, order, strict=True):
        got = tuple(outputs[i].shape)
        if len(got) != 2 or got[-1] != k:
            raise UserError(f"model {where}: head {name} has shape {got[1:]}, expected ({k},)")
    return resize, order


def load_member(spec: str, *, resize: tuple[int, int] | None = None) -> Member:
    """Load and check one `--model-paths` entry; `resize` overrides the run's own input size."""
    source = RunDir.resolve_model(spec)
    path, meta = source.path, source.run.read_meta()
    if source.kind == "keras":
        model, own_resize, method = _load_keras(path), None, "auto"
    else:
        model, own_resize, method = _restore_checkpoint(path, source.run, meta or {})
    meta = meta or {}
    layout = meta_layout(meta)
    chosen = resize or meta.get("resize") or own_resize
    chosen, order = check_model(model, spec, tuple(chosen) if chosen else None, layout)
    index, classes = _grapheme_head(model, spec)
    rows = meta.get("combination_counts")
    seen = tuple(int(i) for i in seen_ids(rows, layout)) if rows else (classes or None)
    return Member(
        grapheme_index=index,
        grapheme_classes=classes,
        seen_graphemes=seen,
        spec=spec,
        source=path,
        model=model,
        resize=chosen,
        class_counts=meta.get("class_counts"),
        head_order=order,
        resize_method=meta.get("resize_method", method),  # as the model was trained
        layout=layout,
    )


def _grapheme_head(model, where: str) -> tuple[int | None, tuple[int, ...]]:
    """(output index, combination ids) of the model's whole-grapheme head, or (None, ()) without one."""
    names = list(getattr(model, "output_names", None) or [])
    if GRAPHEME not in names:
        return None, ()
    index = names.index(GRAPHEME)
    classes = tuple(int(c) for c in getattr(model.get_layer(GRAPHEME), "combinations", ()))
    got = tuple(model.outputs[index].shape)
    if not classes or got[1:] != (len(classes),):
        raise UserError(f"model {where}: grapheme head has shape {got[1:]} for {len(classes)} graphemes")
    return index, classes


def load_members(specs: Sequence[str], *, resize: tuple[int, int] | None = None) -> list[Member]:
    """Load every member; an ensemble's members must share their label heads."""
    if not specs:
        raise UserError("no model paths given")
    members = [load_member(s, resize=resize) for s in specs]
    for m in members[1:]:
        if m.layout != members[0].layout:
            raise UserError(
                f"models {members[0].spec} and {m.spec} have different heads: "
                f"{members[0].layout.names} and {m.layout.names}"
            )
    return members
