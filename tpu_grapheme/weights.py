"""Backbone weights from a file (`--weights`): read, verify against our model variable by variable, assign.

Three kinds, detected from the file's bytes and HDF5 attributes, never from its name:
- a Keras-applications EfficientNet weights file: the release files (`efficientnetb4_notop.h5`) are
  Keras 2 HDF5 (top-level `layer_names`, one group per layer with `weight_names`); a file written by
  Keras 3's `save_weights` (`.weights.h5`) has `layers/<key>/vars/<i>` groups named by a `name` attribute;
- a weights file of the `efficientnet` package (qubvel's, `efficientnet-b4_noisy-student_notop.h5`):
  Keras 2 HDF5 as above. Its layer names are Keras-applications' own (`stem_conv`, `block1a_dwconv`,
  ... `top_bn`; checked for B0..B7: same weighted layers, shapes and order), its variable names are
  Keras 2's (`block1a_dwconv/depthwise_kernel:0`), and it has no in-graph `normalization` layer;
- a `.keras` model of ours (a zip whose `model.weights.h5` is Keras 3 HDF5): backbone and heads.

Every backbone variable of our model must be in the file with the same name and shape (the stem kernel
may have 3 input channels: it is folded to one by summing over them, exact for an input tiled to three
channels); the first mismatch is a one-line `UserError`. Heads load when their names and shapes match
and are skipped otherwise; the ImageNet classifier (`predictions`, `probs`) and Keras-applications'
input `normalization` statistics are skipped. Nothing is downloaded: a `gs://` file is copied to a
local temporary file first.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import h5py
import keras
import numpy as np

from tpu_grapheme.data.schema import HEAD_NAMES
from tpu_grapheme.errors import UserError

# {layer name: [(variable name or None when the file has none, value)]}, in the file's layer order.
Tensors = dict[str, list[tuple[str | None, np.ndarray]]]

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"
_STEM = "stem_conv"
# Source layers that never map onto ours: ImageNet classifiers and Keras-applications' input statistics.
_SKIPPED_LAYER = re.compile(r"^(predictions|probs|normalization(_\d+)?)$")
# Keras 2 variable names that Keras 3 spells differently.
_VAR_RENAMES = {"depthwise_kernel": "kernel"}


@dataclass
class LoadReport:
    """What a load did: the file kind, tensors assigned and skipped (with the layers skipped)."""

    kind: str
    loaded: int = 0
    skipped: int = 0
    skipped_layers: list[str] = field(default_factory=list)
    folded_stem: bool = False

    def line(self, path: str) -> str:
        skipped = f" ({', '.join(self.skipped_layers)})" if self.skipped_layers else ""
        fold = "; stem kernel folded to 1 input channel" if self.folded_stem else ""
        return f"weights: {self.kind} {path}: {self.loaded} tensors loaded, {self.skipped} skipped{skipped}{fold}"


def load_weights(model: keras.Model, path: str, *, log: Callable[[str], None] = print) -> LoadReport:
    """Load `path` (local or gs://) into `model` (built by `build_model`), verified; log one line."""
    with local_copy(path) as local:
        tensors = read_tensors(local, path)
    report = LoadReport(kind=describe_kind(tensors))
    assignments = plan_assignments(model, tensors, path, report)
    for variable, value in assignments:
        variable.assign(value.astype(variable.dtype))
    report.loaded = len(assignments)
    log(report.line(path))
    return report


def _remote(path: str) -> bool:
    """gs:// (or any tf.io.gfile scheme, e.g. ram:// in tests): read through tf.io.gfile."""
    return "://" in path


def require_file(path: str) -> None:
    """Fail early, in one line, when the weights file does not exist (local or gs://)."""
    if _remote(path):
        import tensorflow as tf

        try:
            exists = tf.io.gfile.exists(path)
        except tf.errors.OpError as e:
            raise UserError(f"cannot reach weights file {path}: {e.message.splitlines()[0]}") from None
    else:
        exists = os.path.isfile(path)
    if not exists:
        raise UserError(f"weights file not found: {path} (a local or gs:// file; nothing is downloaded)")


@contextlib.contextmanager
def local_copy(path: str) -> Iterator[str]:
    """Yield a local path for `path`: itself, or for gs:// a temporary copy made through tf.io.gfile."""
    require_file(path)
    if not _remote(path):
        yield path
        return
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="tpu_grapheme_weights_") as tmp:
        local = os.path.join(tmp, os.path.basename(path) or "weights")
        try:
            tf.io.gfile.copy(path, local, overwrite=True)
        except tf.errors.OpError as e:
            raise UserError(f"cannot copy weights file {path}: {e.message.splitlines()[0]}") from None
        yield local


