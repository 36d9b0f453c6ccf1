"""The stages of a run (CNN, ResNet from scratch, head, fine-tuning) as functions over one run record.

`python -m cifar10_transfer train`, notebook 02, the learning curves and the tests all call `run_stage`, directly
or through `runs.run_all`. Each stage trains in its own directory under `workdir/stages/` (under `config.seeds`,
each seed's under `workdir/seeds/seed<s>/stages/`), so an interrupted run continues where it stopped. Stages are
`cnn`, `scratch`, `<backbone>_head` and `<backbone>_finetuned` for any backbone of the registry.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path

import numpy as np

from .cache import BackboneCut, CachedRows, FeatureCache, SuffixValidation, ViewSchedule, cut_backbone
from .config import RunConfig
from .data import Dataset
from .evaluation import evaluate_once, evaluate_predictions, evaluation_key, view_probabilities
from .models import (TransferModel, at_any_size, build_cnn, build_resnet_scratch, build_transfer, compile_classifier,
                     unfreeze)
from .pipelines import Splits, array_dataset, cnn_dataset, split_dataset, transfer_dataset
from .predict import save_for_prediction
from .provenance import weights_label
from .publish import MODELS_DIR, run_started
from .recipe import training_sizes
from .registry import get_backbone, parse_stage, stage_name
from .execution import make_strategy, precision_choice, precision_policy, resolve_jit, seed_everything
from .training import ProgressLines, StageResult, fit_stage, predict, scratch_optimizer, stage2_schedule
from .weights import weights_file_identity

CNN_LEARNING_RATE = 1e-3  # Keras's Adam default, which the study used for the CNN


@dataclass
class ModelRun:
    """One trained model: its stage result, size, precision and test predictions."""

    name: str
    stage: StageResult
    params: int
    trainable_params: int
    precision: str
    probabilities: np.ndarray  # test-set class probabilities, N x 10, as the run evaluates them
    splits: Splits  # the split of the run that trained it, whose test images `probabilities` describe
    eval_seconds: float  # predicting the test (under test_time_flip also val) images and scoring them
    metrics: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)  # backbone, weights and stage-2 recipe of transfer stages, the
    # scratch stage's recipe, and the single-view accuracies beside the mirror-averaged ones under `test_time_flip`

    def summary(self) -> dict:
        """The model's entry in results.json."""
        history = self.stage.history
        return {**{key: self.metrics[key] for key in ("test_accuracy", "test_loss")},
                "train_accuracy": history["accuracy"][-1], "val_accuracy": history["val_accuracy"][-1],
                "params": self.params, "trainable_params": self.trainable_params,
                "epochs": self.stage.epochs, "seconds": self.stage.seconds, "eval_seconds": self.eval_seconds,
                "images_per_second": self.stage.images_per_second, "precision": self.precision,
                "history": {key: history[key] for key in
                            ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")},
                **self.details,
                **{key: self.metrics[key] for key in ("per_class", "confusion_matrix", "top_confusions")}}


@dataclass(eq=False)
class Run:
    """The record every stage function reads: config, data, weights, working directory, cache.

    Making one does no work: the split is drawn on first use, and the process-wide state (the
    distribution strategy, op determinism) is set when the first stage starts. `weights` is
    "imagenet" (each backbone's own source), "none" (random init: not transfer learning) or a
    weights file. Share one `cache` between runs on the same data (learning curves) so that no
    image passes a backbone twice; `save_models` saves each stage for `predict`.
    """

    config: RunConfig
    dataset: Dataset
    weights: str = "imagenet"
    workdir: Path = Path("run")
    profile: str = "seed"
    strategy_given: object = None  # a tf.distribute strategy made before other TensorFlow work
    cache: FeatureCache | None = None
    save_models: bool = True
    started: datetime | None = None  # None: the run directory's first start (publish.run_started), else now
    models: dict[str, ModelRun] = field(default_factory=dict)  # the stages trained so far
    transfers: dict[str, TransferModel] = field(default_factory=dict)  # per backbone, built by stage 1
    cuts: dict[str, BackboneCut | None] = field(default_factory=dict)  # per backbone, before stage 2's layers

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.started = self.started or run_started(self.workdir) or datetime.now(timezone.utc)
        self.cache = self.cache or FeatureCache(self.workdir / "cache")

    @cached_property
    def splits(self) -> Splits:
        """The seeded, stratified train/val/test split of this run."""
        return split_dataset(self.dataset, self.config)

    @cached_property
    def strategy(self):
        return self.strategy_given or make_strategy(self.config.strategy)

    @cached_property
    def jit_compile(self) -> bool:
        return resolve_jit(self.config.jit_compile, self.config.deterministic)

    def stage_dir(self, name: str) -> Path:
        return self.workdir / "stages" / name


def _count(weights) -> int:
    return int(sum(np.prod(w.shape) for w in weights))


def _accuracy(labels: np.ndarray, probabilities: np.ndarray) -> float:
    return float(np.mean(probabilities.argmax(axis=1) == labels))


def _split(run: Run, split: str) -> tuple[np.ndarray, np.ndarray, str, np.ndarray]:
    """Images, labels, dataset part and dataset indices of split "val" or "test"."""
    s = run.splits
    return (s.x_val, s.y_val, "train", s.val_index) if split == "val" else (s.x_test, s.y_test, "test", s.test_index)


def _images(run: Run, transfer: TransferModel, x, y, shuffle=False, augment=False, flip=False, sizes=None):
    c = run.config
    return transfer_dataset(x, y, sizes or c.image_size, c.batch_size, transfer.preprocess, shuffle=shuffle,
                            augment=augment, seed=c.seed, flip=flip)


def _stage2_sizes(run: Run, backbone: str) -> int | list[int]:
    """The side stage 2 of `backbone` trains at: the evaluation size or another one throughout (an
    int), or one per epoch (a list); the evaluation size where this run does not fine-tune it."""
    c = run.config
    if stage_name(backbone, "finetuned") not in c.model_list:
        return c.image_size
    sizes = training_sizes(c.recipe(backbone).image_size, c.image_size, c.finetune_epochs)
    return sizes[0] if len(set(sizes)) == 1 else sizes


def _evaluated(run: Run, predict_split) -> tuple[np.ndarray, dict]:
    """Test probabilities as this run evaluates them, and with `test_time_flip` what the mirror
    view changed. `predict_split(split, mirrored)` gives a model's probabilities of the "val" or
    "test" images; under the flip each image's are the mean of its own and its mirror image's."""
    flip, s = run.config.test_time_flip, run.splits
    test, single_test = view_probabilities(lambda mirrored: predict_split("test", mirrored), flip)
    if not flip:
        return test, {}
    val, single_val = view_probabilities(lambda mirrored: predict_split("val", mirrored), flip)
    return test, {"test_time_flip": {
        "val_accuracy": _accuracy(s.y_val, val), "single_view_val_accuracy": _accuracy(s.y_val, single_val),
        "single_view_test_accuracy": _accuracy(s.y_test, single_test)}}


def _finish(run: Run, name: str, model, stage: StageResult, precision: tuple[str, str], predict_split,
            details: dict | None = None) -> ModelRun:
    """Save a trained stage for `predict`, evaluate it on the test set and record it in `run`;
    `precision` is the (policy, reason) it trained under (`execution.precision_choice`)."""
    (precision, reason), backbone = precision, (details or {}).get("backbone")
    details = {**(details or {}), "precision_reason": reason}
    if run.save_models:
        save_for_prediction(model, run.workdir / MODELS_DIR, name, run.splits.class_names,
                            run.config.image_size if backbone else None, backbone, run.config.test_time_flip)
    key = evaluation_key(run.config.to_dict(), stage.weights_sha256, run.splits.x_test, run.splits.x_val)
    probabilities, flip, seconds = evaluate_once(run.stage_dir(name), key, lambda: _evaluated(run, predict_split))
    metrics = evaluate_predictions(run.splits.y_test, probabilities, run.splits.class_names)
    model_run = ModelRun(name, stage, _count(model.weights), _count(model.trainable_weights), precision,
                         probabilities, run.splits, seconds, metrics, {**details, **flip})
    run.models[name] = model_run
    return model_run


def _model_predictions(run: Run, model, inputs, name: str):
    """`predict_split(split, mirrored)` of `model` over `inputs(x, y, index, part, mirrored)`."""
    def predict_split(split, mirrored):
        x, y, part, index = _split(run, split)
        progress = ProgressLines(f"{name} {split}{' mirrored' if mirrored else ''}", len(y), run.config.batch_size)
        return predict(model, inputs(x, y, index, part, mirrored), progress)
    return predict_split


def train_cnn(run: Run) -> ModelRun:
    """Train the baseline CNN from scratch on 32x32 images (Adam, default learning rate, no augmentation)."""
    return _train_at_32(run, "cnn", lambda: build_cnn(len(run.splits.class_names)), lambda steps: CNN_LEARNING_RATE,
                        run.config.cnn_epochs)


def train_scratch(run: Run) -> ModelRun:
    """Train the ResNet from scratch on 32x32 images with `config.scratch_recipe()`, which its results
    entry records: flips and shifts (when `augment`), label smoothing, SGD, warm-up and cosine decay."""
    config, recipe = run.config, run.config.scratch_recipe()
    return _train_at_32(run, "scratch", lambda: build_resnet_scratch(recipe.width, len(run.splits.class_names)),
                        lambda steps: scratch_optimizer(recipe, config.batch_size, config.scratch_epochs * steps),
                        config.scratch_epochs, recipe.translate if config.augment else 0, recipe.label_smoothing,
                        {"recipe": recipe.to_dict()})


def _train_at_32(run: Run, name: str, build, optimizer, epochs: int, translate: int = 0,
                 label_smoothing: float = 0.0, details: dict | None = None) -> ModelRun:
    """Train stage `name`, the model `build()` compiled with `optimizer(steps per epoch)` (an Adam rate
    or an optimizer), on the 32x32 images in [0, 1] (`cnn_dataset`), as `predict` will feed it."""
    config, s = run.config, run.splits
    precision = precision_choice(config.precision, None)
    with precision_policy(precision[0]), run.strategy.scope():
        model = build()
        compile_classifier(model, optimizer(math.ceil(len(s.y_train) / config.batch_size)), run.jit_compile,
                           label_smoothing)
    train = cnn_dataset(s.x_train, s.y_train, config.batch_size, True, config.seed, translate=translate)
    stage = fit_stage(model, train, cnn_dataset(s.x_val, s.y_val, config.batch_size), epochs, run.stage_dir(name),
                      len(s.y_train), seed=config.seed)
    inputs = lambda x, y, index, part, mirrored: cnn_dataset(x, y, config.batch_size, flip=mirrored)  # noqa: E731
    return _finish(run, name, model, stage, precision, _model_predictions(run, model, inputs, name), details)


def _transfer_details(run: Run, transfer: TransferModel) -> dict:
    spec = transfer.spec
    source = spec.imagenet_source if run.weights == "imagenet" else weights_label(run.weights)
    return {"backbone": spec.name, "weights": weights_label(run.weights), "weights_source": source,
            **weights_file_identity(spec, run.weights)}


def _cut(run: Run, backbone: str) -> BackboneCut | None:
    """The backbone cut before stage 2's unfrozen layers, made once per run and backbone."""
    if backbone not in run.cuts:
        with run.strategy.scope():
            run.cuts[backbone] = cut_backbone(run.transfers[backbone], run.config.recipe(backbone).layers)
    return run.cuts[backbone]


def _pooled(run: Run, transfer: TransferModel, part: str, index, view: str = "plain", also=None) -> np.ndarray:
    c = run.config
    with run.strategy.scope():
        return run.cache.pooled(transfer, run.dataset, part, index, c.image_size, c.batch_size, view, also)


def _cached_head(run: Run, transfer: TransferModel, stage_dir: Path):
    """Stage 1 on pooled features computed once. Its seconds include the training and validation images'
    features (`_feature_seconds`); the test images' count in its evaluation seconds, as every stage's do."""
    config, s, started = run.config, run.splits, time.perf_counter()
    # val and test pass the frozen prefix once for both stages when stage 2 runs
    cut = _cut(run, transfer.spec.name) if stage_name(transfer.spec.name, "finetuned") in config.model_list else None
    also = cut.tensors if cut else None
    features = {"train": _pooled(run, transfer, "train", s.train_index),
                "val": _pooled(run, transfer, "train", s.val_index, also=also)}
    x_train, y_train = features["train"], s.y_train
    if config.cache_flips:
        flipped = _pooled(run, transfer, "train", s.train_index, "flip")
        x_train, y_train = np.concatenate([x_train, flipped]), np.concatenate([y_train, y_train])
    with run.strategy.scope():
        compile_classifier(transfer.head, config.head_lr, run.jit_compile)
    extraction_seconds = time.perf_counter() - started
    stage = fit_stage(transfer.head, array_dataset(x_train, y_train, config.batch_size, True, config.seed),
                      array_dataset(features["val"], s.y_val, config.batch_size),
                      config.head_epochs, stage_dir, len(y_train), seed=config.seed)

    def predict_split(split, mirrored):
        _, y, part, index = _split(run, split)
        if not mirrored and split not in features:  # the test images: computed as the stage is evaluated
            features[split] = _pooled(run, transfer, part, index, also=also)
        x = _pooled(run, transfer, part, index, "flip") if mirrored else features[split]
        return predict(transfer.head, array_dataset(x, y, config.batch_size))

    return replace(stage, seconds=stage.seconds + _feature_seconds(run, transfer, len(x_train) + len(s.y_val),
                                                                   extraction_seconds)), predict_split


def _feature_seconds(run: Run, transfer: TransferModel, images: int, measured: float) -> float:
    """`images` images' features at the rate the cache measured here, cached or not, so that a head's seconds
    do not depend on which seed, stage or run computed them first; `measured` where it holds no rate."""
    speed = run.cache.speed(transfer, run.dataset, "train", run.config.image_size)
    return images / speed["images_per_second"] if speed else measured


def train_head(run: Run, backbone: str) -> ModelRun:
    """Stage 1: train the head on the frozen `backbone` (`head_mode` cached or end_to_end)."""
    config, s, name = run.config, run.splits, stage_name(backbone, "head")
    precision = precision_choice(config.precision, get_backbone(backbone))
    with precision_policy(precision[0]), run.strategy.scope():
        transfer = run.transfers[backbone] = build_transfer(
            backbone, config.image_size, run.weights, len(s.class_names),
            any_size=_stage2_sizes(run, backbone) != config.image_size)
    if config.head_mode == "cached":
        stage, predict_split = _cached_head(run, transfer, run.stage_dir(name))
    else:
        with run.strategy.scope():
            compile_classifier(transfer.model, config.head_lr, run.jit_compile)
        stage = fit_stage(transfer.model, _images(run, transfer, s.x_train, s.y_train, True, config.augment),
                          _images(run, transfer, s.x_val, s.y_val), config.head_epochs, run.stage_dir(name),
                          len(s.y_train), seed=config.seed)
        predict_split = _online_predictions(run, transfer, name)
    return _finish(run, name, transfer.model, stage, precision, predict_split, _transfer_details(run, transfer))


def _online_predictions(run: Run, transfer: TransferModel, name: str):
    inputs = lambda x, y, index, part, mirrored: _images(run, transfer, x, y, flip=mirrored)  # noqa: E731
    return _model_predictions(run, transfer.model, inputs, name)


def fine_tune(run: Run, backbone: str) -> ModelRun:
    """Stage 2: unfreeze the backbone's last layers and train on, with `config.recipe(backbone)`."""
    if stage_name(backbone, "head") not in run.models:
        train_head(run, backbone)
    transfer, recipe, cut = run.transfers[backbone], run.config.recipe(backbone), _cut(run, backbone)
    with run.strategy.scope():
        unfreeze(transfer, recipe, run.jit_compile)
        if cut:
            compile_classifier(cut.suffix, recipe.learning_rate, run.jit_compile, recipe.label_smoothing)
    schedule = stage2_schedule(recipe, run.config.finetune_epochs)
    stage, predict_split = (_fine_tune_online(run, transfer, recipe, schedule) if cut is None
                            else _fine_tune_on_cut(run, transfer, cut, recipe.views, schedule))
    details = {**_transfer_details(run, transfer), "stage2": recipe.to_dict(),
               "training_sizes": training_sizes(recipe.image_size, run.config.image_size, run.config.finetune_epochs)}
    return _finish(run, stage_name(backbone, "finetuned"), transfer.model, stage,
                   _head_precision(run.models[stage_name(backbone, "head")]), predict_split, details)


def _head_precision(head: ModelRun) -> tuple[str, str]:
    """Stage 2 trains the head's model, so under the (policy, reason) the head was built with."""
    return head.precision, head.details["precision_reason"]


def _fine_tune_online(run: Run, transfer: TransferModel, recipe, schedule):
    """Stage 2 with the whole backbone unfrozen: no prefix to cache, everything online on images,
    trained at the recipe's sizes (`_stage2_sizes`) and validated at the evaluation size."""
    config, s, name = run.config, run.splits, stage_name(transfer.spec.name, "finetuned")
    sizes, model = _stage2_sizes(run, transfer.spec.name), transfer.model
    if sizes != config.image_size:  # the same layers, for any side; validation still at image_size
        with run.strategy.scope():
            model = at_any_size(transfer)
            compile_classifier(model, recipe.learning_rate, run.jit_compile, recipe.label_smoothing)
    stage = fit_stage(model, _images(run, transfer, s.x_train, s.y_train, True, config.augment, sizes=sizes),
                      _images(run, transfer, s.x_val, s.y_val), config.finetune_epochs, run.stage_dir(name),
                      len(s.y_train), callbacks=(schedule,), seed=config.seed)
    return stage, _online_predictions(run, transfer, name)


def _fine_tune_on_cut(run: Run, transfer: TransferModel, cut: BackboneCut, views: int, schedule):
    """Stage 2 validated and tested through the suffix over cut tensors from the cache (stage 1
    computed them). With `views` > 0 it trains the suffix on that many cached augmented copies of
    the training images (computed here on first use; their cost counts in the stage's seconds),
    with 0 the whole model online (see `cache`)."""
    config, s, name, started = run.config, run.splits, stage_name(transfer.spec.name, "finetuned"), time.perf_counter()

    def fill(part, index, view="plain"):
        with run.strategy.scope():
            return run.cache.fill(transfer, run.dataset, part, index, config.image_size, config.batch_size,
                                  cut.tensors, view)

    def rows(entries, index, y, shuffle=False):
        return CachedRows(entries, names, index, y, config.batch_size, shuffle, config.seed, run.cache)

    # without augmentation, the one plain copy is exactly what online stage 2 would see
    view_names = [f"augment-{config.seed}-{k}" for k in range(views)] if config.augment else ["plain"]
    val, test = fill("train", s.val_index), fill("test", s.test_index)
    entries = [fill("train", s.train_index, view) for view in view_names] if views else []
    cache_seconds = time.perf_counter() - started
    names, shapes = list(cut.tensors), {key: tuple(t.shape[1:]) for key, t in cut.tensors.items()}
    val_data = rows([val], s.val_index, s.y_val).dataset(shapes)
    if views:
        train_rows = rows(entries, s.train_index, s.y_train, shuffle=True)
        model, train, validation = cut.suffix, train_rows.dataset(shapes), val_data
        callbacks = (schedule, ViewSchedule(train_rows))
    else:
        model, validation = transfer.model, None
        train = _images(run, transfer, s.x_train, s.y_train, True, config.augment)
        callbacks = (SuffixValidation(cut.suffix, val_data), schedule)
    stage = fit_stage(model, train, validation, config.finetune_epochs, run.stage_dir(name), len(s.y_train),
                      callbacks=callbacks, seed=config.seed)
    inputs = lambda x, y, index, part, mirrored: rows(  # noqa: E731
        [fill(part, index, "flip") if mirrored else {"train": val, "test": test}[part]], index, y).dataset(shapes)
    return replace(stage, seconds=stage.seconds + cache_seconds), _model_predictions(run, cut.suffix, inputs, name)


def run_stage(run: Run, name: str) -> ModelRun | None:
    """Train stage `name` if the config selects it (once), else return None. Every stage starts from the same
    seeds, so its result does not depend on which stages ran before it (alone, a head equals a full run's)."""
    if name not in run.config.model_list:
        print(f"{name}: not selected in config.models={run.config.models!r}")
        return None
    if name in run.models:
        return run.models[name]
    run.strategy  # noqa: B018 -- created before seeding starts TensorFlow's runtime
    seed_everything(run.config.seed, run.config.deterministic)
    spec, kind = parse_stage(name)
    print(f"{name}: started", flush=True)
    trained = ({"cnn": train_cnn, "scratch": train_scratch}[kind](run) if spec is None
               else (train_head if kind == "head" else fine_tune)(run, spec.name))
    done = "loaded (trained by an earlier run) and evaluated" if trained.stage.reused else "finished"
    print(f"{name}: {done}: {trained.stage.seconds:,.0f} s training, {trained.eval_seconds:,.0f} s evaluation, "
          f"test accuracy {trained.metrics['test_accuracy']:.4f}", flush=True)
    return trained


def trained(run: Run, kind: str) -> list[ModelRun]:
    """The stages of `kind` ("cnn", "scratch", "head" or "finetuned") that `run` has trained, in run order."""
    return [model for name, model in run.models.items() if parse_stage(name)[1] == kind]
