"""The project's own Keras objects: the stochastic-depth residual addition and the smoothed sparse loss.

Saved models reference them by their registered names, so `predict` loads them from here.
"""

from __future__ import annotations

import keras
from keras import layers


@keras.saving.register_keras_serializable(package="cifar10_transfer")
class StochasticDepth(layers.Layer):
    """The addition that ends a residual block, `branch + shortcut`, with stochastic depth.

    While the model trains and this layer is trainable, each sample's branch is dropped
    with probability `rate * depth_fraction` and kept branches are scaled up to keep the
    expectation (Huang et al. 2016; EfficientNet's drop_connect). Otherwise it is a plain
    addition, so a frozen backbone's features stay deterministic. `depth_fraction` is the
    block's position, block index over block count, as EfficientNet scales the rate. It
    replaces `layers.Add` one for one, so the backbone's layer count does not change.
    """

    def __init__(self, depth_fraction: float = 1.0, rate: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.depth_fraction, self.rate = depth_fraction, rate
        self.seed_generator = keras.random.SeedGenerator()

    def call(self, inputs, training=None):
        branch, shortcut = inputs
        drop = self.rate * self.depth_fraction
        if training and self.trainable and drop > 0:
            shape = (keras.ops.shape(branch)[0],) + (1,) * (len(branch.shape) - 1)
            branch = keras.random.dropout(branch, drop, noise_shape=shape, seed=self.seed_generator)
        return branch + shortcut

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self) -> dict:
        return {**super().get_config(), "depth_fraction": self.depth_fraction, "rate": self.rate}


@keras.saving.register_keras_serializable(package="cifar10_transfer")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Categorical cross-entropy on integer labels with label smoothing (Keras's sparse
    cross-entropy has no smoothing): the target puts 1 - smoothing + smoothing / classes on
    the label and smoothing / classes on every other class."""

    def __init__(self, smoothing: float, name: str = "smoothed_sparse_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.smoothing = smoothing

    def call(self, y_true, y_pred):
        labels = keras.ops.one_hot(keras.ops.reshape(keras.ops.cast(y_true, "int32"), (-1,)), y_pred.shape[-1])
        return keras.losses.categorical_crossentropy(labels, y_pred, label_smoothing=self.smoothing)

    def get_config(self) -> dict:
        return {**super().get_config(), "smoothing": self.smoothing}
