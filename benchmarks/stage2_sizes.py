"""Stage 2 side by side at the evaluation size and at a smaller training size, measured in one run.

`make bench` (part `sizes`) fine-tunes one backbone online (the whole model every step, its default
depth) at each training side of the two schedules, validates at the evaluation side, and projects
the seed profile's stage 2 (8,000 training images, 10 epochs, 2,000 validation images per epoch)
from the images/s measured here. The second epoch at each side is timed, so tracing is not counted.
"""

from __future__ import annotations

import time
from pathlib import Path

import keras

from cifar10_transfer.backbones import preprocess_for
from cifar10_transfer.models import at_any_size, build_transfer, compile_classifier, unfreeze
from cifar10_transfer.pipelines import transfer_dataset
from cifar10_transfer.recipe import training_sizes
from cifar10_transfer.execution import precision_policy, resolve_precision
from cifar10_transfer.training import fit_stage

SEED_PROFILE = {"train": 8000, "val": 2000, "epochs": 10}  # the study's stage 2
FALLBACK_SIZE = 128  # compared where a backbone's default trains at the evaluation size


def compared_size(spec, image_size: int, setting: str | None) -> int | str:
    """The training size set beside `image_size`: `setting`, else the backbone's default where that
    differs from the evaluation size, else FALLBACK_SIZE (half of `image_size`, at least 32, where
    that is not below it)."""
    if setting:
        return int(setting) if setting.isdigit() else setting
    default = spec.stage2.image_size
    if default not in (None, image_size):
        return default
    return FALLBACK_SIZE if FALLBACK_SIZE < image_size else max(32, image_size // 2)


def side_by_side(spec, splits, image_size: int, weights: str, workdir: Path, size: int | str) -> dict:
    """Images/s of online stage 2 at every side of both schedules (the evaluation size and `size`),
    validation images/s at the evaluation size, and the seed profile's stage-2 seconds projected."""
    precision = resolve_precision("auto", spec)
    with precision_policy(precision):
        transfer = build_transfer(spec.name, image_size, weights, any_size=True)
        recipe = spec.stage2
        unfreeze(transfer, recipe, False)
        model = at_any_size(transfer)
        compile_classifier(model, recipe.learning_rate, False, recipe.label_smoothing)
    schedules = {str(image_size): training_sizes(None, image_size, SEED_PROFILE["epochs"]),
                 str(size): training_sizes(size, image_size, SEED_PROFILE["epochs"])}
    sides = sorted({side for sizes in schedules.values() for side in sizes})
    val = _images(spec, splits.x_val, splits.y_val, image_size)
    per_side = {}
    for side in sides:
        keras.utils.set_random_seed(0)
        train = _images(spec, splits.x_train, splits.y_train, side, shuffle=True, augment=True, seed=3)
        stage = fit_stage(model, train, _images(spec, splits.x_val[:32], splits.y_val[:32], image_size), 2,
                          workdir / f"side{side}", len(splits.y_train), verbose=0)  # a token validation: timed below
        per_side[side] = len(splits.y_train) / stage.history["epoch_seconds"][-1]
    model.predict(val, verbose=0)  # traced once, so that the timed pass measures inference alone
    started = time.perf_counter()
    transfer.model.predict(val, verbose=0)
    val_per_second = len(splits.y_val) / (time.perf_counter() - started)
    return {"precision": precision, "image_size": image_size, "size": size, "train_images": len(splits.y_train),
            "schedules": schedules,
            "images_per_second": {str(side): rate for side, rate in per_side.items()},
            "val_images_per_second": val_per_second,
            "seed_profile_seconds": {label: _projected(sizes, per_side, val_per_second)
                                     for label, sizes in schedules.items()}}


def _projected(sizes: list[int], per_side: dict, val_per_second: float) -> float:
    """The seed profile's stage 2 in seconds: each epoch's training images at its side's rate, and its
    validation images at the evaluation side's."""
    train = sum(SEED_PROFILE["train"] / per_side[side] for side in sizes)
    return train + len(sizes) * SEED_PROFILE["val"] / val_per_second


def _images(spec, x, y, side, **options):
    return transfer_dataset(x, y, side, 32, preprocess_for(spec.name), **options)


def side_by_side_markdown(label: str, entry: dict) -> str:
    """The README table: one column per schedule, rows of images/s, projected seconds and precision."""
    base, other = str(entry["image_size"]), str(entry["size"])
    seconds = entry["seed_profile_seconds"]

    def rate(schedule: str) -> str:
        sides = sorted(set(entry["schedules"][schedule]))
        return " / ".join(f"{entry['images_per_second'][str(side)]:.1f} at {side} px" for side in sides)

    rows = [("training images/s (per side)", rate(base), rate(other)),
            ("seed profile's stage 2, projected (8,000 images × 10 epochs, validation at "
             f"{base} px included)", f"{seconds[base]:,.0f} s", f"{seconds[other]:,.0f} s "
             f"({seconds[base] / seconds[other]:.1f}x faster)"),
            ("precision", entry["precision"], entry["precision"])]
    lines = [f"| {label}, stage 2 online | trained at {base} px | trained at {other} px |", "|---|---|---|"]
    return "\n".join(lines + [f"| {a} | {b} | {c} |" for a, b, c in rows])
