"""The recipes of stage 2 (fine-tuning) and of the ResNet from scratch: frozen values, resolved and validated once."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace

from .errors import UserError

SCHEDULES = ("plateau", "cosine")  # stage 2 learning-rate schedules (see training.stage2_schedule)
BATCHNORM_MODES = ("frozen", "train")  # stage 2 BatchNorm: ImageNet statistics kept, or adapted (models.unfreeze)
# The run config's override key of each field (`--set finetune_lr=3e-4`).
CONFIG_KEYS = {"layers": "finetune_layers", "learning_rate": "finetune_lr", "schedule": "finetune_schedule",
               "label_smoothing": "finetune_label_smoothing", "batchnorm": "finetune_batchnorm",
               "drop_path": "finetune_drop_path", "views": "finetune_views", "image_size": "finetune_image_size"}
# The run config's override key of each ScratchRecipe field that a run may change (`--set scratch_lr=0.1`).
SCRATCH_KEYS = {"width": "scratch_width", "learning_rate": "scratch_lr", "weight_decay": "scratch_weight_decay",
                "label_smoothing": "scratch_label_smoothing"}
SCRATCH_BATCH = 64  # the batch size at which ScratchRecipe.learning_rate applies as it stands
SIZE_STEP = 32  # a progressive schedule's sizes are multiples of this: the backbones' total stride, and few shapes
PROGRESSIVE = re.compile(r"^(\d+)-(\d+)$")  # "128-224": from 128 px in the first epoch up to 224 px in the last


@dataclass(frozen=True)
class Stage2Recipe:
    """How stage 2 trains a backbone: each backbone's registry entry holds its default."""

    layers: int  # the backbone's last N layers are unfrozen; every layer counts, as the study counted
    learning_rate: float  # Adam
    schedule: str = "plateau"  # one of SCHEDULES
    label_smoothing: float = 0.0  # share of each label spread evenly over the classes, [0, 1)
    batchnorm: str = "frozen"  # one of BATCHNORM_MODES
    drop_path: float = 0.0  # stochastic depth: block i of n is skipped with probability drop_path * i / n
    views: int = 0  # K cached augmented copies of each image after the frozen prefix; 0: online
    image_size: int | str | None = None  # training input side: None, the evaluation size (the config's
    # image_size); N pixels; or "LOW-HIGH", rising by epoch (see `training_sizes`). Validation, test and
    # predict always see the evaluation size.

    def to_dict(self) -> dict:
        """The recipe as results.json records it."""
        return asdict(self)

    @classmethod
    def from_entry(cls, entry: dict) -> Stage2Recipe:
        """The recipe a results entry's stage 2 ran with: its `stage2` dict or, in results written
        before that existed, its flat `finetune_*` keys (missing ones: the study's plateau rule,
        no smoothing, frozen BatchNorm, no stochastic depth, online)."""
        if "stage2" in entry:
            return cls(**entry["stage2"])
        flat = {field: entry.get(key) for field, key in CONFIG_KEYS.items()}
        return cls(**{field: value for field, value in flat.items() if value is not None})


@dataclass(frozen=True)
class ScratchRecipe:
    """How the `scratch` stage builds and trains its ResNet at 32x32; the defaults are the recipe.

    Its ideas are the DAWNBench ResNet-9's (Page 2018) and airbench's (Jordan 2024): flips and
    shifts, label smoothing, SGD with Nesterov momentum and weight decay, a rate that warms up
    and decays within one run. Its width, with the config's `scratch_epochs`, fits the time budget
    of 2 CPU cores (README: Method).
    """

    width: int = 16  # channels of the stem; its three stages have 2, 4 and 8 times as many (ResNet-9: 64)
    learning_rate: float = 0.05  # SGD's peak rate at batch size SCRATCH_BATCH, in proportion to the batch size
    momentum: float = 0.9  # Nesterov
    weight_decay: float = 5e-3  # each step w -= rate * weight_decay * w, outside the momentum (Keras's
    # decoupled form; PyTorch's 5e-4 with momentum 0.9 shrinks weights about as fast); not BatchNorm's or biases
    label_smoothing: float = 0.1  # share of each label spread evenly over the classes, [0, 1)
    warmup: float = 0.2  # share of the steps over which the rate rises linearly from 0; cosine decay to 0 after
    translate: int = 4  # pixels of reflect padding: random shifts of up to this many pixels, and random flips

    def to_dict(self) -> dict:
        """The recipe as results.json records it."""
        return asdict(self)

    def peak_rate(self, batch_size: int) -> float:
        """The peak learning rate at `batch_size`: linear in it, as SGD's rate scales with the batch."""
        return self.learning_rate * batch_size / SCRATCH_BATCH