def read_tensors(local: str, shown: str) -> Tensors:
    """Read a `.keras` archive or an HDF5 weights file (kind from its first bytes) into `Tensors`."""
    with open(local, "rb") as f:
        head = f.read(8)
    try:
        if head.startswith(_ZIP_MAGIC):
            return _read_keras_archive(local, shown)
        if head == _HDF5_MAGIC:
            with h5py.File(local, "r") as f:
                return _read_h5(f, shown)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"cannot read weights file {shown} (truncated or corrupt?): {first}") from None
    raise UserError(f"not a weights file: {shown} (expected a .keras model or an HDF5 weights file)")


def _read_keras_archive(local: str, shown: str) -> Tensors:
    """The weights of a `.keras` zip: its `model.weights.h5` member, read in memory."""
    with zipfile.ZipFile(local) as z:
        if "model.weights.h5" not in z.namelist():
            raise UserError(f"not a Keras model archive: {shown} (no model.weights.h5 inside)")
        data = z.read("model.weights.h5")
    with h5py.File(io.BytesIO(data), "r") as f:
        return _read_h5(f, shown)


def _read_h5(f: h5py.File, shown: str) -> Tensors:
    """Dispatch on the layout: Keras 2 (`layer_names` attribute, also under `model_weights`) or Keras 3."""
    group = f.get("model_weights", f)
    if _attr_strings(group, "layer_names"):
        return read_keras2_h5(group)
    if "layers" in f:
        tensors: Tensors = {}
        _read_keras3_group(f, tensors)
        return tensors
    raise UserError(f"not a Keras weights file: {shown} (HDF5 without layer_names or layers)")


def read_keras2_h5(group: h5py.Group) -> Tensors:
    """Keras 2 HDF5 weights: `layer_names` in order, each layer's `weight_names` in the legacy order."""
    tensors: Tensors = {}
    for name in _attr_strings(group, "layer_names"):
        layer = group[name]
        values = [(w, np.asarray(layer[w])) for w in _attr_strings(layer, "weight_names")]
        if values:
            tensors[name] = values
    return tensors


def _read_keras3_group(group: h5py.Group, tensors: Tensors) -> None:
    """Keras 3 weights: `layers/<key>/vars/<i>`, named by the `vars` group's `name` attribute; recursive."""
    children = group.get("layers")
    if children is None:
        return
    for key in sorted(children, key=_natural_key):
        child = children[key]
        variables = child.get("vars")
        if variables is not None and len(variables):
            name = variables.attrs.get("name", key)
            name = name.decode() if isinstance(name, bytes) else str(name)
            tensors[name] = [(None, np.asarray(variables[str(i)])) for i in range(len(variables))]
        _read_keras3_group(child, tensors)


