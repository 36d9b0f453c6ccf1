"""The models: the study's baseline CNN, and any registered backbone with a transfer-learning head.

Every builder returns an uncompiled `keras.Model` (or a `TransferModel` of them). A backbone
is called with `training=False` and its BatchNorm layers are frozen, so they run in inference
mode (the keras-io transfer-learning recipe) unless stage 2 is asked to train them (`unfreeze`);
the final softmax is float32 under mixed precision.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import keras
from keras import layers

from .backbones import BACKBONES, Backbone, get_backbone, load_backbone
from .errors import UserError

NUM_CLASSES = 10


def build_cnn(num_classes: int = NUM_CLASSES) -> keras.Model:
    """The study's baseline: three conv/pool blocks, Dense(128), Dropout(0.3); 356,810 parameters."""
    inputs = keras.Input((32, 32, 3), name="image")
    x = inputs
    for filters in (32, 64, 128):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(128, activation="relu")(x)
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="cnn")


@dataclass(frozen=True, eq=False)
class TransferModel:
    """A frozen ImageNet backbone with a classification head, and the parts the two stages need.

    `model` maps images to probabilities; `features` maps images to pooled backbone
    features; `head` maps those features to probabilities and shares its layers with
    `model`, so a head trained on cached features is the head of `model`. `spec` is the
    backbone's registry entry (preprocessing, defaults).
    """

    model: keras.Model
    backbone: keras.Model
    features: keras.Model
    head: keras.Model
    spec: Backbone


def build_head(feature_dim: int, num_classes: int = NUM_CLASSES) -> keras.Model:
    """The classification head on pooled features: Dense(256, relu), Dropout(0.5), Dense(10, softmax)."""
    inputs = keras.Input((feature_dim,), name="pooled_features")
    x = layers.Dense(256, activation="relu")(inputs)
    x = layers.Dropout(0.5)(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="head")


def build_transfer(backbone: str, image_size: int = 224, weights: str = "imagenet",
                   num_classes: int = NUM_CLASSES) -> TransferModel:
    """A registered backbone (include_top=False), frozen, global average pooling, and the head.

    `weights` is "imagenet" (the backbone's own source), "none" (random initialisation,
    not transfer learning) or a weights file path (see `backbones.load_backbone`). The
    backbone is called with `training=False` and frozen, so BatchNorm runs in inference mode.
    ResNet50 at 224x224: 24,114,826 parameters, 527,114 trainable.
    """
    spec = get_backbone(backbone)
    base = load_backbone(spec, image_size, weights)
    base.trainable = False
    head = build_head(spec.feature_dim, num_classes)
    inputs = keras.Input((image_size, image_size, 3), name="image")
    pooled = layers.GlobalAveragePooling2D(name="pool")(base(inputs, training=False))
    model = keras.Model(inputs, head(pooled), name=f"{spec.name}_transfer")
    features = keras.Model(inputs, pooled, name=f"{spec.name}_features")
    return TransferModel(model, base, features, head, spec)


def build_resnet50(image_size: int = 224, weights: str = "imagenet",
                   num_classes: int = NUM_CLASSES) -> TransferModel:
    """The study's model: `build_transfer("resnet50", ...)`."""
    return build_transfer("resnet50", image_size, weights, num_classes)


def check_weights(backbone: str, weights: str) -> None:
    """Fail fast, before any training, when `weights` cannot be loaded into `backbone` (UserError)."""
    load_backbone(get_backbone(backbone), 32, weights)


def save_backbone_weights(backbone: keras.Model, path: str | Path) -> Path:
    """Save backbone weights to a `.weights.h5` file that `--weights PATH` loads back."""
    path = Path(path)
    if not path.name.endswith(".weights.h5"):
        raise UserError(f"{path}: weights files must end in .weights.h5.")
    path.parent.mkdir(parents=True, exist_ok=True)
    backbone.save_weights(path)
    return path


