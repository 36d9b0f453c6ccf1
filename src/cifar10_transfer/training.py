"""How stages train: fitting, schedules, checkpoints and resume.

`fit_stage` is the one place a model is fitted. Each stage works in its own directory:
a CSV history row and a checkpoint (weights and optimizer state, via Keras's
BackupAndRestore) after every epoch, and a `stage.json` plus final weights when it
completes. A stage that completed is loaded, not trained again; a stage that was
killed continues from its last completed epoch.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import sys
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import keras
import numpy as np

from .errors import UserError
from .pipelines import epoch_variable
from .publish import atomic_write, file_sha256, write_atomic
from .recipe import ScratchRecipe, Stage2Recipe

STAGE_FILE = "stage.json"
FINAL_WEIGHTS = "final.weights.h5"


@dataclass
class StageResult:
    """What a finished stage reports: per-epoch history, wall-clock seconds and throughput."""

    history: dict[str, list[float]]
    seconds: float  # training wall-clock, summed over interrupted and resumed sessions
    images_per_second: float  # training images (or cached feature vectors) per second
    epochs: int
    reused: bool = False  # loaded from an earlier run of the same stage instead of trained
    weights_sha256: str = ""  # of its final weights, as its stage.json records them


class _EpochLog(keras.callbacks.Callback):
    """Adds each epoch's wall-clock seconds and learning rate to the logs the CSV records."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs["epoch_seconds"] = time.perf_counter() - self._start
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class _EpochSeeds(keras.callbacks.Callback):
    """At each epoch's start, keys the data pipelines by the epoch and sets every random state of
    the model (dropout, stochastic depth) from (seed, stage, epoch) alone.

    Keras keeps those states in variables that `save_weights` leaves out and that training
    advances, so without this a stage's masks would depend on what ran before it in the
    process, and a resumed stage would not repeat the epochs of one never stopped.
    """

    def __init__(self, seed: int, stage: str):
        super().__init__()
        self.seed, self.stage = seed, zlib.crc32(stage.encode())

    def on_epoch_begin(self, epoch, logs=None):
        epoch_variable().assign(epoch)
        states = [v for v in self.model.variables if v.path.endswith("seed_generator_state")]
        for index, state in enumerate(states):
            key = np.random.default_rng([self.seed, self.stage, epoch, index]).integers(2**31)
            state.assign(np.array([key, 0], dtype=state.dtype))


class _Plateau(keras.callbacks.ReduceLROnPlateau):
    """The study's rule: halve the learning rate after 2 epochs without a lower val_loss.

    Its counters live in the callback, not in the checkpoint, so a resumed stage replays the
    epochs before the one it resumes at (`resume`), to go on as if it had never stopped.
    """

    def __init__(self):
        super().__init__(monitor="val_loss", factor=0.5, patience=2)
        self._logged: list[float] = []

    def resume(self, history: dict[str, list[float]]) -> None:
        """Remember the logged epochs; their learning rates came back with the checkpoint."""
        self._logged = history.get(self.monitor, [])

    def on_epoch_begin(self, epoch, logs=None):
        for value in self._logged[:epoch]:
            if self.monitor_op(value, self.best):
                self.best, self.wait = value, 0
            else:
                self.wait = 0 if self.wait + 1 >= self.patience else self.wait + 1
        self._logged = []


def stage2_schedule(recipe: Stage2Recipe, epochs: int) -> keras.callbacks.Callback:
    """The stage 2 learning-rate callback: "plateau" halves the rate after 2 epochs without a
    lower val_loss (the study's ReduceLROnPlateau); "cosine" sets epoch e (from 0) to
    learning_rate * (1 + cos(pi * e / epochs)) / 2, from the full rate down to near 0 at the
    last epoch, a function of the epoch alone so a resumed stage continues the same curve."""
    if recipe.schedule == "plateau":
        return _Plateau()
    return keras.callbacks.LearningRateScheduler(
        lambda epoch, _: recipe.learning_rate * (1 + math.cos(math.pi * epoch / epochs)) / 2)


