"""The grapheme classifier: a backbone, global average pooling and one float32 logit head per layout head.

Archs: `tiny` (a few thousand params, no batch-dependent normalisation, for tests), `small` (a
MobileNet-like depthwise-separable CNN sized for a 2-core CPU), `b0`..`b7` (Keras EfficientNet on a
1-channel input) and `b0g`..`b7g` (the same with a squeeze-and-excitation gate per head, as the seed).

EfficientNet and grayscale: Keras 3's `EfficientNetB{n}` starts with `Rescaling(1/255)` and an
(unadapted, for weights=None) `Normalization`. Our pipeline already normalises, so we keep only the
graph from `stem_conv_pad` onward and feed it the 1-channel input directly: no rescaling, no channel
tiling (the stem conv has one input channel, so no compute is spent on three identical channels).
Pretrained weights (`weights=`, a local or gs:// file, never a download: Keras-applications or
`efficientnet`-package EfficientNet weights, or a `.keras` model of ours) are loaded by
`tpu_grapheme.weights`, which folds the stem kernel by summing over its input channels (exact for an
input tiled to three channels).

Randomness: every Dropout (the head's and EfficientNet's stochastic-depth drops) becomes a
`ReplicaDropout` seeded from (`seed`, layer name): reproducible from `seed`, a different mask on
every replica. BatchNorm (`batch_norm.py`: Keras' math through TF's fused kernel): batch statistics are
per micro-batch (as they are per replica on a TPU); with `bn_updates_per_step=k` (gradient
accumulation) the moving statistics are updated k times per optimizer step, so each update uses
momentum**(1/k) and they decay by `momentum` per optimizer step.
"""

from __future__ import annotations

import dataclasses
import re
import zlib
from collections.abc import Sequence

import keras
from keras import layers

from tpu_grapheme.batch_norm import AccumBatchNormalization, FusedBatchNormalization
from tpu_grapheme.data.graphemes import combination_table
from tpu_grapheme.data.schema import BENGALI, HeadLayout
from tpu_grapheme.errors import UserError
from tpu_grapheme.replica_random import ReplicaDropout
from tpu_grapheme.weights import load_weights, require_file

_EFFNET = re.compile(r"^b([0-7])(g?)$")
GRAPHEME = "grapheme"  # name of the optional whole-grapheme output
# `small` trains for ~1-2k steps on a CPU: Keras' default 0.99 leaves the moving statistics far from
# the batch statistics that early, and evaluation (inference mode) collapses to one class.
_BN_MOMENTUM = 0.9

# `small`: (block, output channels, stride). "patch": a k x k stride-k conv (non-overlapping patches,
# 64x112 -> 16x28 in one step); "ds": depthwise 3x3 + BN + ReLU6 then 1x1 + BN + ReLU6. On a 2-core CPU
# depthwise convs and BN/ReLU passes at high resolution are memory-bound: a stride-2 3x3 stem followed by
# blocks at 32x56 trained ~2.6x slower for the same FLOPs, so all blocks run at 1/4 resolution or less.
_SMALL = (
    ("patch", 32, 4),
    ("ds", 64, 1),
    ("ds", 128, 2),
    ("ds", 128, 1),
    ("ds", 256, 2),
    ("ds", 256, 1),
    ("ds", 256, 1),
)


class _Seeds:
    """Hands out a distinct, deterministic seed per initializer (Keras int seeds are stateless)."""

    def __init__(self, seed: int) -> None:
        self.base = int(seed) * 1_000_003
        self.n = 0

    def he(self) -> keras.initializers.Initializer:
        self.n += 1
        return keras.initializers.HeNormal(seed=self.base + self.n)

    def glorot(self) -> keras.initializers.Initializer:
        self.n += 1
        return keras.initializers.GlorotUniform(seed=self.base + self.n)


