"""Three ways to run the seed profile, projected from per-image costs measured in one run.

The ways: the study's (stage 1 end to end, stage 2 online), the previous default (stage 1
on cached pooled features, stage 2 online) and stage 2 on the cached frozen prefix with
K = 1, 2, 3 augmented views per training image (only at a depth that leaves a frozen
prefix: unfreezing the whole backbone leaves nothing to cache). Every pass they are made of
is timed once on the same small training set, after a warm-up pass that traces it, at the
precision `auto` picks; the seed profile's seconds are those per-image costs times its
image counts (8,000 training, 2,000 validation and 10,000 test images, 10 epochs per
stage). The accuracy part trains EfficientNet-Lite0 at the seed profile online and, where
the depth leaves a prefix, with two views, from one shared stage 1.
"""

from __future__ import annotations

import time
from pathlib import Path

import keras

from cifar10_transfer.backbones import preprocess_for
from cifar10_transfer.cache import CachedRows, FeatureCache, ViewSchedule, cut_backbone, pooled_output
from cifar10_transfer.config import make_config
from cifar10_transfer.models import build_cnn, build_transfer, compile_classifier, unfreeze
from cifar10_transfer.pipelines import array_dataset, cnn_dataset, transfer_dataset
from cifar10_transfer.recipe import Stage2Recipe, depth_words
from cifar10_transfer.registry import get_backbone
from cifar10_transfer.runs import run_all
from cifar10_transfer.stages import Run
from cifar10_transfer.execution import precision_policy, resolve_precision

SEED_PROFILE = {"train": 8_000, "val": 2_000, "test": 10_000, "epochs": 10}
VIEWS = (1, 2, 3)
ACCURACY_BACKBONE = "efficientnet_lite0"


