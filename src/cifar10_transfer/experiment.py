"""One experiment: the split, the selected stages in order, and the results they produce.

`Experiment` is what `python -m cifar10_transfer train`, notebook 02 and the tests all
drive. Each method trains one stage in its own directory under `workdir/stages/`, so an
interrupted run continues where it stopped. Stages are `cnn`, `<backbone>_head` and
`<backbone>_finetuned` for any backbone of the registry.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path

import numpy as np

from .backbones import get_backbone, imagenet_status, parse_stage
from .config import RunConfig
from .data import Dataset
from .evaluation import evaluate_predictions
from .features import FeatureCache
from .models import build_cnn, build_transfer, compile_classifier, unfreeze
from .predict import MODELS_DIR, save_for_prediction
from .prefix import BackboneCut, CachedRows, SuffixValidation, ViewSchedule, cut_backbone
from .pipelines import Splits, array_dataset, cnn_dataset, split_dataset, transfer_dataset
from .provenance import collect_provenance, weights_label
from .publish import write_atomic
from .study import STUDY_STAGES
from .training import (StageResult, fit_stage, make_strategy, precision_policy, predict,
                       resolve_jit, resolve_precision, seed_everything, stage2_schedule)

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
    metrics: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)  # backbone, weights and stage-2 recipe of transfer stages,
    # and the single-view accuracies beside the mirror-averaged ones under `test_time_flip`

    def summary(self) -> dict:
        """The model's entry in results.json."""
        history = self.stage.history
        return {**{key: self.metrics[key] for key in ("test_accuracy", "test_loss")},
                "train_accuracy": history["accuracy"][-1], "val_accuracy": history["val_accuracy"][-1],
                "params": self.params, "trainable_params": self.trainable_params,
                "epochs": self.stage.epochs, "seconds": self.stage.seconds,
                "images_per_second": self.stage.images_per_second, "precision": self.precision,
                "history": {key: history[key] for key in
                            ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")},
                **self.details,
                **{key: self.metrics[key] for key in ("per_class", "confusion_matrix", "top_confusions")}}


def _count(weights) -> int:
    return int(sum(np.prod(w.shape) for w in weights))


def _accuracy(labels: np.ndarray, probabilities: np.ndarray) -> float:
    return float(np.mean(probabilities.argmax(axis=1) == labels))


def _label(stage: str, split: str, mirrored: bool) -> str:
    """What a prediction pass prints in its progress lines."""
    return f"{stage} {split}{' mirrored' if mirrored else ''}"


class Experiment:
    """Train and evaluate the selected stages of `config` on `dataset`.

    Constructing one does no work: the split is drawn on first use, and the process-wide
    state (the distribution strategy, op determinism) is set when the first stage starts.
    Every stage starts from the same seeds.

    Args:
        config: the validated run configuration.
        dataset: from `load_dataset`.
        weights: "imagenet" (each backbone's own source), "none" (random init: not
            transfer learning) or a weights file path.
        workdir: where stages keep checkpoints and histories; reusing it resumes.
        profile: the profile name, recorded in the results.
        strategy: a tf.distribute strategy made before any other TensorFlow work
            (multi-worker needs that); None makes one from `config.strategy` when needed.
        feature_cache: where pooled backbone features are kept; share one between
            experiments on the same data (learning curves) so no image passes a backbone
            twice. Default: `workdir/cache`.
        save_models: save each trained stage for `predict` (off for many small runs).
    """

    def __init__(self, config: RunConfig, dataset: Dataset, weights: str = "imagenet",
                 workdir: str | Path = "run", profile: str = "seed", strategy=None,
                 feature_cache: FeatureCache | None = None, save_models: bool = True):
        self.config, self.dataset, self.weights, self.profile = config, dataset, weights, profile
        self.workdir = Path(workdir)
        self.feature_cache = feature_cache or FeatureCache(self.workdir / "cache")
        self.save_models = save_models
        self.started = datetime.now(timezone.utc)
        self._strategy, self._seeded = strategy, False
        self.runs: dict[str, ModelRun] = {}
        self._transfers, self._cuts = {}, {}

    @cached_property
    def splits(self) -> Splits:
        """The seeded, stratified train/val/test split of this run."""
        return split_dataset(self.dataset, self.config)

    @property
    def strategy(self):
        if self._strategy is None:
            self._strategy = make_strategy(self.config.strategy)
        return self._strategy

    @cached_property
    def jit_compile(self) -> bool:
        return resolve_jit(self.config.jit_compile, self.config.deterministic)

    def _seed_stage(self) -> None:
        """Seed every stage alike, so that its result does not depend on which stages ran
        before it (a head trained alone equals the head of a full run)."""
        self.strategy  # noqa: B018 -- created before seeding starts TensorFlow's runtime
        seed_everything(self.config.seed, self.config.deterministic)
        self._seeded = True

    def _stage_dir(self, name: str) -> Path:
        return self.workdir / "stages" / name

    def _finish(self, name: str, model, stage: StageResult, precision: str, predict_split,
                details: dict | None = None) -> ModelRun:
        """Evaluate a trained stage on the test set and record it. `predict_split(split, mirrored)`
        returns the model's class probabilities of the "val" or "test" images, mirrored or not."""
        details = details or {}
        if self.save_models:
            save_for_prediction(model, self.workdir / MODELS_DIR, name, self.splits.class_names,
                                self.config.image_size if details.get("backbone") else None, details.get("backbone"),
                                self.config.test_time_flip)
        probabilities, flip = self._test_probabilities(predict_split)
        run = ModelRun(name, stage, _count(model.weights), _count(model.trainable_weights), precision,
                       probabilities, evaluate_predictions(self.splits.y_test, probabilities,
                                                           self.splits.class_names), {**details, **flip})
        self.runs[name] = run
        return run

    def _test_probabilities(self, predict_split) -> tuple[np.ndarray, dict]:
        """Test probabilities as this run evaluates them, and with `test_time_flip` what the
        mirror view changed: each val and test image's probabilities are then the mean of the
        image's and its mirror image's, and the single-view accuracies are kept beside them."""
        test = predict_split("test", False)
        if not self.config.test_time_flip:
            return test, {}
        s = self.splits
        val = predict_split("val", False)
        val_flip, test_flip = (val + predict_split("val", True)) / 2, (test + predict_split("test", True)) / 2
        return test_flip, {"test_time_flip": {
            "val_accuracy": _accuracy(s.y_val, val_flip), "single_view_val_accuracy": _accuracy(s.y_val, val),
            "single_view_test_accuracy": _accuracy(s.y_test, test)}}

    def _split(self, split: str) -> tuple[np.ndarray, np.ndarray, str, np.ndarray]:
        """Images, labels, dataset part and dataset indices of split "val" or "test"."""
        s = self.splits
        if split == "val":
            return s.x_val, s.y_val, "train", s.val_index
        return s.x_test, s.y_test, "test", s.test_index

    def train_cnn(self) -> ModelRun:
        """Train the baseline CNN from scratch on 32x32 images (Adam, default learning rate)."""
        config, s = self.config, self.splits
        precision = resolve_precision(config.precision, None)
        with precision_policy(precision), self.strategy.scope():
            model = build_cnn(len(s.class_names))
            compile_classifier(model, CNN_LEARNING_RATE, self.jit_compile)
        stage = fit_stage(model, cnn_dataset(s.x_train, s.y_train, config.batch_size, True, config.seed),
                          cnn_dataset(s.x_val, s.y_val, config.batch_size), config.cnn_epochs,
                          self._stage_dir("cnn"), len(s.y_train))

        def predict_split(split, mirrored):
            x, y, _, _ = self._split(split)
            return predict(model, cnn_dataset(x, y, config.batch_size, flip=mirrored), _label("cnn", split, mirrored),
                           len(y), config.batch_size)

        return self._finish("cnn", model, stage, precision, predict_split)

    def _images(self, spec, x, y, shuffle=False, augment=False, flip=False):
        c = self.config
        return transfer_dataset(x, y, c.image_size, c.batch_size, spec.preprocess, shuffle=shuffle,
                                augment=augment, seed=c.seed, flip=flip)

    def train_head(self, backbone: str) -> ModelRun:
        """Stage 1: train the head on the frozen `backbone` (`head_mode` cached or end_to_end)."""
        config, s, spec = self.config, self.splits, get_backbone(backbone)
        precision = resolve_precision(config.precision, spec)
        with precision_policy(precision), self.strategy.scope():
            transfer = build_transfer(backbone, config.image_size, self.weights, len(s.class_names))
        self._transfers[backbone] = transfer
        stage_dir = self._stage_dir(f"{backbone}_head")
        if config.head_mode == "cached":
            started = time.perf_counter()
            # val and test pass the frozen prefix once for both stages when stage 2 runs
            cut = self._cut(backbone) if f"{backbone}_finetuned" in config.model_list else None
            also = cut.tensors if cut else None
            with self.strategy.scope():
                features = {split: self.feature_cache.pooled(
                    transfer, self.dataset, "test" if split == "test" else "train", index, config.image_size,
                    config.batch_size, also=None if split == "train" else also)
                    for split, index in (("train", s.train_index), ("val", s.val_index), ("test", s.test_index))}
            x_train, y_train = features["train"], s.y_train
            if config.cache_flips:
                flipped = self.feature_cache.pooled(transfer, self.dataset, "train", s.train_index, config.image_size,
                                                    config.batch_size, view="flip")
                x_train, y_train = np.concatenate([x_train, flipped]), np.concatenate([y_train, y_train])
            with self.strategy.scope():
                compile_classifier(transfer.head, config.head_lr, self.jit_compile)
            extraction_seconds = time.perf_counter() - started
            stage = fit_stage(transfer.head, array_dataset(x_train, y_train, config.batch_size, True, config.seed),
                              array_dataset(features["val"], s.y_val, config.batch_size),
                              config.head_epochs, stage_dir, len(y_train))
            # the stage's cost includes computing the features (near zero when they were cached)
            stage = replace(stage, seconds=stage.seconds + extraction_seconds)

            def predict_split(split, mirrored):
                _, y, part, index = self._split(split)
                x = self.feature_cache.pooled(transfer, self.dataset, part, index, config.image_size,
                                              config.batch_size, "flip") if mirrored else features[split]
                return transfer.head.predict(array_dataset(x, y, config.batch_size), verbose=0)
        else:
            with self.strategy.scope():
                compile_classifier(transfer.model, config.head_lr, self.jit_compile)
            stage = fit_stage(transfer.model, self._images(spec, s.x_train, s.y_train, True, config.augment),
                              self._images(spec, s.x_val, s.y_val), config.head_epochs, stage_dir, len(s.y_train))
            predict_split = self._online_predictions(transfer.model, spec, f"{backbone}_head")
        return self._finish(f"{backbone}_head", transfer.model, stage, precision, predict_split,
                            self._transfer_details(spec))

    def _online_predictions(self, model, spec, name: str):
        """`predict_split` of a model that reads images (see `_finish`)."""
        def predict_split(split, mirrored):
            x, y, _, _ = self._split(split)
            return predict(model, self._images(spec, x, y, flip=mirrored), _label(name, split, mirrored),
                           len(y), self.config.batch_size)
        return predict_split

    def fine_tune(self, backbone: str) -> ModelRun:
        """Stage 2: unfreeze the backbone's last layers and train on.

        Depth, learning rate, its schedule, label smoothing, BatchNorm, stochastic depth and
        cached views are `config.finetune_layers`, `finetune_lr`, `finetune_schedule`,
        `finetune_label_smoothing`, `finetune_batchnorm`, `finetune_drop_path` and
        `finetune_views`, or the backbone's registry defaults where those are None.
        """
        if f"{backbone}_head" not in self.runs:
            self.train_head(backbone)
        config, transfer = self.config, self._transfers[backbone]
        spec = transfer.spec
        settings = config.stage2(spec)
        learning_rate, smoothing = settings["finetune_lr"], settings["finetune_label_smoothing"]
        cut = self._cut(backbone)
        with self.strategy.scope():
            unfreeze(transfer, settings["finetune_layers"], learning_rate, self.jit_compile, smoothing,
                     settings["finetune_batchnorm"] == "train", settings["finetune_drop_path"])
            if cut:
                compile_classifier(cut.suffix, learning_rate, self.jit_compile, smoothing)
        stage, predict_split = self._fine_tune_stage(
            transfer, cut, settings["finetune_views"],
            stage2_schedule(settings["finetune_schedule"], learning_rate, config.finetune_epochs))
        details = {**self._transfer_details(spec), **settings}
        return self._finish(f"{backbone}_finetuned", transfer.model, stage,
                            self.runs[f"{backbone}_head"].precision, predict_split, details)

    def _cut(self, backbone: str) -> BackboneCut | None:
        if backbone not in self._cuts:
            transfer = self._transfers[backbone]
            with self.strategy.scope():
                self._cuts[backbone] = cut_backbone(transfer, self.config.stage2(transfer.spec)["finetune_layers"])
        return self._cuts[backbone]

    def _fine_tune_stage(self, transfer, cut: BackboneCut | None, views: int, schedule):
        """Stage 2, validated and tested through the suffix over cut tensors from the cache
        (stage 1 computed them). With `views` > 0 it trains the suffix on that many cached
        augmented copies of the training images (computed here on first use; their cost
        counts in the stage's seconds), with 0 the whole model online (see `prefix`).
        Without a cut (the whole backbone unfrozen) everything runs online on images.
        `schedule` is the learning-rate callback. Returns the stage and its `predict_split`."""
        config, s, spec = self.config, self.splits, transfer.spec
        name, started = f"{spec.name}_finetuned", time.perf_counter()
        train_images = self._images(spec, s.x_train, s.y_train, True, config.augment)
        if cut is None:
            stage = fit_stage(transfer.model, train_images, self._images(spec, s.x_val, s.y_val),
                              config.finetune_epochs, self._stage_dir(name), len(s.y_train), callbacks=(schedule,))
            return stage, self._online_predictions(transfer.model, spec, name)

        def fill(split, index, view="plain"):
            return self.feature_cache.fill(transfer, self.dataset, split, index, config.image_size,
                                           config.batch_size, cut.tensors, view)

        # without augmentation, the one plain copy is exactly what online stage 2 would see
        view_names = [f"augment-{config.seed}-{k}" for k in range(views)] if config.augment else ["plain"]
        with self.strategy.scope():
            val, test = fill("train", s.val_index), fill("test", s.test_index)
            entries = [fill("train", s.train_index, view) for view in view_names] if views else []
        cache_seconds = time.perf_counter() - started
        names, shapes = list(cut.tensors), {key: tuple(t.shape[1:]) for key, t in cut.tensors.items()}
        val_data = CachedRows([val], names, s.val_index, s.y_val, config.batch_size).dataset(shapes)
        if views:
            rows = CachedRows(entries, names, s.train_index, s.y_train, config.batch_size, True, config.seed)
            model, train, validation = cut.suffix, rows.dataset(shapes), val_data
            callbacks = (schedule, ViewSchedule(rows))
        else:
            model, train, validation = transfer.model, train_images, None
            callbacks = (SuffixValidation(cut.suffix, val_data), schedule)
        stage = fit_stage(model, train, validation, config.finetune_epochs, self._stage_dir(name), len(s.y_train),
                          callbacks=callbacks)

        def predict_split(split, mirrored):
            _, y, part, index = self._split(split)
            with self.strategy.scope():
                entry = fill(part, index, "flip") if mirrored else {"val": val, "test": test}[split]
            return predict(cut.suffix, CachedRows([entry], names, index, y, config.batch_size).dataset(shapes),
                           _label(name, split, mirrored), len(y), config.batch_size)

        return replace(stage, seconds=stage.seconds + cache_seconds), predict_split

    def transfer(self, backbone: str):
        """The TransferModel that stage 1 of `backbone` built (KeyError before that stage ran)."""
        return self._transfers[backbone]

    def _transfer_details(self, spec) -> dict:
        source = spec.imagenet_source if self.weights == "imagenet" else weights_label(self.weights)
        return {"backbone": spec.name, "weights": weights_label(self.weights), "weights_source": source}

    def run_stage(self, name: str) -> ModelRun | None:
        """Train stage `name` if the config selects it (once), else return None."""
        if name not in self.config.model_list:
            print(f"{name}: not selected in config.models={self.config.models!r}")
            return None
        if name in self.runs:
            return self.runs[name]
        self._seed_stage()
        spec, kind = parse_stage(name)
        print(f"{name}: started", flush=True)
        started = time.perf_counter()
        run = self.train_cnn() if spec is None else (self.train_head if kind == "head" else self.fine_tune)(spec.name)
        done = "loaded (trained by an earlier run) and evaluated" if run.stage.reused else "finished"
        print(f"{name}: {done} in {time.perf_counter() - started:,.0f} s, test accuracy "
              f"{run.metrics['test_accuracy']:.4f}", flush=True)
        return run

    def run_stages(self, kind: str) -> list[ModelRun]:
        """Train every selected stage of `kind` ("cnn", "head" or "finetuned"), in run order."""
        return [self.run_stage(name) for name in self.config.model_list if parse_stage(name)[1] == kind]

    def run_all(self) -> dict:
        """Train every selected stage in order and return the results."""
        for name in self.config.model_list:
            self.run_stage(name)
        return self.results()

    def _not_run_reason(self, name: str) -> str:
        if name in self.config.model_list:
            return "not finished"
        spec, _ = parse_stage(name)
        if spec is not None and self.weights == "imagenet" and imagenet_status(spec) == "unavailable offline":
            return "ImageNet weights unavailable offline"
        return "not selected"

    def results(self) -> dict:
        """The content of results.json for the stages trained so far."""
        skipped = [name for name in dict.fromkeys([*STUDY_STAGES, *self.config.model_list]) if name not in self.runs]
        models = {name: run.summary() for name, run in self.runs.items()}
        return {
            "profile": self.profile,
            "config": self.config.to_dict(),
            "provenance": collect_provenance(self.dataset, weights_label(self.weights), self.started),
            "execution": {"jit_compile": self.jit_compile, "strategy": type(self.strategy).__name__,
                          "replicas": self.strategy.num_replicas_in_sync},
            "data": {**self.splits.sizes(), "class_names": list(self.splits.class_names)},
            "models": models,
            "not_run": {name: self._not_run_reason(name) for name in skipped},
            "best_model": max(models, key=lambda name: models[name]["test_accuracy"]) if models else None,
        }

    def save_results(self, results: dict | None = None) -> Path:
        """Write results.json and each model's history CSV under `workdir/results/`."""
        results = results or self.results()
        out = self.workdir / "results"
        (out / "histories").mkdir(parents=True, exist_ok=True)
        for name in results["models"]:
            source = self._stage_dir(name) / "history.csv"
            write_atomic(out / "histories" / f"{name}.csv", source.read_text())
        path = out / "results.json"
        write_atomic(path, json.dumps(results, indent=2) + "\n")
        return path