def _attr_strings(group: h5py.Group, name: str) -> list[str]:
    """A string-list attribute, also when Keras split it into `name0`, `name1`, ... (64 KB header limit)."""
    if name in group.attrs:
        values = list(group.attrs[name])
    else:
        values, i = [], 0
        while f"{name}{i}" in group.attrs:
            values.extend(group.attrs[f"{name}{i}"])
            i += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _natural_key(key: str) -> tuple:
    """`dense_10` after `dense_2`: Keras 3 keys carry per-class creation counters."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", key))


def describe_kind(tensors: Tensors) -> str:
    """The file kind for the log line, from its layer names."""
    names = list(tensors)
    if any(n.startswith(HEAD_NAMES) for n in names):
        return "tpu_grapheme model"
    if any(re.match(r"^normalization(_\d+)?$", n) for n in names):
        return "Keras-applications EfficientNet weights"
    if _STEM in names:
        return "efficientnet-package EfficientNet weights"
    return "weights file"


def canonical_var(name: str | None) -> str | None:
    """`block1a_dwconv/depthwise_kernel:0` (Keras 2) -> `kernel` (Keras 3's variable name)."""
    if name is None:
        return None
    short = name.rsplit("/", 1)[-1].split(":", 1)[0]
    return _VAR_RENAMES.get(short, short)


def fold_stem(value: np.ndarray, target_shape: tuple[int, ...]) -> np.ndarray | None:
    """A 3-input-channel stem kernel summed to 1 channel (exact for a tiled input); None if it does not fit."""
    if (
        value.ndim == 4
        and value.shape[2] == 3
        and tuple(target_shape) == (*value.shape[:2], 1, value.shape[3])
    ):
        return value.sum(axis=2, keepdims=True)
    return None


def split_layers(model: keras.Model) -> tuple[list[keras.layers.Layer], list[keras.layers.Layer]]:
    """Our weighted layers in order: (backbone = inside nested models, heads = directly in `model`)."""
    backbone, heads = [], []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            inner, top = split_layers(layer)
            backbone.extend(inner + top)
        elif layer.weights:
            heads.append(layer)
    return backbone, heads


def _layer_pairs(layer, source, report: LoadReport) -> tuple[list, str | None]:
    """(variable, value) pairs for one layer, or the first mismatch as `layer/var: file ... vs model ...`."""
    ours = layer.weights
    if source is None:
        return [], f"{layer.name}/{ours[0].name}: not in the file"
    if len(source) != len(ours):
        return [], f"{layer.name}: file has {len(source)} variables, model {len(ours)}"
    pairs = []
    for variable, (name, value) in zip(ours, source, strict=True):
        where = f"{layer.name}/{variable.name}"
        if name is not None and canonical_var(name) != variable.name:
            return [], f"{where}: file has {name} in its place"
        if tuple(value.shape) != tuple(variable.shape) and layer.name == _STEM:
            folded = fold_stem(value, tuple(variable.shape))
            report.folded_stem = report.folded_stem or folded is not None
            value = value if folded is None else folded
        if tuple(value.shape) != tuple(variable.shape):
            return [], f"{where}: file {tuple(value.shape)} vs model {tuple(variable.shape)}"
        pairs.append((variable, value))
    return pairs, None


def plan_assignments(model: keras.Model, tensors: Tensors, path: str, report: LoadReport) -> list:
    """Match every backbone variable (all required), then the heads (optional); count what is skipped."""
    backbone, heads = split_layers(model)
    if not backbone:
        raise UserError(f"weights {path}: model {model.name} has no pretrained backbone to load into")
    remaining = dict(tensors)
    assignments = []
    for layer in backbone:
        pairs, mismatch = _layer_pairs(layer, remaining.pop(layer.name, None), report)
        if mismatch:
            raise UserError(f"weights {path} do not fit {model.name}: first mismatch at {mismatch}")
        assignments += pairs
    for layer in heads:
        source = remaining.pop(layer.name, None)
        pairs, mismatch = _layer_pairs(layer, source, report) if source is not None else ([], None)
        assignments += pairs
        if mismatch:
            _skip(report, layer.name, source)
    for name, source in remaining.items():
        if not (_SKIPPED_LAYER.match(name) or name.startswith(HEAD_NAMES)):
            raise UserError(
                f"weights {path} do not fit {model.name}: first mismatch at {name}: not in the model"
            )
        _skip(report, name, source)
    return assignments


def _skip(report: LoadReport, name: str, source: list) -> None:
    """Count a source layer that is not loaded (a classifier, input statistics, a head that differs)."""
    report.skipped += len(source)
    report.skipped_layers.append(name)
