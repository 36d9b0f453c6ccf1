"""Run configuration: one dataclass, three profiles, typed `key=value` overrides.

The defaults are the study's settings (the `seed` profile). Every override must
keep the type of the field it replaces, and unknown keys are refused, so a typo
never silently trains the wrong experiment.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass

from .errors import UserError
from .recipe import (CONFIG_KEYS, SCRATCH_KEYS, ScratchRecipe, Stage2Recipe, resolve, training_sizes, validate,
                     validate_scratch)
from .registry import (BACKBONES, LONG_KINDS, SCRATCH_STAGES, STAGE_KINDS, get_backbone, parse_stage, stage_name,
                       stage_names)

MODEL_NAMES = stage_names()  # cnn, scratch, then <backbone>_head and <backbone>_finetuned for each backbone
HEAD_MODES = ("cached", "end_to_end")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
SWITCHES = ("auto", "on", "off")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
CURVE_KINDS = (*SCRATCH_STAGES, *STAGE_KINDS)  # what curve_models may name: cnn, scratch, head, finetuned


@dataclass(frozen=True)
class RunConfig:
    """Every setting of a run. Defaults reproduce the study (the `seed` profile)."""

    # data
    train_size: int = 10_000  # images drawn (stratified, seeded) from the training set
    val_fraction: float = 0.2  # share of train_size held out for validation
    test_size: int | None = None  # None: the whole test set
    seed: int = 3  # drives the subset, the split, shuffling and weight init
    seeds: str = ""  # comma-separated seeds, two or more, each trained as a run of its own with that
    # `seed`, results summarised over them; empty: one run with `seed`
    long_stage_seeds: int | None = None  # under `seeds`, the long stages (the ResNet from scratch and every
    # fine-tuned stage, tens of minutes a seed on a CPU) train at only the first N seeds; None: at every seed
    # inputs
    image_size: int = 224  # backbone input side in pixels; the CNN always sees 32x32
    batch_size: int = 64  # global batch size, split across replicas
    augment: bool = True  # flip, crop/zoom, brightness, contrast for the backbone stages; flips and shifts for
    # the scratch stage (the baseline CNN trains without, as in the study)
    test_time_flip: bool = False  # evaluation of every stage: each val and test image's class
    # probabilities averaged with its mirror image's (twice the inference); the study used single views
    # epochs per stage
    cnn_epochs: int = 10
    head_epochs: int = 10
    finetune_epochs: int = 10
    scratch_epochs: int = 40  # the ResNet from scratch: 30 beat 20, then 40 beat 30, on validation over three
    # seeds within the budget of 20 minutes on 2 CPU cores, under rules committed first (research/README.md)
    # transfer learning
    finetune_layers: int | None = None  # last N backbone layers unfrozen in stage 2 (BatchNorm as
    # finetune_batchnorm says); None: each backbone's registry default (ResNet50: 30, the study's)
    head_lr: float = 1e-3  # Adam learning rate of stage 1
    finetune_lr: float | None = None  # Adam learning rate of stage 2; None: the backbone's default
    # (ResNet50: 1e-5, the study's)
    finetune_views: int | None = None  # stage 2 on the cached frozen prefix: K seeded augmented copies
    # per training image, epoch e reads copy e mod K; 0: online, the whole backbone every step (the
    # study's way); None: each backbone's default (ResNet50: 2, EfficientNet-Lite0: 0)
    finetune_schedule: str | None = None  # stage 2 learning rate per epoch: plateau (halve it after 2
    # epochs without a lower val_loss, the study's) or cosine (from finetune_lr down to near 0 at the
    # last epoch); None: the backbone's default
    finetune_label_smoothing: float | None = None  # stage 2 loss: share of each label spread evenly
    # over the 10 classes, 0 to below 1; None: the backbone's default (ResNet50: 0, the study's)
    finetune_batchnorm: str | None = None  # stage 2 BatchNorm in the unfrozen layers: frozen (ImageNet
    # statistics, the study's and keras-io's way) or train (batch statistics while training, moving
    # statistics and scale/offset adapted to the upsampled images); None: the backbone's default
    finetune_drop_path: float | None = None  # stage 2 stochastic depth, 0 to below 1: a training image
    # skips residual block i of n with probability finetune_drop_path * i / n; only backbones built
    # with it (EfficientNet-Lite0); None: the backbone's default (0: none)
    finetune_image_size: int | str | None = None  # stage 2's training input side, apart from image_size
    # (validation, test and predict): N pixels, or LOW-HIGH rising by epoch from LOW to HIGH (e.g. 128-224);
    # only where stage 2 trains the whole backbone online; None: the backbone's default, where that is
    # none or above image_size, image_size itself
    # the ResNet from scratch; None: the default of recipe.ScratchRecipe, where each is described
    scratch_width: int | None = None  # channels of its stem; its stages have 2, 4 and 8 times as many
    scratch_lr: float | None = None  # SGD's peak learning rate at batch size 64, in proportion to batch_size
    scratch_weight_decay: float | None = None  # decoupled weight decay per unit of learning rate, 0 or more
    scratch_label_smoothing: float | None = None  # 0 to below 1
    head_mode: str = "cached"  # cached: backbone features once; end_to_end: the study's way
    cache_flips: bool = False  # cached mode: also cache features of horizontally flipped images
    # execution
    precision: str = "auto"  # auto | float32 | mixed_float16 | mixed_bfloat16
    jit_compile: str = "auto"  # XLA: auto (on for GPUs unless deterministic) | on | off
    strategy: str = "auto"  # tf.distribute: auto | default | mirrored | multi_worker
    deterministic: bool = True  # TensorFlow op determinism (identical CPU runs); excludes XLA
    # comma-separated stages (MODEL_NAMES): the study's three, the ResNet from scratch and EfficientNet-Lite0's
    # two, whose weights install with pip, so that a machine without internet still runs all but ResNet50's
    models: str = "cnn,scratch,resnet50_head,resnet50_finetuned,efficientnet_lite0_head,efficientnet_lite0_finetuned"
    # learning curves and input resolution (notebook 03)
    curve_backbone: str = "efficientnet_lite0"  # its head and fine-tuned stage are the curves' transfer lines;
    # needs ImageNet weights
    curve_sizes: str = "500,1000,2000,5000,10000,20000,50000"  # training-set sizes (train + val images)
    curve_seeds: int = 3  # seeds seed, seed+1, ... per size; each size is a stratified draw per seed
    # sizes above this take one seed (`seed`): they cost the most and their seeds spread the least; None: none
    curve_single_seed_above: int | None = 10_000
    curve_models: str = "cnn,scratch,head,finetuned"  # the curves' lines (CURVE_KINDS): the two stages from
    # scratch, and curve_backbone's head and fine-tuned stage (stage 2 with recipe(curve_backbone))
    curve_finetune_max_size: int | None = None  # fine-tune only at curve sizes up to this; None: at every size
    resolution_sizes: str = "64,96,128,160,224"  # backbone input sides for the resolution-cost study

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def model_list(self) -> list[str]:
        """The selected stages in run order (registry order); <b>_finetuned implies <b>_head."""
        chosen = {name.strip() for name in self.models.split(",") if name.strip()}
        chosen |= {name.replace("_finetuned", "_head") for name in chosen if name.endswith("_finetuned")}
        return [name for name in MODEL_NAMES if name in chosen]

    @property
    def seed_list(self) -> list[int]:
        """The seeds a run trains, in the order given: `seeds`, or `seed` alone where it is empty."""
        return [int(part) for part in self.seeds.split(",")] if self.seeds.strip() else [self.seed]

    def stage_seeds(self, name: str) -> list[int]:
        """The seeds stage `name` trains at: `seed_list`, or its first `long_stage_seeds` for a long stage."""
        long = parse_stage(name)[1] in LONG_KINDS and self.long_stage_seeds is not None
        return self.seed_list[:self.long_stage_seeds] if long else self.seed_list

    @property
    def curve_size_list(self) -> list[int]:
        """`curve_sizes` as integers, ascending."""
        return sorted(int(size) for size in self.curve_sizes.split(","))

    def curve_seed_list(self, size: int) -> list[int]:
        """The seeds of the curve points at `size`: `curve_seeds` of them from `seed`, one above
        `curve_single_seed_above`."""
        one = self.curve_single_seed_above is not None and size > self.curve_single_seed_above
        return list(range(self.seed, self.seed + (1 if one else self.curve_seeds)))

    @property
    def curve_stage_list(self) -> list[str]:
        """The stages of `curve_models` in run order, `head` and `finetuned` those of `curve_backbone`."""
        kinds = {kind.strip() for kind in self.curve_models.split(",") if kind.strip()}
        chosen = {kind if kind in SCRATCH_STAGES else stage_name(self.curve_backbone, kind) for kind in kinds}
        return [name for name in MODEL_NAMES if name in chosen]

    @property
    def resolution_size_list(self) -> list[int]:
        """`resolution_sizes` as integers, ascending."""
        return sorted(int(size) for size in self.resolution_sizes.split(","))

    @property
    def backbones(self) -> list[str]:
        """The registry names of the backbones that the selected stages use, in run order."""
        found = (parse_stage(name)[0] for name in self.model_list)
        return list(dict.fromkeys(b.name for b in found if b is not None))

    def recipe(self, backbone: str) -> Stage2Recipe:
        """Stage 2's recipe for `backbone` (a registry name): its registry default, with each
        `finetune_*` key that this config sets (not None) in its place. A default training size above
        this run's `image_size` (one chosen for 224 px, in a 64 px run) gives way to `image_size`."""
        recipe = resolve(get_backbone(backbone).stage2, {key: getattr(self, key) for key in CONFIG_KEYS.values()})
        if self.finetune_image_size is None and not _fits(recipe.image_size, self.image_size):
            recipe = dataclasses.replace(recipe, image_size=None)
        return recipe

    def scratch_recipe(self) -> ScratchRecipe:
        """The scratch stage's recipe: its defaults, with each `scratch_*` key that this config sets (not None)."""
        return resolve(ScratchRecipe(), {key: getattr(self, key) for key in SCRATCH_KEYS.values()}, SCRATCH_KEYS)

    def to_dict(self) -> dict:
        """The configuration as plain JSON-ready values."""
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "RunConfig":
        """A copy with `changes` applied and validated."""
        return dataclasses.replace(self, **changes)