def scratch_schedule(recipe: ScratchRecipe, batch_size: int, steps: int) -> keras.optimizers.schedules.CosineDecay:
    """The scratch stage's learning rate at each of its `steps` optimizer steps (all epochs): from 0
    up to `recipe.peak_rate(batch_size)` in a straight line over the first W = round(recipe.warmup
    * steps) steps, then step s at peak * (1 + cos(pi * (s - W) / (steps - W))) / 2, down to 0 at the
    last. A function of the step alone, which the checkpoint keeps with the optimizer's state, so a
    resumed stage continues the same curve."""
    warmup = round(recipe.warmup * steps)
    return keras.optimizers.schedules.CosineDecay(0.0, max(steps - warmup, 1), warmup_steps=warmup,
                                                  warmup_target=recipe.peak_rate(batch_size))


def scratch_optimizer(recipe: ScratchRecipe, batch_size: int, steps: int) -> keras.optimizers.SGD:
    """SGD with Nesterov momentum and weight decay, at `scratch_schedule`, for the scratch stage.
    Only kernels are decayed, not BatchNorm's scale and offset nor the classifier's bias (the "no
    bias decay" of He et al. 2019): these few parameters set each channel's scale and offset, and
    pulling them to 0 would not regularise the convolutions that the decay is meant for."""
    optimizer = keras.optimizers.SGD(scratch_schedule(recipe, batch_size, steps), momentum=recipe.momentum,
                                     nesterov=True, weight_decay=recipe.weight_decay)
    optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    return optimizer


def read_history(path: Path) -> dict[str, list[float]]:
    """Per-epoch history from a stage's CSV, keeping the last row of an epoch logged twice."""
    rows: dict[int, dict] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            rows[int(row["epoch"])] = row
    keys = [key for key in next(iter(rows.values()), {}) if key != "epoch"]
    return {key: [float(rows[epoch][key]) for epoch in sorted(rows)] for key in keys}


def fit_stage(model: keras.Model, train_data, val_data, epochs: int, stage_dir: Path,
              n_train: int, callbacks: tuple = (), verbose: str | int = "auto", seed: int = 0) -> StageResult:
    """Fit `model` for `epochs` with a per-epoch checkpoint in `stage_dir`, resuming if one exists.

    `train_data` and `val_data` are tf.data datasets; `n_train` is the number of training
    examples per epoch, for images per second. The stage's randomness derives from `seed`, the
    stage's name (its folder's) and the epoch alone (`_EpochSeeds`). TensorBoard logs go to
    `logs/<stage>` beside the `stages/` folder that holds `stage_dir`.
    """
    stage_dir = Path(stage_dir)
    if (stage_dir / STAGE_FILE).is_file():
        kept = _kept_stage(model, stage_dir)
        if kept is not None:
            return kept
        shutil.rmtree(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    log, backup = stage_dir / "history.csv", stage_dir / "backup"
    damage = _checkpoint_damage(backup)
    if damage:
        print(f"{stage_dir.name}: restarting the stage from its first epoch: its checkpoint in {backup} "
              f"is damaged ({damage})", flush=True)
        shutil.rmtree(backup)
    if log.exists() and not backup.exists():
        log.unlink()  # a history without a checkpoint cannot be continued: start the stage afresh
    if log.exists():
        for callback in callbacks:
            if hasattr(callback, "resume"):
                callback.resume(read_history(log))
    model.fit(train_data, validation_data=val_data, epochs=epochs,
              verbose=fit_verbosity() if verbose == "auto" else verbose, shuffle=False,
              callbacks=[_EpochSeeds(seed, stage_dir.name), _EpochLog(), *callbacks,
                         keras.callbacks.CSVLogger(str(log), append=True),
                         # scalars per epoch and the model graph: tensorboard --logdir RUN/logs
                         keras.callbacks.TensorBoard(str(stage_dir.parent.parent / "logs" / stage_dir.name),
                                                     write_graph=True, profile_batch=0),
                         # double_checkpoint: a kill during the write falls back to the previous epoch
                         _Backup(str(backup), double_checkpoint=True)])
    history = read_history(log)
    seconds = float(sum(history["epoch_seconds"]))
    weights = atomic_write(stage_dir / FINAL_WEIGHTS, model.save_weights)
    result = StageResult(history=history, seconds=seconds,
                         images_per_second=n_train * epochs / seconds if seconds else 0.0, epochs=epochs,
                         weights_sha256=file_sha256(weights))
    write_atomic(stage_dir / STAGE_FILE, json.dumps(asdict(result)))
    return result


class _Backup(keras.callbacks.BackupAndRestore):
    """Keras's per-epoch checkpoint, refusing in one line a checkpoint that reads but does not fit
    the model (another model's, say) instead of failing with a traceback inside `fit`."""

    def on_train_begin(self, logs=None):
        try:
            super().on_train_begin(logs)
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(f"checkpoint {self._weights_path} does not fit this stage ({type(exc).__name__}); "
                            f"delete {self.backup_dir} to train the stage afresh.") from None


def _kept_stage(model: keras.Model, stage_dir: Path) -> StageResult | None:
    """The finished stage kept in `stage_dir`, with its weights loaded into `model` once their
    digest matches its record; None, and one line saying why, when the record or the weights are
    damaged (the stage then trains afresh, to the same numbers)."""
    record, reason = _kept_record(stage_dir)
    if reason is None:
        try:
            if model.optimizer is not None and not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)  # so the saved optimizer state loads too
            model.load_weights(stage_dir / FINAL_WEIGHTS)
            return StageResult(**{**record, "reused": True})
        except (OSError, ValueError, TypeError) as exc:
            reason = f"{FINAL_WEIGHTS} does not load: {type(exc).__name__}"
    print(f"{stage_dir.name}: retraining the stage kept in {stage_dir} ({reason})", flush=True)
    return None


