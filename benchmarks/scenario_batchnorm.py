"""Scenario: our BatchNormalization (TF's fused kernel, `tpu_grapheme.batch_norm`) against Keras' own.

`keras_bn` is our loop on the same model built with `batch_norm="keras"` (Keras' `BatchNormalization`:
moments plus element-wise ops); the same seed gives the same initial weights, so only the BN kernels differ.
"""

from __future__ import annotations

from harness import Runner, paired
from workload import Workload


def runners(w: Workload, args) -> list[Runner]:
    if args.arch == "tiny":  # no BatchNormalization to compare
        return []
    return [w.custom("keras_bn", batch_norm="keras", label="custom loop, Keras' BatchNormalization")]


def ratios(rs: dict[str, Runner]) -> dict[str, dict | None]:
    return {"fused_bn_vs_keras_bn": paired(rs["custom_splN"], rs.get("keras_bn"))}