PROFILES: dict[str, dict] = {
    "seed": {},
    # A few minutes end to end on 2 CPU cores: tiny subset, small inputs, one epoch per stage. The
    # curves take one seed, so their 500-image points are the table's own runs and only the 200-image
    # ones train, and they fine-tune at that smaller size only (a fine-tuned point costs about three of
    # the others). Averaging over seeds is tested on synthetic data (tests/test_curves.py).
    "smoke": dict(train_size=500, test_size=500, image_size=64, batch_size=32,
                  cnn_epochs=1, head_epochs=1, finetune_epochs=1, scratch_epochs=1,
                  curve_sizes="200,500", curve_seeds=1, curve_finetune_max_size=200, resolution_sizes="32,64"),
    # 40,000 training images: 12 epochs of the ResNet from scratch, within issue #29's budget of 60 minutes
    # on 2 CPU cores (measured: research/results/scratch_full.json)
    "full": dict(train_size=50_000, scratch_epochs=12),
}


def _validate(config: RunConfig) -> None:
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if not _has_type(value, _field_types()[field.name]):
            raise UserError(f"config {field.name}={value!r} has the wrong type; "
                            f"expected {_type_name(_field_types()[field.name])}.")
    positive = ["train_size", "image_size", "batch_size", "cnn_epochs", "head_epochs", "finetune_epochs",
                "scratch_epochs", "head_lr", "test_size"]
    for name in positive:
        if getattr(config, name) is not None and getattr(config, name) <= 0:
            raise UserError(f"config {name}={getattr(config, name)} must be positive.")
    if not 0 < config.val_fraction < 1:
        raise UserError(f"config val_fraction={config.val_fraction} must lie strictly between 0 and 1.")
    if config.image_size < 32:
        raise UserError(f"config image_size={config.image_size} is too small; backbones need at least 32.")
    if config.jit_compile == "on" and config.deterministic:
        raise UserError("config jit_compile=on needs deterministic=false: Keras turns XLA off under "
                        "TensorFlow op determinism.")
    _check_choice("head_mode", config.head_mode, HEAD_MODES)
    _check_choice("precision", config.precision, PRECISIONS)
    _check_choice("jit_compile", config.jit_compile, SWITCHES)
    _check_choice("strategy", config.strategy, STRATEGIES)
    names = [name.strip() for name in config.models.split(",") if name.strip()]
    if not names:
        raise UserError(f"config models is empty; choose from {', '.join(MODEL_NAMES)}.")
    for name in names:
        _check_choice("models", name, MODEL_NAMES)
    _check_choice("curve_backbone", config.curve_backbone, tuple(BACKBONES))
    for key in ("curve_sizes", "resolution_sizes"):
        try:
            values = [int(part) for part in getattr(config, key).split(",")]
        except ValueError:
            raise UserError(f"config {key}={getattr(config, key)!r} must be comma-separated whole numbers.") from None
        if min(values) < (10 if key == "curve_sizes" else 32):
            raise UserError(f"config {key}={getattr(config, key)!r} holds a value that is too small.")
    if config.curve_seeds <= 0:
        raise UserError(f"config curve_seeds={config.curve_seeds} must be positive.")
    _validate_seeds(config.seeds, config.long_stage_seeds)
    _validate_curve_models(config)
    validate_scratch(config.scratch_recipe())
    for backbone in config.backbones:  # each selected backbone's stage-2 recipe, resolved and checked once
        validate(config.recipe(backbone), get_backbone(backbone), f"{backbone}_finetuned" in names, config.image_size)


