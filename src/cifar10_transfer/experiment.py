"""One experiment: the split, the three models in order, and the results they produce.

`Experiment` is what `python -m cifar10_transfer train`, notebook 02 and the tests all
drive. Each method trains one stage in its own directory under `workdir/stages/`, so an
interrupted run continues where it stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import keras
import numpy as np

from .config import RunConfig
from .data import Dataset
from .evaluation import evaluate_predictions
from .models import build_cnn, build_resnet50, check_weights, compile_classifier, unfreeze
from .pipelines import array_dataset, cnn_dataset, resnet_dataset, split_dataset
from .provenance import collect_provenance, imagenet_weights_status, weights_label
from .publish import write_atomic
from .training import (StageResult, extract_features, fit_stage, make_strategy, precision_policy,
                       resolve_jit, resolve_precision, seed_everything)

CNN_LEARNING_RATE = 1e-3  # Keras's Adam default, which the study used for the CNN
REDUCE_LR = dict(monitor="val_loss", factor=0.5, patience=2)  # stage 2's schedule, as in the study


@dataclass
class ModelRun:
    """One trained model: its stage result, size, precision and test predictions."""

    name: str
    stage: StageResult
    params: int
    trainable_params: int
    precision: str
    probabilities: np.ndarray  # test-set class probabilities, N x 10
    metrics: dict = field(default_factory=dict)

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
                **{key: self.metrics[key] for key in ("per_class", "confusion_matrix", "top_confusions")}}


def _count(weights) -> int:
    return int(sum(np.prod(w.shape) for w in weights))


class Experiment:
    """Train and evaluate the selected models of `config` on `dataset`.

    Args:
        config: the validated run configuration.
        dataset: from `load_dataset`.
        weights: "imagenet", "none" (random init: not transfer learning) or a file path.
        workdir: where stages keep checkpoints and histories; reusing it resumes.
        profile: the profile name, recorded in the results.
    """

    def __init__(self, config: RunConfig, dataset: Dataset, weights: str = "imagenet",
                 workdir: str | Path = "run", profile: str = "seed"):
        self.config, self.dataset, self.weights, self.profile = config, dataset, weights, profile
        self.workdir = Path(workdir)
        self.started = datetime.now(timezone.utc)
        # MultiWorkerMirroredStrategy must exist before other TensorFlow work starts the runtime
        self.strategy = make_strategy(config.strategy)
        seed_everything(config.seed, config.deterministic)
        self.splits = split_dataset(dataset, config)
        if any(name.startswith("resnet50") for name in config.model_list):
            check_weights(weights)
        self.jit_compile = resolve_jit(config.jit_compile, config.deterministic)
        self.runs: dict[str, ModelRun] = {}
        self._transfer = None

    def _stage_dir(self, name: str) -> Path:
        return self.workdir / "stages" / name

    def _finish(self, name: str, model, stage: StageResult, precision: str, probabilities) -> ModelRun:
        run = ModelRun(name, stage, _count(model.weights), _count(model.trainable_weights), precision,
                       probabilities, evaluate_predictions(self.splits.y_test, probabilities,
                                                           self.splits.class_names))
        self.runs[name] = run
        return run

    def train_cnn(self) -> ModelRun:
        """Train the baseline CNN from scratch on 32x32 images (Adam, default learning rate)."""
        config, s = self.config, self.splits
        precision = resolve_precision(config.precision, "cnn")
        with precision_policy(precision), self.strategy.scope():
            model = build_cnn(len(s.class_names))
            compile_classifier(model, CNN_LEARNING_RATE, self.jit_compile)
        stage = fit_stage(model, cnn_dataset(s.x_train, s.y_train, config.batch_size, True, config.seed),
                          cnn_dataset(s.x_val, s.y_val, config.batch_size), config.cnn_epochs,
                          self._stage_dir("cnn"), len(s.y_train))
        probabilities = model.predict(cnn_dataset(s.x_test, s.y_test, config.batch_size), verbose=0)
        return self._finish("cnn", model, stage, precision, probabilities)

    def _resnet_data(self, x, y, shuffle=False, augment=False, flip=False):
        c = self.config
        return resnet_dataset(x, y, c.image_size, c.batch_size, shuffle=shuffle, augment=augment,
                              seed=c.seed, flip=flip)

    def train_head(self) -> ModelRun:
        """Stage 1: train the head on a frozen backbone (`head_mode` cached or end_to_end)."""
        config, s = self.config, self.splits
        precision = resolve_precision(config.precision, "resnet50")
        with precision_policy(precision), self.strategy.scope():
            transfer = build_resnet50(config.image_size, self.weights, len(s.class_names))
        self._transfer = transfer
        stage_dir = self._stage_dir("resnet50_head")
        if config.head_mode == "cached":
            started = time.perf_counter()
            cache = stage_dir / "features"
            features = {split: extract_features(transfer.features, self._resnet_data(x, y), cache / f"{split}.npy")
                        for split, x, y in (("train", s.x_train, s.y_train), ("val", s.x_val, s.y_val),
                                            ("test", s.x_test, s.y_test))}
            x_train, y_train = features["train"], s.y_train
            if config.cache_flips:
                flipped = extract_features(transfer.features, self._resnet_data(s.x_train, s.y_train, flip=True),
                                           cache / "train_flipped.npy")
                x_train, y_train = np.concatenate([x_train, flipped]), np.concatenate([y_train, y_train])
            with self.strategy.scope():
                compile_classifier(transfer.head, config.head_lr, self.jit_compile)
            extraction_seconds = time.perf_counter() - started
            stage = fit_stage(transfer.head, array_dataset(x_train, y_train, config.batch_size, True, config.seed),
                              array_dataset(features["val"], s.y_val, config.batch_size),
                              config.head_epochs, stage_dir, len(y_train))
            # the stage's cost includes computing the features (near zero when they were cached on disk)
            stage = replace(stage, seconds=stage.seconds + extraction_seconds)
            probabilities = transfer.head.predict(array_dataset(features["test"], s.y_test, config.batch_size),
                                                  verbose=0)
        else:
            with self.strategy.scope():
                compile_classifier(transfer.model, config.head_lr, self.jit_compile)
            stage = fit_stage(transfer.model, self._resnet_data(s.x_train, s.y_train, True, config.augment),
                              self._resnet_data(s.x_val, s.y_val), config.head_epochs, stage_dir, len(s.y_train))
            probabilities = transfer.model.predict(self._resnet_data(s.x_test, s.y_test), verbose=0)
        return self._finish("resnet50_head", transfer.model, stage, precision, probabilities)

    def fine_tune(self) -> ModelRun:
        """Stage 2: unfreeze the backbone's last `finetune_layers` layers (not BatchNorm) and train on."""
        if "resnet50_head" not in self.runs:
            self.train_head()
        config, s, transfer = self.config, self.splits, self._transfer
        with self.strategy.scope():
            unfreeze(transfer, config.finetune_layers, config.finetune_lr, self.jit_compile)
        stage = fit_stage(transfer.model, self._resnet_data(s.x_train, s.y_train, True, config.augment),
                          self._resnet_data(s.x_val, s.y_val), config.finetune_epochs,
                          self._stage_dir("resnet50_finetuned"), len(s.y_train),
                          callbacks=(keras.callbacks.ReduceLROnPlateau(**REDUCE_LR),))
        probabilities = transfer.model.predict(self._resnet_data(s.x_test, s.y_test), verbose=0)
        return self._finish("resnet50_finetuned", transfer.model, stage, self.runs["resnet50_head"].precision,
                            probabilities)

    def run_stage(self, name: str) -> ModelRun | None:
        """Train `name` if the config selects it (once), else return None."""
        steps = {"cnn": self.train_cnn, "resnet50_head": self.train_head, "resnet50_finetuned": self.fine_tune}
        if name not in self.config.model_list:
            print(f"{name}: not selected in config.models={self.config.models!r}")
            return None
        return self.runs[name] if name in self.runs else steps[name]()

    def run_all(self) -> dict:
        """Train every selected model in order and return the results."""
        for name in self.config.model_list:
            self.run_stage(name)
        return self.results()

    def results(self) -> dict:
        """The content of results.json for the models trained so far."""
        skipped = [name for name in ("cnn", "resnet50_head", "resnet50_finetuned") if name not in self.runs]
        reason = "not selected"
        if self.weights == "imagenet" and imagenet_weights_status() == "unavailable offline":
            reason = "ImageNet weights unavailable offline"
        models = {name: run.summary() for name, run in self.runs.items()}
        return {
            "profile": self.profile,
            "config": self.config.to_dict(),
            "provenance": collect_provenance(self.dataset, weights_label(self.weights), self.started),
            "execution": {"jit_compile": self.jit_compile, "strategy": type(self.strategy).__name__,
                          "replicas": self.strategy.num_replicas_in_sync},
            "data": {**self.splits.sizes(), "class_names": list(self.splits.class_names)},
            "models": models,
            "not_run": {name: "not selected" if name == "cnn" else reason for name in skipped},
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
