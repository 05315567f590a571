"""Keras 3 CNN builders, chosen by name and shaped by the data they will see.

Builders return an uncompiled functional model ending in a softmax; clients and server
decide how to train or evaluate it. Both sides build the same architecture from the same
declared ``DataSpec``, so weights travel as a plain list of arrays in a fixed order.
"""

from __future__ import annotations

from collections.abc import Callable

import keras

from common.data.schema import DataSpec
from common.errors import ConfigError, invalid_value

Builder = Callable[[tuple[int, int, int], int], keras.Model]
# ReLU layers start from He-normal weights, not Keras's Glorot default, whose smaller weights
# shrink the signal at every ReLU layer: the untrained `cnn` then gave every synthetic image
# nearly the same output (its logit varied by 0.002-0.006 across images, against 0.05-0.6
# with He), local updates had to amplify a tiny signal and FedAvg's average of them kept
# almost none of it, so after round 1 some seeds ranked positives below normals (AUC 0.1-0.2;
# README, Data). The softmax layer keeps the Glorot default. `cnn-small` (one ReLU layer
# whose 21,632 flattened features feed the softmax) keeps Glorot: with He its logits start
# large and Adam at the default rate was unstable (3 synthetic hospitals of 150 images, seed
# 42: mean local training loss 2.05 in round 1 against 0.66 with Glorot).
RELU_INIT = "he_normal"


def _cnn_small(input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """The seed network: one convolution, then a softmax over the classes."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Conv2D(32, 3, activation="relu")(inputs)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="cnn_small")


def _conv_block(x: keras.KerasTensor, filters: int) -> keras.KerasTensor:
    for _ in range(2):
        x = keras.layers.Conv2D(
            filters, 3, padding="same", activation="relu", kernel_initializer=RELU_INIT
        )(x)
    return keras.layers.MaxPooling2D()(x)


def _cnn(input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """Three VGG-style blocks with global pooling and dropout; no batch norm.

    Batch-norm statistics do not average well across hospitals with different
    scanners, so the network relies on dropout alone.
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x = _conv_block(inputs, 32)
    x = _conv_block(x, 64)
    x = _conv_block(x, 128)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.3)(x)
    x = keras.layers.Dense(128, activation="relu", kernel_initializer=RELU_INIT)(x)
    x = keras.layers.Dropout(0.3)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="cnn")


# `resnet-gn`: channels per stage; stages after the first halve the image with a strided
# convolution. GroupNorm splits each layer's channels into groups of GROUP_WIDTH.
RESNET_WIDTHS = (32, 64, 128)
GROUP_WIDTH = 8


def norm_groups(channels: int) -> int:
    """GroupNorm groups for ``channels``: groups of ``GROUP_WIDTH`` channels (one group when
    ``channels`` is not a multiple of it), so the count always divides ``channels``."""
    return channels // GROUP_WIDTH if channels % GROUP_WIDTH == 0 else 1


def _conv_gn(x: keras.KerasTensor, filters: int, strides: int = 1) -> keras.KerasTensor:
    """3×3 convolution (no bias: GroupNorm's offset replaces it), then GroupNorm."""
    x = keras.layers.Conv2D(
        filters, 3, strides=strides, padding="same", use_bias=False, kernel_initializer=RELU_INIT
    )(x)
    return keras.layers.GroupNormalization(groups=norm_groups(filters))(x)


def _residual_block(x: keras.KerasTensor, filters: int, strides: int) -> keras.KerasTensor:
    """conv-GN-ReLU-conv-GN plus the input (a 1×1 projection when the shape changes), ReLU."""
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(
            filters, 1, strides=strides, use_bias=False, kernel_initializer=RELU_INIT
        )(x)
        shortcut = keras.layers.GroupNormalization(groups=norm_groups(filters))(shortcut)
    y = keras.layers.ReLU()(_conv_gn(x, filters, strides))
    y = _conv_gn(y, filters)
    return keras.layers.ReLU()(keras.layers.Add()([y, shortcut]))


def _resnet_gn(input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """A small residual network with GroupNorm: a 3×3 stem, one residual block per stage
    (widths ``RESNET_WIDTHS``, stride 2 from the second stage), global average pooling and
    a softmax. GroupNorm normalises each image on its own, unlike batch norm, so per-example
    gradients (record-level DP) and averaging across hospitals both stay valid."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.ReLU()(_conv_gn(inputs, RESNET_WIDTHS[0]))
    for stage, filters in enumerate(RESNET_WIDTHS):
        x = _residual_block(x, filters, strides=1 if stage == 0 else 2)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="resnet_gn")


BUILDERS: dict[str, Builder] = {"cnn": _cnn, "cnn-small": _cnn_small, "resnet-gn": _resnet_gn}


def build_model(name: str, spec: DataSpec) -> keras.Model:
    """Build the named architecture for images and classes of ``spec``."""
    builder = BUILDERS.get(name)
    if builder is None:
        raise ConfigError(invalid_value("model", f"one of {sorted(BUILDERS)}", name))
    return builder(spec.input_shape, spec.num_classes)
