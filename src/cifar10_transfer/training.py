"""How stages train: precision, XLA, distribution strategy, seeding, checkpoints and resume.

`fit_stage` is the one place a model is fitted. Each stage works in its own directory:
a CSV history row and a checkpoint (weights and optimizer state, via Keras's
BackupAndRestore) after every epoch, and a `stage.json` plus final weights when it
completes. A stage that completed is loaded, not trained again; a stage that was
killed continues from its last completed epoch.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from .errors import UserError

STAGE_FILE = "stage.json"
FINAL_WEIGHTS = "final.weights.h5"


def cpu_flags() -> set[str]:
    """The CPU feature flags the kernel reports (empty where /proc/cpuinfo does not exist)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def gpu_compute_capabilities() -> list[tuple[int, int]]:
    """Compute capability of every visible GPU, e.g. [(9, 0)] on an H100."""
    capabilities = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        capabilities.append(tuple(details.get("compute_capability", (0, 0))))
    return capabilities


def resolve_precision(setting: str, model_name: str, gpus: list[tuple[int, int]] | None = None,
                      flags: set[str] | None = None) -> str:
    """The Keras dtype policy for `model_name` under the `precision` setting.

    For ResNet50, `auto` picks mixed_float16 on GPUs with tensor cores (compute capability
    7.0 or newer), mixed_bfloat16 on CPUs with native bfloat16 (avx512_bf16 or AMX),
    float32 otherwise. The CNN stays float32 under `auto`: `make bench` measured bfloat16
    costing it accuracy, and a model this small gains little speed from lower precision.
    """
    if setting != "auto":
        return setting
    if model_name == "cnn":
        return "float32"
    gpus = gpu_compute_capabilities() if gpus is None else gpus
    flags = cpu_flags() if flags is None else flags
    if gpus:
        return "mixed_float16" if all(cap >= (7, 0) for cap in gpus) else "float32"
    if flags & {"avx512_bf16", "amx_bf16"}:
        return "mixed_bfloat16"
    return "float32"


@contextlib.contextmanager
def precision_policy(policy: str):
    """Build models under `policy`, restoring the previous global policy afterwards."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield policy
    finally:
        keras.config.set_dtype_policy(previous)


def resolve_jit(setting: str, deterministic: bool) -> bool:
    """XLA compilation: `auto` turns it on where GPUs are visible and determinism is off.

    Keras disables XLA under TensorFlow op determinism, so `deterministic=True` means no XLA.
    On the 2-core CPU of `make bench` XLA changed CNN throughput little
    (benchmarks/results/latest.json), so `auto` leaves it off on CPUs.
    """
    if setting == "auto":
        return bool(tf.config.list_physical_devices("GPU")) and not deterministic
    return setting == "on"


def make_strategy(setting: str) -> tf.distribute.Strategy:
    """The tf.distribute strategy for `setting`.

    `auto`: MultiWorkerMirroredStrategy when TF_CONFIG is set, MirroredStrategy with more
    than one GPU, the default strategy otherwise. The dataset's batch size is the global
    batch size, split across replicas.
    """
    if setting == "auto":
        if os.environ.get("TF_CONFIG"):
            setting = "multi_worker"
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            setting = "mirrored"
        else:
            setting = "default"
    if setting == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise UserError("strategy=multi_worker needs the TF_CONFIG environment variable; see the README.")
        return _MultiWorkerStrategy()
    if setting == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


class _MultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """MultiWorkerMirroredStrategy with a `reduce` that Keras 3.15's `fit` can use.

    With two or more workers, Keras reduces a whole (images, labels) batch before building
    the model, and each epoch's scalar metrics with `axis=0`; the collective `reduce` takes
    neither. Reducing leaf by leaf, scalars across workers only, gives every worker the
    same logs, so callbacks such as ReduceLROnPlateau decide alike on all of them.
    """

    def reduce(self, reduce_op, value, axis):
        parent = super(_MultiWorkerStrategy, self)

        def reduce_leaf(leaf):
            rank = self.experimental_local_results(leaf)[0].shape.rank
            return parent.reduce(reduce_op, leaf, None if rank == 0 else axis)

        return tf.nest.map_structure(reduce_leaf, value)


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and TensorFlow; with `deterministic`, make TensorFlow ops deterministic.

    Op determinism then holds for the rest of the process: TensorFlow has no public switch back.
    """
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


@dataclass
class StageResult:
    """What a finished stage reports: per-epoch history, wall-clock seconds and throughput."""

    history: dict[str, list[float]]
    seconds: float  # training wall-clock, summed over interrupted and resumed sessions
    images_per_second: float  # training images (or cached feature vectors) per second
    epochs: int


class _EpochLog(keras.callbacks.Callback):
    """Adds each epoch's wall-clock seconds and learning rate to the logs the CSV records."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs["epoch_seconds"] = time.perf_counter() - self._start
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


def read_history(path: Path) -> dict[str, list[float]]:
    """Per-epoch history from a stage's CSV, keeping the last row of an epoch logged twice."""
    rows: dict[int, dict] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            rows[int(row["epoch"])] = row
    keys = [key for key in next(iter(rows.values()), {}) if key != "epoch"]
    return {key: [float(rows[epoch][key]) for epoch in sorted(rows)] for key in keys}


def fit_stage(model: keras.Model, train_data, val_data, epochs: int, stage_dir: Path,
              n_train: int, callbacks: tuple = (), verbose: str | int = "auto") -> StageResult:
    """Fit `model` for `epochs` with a per-epoch checkpoint in `stage_dir`, resuming if one exists.

    `train_data` and `val_data` are tf.data datasets; `n_train` is the number of training
    examples per epoch, for images per second.
    """
    stage_dir = Path(stage_dir)
    if (stage_dir / STAGE_FILE).is_file():
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)  # so the saved optimizer state loads too
        model.load_weights(stage_dir / FINAL_WEIGHTS)
        return StageResult(**json.loads((stage_dir / STAGE_FILE).read_text()))
    stage_dir.mkdir(parents=True, exist_ok=True)
    log, backup = stage_dir / "history.csv", stage_dir / "backup"
    if log.exists() and not backup.exists():
        log.unlink()  # a history without a checkpoint cannot be continued: start the stage afresh
    model.fit(train_data, validation_data=val_data, epochs=epochs, verbose=verbose, shuffle=False,
              callbacks=[_EpochLog(), *callbacks, keras.callbacks.CSVLogger(str(log), append=True),
                         # double_checkpoint: a kill during the write falls back to the previous epoch
                         keras.callbacks.BackupAndRestore(str(backup), double_checkpoint=True)])
    history = read_history(log)
    seconds = float(sum(history["epoch_seconds"]))
    result = StageResult(history=history, seconds=seconds,
                         images_per_second=n_train * epochs / seconds if seconds else 0.0, epochs=epochs)
    model.save_weights(stage_dir / FINAL_WEIGHTS)
    _write_atomic(stage_dir / STAGE_FILE, json.dumps(asdict(result)))
    return result


def extract_features(features_model: keras.Model, dataset, cache_path: Path) -> np.ndarray:
    """Pooled backbone features of every image in `dataset`, cached in `cache_path` (.npy)."""
    cache_path = Path(cache_path)
    if cache_path.is_file():
        return np.load(cache_path)
    features = features_model.predict(dataset, verbose=0).astype(np.float32)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = cache_path.with_name(cache_path.stem + ".partial.npy")
    np.save(temporary, features)
    os.replace(temporary, cache_path)
    return features


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".partial")
    temporary.write_text(text)
    os.replace(temporary, path)