def build_model(
    *,
    arch: str,
    input_shape: tuple[int, int, int] = (64, 112, 1),
    dropout: float = 0.2,
    weights: str = "",
    seed: int = 0,
    bn_updates_per_step: int = 1,
    fused_bn: bool = True,
    grapheme_classes: Sequence[int] = (),
    layout: HeadLayout = BENGALI,
) -> keras.Model:
    """Build `arch` for float32 input [B,H,W,1]; outputs float32 logits, one head per `layout` head
    (named by it, in its order: [root, vowel, consonant] for Bengali).

    `bn_updates_per_step`: BatchNorm updates per optimizer step (the gradient-accumulation factor k);
    batch statistics stay per micro-batch, the moving statistics decay by `momentum` per optimizer step.
    `fused_bn`: BatchNorms train through TF's fused kernel (False: Keras' own ops, the same math).
    `grapheme_classes` (combination ids, `data.graphemes.combination_ids`, of the graphemes seen in
    training): adds a last output, `grapheme`, a softmax head over them (`GraphemeHead`).
    """
    if int(bn_updates_per_step) < 1:
        raise UserError(f"bn_updates_per_step must be >= 1, got {bn_updates_per_step}")
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) != 3 or input_shape[-1] != 1:
        raise UserError(f"input_shape must be (H, W, 1), got {input_shape}")
    if weights and not _EFFNET.match(arch):
        raise UserError("weights are for the EfficientNet archs (b0..b7, b0g..b7g) only")
    if weights:
        require_file(weights)
    seeds, bn = _Seeds(seed), _BN(int(bn_updates_per_step), bool(fused_bn))
    inputs = keras.Input(shape=input_shape, name="image")
    gated = False
    if arch == "tiny":
        features = _tiny(inputs, seeds)
    elif arch == "small":
        features = _small(inputs, seeds, bn=bn)
    elif m := _EFFNET.match(arch):
        if min(input_shape[:2]) < 32:
            raise UserError(f"EfficientNet needs H and W >= 32, got {input_shape[:2]}")
        backbone = _efficientnet(int(m.group(1)), input_shape, seed=seed, bn=bn)
        features = layers.GlobalAveragePooling2D(name="avg_pool")(backbone(inputs))
        gated = bool(m.group(2))
    else:
        raise UserError(f"unknown arch {arch!r}: tiny, small, b0..b7, b0g..b7g")
    outputs = _heads(features, layout, dropout=dropout, gated=gated, seeds=seeds, seed=seed)
    if grapheme_classes:
        if max(grapheme_classes) >= layout.num_combinations:
            raise ValueError(f"grapheme classes must be combination ids below {layout.num_combinations}")
        outputs.append(
            GraphemeHead(grapheme_classes, kernel_initializer=seeds.glorot(), name=GRAPHEME)(features)
        )
    model = keras.Model(inputs, outputs, name=f"grapheme_{arch}")
    if weights:
        load_weights(model, weights)
    return model


def _heads(features, layout: HeadLayout, *, dropout: float, gated: bool, seeds: _Seeds, seed: int) -> list:
    """One Dropout shared by a float32 Dense head per layout head; `gated` puts an SE gate in front of each head.

    The seed's layout (`bengali/model.py` of ceshine/bengali-grapheme-classification): pooling ->
    Dropout -> per head [Dense(C/8, relu) -> Dense(C, sigmoid), multiplied in] -> Dense. Both gate
    layers use He-normal kernels and zero biases, the head Dense Keras' default Glorot-uniform.
    """
    features = ReplicaDropout(dropout, seed=_name_seed("head_dropout", seed), name="head_dropout")(features)
    channels = features.shape[-1]
    outputs = []
    for name, n in zip(layout.names, layout.num_classes, strict=True):
        x = features
        if gated:
            g = layers.Dense(
                max(1, channels // 8), "relu", kernel_initializer=seeds.he(), name=f"{name}_se1"
            )(x)
            g = layers.Dense(channels, "sigmoid", kernel_initializer=seeds.he(), name=f"{name}_se2")(g)
            x = layers.Multiply(name=f"{name}_gate")([x, g])
        outputs.append(layers.Dense(n, kernel_initializer=seeds.glorot(), dtype="float32", name=name)(x))
    return outputs


def grapheme_classes(combination_counts, layout: HeadLayout = BENGALI) -> tuple[int, ...]:
    """The grapheme head's classes: ids of the combinations with images in training, ascending.

    `combination_counts`: int [C_1, ..., C_heads] (e.g. [168, 11, 7]), or rows [labels..., count]
    (model_meta.json).
    """
    counts = combination_table(combination_counts, layout)
    return tuple(int(i) for i in (counts.reshape(-1) > 0).nonzero()[0])


@keras.saving.register_keras_serializable(package="tpu_grapheme")
class GraphemeHead(layers.Dense):
    """float32 logits over whole graphemes (the 2nd-place solution's fourth head), on the pooled features.

    Unit i is the grapheme combination `combinations[i]` (`combination_ids`), carried in
    the layer's config, so a saved `.keras` model knows its classes without any file beside it.
    """

    def __init__(self, combinations: Sequence[int], **kwargs):
        combos = [int(c) for c in combinations]
        if not combos or len(set(combos)) != len(combos) or min(combos) < 0:
            raise ValueError("combinations must be distinct non-negative combination ids")
        kwargs.pop("units", None)
        kwargs["dtype"] = "float32"
        super().__init__(len(combos), **kwargs)
        self.combinations = combos

    def get_config(self) -> dict:
        return {**super().get_config(), "combinations": list(self.combinations)}


@dataclasses.dataclass(frozen=True)
class _BN:
    """Which BatchNormalization a build uses: k updates per optimizer step, fused kernel or Keras' ops."""

    updates_per_step: int
    fused: bool

    def from_config(self, config: dict) -> layers.BatchNormalization:
        """The layer for `config` (a BatchNormalization's): Keras' own when k = 1 and not fused, else ours."""
        if self.updates_per_step > 1:
            extra = {"updates_per_step": self.updates_per_step, "fused": self.fused}
            return AccumBatchNormalization.from_config({**config, **extra})
        if not self.fused:
            return layers.BatchNormalization.from_config(config)
        return FusedBatchNormalization.from_config(config)

    def __call__(self, name: str) -> layers.BatchNormalization:
        return self.from_config({"momentum": _BN_MOMENTUM, "name": name})


def _adapted_copy(layer: layers.Layer, *, seed: int, bn: _BN) -> layers.Layer:
    """A fresh copy of `layer` (same config): Dropout -> seeded ReplicaDropout, BatchNormalization ->
    the build's (`_BN`), anything else its own class."""
    if isinstance(layer, layers.Dropout):
        return ReplicaDropout.replacing(layer, _name_seed(layer.name, seed))
    if isinstance(layer, layers.BatchNormalization):
        return bn.from_config(layer.get_config())
    return layer.__class__.from_config(layer.get_config())


def _name_seed(name: str, seed: int) -> int:
    """A deterministic 31-bit seed from (layer name, run seed)."""
    return (zlib.crc32(name.encode()) + 7919 * int(seed)) % (2**31)


def _tiny(x, seeds: _Seeds):
    """Two strided convs, no normalisation: identical results for any split of a batch over replicas."""
    for i, filters in enumerate((8, 16)):
        x = layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu",
                          kernel_initializer=seeds.he(), name=f"conv{i}")(x)  # fmt: skip
    return layers.GlobalAveragePooling2D(name="avg_pool")(x)