def unfreeze(transfer: TransferModel, n_layers: int, learning_rate: float,
             jit_compile: bool | str = "auto", label_smoothing: float = 0.0,
             train_batchnorm: bool = False, drop_path: float = 0.0) -> list[str]:
    """Unfreeze the backbone's last `n_layers` layers (BatchNorm only if asked) and recompile.

    Args:
        transfer: the model from `build_transfer`, typically after stage 1.
        n_layers: how many of the backbone's last layers to make trainable. Every layer
            counts (activations, additions, padding), as the study counted them.
        learning_rate: Adam learning rate for stage 2, small so the pretrained
            features are nudged rather than overwritten.
        jit_compile: passed to `Model.compile`.
        label_smoothing: share of each label spread over all classes in the loss (0: none).
        train_batchnorm: also train the BatchNorm layers among the last `n_layers`: while
            training they normalise with batch statistics and update their moving
            statistics, and their scale and offset learn (Keras 3 runs a trainable
            BatchNorm in training mode when the model trains, whatever `training` the
            backbone was built with).
        drop_path: stochastic depth while training, for backbones whose residual blocks end
            in `StochasticDepth` layers: block i of n drops its branch for a sample with
            probability drop_path * i / n, EfficientNet's rule (0: none).

    Returns:
        The names of the backbone layers that are now trainable.

    Raises:
        UserError: if `n_layers` is not between 1 and the backbone's layer count, the
            learning rate is not positive, or `drop_path` is not in [0, 1) or is set for a
            backbone without `StochasticDepth` layers.

    By default BatchNorm layers stay frozen, in inference mode with their ImageNet
    statistics: the keras-io recipe, safe for small batches and datasets.
    `train_batchnorm` trades that for statistics of the upsampled training images. The
    model is recompiled because a change of `trainable` only takes effect on compile.
    """
    total = len(transfer.backbone.layers)
    if not 1 <= n_layers <= total:
        raise UserError(f"finetune_layers={n_layers} must be between 1 and {total}, "
                        f"the number of {transfer.spec.label} backbone layers.")
    if learning_rate <= 0:
        raise UserError(f"finetune learning rate {learning_rate} must be positive.")
    set_drop_path(transfer, drop_path)
    transfer.backbone.trainable = True
    unfrozen = []
    for index, layer in enumerate(transfer.backbone.layers):
        batchnorm = isinstance(layer, layers.BatchNormalization)
        layer.trainable = index >= total - n_layers and (train_batchnorm or not batchnorm)
        if layer.trainable and layer.weights:
            unfrozen.append(layer.name)
    compile_classifier(transfer.model, learning_rate, jit_compile, label_smoothing)
    return unfrozen


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


def set_drop_path(transfer: TransferModel, rate: float) -> int:
    """Set the stochastic-depth `rate` of every `StochasticDepth` layer in the backbone and
    return how many there are; UserError if `rate` is not in [0, 1), or is positive for a
    backbone without such layers. Takes effect at the next compile."""
    if not 0 <= rate < 1:
        raise UserError(f"drop path rate {rate} must lie in [0, 1).")
    found = [layer for layer in transfer.backbone.layers if isinstance(layer, StochasticDepth)]
    if rate and not found:
        raise UserError(f"{transfer.spec.label} has no stochastic-depth blocks; set finetune_drop_path=0.")
    for layer in found:
        layer.rate = rate
    return len(found)


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


def compile_classifier(model: keras.Model, learning_rate: float, jit_compile: bool | str = "auto",
                       label_smoothing: float = 0.0) -> None:
    """Compile with Adam, sparse categorical cross-entropy and accuracy (every stage uses these);
    with `label_smoothing` > 0 the cross-entropy is taken against smoothed targets."""
    loss = SmoothedSparseCrossentropy(label_smoothing) if label_smoothing else "sparse_categorical_crossentropy"
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=["accuracy"],
                  jit_compile=jit_compile)


MODEL_REGISTRY = {"cnn": build_cnn, **{name: partial(build_transfer, name) for name in BACKBONES}}


def build_model(name: str, **kwargs):
    """Build a registered model by name: `cnn` (a keras.Model) or a backbone (a TransferModel)."""
    if name not in MODEL_REGISTRY:
        raise UserError(f"unknown model {name!r}; choose from {', '.join(MODEL_REGISTRY)}.")
    return MODEL_REGISTRY[name](**kwargs)
