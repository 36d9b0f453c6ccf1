"""The model registry: the study's baseline CNN and ResNet50 with a transfer-learning head.

Every builder returns an uncompiled `keras.Model`. The ResNet50 backbone is always called
with `training=False`, so its BatchNorm layers stay in inference mode in both stages (the
keras-io transfer-learning recipe); the final softmax is float32 under mixed precision.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import keras
from keras import layers

from .errors import UserError

NUM_CLASSES = 10
FEATURE_DIM = 2048  # ResNet50's pooled feature size
IMAGENET_NOTOP_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"  # Keras's cache name


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
    """ResNet50 transfer model and the parts the two stages need.

    `model` maps images to probabilities; `features` maps images to pooled backbone
    features; `head` maps those features to probabilities and shares its layers with
    `model`, so a head trained on cached features is the head of `model`.
    """

    model: keras.Model
    backbone: keras.Model
    features: keras.Model
    head: keras.Model


def build_head(num_classes: int = NUM_CLASSES) -> keras.Model:
    """The classification head on pooled features: Dense(256, relu), Dropout(0.5), Dense(10, softmax)."""
    inputs = keras.Input((FEATURE_DIM,), name="pooled_features")
    x = layers.Dense(256, activation="relu")(inputs)
    x = layers.Dropout(0.5)(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="head")


def build_resnet50(image_size: int = 224, weights: str = "imagenet",
                   num_classes: int = NUM_CLASSES) -> TransferModel:
    """ResNet50 (include_top=False) frozen, global average pooling, and the head.

    `weights` is "imagenet" (Keras downloads and caches it), "none" (random
    initialisation, not transfer learning) or a path to a ResNet50 no-top weights file.
    At 224x224: 24,114,826 parameters, 527,114 trainable.
    """
    backbone = _backbone(image_size, weights)
    backbone.trainable = False
    head = build_head(num_classes)
    inputs = keras.Input((image_size, image_size, 3), name="image")
    pooled = layers.GlobalAveragePooling2D(name="pool")(backbone(inputs, training=False))
    model = keras.Model(inputs, head(pooled), name="resnet50_transfer")
    features = keras.Model(inputs, pooled, name="resnet50_features")
    return TransferModel(model, backbone, features, head)


def _backbone(image_size: int, weights: str) -> keras.Model:
    shape = (image_size, image_size, 3)
    if weights == "none":
        return keras.applications.ResNet50(include_top=False, weights=None, input_shape=shape)
    if weights == "imagenet":
        try:
            return keras.applications.ResNet50(include_top=False, weights="imagenet", input_shape=shape)
        except Exception as exc:  # the download fails in many ways offline
            cache = Path(keras.config.keras_home() if hasattr(keras.config, "keras_home") else "~/.keras")
            raise UserError(f"ImageNet weights for ResNet50 could not be fetched ({type(exc).__name__}); "
                            f"put {IMAGENET_NOTOP_FILE} in {cache.expanduser() / 'models'} or pass "
                            "--weights PATH (or --weights none for a random-init run).") from exc
    path = Path(weights)
    if not path.is_file():
        raise UserError(f"weights file {path} does not exist; pass imagenet, none or an existing file.")
    model = keras.applications.ResNet50(include_top=False, weights=None, input_shape=shape)
    try:
        with warnings.catch_warnings(record=True) as skipped:
            warnings.simplefilter("always")
            model.load_weights(path)
        if any("Skipping" in str(w.message) for w in skipped):
            raise ValueError("some layers found no weights in the file")
    except Exception as exc:  # a file of another architecture fails in layer-matching code
        raise UserError(f"{path} does not hold ResNet50 (include_top=False) weights ({type(exc).__name__}); "
                        "save them with cifar10_transfer.save_backbone_weights.") from exc
    return model


def check_weights(weights: str) -> None:
    """Fail fast, before any training, when `weights` cannot be loaded (raises UserError)."""
    _backbone(32, weights)


def save_backbone_weights(backbone: keras.Model, path: str | Path) -> Path:
    """Save backbone weights to a `.weights.h5` file that `--weights PATH` loads back."""
    path = Path(path)
    if not path.name.endswith(".weights.h5"):
        raise UserError(f"{path}: weights files must end in .weights.h5.")
    path.parent.mkdir(parents=True, exist_ok=True)
    backbone.save_weights(path)
    return path


def unfreeze(transfer: TransferModel, n_layers: int, learning_rate: float,
             jit_compile: bool | str = "auto") -> list[str]:
    """Unfreeze the backbone's last `n_layers` layers, except BatchNorm, and recompile.

    Args:
        transfer: the model from `build_resnet50`, typically after stage 1.
        n_layers: how many of the backbone's last layers to make trainable. Every layer
            counts (activations, additions, padding), as the study counted them.
        learning_rate: Adam learning rate for stage 2, small so the pretrained
            features are nudged rather than overwritten.
        jit_compile: passed to `Model.compile`.

    Returns:
        The names of the backbone layers that are now trainable.

    Raises:
        UserError: if `n_layers` is not between 1 and the backbone's layer count, or the
            learning rate is not positive.

    BatchNorm layers stay frozen: their statistics fit ImageNet, and updating them from
    small batches of upscaled 32x32 images would wreck the features. The model is
    recompiled because a change of `trainable` only takes effect on compile.
    """
    total = len(transfer.backbone.layers)
    if not 1 <= n_layers <= total:
        raise UserError(f"finetune_layers={n_layers} must be between 1 and {total}, "
                        "the number of ResNet50 backbone layers.")
    if learning_rate <= 0:
        raise UserError(f"finetune learning rate {learning_rate} must be positive.")
    transfer.backbone.trainable = True
    unfrozen = []
    for index, layer in enumerate(transfer.backbone.layers):
        layer.trainable = index >= total - n_layers and not isinstance(layer, layers.BatchNormalization)
        if layer.trainable and layer.weights:
            unfrozen.append(layer.name)
    compile_classifier(transfer.model, learning_rate, jit_compile)
    return unfrozen


def compile_classifier(model: keras.Model, learning_rate: float, jit_compile: bool | str = "auto") -> None:
    """Compile with Adam, sparse categorical cross-entropy and accuracy (every stage uses these)."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"], jit_compile=jit_compile)


MODEL_REGISTRY = {"cnn": build_cnn, "resnet50": build_resnet50}


def build_model(name: str, **kwargs):
    """Build a registered model by name: `cnn` (a keras.Model) or `resnet50` (a TransferModel)."""
    if name not in MODEL_REGISTRY:
        raise UserError(f"unknown model {name!r}; choose from {', '.join(MODEL_REGISTRY)}.")
    return MODEL_REGISTRY[name](**kwargs)