def resolve(default, overrides: dict, keys: dict[str, str] = CONFIG_KEYS):
    """`default` (a recipe) with each field whose config key (`keys`: field to key) in `overrides`
    is not None replaced by it."""
    return replace(default, **{field: overrides[key] for field, key in keys.items() if overrides.get(key) is not None})


def validate_scratch(recipe: ScratchRecipe) -> ScratchRecipe:
    """`recipe` if its values make sense, else UserError naming the config key."""
    for field in ("width", "learning_rate"):
        if getattr(recipe, field) <= 0:
            raise UserError(f"config {SCRATCH_KEYS[field]}={getattr(recipe, field)} must be positive.")
    if recipe.weight_decay < 0:
        raise UserError(f"config scratch_weight_decay={recipe.weight_decay} must be 0 or more.")
    if not 0 <= recipe.label_smoothing < 1:
        raise UserError(f"config scratch_label_smoothing={recipe.label_smoothing} must lie in [0, 1).")
    return recipe


def training_sizes(size: int | str | None, image_size: int, epochs: int) -> list[int]:
    """Stage 2's training input side in each of its `epochs` epochs, for a recipe's `size` and the
    evaluation size `image_size`.

    None trains at `image_size`; an int at that size throughout; "LOW-HIGH" rises in a straight
    line from LOW in the first epoch to HIGH in the last, each epoch's size rounded to a multiple
    of SIZE_STEP (at least LOW, at most HIGH). The low sizes cost less (a convolution's work grows
    with the square of the side), and ending at the evaluation size lets the last epochs see
    images as the test does: FixRes (Touvron et al. 2019) found the train/test size gap costs
    accuracy unless the model is tuned at the test size at the end; EfficientNetV2 (Tan and Le
    2021) and fast DAWNBench entries raise the size during training in this way.
    """
    if size is None:
        return [image_size] * epochs
    if isinstance(size, int):
        return [size] * epochs
    low, high = (int(part) for part in PROGRESSIVE.match(size).groups())
    steps = [low + (high - low) * epoch / max(epochs - 1, 1) for epoch in range(epochs)]
    return [min(max(SIZE_STEP * round(step / SIZE_STEP), low), high) for step in steps]


def _check_size(size: int | str | None, image_size: int | None) -> None:
    """UserError unless `size` is None, a side of 32 px or more, or "LOW-HIGH" with 32 <= LOW < HIGH;
    given the evaluation `image_size`, no side may exceed it (training above it would cost more for
    nothing the test sees)."""
    if size is None:
        return
    low_high = PROGRESSIVE.match(size) if isinstance(size, str) else None
    sides = [size] if isinstance(size, int) else [int(side) for side in low_high.groups()] if low_high else []
    if not sides or sides[0] < 32 or (low_high and sides[0] >= sides[1]):
        raise UserError(f"config finetune_image_size={size!r} must be a side of at least 32 px, or LOW-HIGH "
                        "(e.g. 128-224) with 32 <= LOW < HIGH.")
    if image_size is not None and sides[-1] > image_size:
        raise UserError(f"config finetune_image_size={size} exceeds image_size={image_size}, the evaluation "
                        "size; train at image_size or below.")


def has_frozen_prefix(backbone, layers: int) -> bool:
    """Whether unfreezing the last `layers` layers of `backbone` (a registry entry) leaves a frozen
    layer after the input, whose output stage 2 can cache (see `cache.cut_backbone`)."""
    return layers < backbone.layers - 1