def _fits(size: int | str | None, image_size: int) -> bool:
    """Whether a stage-2 training size never exceeds the evaluation size `image_size`."""
    return size is None or max(training_sizes(size, image_size, 2)) <= image_size


def _validate_seeds(seeds: str, long_stage_seeds: int | None) -> None:
    if long_stage_seeds is not None and not 2 <= long_stage_seeds <= len(seeds.split(",")):
        raise UserError(f"config long_stage_seeds={long_stage_seeds} must lie between 2 and the number of "
                        f"seeds in seeds={seeds!r}; set seeds first, or leave it unset.")
    if not seeds.strip():
        return
    try:
        values = [int(part) for part in seeds.split(",")]
    except ValueError:
        raise UserError(f"config seeds={seeds!r} must be comma-separated whole numbers, e.g. 3,4,5.") from None
    if min(values) < 0 or len(set(values)) != len(values):
        raise UserError(f"config seeds={seeds!r} must hold distinct seeds of 0 or more.")
    if len(values) < 2:
        raise UserError(f"config seeds={seeds!r} names one seed; set seed={values[0]} instead and leave seeds empty.")


def _validate_curve_models(config: RunConfig) -> None:
    kinds = [kind.strip() for kind in config.curve_models.split(",") if kind.strip()]
    if not kinds:
        raise UserError(f"config curve_models is empty; choose from {', '.join(CURVE_KINDS)}.")
    for kind in kinds:
        _check_choice("curve_models", kind, CURVE_KINDS)
    for key in ("curve_finetune_max_size", "curve_single_seed_above"):
        if getattr(config, key) is not None and getattr(config, key) <= 0:
            raise UserError(f"config {key}={getattr(config, key)} must be positive.")


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"config {key}={value!r} is unknown; choose from {', '.join(choices)}.")


