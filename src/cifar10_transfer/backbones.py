"""How each registered backbone is built, preprocessed and loaded with weights (Keras).

The registry entry (`registry.Backbone`) says what a backbone is; `BUILDERS` says how to make
it. A backbone is built without its ImageNet top, as a 4-D feature map.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras

from . import efficientnet_lite
from .errors import UserError
from .registry import BACKBONES, Backbone
from .weights import check_weights_file, imagenet_unavailable, keras_models_dir, lite0_checkpoint_path


@dataclass(frozen=True)
class Builder:
    """How one backbone is made."""

    build: Callable  # (image_size or None: any, pretrained: bool) -> keras.Model without top, 4-D feature map out
    preprocess: Callable  # float pixels in [0, 255] -> the backbone's input (a tf op)
    load_checkpoint: Callable | None = None  # (backbone, path) for a weights file that is not Keras's


def _keras_application(constructor: str) -> Callable:
    def build(image_size: int | None, pretrained: bool):
        return getattr(keras.applications, constructor)(
            include_top=False, weights="imagenet" if pretrained else None, input_shape=(image_size, image_size, 3))
    return build


def _resnet50_preprocess(images):
    return keras.applications.resnet50.preprocess_input(images)  # RGB to BGR, ImageNet mean subtracted


def _identity(images):
    return images  # the model rescales its own inputs (keras.applications EfficientNet)


def _lite0_backbone(image_size: int | None, pretrained: bool):
    full = efficientnet_lite.build(image_size, include_top=True)
    if pretrained:
        full.load_weights(efficientnet_lite.converted_weights(lite0_checkpoint_path(), keras_models_dir()))
    return keras.Model(full.input, full.get_layer("top_relu6").output, name="efficientnet_lite0")


def _lite0_checkpoint(backbone, path: Path) -> None:
    state = efficientnet_lite.read_torch_state_dict(path)
    for name, weights in efficientnet_lite.keras_weights_from_state_dict(state).items():
        if name != "predictions":
            backbone.get_layer(name).set_weights(weights)


BUILDERS: dict[str, Builder] = {
    "resnet50": Builder(_keras_application("ResNet50"), _resnet50_preprocess),
    "efficientnet_lite0": Builder(_lite0_backbone, efficientnet_lite.preprocess, _lite0_checkpoint),
    "efficientnetb0": Builder(_keras_application("EfficientNetB0"), _identity),
}
assert BUILDERS.keys() == BACKBONES.keys(), "every registry entry needs a builder"


def preprocess_for(backbone: str) -> Callable:
    """The preprocessing that backbone `backbone` (a registry name) expects of pixels in [0, 255]."""
    return BUILDERS[backbone].preprocess


def load_backbone(backbone: Backbone, image_size: int | None, weights: str):
    """Build `backbone` for `image_size` images (None: any side) with `weights`: "imagenet", "none"
    (random init) or a weights file path.

    A file is a Keras weights file (`save_backbone_weights`, or Keras's own .h5 download)
    or, where the builder has a `load_checkpoint`, a checkpoint in the source's own format.
    Raises UserError with the fix when the weights cannot be had.
    """
    builder = BUILDERS[backbone.name]
    if weights == "none":
        return builder.build(image_size, False)
    if weights == "imagenet":
        try:
            return builder.build(image_size, True)
        except UserError:
            raise
        except Exception as exc:  # a download fails in many ways offline
            raise UserError(imagenet_unavailable(backbone, type(exc).__name__)) from exc
    path = check_weights_file(weights)
    model = builder.build(image_size, False)
    if builder.load_checkpoint is not None and not path.name.endswith(".h5"):
        builder.load_checkpoint(model, path)
        return model
    try:
        with warnings.catch_warnings(record=True) as skipped:
            warnings.simplefilter("always")
            model.load_weights(path)
        if any("Skipping" in str(w.message) for w in skipped):
            raise ValueError("some layers found no weights in the file")
    except Exception as exc:  # a file of another architecture fails in layer-matching code
        raise UserError(f"{path.name} does not hold {backbone.label} (include_top=False) weights "
                        f"({type(exc).__name__}); save them with cifar10_transfer.save_backbone_weights.") from exc
    return model