def _kept_record(stage_dir: Path) -> tuple[dict, str | None]:
    """A kept stage's record, and why it cannot be trusted (None: its weights match its digest)."""
    try:
        record = json.loads((stage_dir / STAGE_FILE).read_text())
        matches = file_sha256(stage_dir / FINAL_WEIGHTS) == record["weights_sha256"]
    except FileNotFoundError:
        return {}, f"{FINAL_WEIGHTS} missing"
    except json.JSONDecodeError:
        return {}, f"unreadable {STAGE_FILE}"
    except KeyError:
        return {}, f"{STAGE_FILE} without a weights digest"
    return record, None if matches else "weights digest mismatch"


def _checkpoint_damage(backup: Path) -> str | None:
    """Why no checkpoint in `backup` can be read (None: none kept, or one readable). Keras falls
    back to the previous epoch's checkpoint on its own; this catches the case where both fail."""
    names = ("latest.weights.h5", "latest.weights.h5.bkp")
    if not any((backup / name).exists() for name in names):
        return None
    reasons = []
    for name in names:
        try:
            with h5py.File(backup / name, "r") as file:
                file.visititems(lambda _, item: item[()] if isinstance(item, h5py.Dataset) else None)
            return None
        except (OSError, ValueError, KeyError) as exc:
            reasons.append(f"{name}: {type(exc).__name__}")
    return "; ".join(reasons)


def fit_verbosity() -> int:
    """Keras `fit` verbosity: a progress bar in a terminal, else one line per epoch (notebooks, logs)."""
    return 1 if sys.stdout.isatty() else 2


class ProgressLines(keras.callbacks.Callback):
    """One line per chunk of a long `predict`: images done, images/s and the time left.

    Plain lines rather than a carriage-return bar, so papermill notebooks and log files stay
    readable. `every` is in seconds; short passes print only their final line.
    """

    def __init__(self, label: str, total: int, batch_size: int, every: float = 30.0):
        super().__init__()
        self.label, self.total, self.batch_size, self.every = label, total, batch_size, every

    def on_predict_begin(self, logs=None):
        self._start = self._last = time.perf_counter()

    def on_predict_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        done = min((batch + 1) * self.batch_size, self.total)
        if now - self._last >= self.every or done == self.total:
            self._last = now
            rate = done / max(now - self._start, 1e-9)
            print(f"{self.label}: {done:,}/{self.total:,} images, {rate:,.1f} images/s, "
                  f"{(self.total - done) / rate / 60:,.1f} min left", flush=True)


def predict(model: keras.Model, dataset, progress: ProgressLines | None = None) -> np.ndarray:
    """`model.predict` over the tf.data `dataset`, its step traced once whatever the batch sizes.

    Keras traces the step for the first batch's shape, then again, relaxed, for a shorter last batch
    (seconds for a backbone on a CPU); traced first for the dataset's own element spec, whose batch
    size is unknown, one trace serves every batch."""
    model.make_predict_function()
    model.predict_function.get_concrete_function([dataset.element_spec])
    return model.predict(dataset, verbose=0, callbacks=[progress] if progress else None)
