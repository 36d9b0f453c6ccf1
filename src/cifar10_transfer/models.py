"""The models: the study's baseline CNN, the from-scratch ResNet, and any registered backbone with a head.

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

from .backbones import load_backbone, preprocess_for
from .custom_layers import SmoothedSparseCrossentropy, StochasticDepth
from .errors import UserError
from .recipe import ScratchRecipe, Stage2Recipe, validate
from .registry import BACKBONES, Backbone, get_backbone

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


def build_resnet_scratch(width: int = ScratchRecipe.width, num_classes: int = NUM_CLASSES) -> keras.Model:
    """The `scratch` stage's network: a compact residual CNN with BatchNorm at 32x32, laid out as
    the DAWNBench ResNet-9 (Page 2018) at `width` channels in its stem (ResNet-9: 64).

    Stem conv(w); then three stages of conv(m·w) and a 2x2 max-pool for m = 2, 4, 8 (32 → 4 px),
    the first and last followed by a residual block of two convs; a global max-pool and
    Dense(10). Every conv is 3x3, without bias, followed by BatchNorm and ReLU. Width 16 (the
    recipe's): 414,074 parameters (412,954 trainable); width 64: 6,577,610, ResNet-9's size.
    """
    inputs = keras.Input((32, 32, 3), name="image")
    # [0, 1] to [-1, 1]: centred, so that every conv's zero padding reads as mid-grey
    x = _conv_bn(layers.Rescaling(2.0, offset=-1.0)(inputs), width)
    for multiple, residual in ((2, True), (4, False), (8, True)):
        x = layers.MaxPooling2D()(_conv_bn(x, multiple * width))
        if residual:
            x = layers.Add()([x, _conv_bn(_conv_bn(x, multiple * width), multiple * width)])
    x = layers.GlobalMaxPooling2D()(x)
    # pooled features scaled by 1/8, as ResNet-9 scales its logits: small logits at the start, not a
    # confident guess from max-pooled activations
    x = layers.Rescaling(0.125)(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="resnet_scratch")


def _conv_bn(x, filters: int):
    """3x3 convolution (no bias: BatchNorm's offset replaces it), BatchNorm, ReLU."""
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    # momentum 0.9, PyTorch's default that ResNet-9 trained with (Keras's is 0.99): the moving statistics that
    # evaluation uses average about the last 10 steps rather than 100, so they keep up with a short run
    return layers.ReLU()(layers.BatchNormalization(momentum=0.9)(x))


@dataclass(frozen=True, eq=False)
class TransferModel:
    """A frozen ImageNet backbone with a classification head, and the parts the two stages need.

    `model` maps images to probabilities; `features` maps images to pooled backbone
    features; `head` maps those features to probabilities and shares its layers with
    `model`, so a head trained on cached features is the head of `model`. `spec` is the
    backbone's registry entry and `preprocess` its input preprocessing.
    """

    model: keras.Model
    backbone: keras.Model
    features: keras.Model
    head: keras.Model
    spec: Backbone
    preprocess: object  # the backbone's preprocessing of pixels in [0, 255] (backbones.preprocess_for)


def build_head(feature_dim: int, num_classes: int = NUM_CLASSES) -> keras.Model:
    """The classification head on pooled features: Dense(256, relu), Dropout(0.5), Dense(10, softmax)."""
    inputs = keras.Input((feature_dim,), name="pooled_features")
    x = layers.Dense(256, activation="relu")(inputs)
    x = layers.Dropout(0.5)(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="head")


def build_transfer(backbone: str, image_size: int = 224, weights: str = "imagenet",
                   num_classes: int = NUM_CLASSES, any_size: bool = False) -> TransferModel:
    """A registered backbone (include_top=False), frozen, global average pooling, and the head.

    `weights` is "imagenet" (the backbone's own source), "none" (random initialisation,
    not transfer learning) or a weights file path (see `backbones.load_backbone`). The
    backbone is called with `training=False` and frozen, so BatchNorm runs in inference mode.
    `model` takes `image_size` images; with `any_size` its backbone takes any side, so that
    stage 2 can train at other sizes (`at_any_size`). ResNet50 at 224x224: 24,114,826
    parameters, 527,114 trainable.
    """
    spec = get_backbone(backbone)
    base = load_backbone(spec, None if any_size else image_size, weights)
    base.trainable = False
    head = build_head(spec.feature_dim, num_classes)
    inputs = keras.Input((image_size, image_size, 3), name="image")
    pooled = layers.GlobalAveragePooling2D(name="pool")(base(inputs, training=False))
    model = keras.Model(inputs, head(pooled), name=f"{spec.name}_transfer")
    features = keras.Model(inputs, pooled, name=f"{spec.name}_features")
    return TransferModel(model, base, features, head, spec, preprocess_for(spec.name))


def at_any_size(transfer: TransferModel) -> keras.Model:
    """`transfer.model` for images of any side, sharing its layers (and so its weights): what stage 2
    trains at sizes other than the evaluation size. Its backbone must take any side (`build_transfer`'s
    `any_size`)."""
    inputs = keras.Input((None, None, 3), name="image")
    pooled = transfer.model.get_layer("pool")(transfer.backbone(inputs, training=False))
    return keras.Model(inputs, transfer.head(pooled), name=f"{transfer.spec.name}_any_size")


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


def unfreeze(transfer: TransferModel, recipe: Stage2Recipe, jit_compile: bool | str = "auto") -> list[str]:
    """Unfreeze the backbone's last `recipe.layers` layers for stage 2 and recompile; returns the
    names of the backbone layers that are now trainable.

    Every layer counts (activations, additions, padding), as the study counted them. BatchNorm
    layers stay frozen, in inference mode with their ImageNet statistics (the keras-io recipe,
    safe for small batches), unless `recipe.batchnorm` is "train": then they normalise with
    batch statistics while training and their scale and offset learn (Keras 3 runs a trainable
    BatchNorm in training mode whatever `training` the backbone was built with). The recipe's
    stochastic depth is set on the backbone's `StochasticDepth` layers. The model is recompiled
    because a change of `trainable` only takes effect on compile. UserError if the recipe does
    not fit the backbone (`recipe.validate`).
    """
    validate(recipe, transfer.spec)
    for layer in transfer.backbone.layers:
        if isinstance(layer, StochasticDepth):
            layer.rate = recipe.drop_path
    total = len(transfer.backbone.layers)
    transfer.backbone.trainable = True
    unfrozen = []
    for index, layer in enumerate(transfer.backbone.layers):
        batchnorm = isinstance(layer, layers.BatchNormalization)
        layer.trainable = index >= total - recipe.layers and (recipe.batchnorm == "train" or not batchnorm)
        if layer.trainable and layer.weights:
            unfrozen.append(layer.name)
    compile_classifier(transfer.model, recipe.learning_rate, jit_compile, recipe.label_smoothing)
    return unfrozen


def compile_classifier(model: keras.Model, optimizer: float | keras.optimizers.Optimizer,
                       jit_compile: bool | str = "auto", label_smoothing: float = 0.0) -> None:
    """Compile with sparse categorical cross-entropy and accuracy (every stage uses these) and
    `optimizer`: a learning rate for Adam (every stage but `scratch`) or an optimizer. With
    `label_smoothing` > 0 the cross-entropy is taken against smoothed targets."""
    loss = SmoothedSparseCrossentropy(label_smoothing) if label_smoothing else "sparse_categorical_crossentropy"
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        optimizer = keras.optimizers.Adam(optimizer)
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"], jit_compile=jit_compile)
    _make_training_state(model)


def _make_training_state(model: keras.Model) -> None:
    """Make the optimizer's slots and the accuracy's counters now, eagerly, as Keras does under a
    distribution strategy. Without one, Keras (TensorFlow) makes them inside the first training step's
    trace, and a tf.function that makes variables is traced twice: a second trace of a backbone's
    training step costs seconds on a CPU. The values are Keras's own (zero slots, counters reset)."""
    model.optimizer.build(model.trainable_variables)
    classes = model.outputs[0].shape[-1]
    model.compute_metrics(None, keras.ops.zeros((1,), "int32"), keras.ops.zeros((1, classes)))
    model.reset_metrics()


MODEL_REGISTRY = {"cnn": build_cnn, "resnet_scratch": build_resnet_scratch,
                  **{name: partial(build_transfer, name) for name in BACKBONES}}


def build_model(name: str, **kwargs):
    """Build a registered model by name: `cnn` (a keras.Model) or a backbone (a TransferModel)."""
    if name not in MODEL_REGISTRY:
        raise UserError(f"unknown model {name!r}; choose from {', '.join(MODEL_REGISTRY)}.")
    return MODEL_REGISTRY[name](**kwargs)