def _small(x, seeds: _Seeds, *, bn: _BN):
    """A MobileNet-like CNN: a 4x4 patch stem to 1/4 resolution, then depthwise-separable blocks."""
    for i, (block, filters, stride) in enumerate(_SMALL):
        p = f"block{i}_"
        if block == "ds":
            x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False,
                                       depthwise_initializer=seeds.he(), name=p + "dw")(x)  # fmt: skip
            x = layers.ReLU(6.0, name=p + "dw_relu")(bn(p + "dw_bn")(x))
            x = layers.Conv2D(filters, 1, use_bias=False, kernel_initializer=seeds.he(), name=p + "pw")(x)
        else:
            x = layers.Conv2D(filters, stride, strides=stride, padding="same", use_bias=False,
                              kernel_initializer=seeds.he(), name=p + "patch")(x)  # fmt: skip
        x = layers.ReLU(6.0, name=p + "relu")(bn(p + "bn")(x))
    return layers.GlobalAveragePooling2D(name="avg_pool")(x)


def _efficientnet(n: int, input_shape: tuple[int, int, int], *, seed: int, bn: _BN) -> keras.Model:
    """Keras EfficientNetB{n} from its stem conv on (no rescaling/normalisation), 1 input channel.

    Rebuilt layer by layer so that its stochastic-depth drops are seeded `ReplicaDropout`s and its
    BatchNorms the build's (`_BN`: fused, and `AccumBatchNormalization`s for k > 1 updates per step).
    """
    ctor = getattr(keras.applications, f"EfficientNetB{n}")
    full = ctor(include_top=False, weights=None, input_shape=input_shape)
    stock = keras.Model(full.get_layer("stem_conv_pad").input, full.output, name=f"efficientnetb{n}")
    backbone = keras.models.clone_model(
        stock,
        clone_function=lambda layer: _adapted_copy(layer, seed=seed, bn=bn),
    )
    _reseed(backbone, seed)
    return backbone


_INIT_ATTRS = (("kernel", "kernel_initializer"), ("depthwise_kernel", "depthwise_initializer"))


def _reseed(model: keras.Model, seed: int) -> None:
    """Re-draw every conv/dense kernel from its own initializer with a seed from (seed, layer name)."""
    for layer in model.layers:
        for var_name, init_name in _INIT_ATTRS:
            var, init = getattr(layer, var_name, None), getattr(layer, init_name, None)
            if var is None or init is None:
                continue
            config = keras.initializers.serialize(init)
            if "seed" not in config.get("config", {}):
                continue
            config["config"]["seed"] = _name_seed(layer.name, seed)
            var.assign(keras.initializers.deserialize(config)(var.shape, var.dtype))


def model_flops(model: keras.Model) -> int:
    """Forward FLOPs per image: 2 FLOPs (a multiply and an add) per multiply-accumulate (MAC) of every
    Conv2D, DepthwiseConv2D and Dense layer, the convention of peak FLOP/s figures (and of the matmul
    peak MFU divides by). fvcore/thop-style counters report MACs: half this figure.

    Element-wise work (BN, activations, pooling, SE multiplies) is left out; it is a few percent.
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += model_flops(layer)
            continue
        if isinstance(layer, layers.DepthwiseConv2D):
            out = layer.output.shape
            kh, kw = layer.kernel_size
            total += out[1] * out[2] * out[3] * kh * kw
        elif isinstance(layer, layers.Conv2D):
            out = layer.output.shape
            kh, kw = layer.kernel_size
            cin = layer.input.shape[-1] // layer.groups
            total += out[1] * out[2] * out[3] * kh * kw * cin
        elif isinstance(layer, layers.Dense):
            total += layer.input.shape[-1] * layer.units
    return 2 * int(total)
