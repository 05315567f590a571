"""`resnet-gn` (common/models.py): shapes, GroupNorm, per-example independence, DP gradients."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from client.dp_sgd import per_example_gradients
from common.errors import ConfigError
from common.models import BUILDERS, GROUP_WIDTH, RESNET_WIDTHS, build_model, norm_groups
from tests.factories import data_spec, random_images


def layers_of(model: keras.Model, kind: type) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers if isinstance(layer, kind)]


@pytest.mark.parametrize(("size", "channels", "classes"), [(28, 1, 2), (64, 3, 3), (32, 3, 4)])
def test_resnet_gn_is_shaped_by_the_data(size: int, channels: int, classes: int) -> None:
    model = build_model("resnet-gn", data_spec(classes=classes, size=size, channels=channels))

    probabilities = model(random_images(2, size=size, channels=channels)).numpy()

    assert model.input_shape == (None, size, size, channels)
    assert model.output_shape == (None, classes)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_resnet_gn_layout() -> None:
    """Stem and two convolutions per stage (3×3, He-normal, no bias); a 1×1 projection only
    where a stage changes width and size; one GroupNorm after every convolution."""
    model = build_model("resnet-gn", data_spec())

    convs = layers_of(model, keras.layers.Conv2D)
    norms = layers_of(model, keras.layers.GroupNormalization)

    three = [c for c in convs if c.kernel_size == (3, 3)]
    one = [c for c in convs if c.kernel_size == (1, 1)]
    stages = [width for width in RESNET_WIDTHS for _ in range(2)]
    assert [c.filters for c in three] == [RESNET_WIDTHS[0], *stages]
    assert [(c.filters, c.strides) for c in one] == [(w, (2, 2)) for w in RESNET_WIDTHS[1:]]
    assert not any(c.use_bias for c in convs)
    assert all(isinstance(c.kernel_initializer, keras.initializers.HeNormal) for c in convs)
    assert len(norms) == len(convs)
    assert layers_of(model, keras.layers.GlobalAveragePooling2D)
    assert model.get_layer("probabilities").activation is keras.activations.softmax


@pytest.mark.parametrize(
    ("channels", "groups"), [(8, 1), (32, 4), (64, 8), (128, 16), (12, 1), (3, 1), (1, 1)]
)
def test_norm_groups_divide_the_channels(channels: int, groups: int) -> None:
    assert norm_groups(channels) == groups
    assert channels % groups == 0
    assert channels // groups in (GROUP_WIDTH, channels)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_each_image_is_scored_on_its_own_in_training_mode(name: str) -> None:
    """No layer mixes the images of a batch (batch norm would): changing the rest of the
    batch leaves an image's output unchanged — what per-example DP gradients assume."""
    keras.utils.set_random_seed(0)
    model = build_model(name, data_spec())
    for layer in layers_of(model, keras.layers.Dropout):
        layer.rate = 0.0  # random in training mode; every other layer keeps training=True
    batch = random_images(8, seed=1)
    other = batch.copy()
    other[1:] = random_images(7, seed=2) * 3.0

    first = model(batch, training=True).numpy()[0]
    second = model(other, training=True).numpy()[0]

    np.testing.assert_allclose(first, second, rtol=1e-5, atol=1e-6)


def test_resnet_gn_per_example_gradients_match_one_at_a_time() -> None:
    """GroupNorm under ``tf.vectorized_map`` (record-level DP) gives each example's own
    gradient, as a GradientTape on that example alone does."""
    keras.utils.set_random_seed(0)
    model = build_model("resnet-gn", data_spec(size=16))
    loss = keras.losses.SparseCategoricalCrossentropy(reduction="sum")
    images = random_images(4, size=16, seed=3)
    labels = np.array([0, 1, 1, 0], dtype=np.int64)
    oracle = []
    for i in range(len(images)):
        with tf.GradientTape() as tape:
            value = loss(labels[i : i + 1], model(images[i : i + 1], training=True))
        grads = tape.gradient(value, model.trainable_variables)
        oracle.append(np.concatenate([g.numpy().ravel() for g in grads]))

    grads, _, _ = tf.function(per_example_gradients)(
        model, loss, tf.constant(images), tf.constant(labels)
    )
    vectorised = np.concatenate([g.numpy().reshape(len(images), -1) for g in grads], axis=1)

    np.testing.assert_allclose(vectorised, np.stack(oracle), rtol=1e-3, atol=1e-5)


def test_unknown_model_is_refused_with_the_choices() -> None:
    with pytest.raises(ConfigError) as caught:
        build_model("resnet", data_spec())

    assert str(caught.value) == (
        "Invalid value for `model`. Expected one of ['cnn', 'cnn-small', 'resnet-gn']. "
        "Received: 'resnet'"
    )