def validate(recipe: Stage2Recipe, backbone, fine_tuned: bool = True, image_size: int | None = None) -> Stage2Recipe:
    """`recipe` if it fits `backbone` (a registry entry) and, where given, the evaluation size
    `image_size`, else UserError naming the config key.

    The prefix-cache, training-size and stochastic-depth checks apply only where the stage is `fine_tuned`."""
    if recipe.layers <= 0 or recipe.learning_rate <= 0:
        key = "layers" if recipe.layers <= 0 else "learning_rate"
        raise UserError(f"config {CONFIG_KEYS[key]}={getattr(recipe, key)} must be positive.")
    if recipe.layers > backbone.layers:
        raise UserError(f"config finetune_layers={recipe.layers} is larger than the "
                        f"{backbone.layers} layers of the {backbone.label} backbone.")
    if recipe.views < 0:
        raise UserError(f"config finetune_views={recipe.views} must be 0 (online) or more.")
    for key in ("label_smoothing", "drop_path"):
        if not 0 <= getattr(recipe, key) < 1:
            raise UserError(f"config {CONFIG_KEYS[key]}={getattr(recipe, key)} must lie in [0, 1).")
    for key, choices in (("schedule", SCHEDULES), ("batchnorm", BATCHNORM_MODES)):
        if getattr(recipe, key) not in choices:
            raise UserError(f"config {CONFIG_KEYS[key]}={getattr(recipe, key)!r} is unknown; "
                            f"choose from {', '.join(choices)}.")
    if fine_tuned and recipe.views and not has_frozen_prefix(backbone, recipe.layers):
        raise UserError(f"config finetune_views={recipe.views} caches the frozen prefix of {backbone.label}, but "
                        f"finetune_layers={recipe.layers} unfreezes all of it; set finetune_views=0.")
    _check_size(recipe.image_size, image_size)
    if fine_tuned and image_size and has_frozen_prefix(backbone, recipe.layers) \
            and set(training_sizes(recipe.image_size, image_size, 2)) != {image_size}:
        raise UserError(f"config finetune_image_size={recipe.image_size} needs stage 2 to train the whole "
                        f"{backbone.label} online, but finetune_layers={recipe.layers} leaves a frozen prefix "
                        f"that is cached at image_size={image_size}; set finetune_image_size={image_size}.")
    if fine_tuned and recipe.drop_path and not backbone.stochastic_depth:
        raise UserError(f"config finetune_drop_path={recipe.drop_path} needs stochastic-depth blocks, which "
                        f"{backbone.label} lacks; set finetune_drop_path=0 or fine-tune another backbone.")
    return recipe


def depth_words(layers: int, backbone) -> str:
    """Stage 2's depth of the last `layers` layers: "last N layers", or "all N layers after the input"."""
    if has_frozen_prefix(backbone, layers):
        return f"last {layers} layers"
    return f"all {backbone.layers - 1} layers after the input"


def describe(recipe: Stage2Recipe, backbone) -> str:
    """The recipe in words for the README and the deck, e.g. "all 140 layers after the input at
    learning rate 0.0003, cosine decay to near 0, label smoothing 0.1; online: ..."."""
    schedule = {"plateau": ", halved when validation loss stalls", "cosine": ", cosine decay to near 0"}
    clauses = (f", label smoothing {recipe.label_smoothing:g}" if recipe.label_smoothing else "") \
        + (", BatchNorm trained" if recipe.batchnorm == "train" else "") \
        + (f", stochastic depth {recipe.drop_path:g}" if recipe.drop_path else "") + _size_clause(recipe.image_size)
    if not has_frozen_prefix(backbone, recipe.layers):
        way = "online: the whole backbone every step"
    elif recipe.views == 0:
        way = "online; validation and test through the cached frozen prefix"
    else:
        way = f"frozen prefix cached, {recipe.views} augmented cop{'y' if recipe.views == 1 else 'ies'} per image"
    return (f"{depth_words(recipe.layers, backbone)} at learning rate {recipe.learning_rate:g}"
            f"{schedule[recipe.schedule]}{clauses}; {way}")



def _size_clause(size: int | str | None) -> str:
    if size is None:
        return ""
    if isinstance(size, int):
        return f", trained at {size} px"
    return ", trained at {} px rising to {} px".format(*PROGRESSIVE.match(size).groups())
