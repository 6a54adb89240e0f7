"""`model_flops` counts 2 FLOPs per multiply-accumulate (MAC), checked on single layers by hand.

PyTorch's counters (fvcore, thop, ptflops) report MACs under the name "FLOPs": half of ours.
"""

from __future__ import annotations

import keras
import pytest

from tpu_grapheme.model import model_flops


def _one_layer(layer: keras.layers.Layer, shape: tuple[int, int, int]) -> keras.Model:
    inputs = keras.Input(shape)
    return keras.Model(inputs, layer(inputs))


def test_one_conv2d_is_two_flops_per_mac():
    # 3x3 conv, stride 2, same padding: 8x10x3 -> 4x5x16; each output value is 3*3*3 MACs.
    model = _one_layer(keras.layers.Conv2D(16, 3, strides=2, padding="same"), (8, 10, 3))
    h_out, w_out, k_h, k_w, c_in, c_out = 4, 5, 3, 3, 3, 16
    macs = h_out * w_out * k_h * k_w * c_in * c_out
    assert macs == 8640
    assert model_flops(model) == 2 * macs


@pytest.mark.parametrize(
    ("layer", "shape", "macs"),
    [
        (keras.layers.DepthwiseConv2D(5, padding="valid"), (9, 9, 4), 5 * 5 * 4 * 25),  # 5x5 out, 4 ch
        (keras.layers.Conv2D(6, 1), (7, 7, 8), 7 * 7 * 8 * 6),  # pointwise
        (keras.layers.Dense(10), (1, 1, 12), 12 * 10),
    ],
)
def test_depthwise_pointwise_dense_by_hand(layer, shape, macs):
    assert model_flops(_one_layer(layer, shape)) == 2 * macs
