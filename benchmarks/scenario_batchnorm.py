"""Scenario: our BatchNormalization (TF's fused kernel, `tpu_grapheme.batch_norm`) against Keras' own.

`keras_bn` is our loop on the same model with every `FusedBatchNormalization` swapped for Keras'
`BatchNormalization` (moments plus element-wise ops), weights copied: only the BN kernels differ.
"""

from __future__ import annotations

import keras
from harness import Runner, paired
from workload import Workload

from tpu_grapheme.batch_norm import FusedBatchNormalization


def with_keras_bn(model: keras.Model) -> keras.Model:
    """`model` with Keras' BatchNormalization in place of ours (same config and weights)."""

    def swap(layer: keras.layers.Layer) -> keras.layers.Layer:
        if type(layer) is FusedBatchNormalization:
            config = {k: v for k, v in layer.get_config().items() if k != "fused"}
            return keras.layers.BatchNormalization.from_config(config)
        return layer.__class__.from_config(layer.get_config())

    clone = keras.models.clone_model(model, clone_function=swap, recursive=True)
    clone.set_weights(model.get_weights())
    return clone


def runners(w: Workload, args) -> list[Runner]:
    if args.arch == "tiny":  # no BatchNormalization to compare
        return []
    return [w.custom("keras_bn", model_fn=with_keras_bn, label="custom loop, Keras' BatchNormalization")]


def ratios(rs: dict[str, Runner]) -> dict[str, dict | None]:
    return {"fused_bn_vs_keras_bn": paired(rs["custom_splN"], rs.get("keras_bn"))}