def _seconds(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def _fit_seconds(model, data, callbacks=()) -> float:
    """Seconds of one epoch of `model.fit`, after a first epoch that traces the step."""
    model.fit(data, epochs=1, verbose=0, shuffle=False, callbacks=list(callbacks))
    return _seconds(lambda: model.fit(data, epochs=1, verbose=0, shuffle=False, callbacks=list(callbacks)))


def per_image_costs(spec, dataset, splits, image_size: int, weights: str, workdir: Path,
                    finetune_layers: int) -> dict:
    """Seconds per image of every pass the three ways are made of (see the module doc), with
    stage 2 unfreezing the last `finetune_layers` layers."""
    n, x, y = len(splits.y_train), splits.x_train, splits.y_train
    keras.utils.set_random_seed(0)
    cnn = build_cnn()
    compile_classifier(cnn, 1e-3, False)
    costs = {"cnn_train": _fit_seconds(cnn, cnn_dataset(x, y, 32, True, 3)) / n}
    precision = resolve_precision("auto", spec)
    with precision_policy(precision):
        transfer = build_transfer(spec.name, image_size, weights)

    def images(**options):
        return transfer_dataset(x, y, image_size, 32, preprocess_for(spec.name), seed=3, **options)

    transfer.features.predict(images(), verbose=0)
    costs["full_forward"] = _seconds(lambda: transfer.features.predict(images(), verbose=0)) / n
    compile_classifier(transfer.model, 1e-3, False)
    costs["end_to_end_train"] = _fit_seconds(transfer.model, images(shuffle=True)) / n
    features = transfer.features.predict(images(), verbose=0)
    compile_classifier(transfer.head, 1e-3, False)
    costs["head_train"] = _fit_seconds(transfer.head, array_dataset(features, y, 32, True, 3)) / n

    cut = cut_backbone(transfer, finetune_layers)
    cache = FeatureCache(workdir / "cache")

    def fill(view, tensors, rows=splits.train_index):
        return cache.fill(transfer, dataset, "train", rows, image_size, 32, tensors, view)

    if cut:  # before any training: the prefix passes run on the backbone's own weights
        # each pass is traced first on another view of the same images: the same batch shapes
        joint = {"pooled": pooled_output(transfer), **cut.tensors}
        fill("flip", joint)
        costs["prefix_and_pooled_forward"] = _seconds(lambda: fill("plain", joint)) / n
        fill("augment-3-0", cut.tensors)  # traces the prefix-only pass
        costs["view_forward"] = _seconds(lambda: fill("augment-3-1", cut.tensors)) / n
        views = [fill(f"augment-3-{k}", cut.tensors) for k in range(2)]
    unfreeze(transfer, Stage2Recipe(finetune_layers, spec.stage2.learning_rate), False)
    costs["online_train"] = _fit_seconds(transfer.model, images(shuffle=True, augment=True)) / n
    if cut is None:  # the whole backbone trains: only the online ways exist
        return {"seconds_per_image": costs, "precision": precision, "images": n, "cut_tensors": None,
                "finetune_layers": finetune_layers}
    names, shapes = list(cut.tensors), {name: tuple(t.shape[1:]) for name, t in cut.tensors.items()}
    compile_classifier(cut.suffix, spec.stage2.learning_rate, False)
    rows = CachedRows(views, names, splits.train_index, y, 32, True, 3)
    costs["suffix_train"] = _fit_seconds(cut.suffix, rows.dataset(shapes), [ViewSchedule(rows)]) / n
    plain = CachedRows([fill("plain", joint)], names, splits.train_index, y, 32).dataset(shapes)
    cut.suffix.predict(plain, verbose=0)
    costs["suffix_forward"] = _seconds(lambda: cut.suffix.predict(plain, verbose=0)) / n
    return {"seconds_per_image": costs, "precision": precision, "images": n, "cut_tensors": shapes,
            "finetune_layers": finetune_layers}


def project(costs: dict) -> dict:
    """Seed-profile seconds per stage for each way, from `per_image_costs` (the views ways
    only where it measured a frozen prefix)."""
    c, p = costs["seconds_per_image"], SEED_PROFILE
    train, val, test, epochs = p["train"], p["val"], p["test"], p["epochs"]
    cnn = epochs * train * c["cnn_train"]
    online = epochs * (train * c["online_train"] + val * c["full_forward"]) + test * c["full_forward"]
    head = epochs * train * c["head_train"]
    ways = {
        "study": (epochs * (train * c["end_to_end_train"] + val * c["full_forward"]) + test * c["full_forward"],
                  online),
        "cached_head_online": ((train + val + test) * c["full_forward"] + head, online),
    }
    for k in VIEWS if "suffix_train" in c else ():
        stage1 = train * c["full_forward"] + (val + test) * c["prefix_and_pooled_forward"] + head
        stage2 = (k * train * c["view_forward"] + epochs * (train * c["suffix_train"] + val * c["suffix_forward"])
                  + test * c["suffix_forward"])
        ways[f"views_{k}"] = (stage1, stage2)
    study_total = cnn + sum(ways["study"])
    return {way: {"stage1": s1, "stage2": s2, "total": cnn + s1 + s2, "cnn": cnn,
                  "fraction_of_study": (cnn + s1 + s2) / study_total} for way, (s1, s2) in ways.items()}


def accuracy(dataset, weights: str, workdir: Path, profile: str = "seed", overrides: dict | None = None,
             views: tuple[int, ...] = (2, 0)) -> dict:
    """EfficientNet-Lite0 fine-tuned at `profile` with each number of views (0: online; views
    need a depth, `overrides["finetune_layers"]` or the default, that leaves a frozen prefix).

    One feature cache serves every run, so stage 1's features are computed once; the head
    of every run is the same (same seed, same features), only stage 2 differs.
    """
    cache, out = FeatureCache(workdir / "cache"), {"profile": profile}
    for k in views:
        config = make_config(profile, {**(overrides or {}), "models": f"{ACCURACY_BACKBONE}_finetuned",
                                       "finetune_views": k})
        models = run_all(Run(config, dataset, weights, workdir / f"views_{k}", profile, cache=cache,
                             save_models=False))["models"]
        tuned, head = models[f"{ACCURACY_BACKBONE}_finetuned"], models[f"{ACCURACY_BACKBONE}_head"]
        recipe = Stage2Recipe.from_entry(tuned)
        out[str(k)] = {"test_accuracy": tuned["test_accuracy"], "val_accuracy": tuned["val_accuracy"],
                       "best_val_accuracy": max(tuned["history"]["val_accuracy"]),
                       "stage2_seconds": tuned["seconds"], "head_test_accuracy": head["test_accuracy"],
                       "finetune_layers": recipe.layers, "finetune_lr": recipe.learning_rate,
                       "finetune_schedule": recipe.schedule, "finetune_label_smoothing": recipe.label_smoothing}
    return out


WAY_LABELS = {"study": "study's way: stage 1 end to end, stage 2 online",
              "cached_head_online": "stage 1 on cached features, stage 2 online (the previous default)",
              **{f"views_{k}": f"stage 2 on the cached prefix, K = {k}" for k in VIEWS}}


def projection_markdown(name_label: str, entry: dict) -> str:
    """One backbone's three-way table (seconds projected to the seed profile)."""
    lines = [f"| {name_label}: way | stage 1 | stage 2 | seed profile with the CNN | vs study's way |",
             "|---|---|---|---|---|"]
    for way, p in entry["projection"].items():
        lines.append(f"| {WAY_LABELS[way]} | {p['stage1'] / 60:,.1f} min | {p['stage2'] / 60:,.1f} min | "
                     f"{p['total'] / 60:,.1f} min | {p['fraction_of_study']:.2f}x |")
    return "\n".join(lines)


def accuracy_markdown(result: dict) -> str:
    """The online against views accuracy comparison as a table."""
    tuned = result.get("0") or next(r for k, r in result.items() if k.isdigit())
    recorded = Stage2Recipe.from_entry(tuned)  # these runs keep BatchNorm frozen, no stochastic depth
    recipe = (f"{depth_words(recorded.layers, get_backbone(ACCURACY_BACKBONE))} at {recorded.learning_rate:g}, "
              f"{recorded.schedule} schedule, label smoothing {recorded.label_smoothing:g}")
    lines = [f"| EfficientNet-Lite0 stage 2 ({result['profile']} profile; {recipe}) | test accuracy "
             "| best val accuracy |", "|---|---|---|"]
    for k, r in ((k, r) for k, r in result.items() if k.isdigit()):
        way = "online (finetune_views=0)" if k == "0" else f"cached prefix, finetune_views={k}"
        lines.append(f"| {way} | {100 * r['test_accuracy']:.1f}% | {100 * r['best_val_accuracy']:.1f}% |")
    if "0" in result and "2" in result:
        gap = 100 * (result["2"]["test_accuracy"] - result["0"]["test_accuracy"])
        lines.append(f"\nTwo cached views against online stage 2: {gap:+.1f} points of test accuracy, "
                     "from the same stage 1.")
    return "\n".join(lines)