def _field_types() -> dict[str, object]:
    return typing.get_type_hints(RunConfig)


def _has_type(value: object, expected: object) -> bool:
    if isinstance(expected, types.UnionType):
        return any(_has_type(value, option) for option in typing.get_args(expected))
    if expected is type(None):
        return value is None
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def _type_name(expected: object) -> str:
    if isinstance(expected, types.UnionType):
        return " or ".join(_type_name(option) for option in typing.get_args(expected))
    return "none" if expected is type(None) else expected.__name__


def _parse_value(key: str, text: str, expected: object) -> object:
    """Parse `text` into the field's type; JSON literals, with bare words as strings."""
    if isinstance(expected, types.UnionType) and type(None) in typing.get_args(expected) \
            and text.lower() in ("none", "all", "default"):
        return None
    try:
        value = json.loads(text.lower() if text.lower() in ("true", "false") else text)
    except json.JSONDecodeError:
        value = text
    if float in typing.get_args(expected) + (expected,) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not _has_type(value, expected):
        raise UserError(f"--set {key}={text}: expected {_type_name(expected)}.")
    return value


def parse_overrides(pairs: list[str] | None) -> dict:
    """Turn `["key=value", ...]` into typed overrides; unknown keys and bad types raise UserError."""
    types_by_key = _field_types()
    overrides = {}
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep:
            raise UserError(f"--set {pair!r} is not key=value.")
        if key not in types_by_key:
            raise UserError(f"--set {key}: unknown key; known keys: {', '.join(types_by_key)}.")
        overrides[key] = _parse_value(key, text.strip(), types_by_key[key])
    return overrides


def make_config(profile: str = "seed", overrides: list[str] | dict | None = None) -> RunConfig:
    """Build the validated config of `profile` with `overrides` (strings `k=v` or a dict) on top."""
    if profile not in PROFILES:
        raise UserError(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}.")
    if isinstance(overrides, dict):
        changes = dict(overrides)
        known = _field_types()
        for key in changes:
            if key not in known:
                raise UserError(f"config {key}: unknown key; known keys: {', '.join(known)}.")
    else:
        changes = parse_overrides(overrides)
    return RunConfig(**{**PROFILES[profile], **changes})
